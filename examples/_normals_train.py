"""Training, evaluation and checkpoints for the normal-regression example.

The command-line front end is ``examples/normals.py``; this module holds the machinery so that
it can be used (and tested) from Python: :class:`Config`, :func:`build_datasets`,
:func:`build_model`, :func:`train`, :func:`evaluate`, :func:`save_checkpoint` /
:func:`load_checkpoint`.

Determinism and exact resumption (CPU): every source of randomness is seeded from
``Config.seed`` (model initialisation, shuffling, augmentation) or ``Config.eval_seed``
(the random O(3) test transforms; evaluation runs under :func:`torch.random.fork_rng`, so it
never perturbs training). A checkpoint is written after every epoch and holds the model,
optimizer and scheduler states, the epoch, the metric history and the state of every random
number generator (torch, numpy, python and the shuffling / augmentation generators, for every
rank). Resuming therefore continues bit-identically at the next epoch boundary on the same
machine with the same number of threads and processes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import os.path as osp
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform

from ._normals_metrics import angular_error, summarize, unoriented_cosine_loss

CHECKPOINT_FORMAT = "tensorframes.examples.normals/1"
CHECKPOINT_NAME = "checkpoint.pt"

#: Config fields that define a run: resuming with a different value is refused.
IDENTITY_KEYS = (
    "arch",
    "flavour",
    "options",
    "data",
    "num_shapes",
    "num_test_shapes",
    "num_points",
    "noise",
    "density",
    "outliers",
    "pose",
    "data_seed",
    "test_fraction",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "eval_seed",
)
MODEL_KEYS = ("arch", "flavour", "options")
DATA_KEYS = (
    "data",
    "root",
    "num_shapes",
    "num_test_shapes",
    "num_points",
    "noise",
    "density",
    "outliers",
    "pose",
    "data_seed",
    "test_fraction",
)

#: Default sizes of the synthetic data set (other data sets default to all their clouds).
SYNTHETIC_DEFAULT_SHAPES = {"train": 256, "test": 64}
DEFAULT_ROOTS = {"synthetic": "data", "modelnet": osp.join("data", "modelnet40_normal_resampled")}


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for another model (arch / flavour / options) or run."""


