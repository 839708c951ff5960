"""Files of the normal-regression runner: atomic writes, JSON, CSV and checkpoints.

Every file the runner writes goes through :func:`atomic_write_bytes` (a temporary file in the
same folder, ``fsync``, then ``os.replace``): a failure at any point leaves the previous file
untouched and no temporary file behind. Checkpoints hold plain tensors and containers only, so
that :func:`load_checkpoint` can use ``torch.load(..., weights_only=True)``.
:func:`out_lock` keeps two commands from writing into one ``--out`` folder at the same time.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import os.path as osp
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import torch
from torch import nn

from ._normals_config import IDENTITY_KEYS, MODEL_KEYS, Config, as_plain, describe_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "LOCK_NAME",
    "CheckpointMismatchError",
    "OutFolderBusyError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_model_identity",
    "check_run_identity",
    "load_checkpoint",
    "load_model_state",
    "out_lock",
    "save_checkpoint",
    "write_csv",
    "write_json",
]

CHECKPOINT_FORMAT = "tensorframes.examples.normals/1"
CHECKPOINT_NAME = "checkpoint.pt"
#: The lock file :func:`out_lock` holds in an output folder.
LOCK_NAME = ".lock"


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for another model (arch / flavour / options) or run."""


class OutFolderBusyError(ValueError):
    """Another live process holds the lock of an output folder."""


@contextlib.contextmanager
def out_lock(folder: str, *, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs.

    The lock is an ``fcntl.flock`` on ``<folder>/.lock`` (which holds the owner's process id):
    the operating system releases it when the process exits, also on a crash or a kill, so a
    stale lock file never blocks. A second holder, in this or another process, gets
    :class:`OutFolderBusyError` naming the folder and the process. ``enabled=False`` (torchrun
    ranks other than 0) and platforms without ``fcntl`` do nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        enabled = False
    if not enabled:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise OutFolderBusyError(
                f"{folder} is in use by another run (process {owner} holds {path}); wait for "
                "it to finish or choose another --out"
            ) from None
        pid = str(os.getpid()).encode()
        if os.pread(fd, 64, 0) != pid:  # rewritten only by another process: mtime kept
            os.ftruncate(fd, 0)
            os.pwrite(fd, pid, 0)
        yield
    finally:
        os.close(fd)  # releases the flock


# =============================================================================== atomic files
def atomic_write_bytes(path: str, writer: Callable[[BinaryIO], Any]) -> None:
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
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json(path: str, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str, rows: list[dict]) -> None:
    """``rows`` (dicts) as CSV with a header, columns in first-seen order, written atomically."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


# =============================================================================== checkpoints
def save_checkpoint(path: str, payload: dict) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (plain tensors/containers only, so
    that :func:`load_checkpoint` can use ``weights_only=True``)."""
    atomic_write_bytes(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint written by the runner (``weights_only=True``); ``ValueError`` for a
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
    saved["options"] = as_plain(saved["options"] or {})
    if saved != {**identity, "options": as_plain(identity["options"])}:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for another model: it holds {describe_model(saved)}, "
            f"but this command asks for {describe_model(identity)}. Pass the matching "
            "--arch/--flavour/--model-option, or use another --out/--checkpoint; the existing "
            "files were left untouched."
        )


def check_run_identity(ckpt: dict, cfg: Config, path: str) -> None:
    """``CheckpointMismatchError`` listing every run-defining field in which ``cfg`` differs
    from the run stored in ``ckpt`` (the model fields are checked by
    :func:`check_model_identity`)."""
    saved = ckpt.get("config", {})
    diffs = []
    for k in IDENTITY_KEYS:
        if k in MODEL_KEYS:
            continue
        if as_plain(saved.get(k)) != as_plain(getattr(cfg, k)):
            diffs.append(f"{k}: checkpoint {saved.get(k)!r}, command {getattr(cfg, k)!r}")
    if diffs:
        raise CheckpointMismatchError(
            f"cannot resume {path}: the command differs from the run in the checkpoint "
            f"({'; '.join(diffs)}). Resume without those flags (the checkpoint's values are "
            "used), or use another --out."
        )


def load_model_state(model: nn.Module, ckpt: dict, path: str) -> None:
    """Load ``ckpt["model"]`` into ``model``; ``CheckpointMismatchError`` if it does not fit."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointMismatchError(
            f"checkpoint {path} ({describe_model(ckpt)}) does not fit the model built for it: {err}"
        ) from None
