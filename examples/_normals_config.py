"""The configuration of a normal-regression run: :class:`Config` and its validation.

A :class:`Config` holds every flag of ``python -m examples.normals train``. The fields named in
:data:`IDENTITY_KEYS` define a run: resuming a checkpoint with another value is refused (see
:func:`examples._normals_io.check_run_identity`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os.path as osp
from typing import Any

__all__ = [
    "DATA_KEYS",
    "DATA_ONLY_FLAGS",
    "DEFAULT_ROOTS",
    "EVAL_DATA_FIELDS",
    "IDENTITY_KEYS",
    "MODEL_KEYS",
    "SYNTHETIC_DEFAULT_SHAPES",
    "Config",
    "as_plain",
    "check_applicable_flags",
    "describe_model",
]

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
#: The fields that name the model (and must match a checkpoint's).
MODEL_KEYS = ("arch", "flavour", "options")
#: The fields that define the data set.
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

#: Data flags that apply to one kind of data only (refused with the others).
DATA_ONLY_FLAGS = {
    "noise": ("synthetic",),
    "density": ("synthetic",),
    "outliers": ("synthetic",),
    "pose": ("synthetic",),
    "test_fraction": ("meshes",),
    "cache": ("meshes", "modelnet"),
}
#: The data fields eval.json records, per kind of data (only those that apply).
EVAL_DATA_FIELDS = {
    "synthetic": ("data", "root", "num_points", "noise", "density", "outliers", "pose",
                  "num_test_shapes", "data_seed"),
    "modelnet": ("data", "root", "num_points", "num_test_shapes", "data_seed"),
    "meshes": ("data", "root", "num_points", "num_test_shapes", "data_seed", "test_fraction"),
}  # fmt: skip

#: Default sizes of the synthetic data set (other data sets default to all their clouds).
SYNTHETIC_DEFAULT_SHAPES = {"train": 256, "test": 64}
DEFAULT_ROOTS = {"synthetic": "data", "modelnet": osp.join("data", "modelnet40_normal_resampled")}


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
    cache: str | None = None
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
        """``ValueError`` / ``TypeError`` naming the first field with a bad value."""
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
        if self.test_fraction > 1:
            raise ValueError(f"test_fraction must be in (0, 1], got {self.test_fraction!r}")
        if self.cache is not None and not isinstance(self.cache, str):
            raise TypeError(f"cache must be a folder name or None, got {self.cache!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"--device must be auto, cpu or cuda[:i], got {self.device!r}")

    def to_dict(self) -> dict:
        """Every field, as a plain dict (stored in checkpoints and ``config.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """A config from ``d``, ignoring keys that are not fields (older or newer checkpoints)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def data_root(self) -> str:
        """``root``, or the data set's default folder."""
        if self.root is not None:
            return self.root
        if self.data not in DEFAULT_ROOTS:
            raise ValueError(f"--data {self.data} needs --root (the folder of mesh files)")
        return DEFAULT_ROOTS[self.data]

    def model_identity(self) -> dict:
        """``{"arch", "flavour", "options"}``: what a checkpoint's model must match."""
        return {"arch": self.arch, "flavour": self.flavour, "options": as_plain(self.options)}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")


def as_plain(obj: Any) -> Any:
    """JSON round trip: the form in which options are stored and compared."""
    return json.loads(json.dumps(obj, sort_keys=True))


def describe_model(identity: dict) -> str:
    """``arch=... flavour=... options=...`` of a model identity (for error messages)."""
    opts = identity.get("options") or {}
    return f"arch={identity.get('arch')!r} flavour={identity.get('flavour')!r} options={opts!r}"


def check_applicable_flags(explicit: dict, data: str) -> None:
    """``ValueError`` naming the first flag given explicitly that does not apply to ``data``
    (synthetic-only flags with meshes, ``--test-fraction`` without meshes, ...)."""
    for key, kinds in DATA_ONLY_FLAGS.items():
        if explicit.get(key) is not None and data not in kinds:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} applies to --data {' / '.join(kinds)} only, not to --data {data}; "
                f"drop {flag}"
            )