# =============================================================================== config
@dataclasses.dataclass
class Config:
    """Everything that defines a training run (see ``python -m examples.normals train -h``)."""

    arch: str = "pointnet2"
    flavour: str = "pca"
    options: dict = dataclasses.field(default_factory=dict)
    data: str = "synthetic"
    root: str | None = None
    num_shapes: int | None = None
    num_test_shapes: int | None = None
    num_points: int = 512
    noise: float = 0.01
    density: str = "uniform"
    outliers: float = 0.0
    pose: str = "random"
    data_seed: int = 0
    test_fraction: float = 0.2
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    eval_seed: int = 1234
    eval_every: int = 1
    out: str = osp.join("runs", "normals")
    resume: bool = False
    stop_after: int | None = None
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    find_unused_parameters: bool = False
    param_hash: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.data not in ("synthetic", "modelnet", "meshes"):
            raise ValueError(f"--data must be synthetic, modelnet or meshes, got {self.data!r}")
        if self.pose not in ("random", "canonical"):
            raise ValueError(f"--pose must be random or canonical, got {self.pose!r}")
        if not isinstance(self.options, dict):
            raise TypeError(f"options must be a dict, got {type(self.options).__name__}")
        for name in ("num_points", "epochs", "batch_size", "eval_every"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("num_shapes", "num_test_shapes", "stop_after", "threads"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("seed", "eval_seed", "data_seed"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("noise", "outliers", "weight_decay"):
            _check_float(name, getattr(self, name), minimum=0.0)
        _check_float("lr", self.lr, minimum=0.0, strict=True)
        _check_float("test_fraction", self.test_fraction, minimum=0.0, strict=True)
        if self.test_fraction >= 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be auto, cpu or cuda[:i], got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def data_root(self) -> str:
        if self.root is not None:
            return self.root
        if self.data not in DEFAULT_ROOTS:
            raise ValueError(f"--data {self.data} needs --root (the folder of mesh files)")
        return DEFAULT_ROOTS[self.data]

    def model_identity(self) -> dict:
        return {"arch": self.arch, "flavour": self.flavour, "options": _plain(self.options)}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")


def _plain(obj: Any) -> Any:
    """JSON round trip: the form in which options are stored and compared."""
    return json.loads(json.dumps(obj, sort_keys=True))


def describe_model(identity: dict) -> str:
    opts = identity.get("options") or {}
    return f"arch={identity.get('arch')!r} flavour={identity.get('flavour')!r} options={opts!r}"


# =============================================================================== data
class _KeepNormalTarget(BaseTransform):
    """Keep only ``pos`` and ``normal`` (nothing else may leak into the model's input)."""

    def forward(self, data: Data) -> Data:
        return Data(pos=data.pos, normal=data.normal)


def _transform():
    from tensorframes.data import CenterScale

    # centring first: random O(3) maps (augmentation, rotated evaluation) act about the origin
    return _Compose([_KeepNormalTarget(), CenterScale()])


class _Compose(BaseTransform):
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def forward(self, data: Data) -> Data:
        for t in self.transforms:
            data = t(data)
        return data

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def build_datasets(cfg: Config) -> tuple[Any, Any]:
    """``(train, test)`` datasets for ``cfg``; raises ``ValueError`` / ``FileNotFoundError``
    with the data layer's message for corrupted or missing data."""
    from tensorframes import data as tfd

    root = cfg.data_root
    transform = _transform()
    if cfg.data == "synthetic":
        common = dict(
            num_points=cfg.num_points,
            noise=cfg.noise,
            density=cfg.density,
            outliers=cfg.outliers,
            rotate=cfg.pose == "random",
            seed=cfg.data_seed,
            transform=transform,
        )
        train = tfd.SyntheticShapes(
            root,
            split="train",
            num_shapes=cfg.num_shapes or SYNTHETIC_DEFAULT_SHAPES["train"],
            **common,
        )
        test = tfd.SyntheticShapes(
            root,
            split="test",
            num_shapes=cfg.num_test_shapes or SYNTHETIC_DEFAULT_SHAPES["test"],
            **common,
        )
    elif cfg.data == "modelnet":
        train = tfd.ModelNet40Normals(root, "train", num_points=cfg.num_points, transform=transform)
        test = tfd.ModelNet40Normals(root, "test", num_points=cfg.num_points, transform=transform)
        train = _subset(train, cfg.num_shapes, cfg.data_seed)
        test = _subset(test, cfg.num_test_shapes, cfg.data_seed + 1)
    else:
        full = tfd.MeshFolder(
            root, num_points=cfg.num_points, seed=cfg.data_seed, transform=transform
        )
        if len(full) < 2:
            raise ValueError(f"--data meshes: {root} holds {len(full)} mesh; need at least 2")
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.data_seed))
        n_test = min(len(full) - 1, max(1, round(cfg.test_fraction * len(full))))
        test = full.index_select(perm[:n_test].sort().values)
        train = full.index_select(perm[n_test:].sort().values)
        train = _subset(train, cfg.num_shapes, cfg.data_seed)
        test = _subset(test, cfg.num_test_shapes, cfg.data_seed + 1)
    for name, ds in (("train", train), ("test", test)):
        check_finite_dataset(ds, f"{cfg.data} {name} set ({root})")
    return train, test


def _subset(ds, n: int | None, seed: int):
    if n is None or n >= len(ds):
        return ds
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return ds.index_select(perm[:n].sort().values)


def check_finite_dataset(ds, where: str) -> None:
    """``ValueError`` naming the first cloud whose positions or normals are not finite."""
    store = getattr(ds, "_data", None)
    if store is not None and all(
        torch.isfinite(getattr(store, a)).all() for a in ("pos", "normal") if a in store
    ):
        return  # fast path: the whole (collated) storage is finite
    for i in range(len(ds)):
        d = ds.get(ds.indices()[i])  # without the transform: the data as stored
        for attr in ("pos", "normal"):
            x = getattr(d, attr, None)
            if x is None:
                raise ValueError(f"{where}: cloud {i} has no {attr!r}")
            if not torch.isfinite(x).all():
                row = int((~torch.isfinite(x).all(-1)).nonzero()[0, 0])
                raise ValueError(
                    f"{where}: cloud {i} has a non-finite (NaN/inf) {attr} at point {row}"
                )


# =============================================================================== models
class PCABaseline(nn.Module):
    """``models.pca_normals`` as a parameter-free module (the no-learning baseline)."""

    def __init__(self, k: int = 16) -> None:
        super().__init__()
        import models

        self._fn = models.pca_normals
        self.k = int(k)

    def forward(self, batch) -> torch.Tensor:
        return self._fn(batch, k=self.k)


def build_model(arch: str, flavour: str, options: dict) -> nn.Module:
    """``models.build(arch, flavour, **options)``, plus two extensions:

    * ``arch="pca"``: the parameter-free PCA baseline (``options``: ``k``);
    * ``arch="package.module:factory"``: any importable ``factory(flavour, **options)``
      returning a module that follows the ``models`` contract (used by the tests).
    """
    if arch == "pca":
        model = PCABaseline(**options)
    elif ":" in arch:
        import importlib

        mod_name, _, fn_name = arch.partition(":")
        factory = getattr(importlib.import_module(mod_name), fn_name)
        model = _call_factory(factory, arch, flavour, options)
    else:
        import models

        model = _call_factory(models.build, arch, flavour, options, pass_arch=True)
    model.arch, model.flavour, model.options = arch, flavour, dict(options)
    model.augment = bool(getattr(model, "augment", False)) or flavour == "augment"
    return model


def _call_factory(factory, arch, flavour, options, pass_arch=False) -> nn.Module:
    args = (arch, flavour) if pass_arch else (flavour,)
    try:
        return factory(*args, **options)
    except TypeError as err:
        if "argument" not in str(err):  # not a signature mismatch: a bug, keep the traceback
            raise
        raise ValueError(
            f"invalid --model-option for arch={arch!r} flavour={flavour!r} "
            f"(options {options!r}): {err}"
        ) from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, p in sorted(_unwrap(model).named_parameters()):
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# =============================================================================== files
def atomic_write_bytes(path: str, writer: Callable[[io.BufferedWriter], None]) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``: a
    failure at any point leaves a previous ``path`` untouched and no temporary file behind."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{osp.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual permissions
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(path: str, payload: dict) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (plain tensors/containers only, so
    that :func:`load_checkpoint` can use ``weights_only=True``)."""
    atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint written by :func:`train` (``weights_only=True``); ``ValueError`` for a
    file that is not one, ``FileNotFoundError`` for a missing one."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is truncated, "
            "corrupted or not a normals checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        fmt = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"checkpoint {path} is not a normals checkpoint (format {fmt!r}, expected "
            f"{CHECKPOINT_FORMAT!r})"
        )
    return payload


def check_model_identity(ckpt: dict, identity: dict, path: str) -> None:
    """``CheckpointMismatchError`` naming both models unless ``ckpt`` holds ``identity``."""
    saved = {k: ckpt.get(k) for k in MODEL_KEYS}
    saved["options"] = _plain(saved["options"] or {})
    if saved != {**identity, "options": _plain(identity["options"])}:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for another model: it holds {describe_model(saved)}, "
            f"but this command asks for {describe_model(identity)}. Pass the matching "
            "--arch/--flavour/--model-option, or use another --out/--checkpoint; the existing "
            "files were left untouched."
        )


def load_model_state(model: nn.Module, ckpt: dict, path: str) -> None:
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointMismatchError(
            f"checkpoint {path} ({describe_model(ckpt)}) does not fit the model built for it: {err}"
        ) from None


# =============================================================================== RNG state
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


# =============================================================================== distributed
@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialised: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def init_distributed(cfg: Config) -> _Dist:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    if world <= 1:
        return _Dist(device=device)
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialised = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        initialised = True
    return _Dist(rank, world, local_rank, device, initialised)


def _configure_threads(cfg: Config, dist: _Dist) -> None:
    if cfg.threads is not None:
        n = cfg.threads
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.world)))
        n = max(1, (os.cpu_count() or 1) // max(1, local_world))
    torch.set_num_threads(n)


# =============================================================================== batches
def _split_batch(batch, device: torch.device):
    """Model input (``pos``, ``batch``, ``ptr`` only) and the target normals."""
    batch = batch.to(device)
    target = batch.normal
    del batch.normal
    return batch, target


def _rotate(batch, target: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Apply ``Q[g]`` (``(B, 3, 3)``) to cloud ``g``'s positions and normals (about the
    origin; the clouds are centred). Returns the rotated target; ``batch.pos`` is replaced."""
    Qn = Q.to(device=batch.pos.device)[batch.batch]
    pos = torch.einsum("nij,nj->ni", Qn, batch.pos.to(Qn.dtype)).to(batch.pos.dtype)
    batch.pos = pos
    return torch.einsum("nij,nj->ni", Qn, target.to(Qn.dtype)).to(target.dtype)


def random_o3(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` Haar-random elements of O(3) (reflections included), float64."""
    from tensorframes.testing import random_orthogonal

    return random_orthogonal(n, 3, det=None, generator=generator, dtype=torch.float64)


def _progress(iterable: Iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, file=sys.stderr, **kw)


# =============================================================================== evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int,
    eval_seed: int,
    device: torch.device,
    rotated: bool = True,
    progress: bool = False,
) -> dict:
    """Angular errors of ``model`` on ``dataset``, as given and (``rotated=True``) under one
    seeded random O(3) element per cloud (reflections included).

    Returns ``{"metrics": {...}, "errors": {...}}``: ``metrics`` holds, for ``given`` and
    ``rotated``, the ``unoriented`` and ``oriented`` mean/median errors in degrees, the test
    ``loss``, the equivariance ``gap`` (rotated minus given mean, both conventions) and
    ``equivariance_error`` (mean oriented angle between ``model(Q x)`` and ``Q model(x)``);
    ``errors`` the per-point error tensors (for plots). Runs under ``fork_rng`` seeded with
    ``eval_seed``, so it is deterministic and leaves the caller's RNG state unchanged.
    """
    model = _unwrap(model)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    Qs = random_o3(len(dataset), torch.Generator().manual_seed(eval_seed)) if rotated else None
    errs: dict[str, list[torch.Tensor]] = {}
    loss_sum = {"given": 0.0, "rotated": 0.0}
    n_points, offset = 0, 0
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(eval_seed)
            for batch in _progress(loader, progress, desc="eval"):
                inp, target = _split_batch(batch, device)
                B = inp.num_graphs
                pred = model(inp)
                _check_prediction(pred, target)
                n_points += len(target)
                loss_sum["given"] += float(unoriented_cosine_loss(pred, target)) * len(target)
                errs.setdefault("given_unoriented", []).append(angular_error(pred, target))
                errs.setdefault("given_oriented", []).append(
                    angular_error(pred, target, oriented=True)
                )
                if rotated:
                    Q = Qs[offset : offset + B]
                    target_r = _rotate(inp, target, Q)
                    pred_r = model(inp)
                    _check_prediction(pred_r, target_r)
                    loss_sum["rotated"] += float(unoriented_cosine_loss(pred_r, target_r)) * len(
                        target_r
                    )
                    errs.setdefault("rotated_unoriented", []).append(
                        angular_error(pred_r, target_r)
                    )
                    errs.setdefault("rotated_oriented", []).append(
                        angular_error(pred_r, target_r, oriented=True)
                    )
                    pred_q = torch.einsum(
                        "nij,nj->ni", Q.to(pred.device)[inp.batch], pred.to(torch.float64)
                    )
                    errs.setdefault("equivariance", []).append(
                        angular_error(pred_r, pred_q, oriented=True)
                    )
                offset += B
    finally:
        model.train(was_training)
    errors = {k: torch.cat(v).cpu() for k, v in errs.items()}
    metrics: dict[str, Any] = {"num_clouds": len(dataset), "num_points": n_points}
    for split in ("given", "rotated") if rotated else ("given",):
        metrics[split] = {
            "unoriented": summarize(errors[f"{split}_unoriented"]),
            "oriented": summarize(errors[f"{split}_oriented"]),
            "loss": loss_sum[split] / max(1, n_points),
        }
    if rotated:
        metrics["gap"] = {
            o: metrics["rotated"][o]["mean"] - metrics["given"][o]["mean"]
            for o in ("unoriented", "oriented")
        }
        metrics["equivariance_error"] = summarize(errors["equivariance"])["mean"]
    return {"metrics": metrics, "errors": errors}


def flatten_metrics(metrics: dict, prefix: str = "") -> dict:
    """``{"given": {"unoriented": {"mean": x}}}`` -> ``{"given_unoriented_mean": x}``."""
    flat = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_metrics(v, key + "_"))
        else:
            flat[key] = v
    return flat


def _check_prediction(pred: Any, target: torch.Tensor) -> None:
    if not isinstance(pred, torch.Tensor) or pred.shape != target.shape:
        shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"the model must return (N, 3) normals, got {shape} for N={len(target)}")


# =============================================================================== training
def _checkpoint_path(cfg: Config) -> str:
    return osp.join(cfg.out, CHECKPOINT_NAME)


def _log(dist: _Dist, msg: str) -> None:
    if dist.main:
        print(msg, file=sys.stderr, flush=True)


def train(cfg: Config, *, datasets: tuple | None = None) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the final record.

    Writes, on rank 0 only, into ``cfg.out``: ``checkpoint.pt`` (after every epoch, atomically),
    ``metrics.json`` / ``metrics.csv`` (one entry per epoch), ``config.json`` and, once the last
    epoch is done, ``final.json`` (full test metrics, as given and under random O(3)).
    """
    dist = init_distributed(cfg)
    try:
        return _train(cfg, dist, datasets)
    finally:
        if dist.initialised:
            torch.distributed.destroy_process_group()


def _train(cfg: Config, dist: _Dist, datasets: tuple | None) -> dict:
    _configure_threads(cfg, dist)
    path = _checkpoint_path(cfg)
    ckpt = None
    if cfg.resume:
        ckpt = load_checkpoint(path)
        check_model_identity(ckpt, cfg.model_identity(), path)
        check_run_identity(ckpt, cfg, path)
        if ckpt.get("world_size", 1) != dist.world:
            warnings.warn(
                f"resuming a {ckpt.get('world_size', 1)}-process run with {dist.world} "
                "processes: results will not match an uninterrupted run exactly",
                stacklevel=2,
            )
    elif osp.exists(path):
        raise ValueError(
            f"{path} already exists; pass --resume to continue that run, or choose another "
            "--out (nothing was overwritten)"
        )

    # data (rank 0 first, so that only it writes caches)
    if datasets is None:
        if dist.main:
            datasets = build_datasets(cfg)
        dist.barrier()
        if not dist.main:
            datasets = build_datasets(cfg)
    train_set, test_set = datasets

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, cfg.flavour, cfg.options).to(dist.device)
    n_params = count_parameters(model)
    if n_params == 0:
        raise ValueError(
            f"{describe_model(cfg.model_identity())} has no trainable parameters; evaluate it "
            "with `eval` instead of training it"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    generators = {
        "shuffle": torch.Generator().manual_seed(cfg.seed),
        "augment": torch.Generator().manual_seed(_derive_seed(cfg.seed, "augment", dist.rank)),
    }
    history: list[dict] = []
    start_epoch, train_time = 0, 0.0
    if ckpt is not None:
        load_model_state(model, ckpt, path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scheduler.T_max = cfg.epochs  # a longer run stretches the cosine schedule
        rng = ckpt["rng"]
        restore_rng(rng[dist.rank % len(rng)], generators)
        history = list(ckpt["history"])
        start_epoch, train_time = int(ckpt["epoch"]), float(ckpt["train_time_s"])
        _log(dist, f"resuming {path} after epoch {start_epoch}")

    ddp = model
    if dist.world > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )
    if dist.world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(
            train_set, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.seed
        )
    else:
        sampler = torch.utils.data.RandomSampler(train_set, generator=generators["shuffle"])
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler)

    _log(
        dist,
        f"{describe_model(cfg.model_identity())}: {n_params} parameters, "
        f"{len(train_set)} training / {len(test_set)} test clouds, "
        f"{dist.world} process(es)",
    )

    final = ckpt.get("final") if ckpt is not None else None
    final_errors = None
    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + cfg.stop_after)
    for epoch in range(start_epoch, stop):
        if dist.world > 1:
            sampler.set_epoch(epoch)
        ddp.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros(2, dtype=torch.float64, device=dist.device)
        for step, batch in enumerate(
            _progress(loader, cfg.progress and dist.main, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        ):
            inp, target = _split_batch(batch, dist.device)
            if model.augment:
                target = _rotate(inp, target, random_o3(inp.num_graphs, generators["augment"]))
            pred = ddp(inp)
            _check_prediction(pred, target)
            loss = unoriented_cosine_loss(pred, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch + 1}, batch {step + 1} (NaN/inf "
                    f"in the data or a diverging model); {path} was left as it was after "
                    f"epoch {epoch}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += torch.stack(
                [
                    loss.detach().double() * len(target),
                    torch.tensor(float(len(target)), dtype=torch.float64, device=dist.device),
                ]
            )
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if dist.world > 1:
            torch.distributed.all_reduce(loss_sum)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": float(loss_sum[0] / loss_sum[1]),
            "epoch_time_s": epoch_time,
            "train_time_s": train_time,
        }
        last = epoch + 1 == cfg.epochs
        if dist.main and ((epoch + 1) % cfg.eval_every == 0 or last):
            res = evaluate(
                model,
                test_set,
                batch_size=cfg.batch_size,
                eval_seed=cfg.eval_seed,
                device=dist.device,
                rotated=last,
                progress=False,
            )
            m = res["metrics"]
            record.update(
                {
                    "test_loss": m["given"]["loss"],
                    "test_unoriented_mean": m["given"]["unoriented"]["mean"],
                    "test_unoriented_median": m["given"]["unoriented"]["median"],
                    "test_oriented_mean": m["given"]["oriented"]["mean"],
                    "test_oriented_median": m["given"]["oriented"]["median"],
                }
            )
            if last:
                final = {**m, "parameters": n_params, "train_time_s": train_time}
                final_errors = res["errors"]
        history.append(record)
        rng_states = [capture_rng(generators)]
        if dist.world > 1:
            rng_states = [None] * dist.world
            torch.distributed.all_gather_object(rng_states, capture_rng(generators))
        if dist.main:
            payload = {
                "format": CHECKPOINT_FORMAT,
                **cfg.model_identity(),
                "config": {k: v for k, v in cfg.to_dict().items() if k != "resume"},
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_states,
                "history": history,
                "train_time_s": train_time,
                "parameters": n_params,
                "world_size": dist.world,
                "threads": torch.get_num_threads(),
                "final": final,
                "torch_version": str(torch.__version__),
            }
            save_checkpoint(path, payload)
            write_json(osp.join(cfg.out, "config.json"), payload["config"])
            write_json(osp.join(cfg.out, "metrics.json"), history)
            write_csv(osp.join(cfg.out, "metrics.csv"), history)
            if final is not None:
                write_json(osp.join(cfg.out, "final.json"), final)
            _log(dist, format_epoch(record))
        dist.barrier()
    if cfg.param_hash:  # every rank: lets tests check that DDP kept the ranks in sync
        os.makedirs(cfg.out, exist_ok=True)
        atomic_write_text(
            osp.join(cfg.out, f"param_hash.rank{dist.rank}.txt"), parameter_hash(model) + "\n"
        )
    return {
        "epoch": len(history),
        "history": history,
        "final": final,
        "parameters": n_params,
        "model": model,
        "checkpoint": path,
        "errors": final_errors,
    }


def check_run_identity(ckpt: dict, cfg: Config, path: str) -> None:
    saved = ckpt.get("config", {})
    diffs = []
    for k in IDENTITY_KEYS:
        if k in MODEL_KEYS:
            continue
        if _plain(saved.get(k)) != _plain(getattr(cfg, k)):
            diffs.append(f"{k}: checkpoint {saved.get(k)!r}, command {getattr(cfg, k)!r}")
    if diffs:
        raise CheckpointMismatchError(
            f"cannot resume {path}: the command differs from the run in the checkpoint "
            f"({'; '.join(diffs)}). Resume without those flags (the checkpoint's values are "
            "used), or use another --out."
        )


def _derive_seed(seed: int, purpose: str, rank: int) -> int:
    digest = hashlib.sha256(f"{seed}:{purpose}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def format_epoch(r: dict) -> str:
    s = f"epoch {r['epoch']:>3}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f}"
    if "test_unoriented_mean" in r:
        s += (
            f"  test unoriented {r['test_unoriented_mean']:6.2f} deg (median "
            f"{r['test_unoriented_median']:.2f})  oriented {r['test_oriented_mean']:6.2f}"
        )
    return s + f"  [{r['epoch_time_s']:.1f} s]"
