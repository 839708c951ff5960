"""Processes, devices, threads and random number generators of the normal-regression runner.

``torchrun`` (``WORLD_SIZE > 1``) makes the run data parallel: :func:`init_distributed` joins
the process group (gloo on CPU, nccl on GPU) and returns a :class:`DistInfo`. The state of every
random number generator (torch, numpy, python and the runner's own generators) is captured
after each epoch as plain data (:func:`capture_rng`) and restored on ``--resume``
(:func:`restore_rng`), which makes a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random

import numpy as np
import torch
import torch.distributed

from ._normals_config import Config

__all__ = [
    "DistInfo",
    "capture_rng",
    "configure_threads",
    "derive_seed",
    "init_distributed",
    "resolve_device",
    "restore_rng",
]


@dataclasses.dataclass
class DistInfo:
    """This process's place in the run: rank, number of processes, device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialised: bool = False  # whether this process created the process group

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the only one that writes files)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (a no-op in a single process)."""
        if self.world > 1:
            torch.distributed.barrier()


def resolve_device(name: str, local_rank: int) -> torch.device:
    """The device of ``--device name`` for the process of ``local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def init_distributed(cfg: Config) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    if world <= 1:
        return DistInfo(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialised = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
        initialised = True
    return DistInfo(rank, world, local_rank, device, initialised)


def configure_threads(cfg: Config, dist: DistInfo) -> None:
    """``--threads``, or the machine's cores shared evenly by the processes on it."""
    if cfg.threads is not None:
        n = cfg.threads
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.world)))
        n = max(1, (os.cpu_count() or 1) // max(1, local_world))
    torch.set_num_threads(n)


def derive_seed(seed: int, purpose: str, rank: int) -> int:
    """A 63-bit seed for ``purpose`` on ``rank``, derived from ``seed`` by SHA-256."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """Every RNG state as plain tensors / lists / numbers (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state)
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(py_state), "gauss_next": gauss_next},
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    """Restore the states captured by :func:`capture_rng` (``generators`` in place)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (global state)
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    for k, g in generators.items():
        g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
