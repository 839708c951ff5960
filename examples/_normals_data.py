"""Data of the normal-regression runner: data sets, transforms and batch helpers.

Every cloud passes through ``Compose([KeepNormalTarget(), CenterScale()])``: only ``pos`` and
``normal`` reach the model (the target is split off by :func:`split_batch`), and clouds are
centred, so that the random O(3) maps of augmentation and rotated evaluation
(:func:`rotate_batch`) act about the cloud's centre.
"""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data, Dataset
from torch_geometric.transforms import BaseTransform, Compose

from tensorframes.data import (
    CenterScale,
    MeshFolder,
    ModelNet40Normals,
    SyntheticShapes,
    default_cache_dir,
)
from tensorframes.testing import random_orthogonal

from ._normals_config import SYNTHETIC_DEFAULT_SHAPES, Config

__all__ = [
    "KeepNormalTarget",
    "build_datasets",
    "check_finite_dataset",
    "cloud_names",
    "normals_transform",
    "random_o3",
    "rotate_batch",
    "split_batch",
]


class KeepNormalTarget(BaseTransform):
    """Keep only ``pos`` and ``normal`` (nothing else may leak into the model's input)."""

    def forward(self, data: Data) -> Data:
        return Data(pos=data.pos, normal=data.normal)


def normals_transform() -> Compose:
    """The transform applied to every cloud of every data set."""
    # centring first: random O(3) maps (augmentation, rotated evaluation) act about the origin
    return Compose([KeepNormalTarget(), CenterScale()])


def build_datasets(
    cfg: Config, *, split: str = "test", need_train: bool = True
) -> tuple[Dataset | None, Dataset]:
    """``(train, test)`` datasets for ``cfg``; raises ``ValueError`` / ``FileNotFoundError``
    with the data layer's message for corrupted or missing data.

    ``split="all"`` (``--data meshes`` only): every mesh of the folder is a test cloud and
    ``train`` is ``None``; so is ``train`` for ``cfg.test_fraction == 1``, which
    ``need_train=True`` (training) refuses. The caches of ``MeshFolder`` and
    ``ModelNet40Normals`` go below ``cfg.cache`` when set, else to the data layer's default
    (``~/.cache/tensorframes``), never into the data folder."""
    if split not in ("test", "all"):
        raise ValueError(f"--split must be test or all, got {split!r}")
    if split == "all" and cfg.data != "meshes":
        raise ValueError(
            f"--split all evaluates every file of a mesh folder (--data meshes); with --data "
            f"{cfg.data} use the data set's test split"
        )
    root = cfg.data_root
    transform = normals_transform()
    train: Dataset | None
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
        train = SyntheticShapes(
            root,
            split="train",
            num_shapes=cfg.num_shapes or SYNTHETIC_DEFAULT_SHAPES["train"],
            **common,
        )
        test = SyntheticShapes(
            root,
            split="test",
            num_shapes=cfg.num_test_shapes or SYNTHETIC_DEFAULT_SHAPES["test"],
            **common,
        )
    elif cfg.data == "modelnet":
        cache = _cache_dir(cfg, "modelnet40normals", root)
        kw = dict(num_points=cfg.num_points, transform=transform, cache_dir=cache)
        train = ModelNet40Normals(root, "train", **kw)
        test = ModelNet40Normals(root, "test", **kw)
        train = _subset(train, cfg.num_shapes, cfg.data_seed)
        test = _subset(test, cfg.num_test_shapes, cfg.data_seed + 1)
    else:
        full = MeshFolder(
            root,
            num_points=cfg.num_points,
            seed=cfg.data_seed,
            transform=transform,
            cache_dir=_cache_dir(cfg, "meshfolder", root),
        )
        if split == "all" or cfg.test_fraction == 1:
            if need_train:
                raise ValueError(
                    f"--test-fraction {cfg.test_fraction} puts every mesh of {root} into the "
                    "test set and leaves none for training (to evaluate every mesh use "
                    "eval --split all)"
                )
            train, test = None, full
        else:
            if len(full) < 2:
                raise ValueError(
                    f"--data meshes: {root} holds {len(full)} mesh; a train/test split needs "
                    "at least 2 (to evaluate every mesh use eval --split all)"
                )
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.data_seed))
            n_test = min(len(full) - 1, max(1, round(cfg.test_fraction * len(full))))
            test = full.index_select(perm[:n_test].sort().values)
            train = full.index_select(perm[n_test:].sort().values)
            train = _subset(train, cfg.num_shapes, cfg.data_seed)
        test = _subset(test, cfg.num_test_shapes, cfg.data_seed + 1)
    for name, ds in (("train", train), ("test", test)):
        if ds is not None:
            check_finite_dataset(ds, f"{cfg.data} {name} set ({root})")
    return train, test


def _cache_dir(cfg: Config, kind: str, root: str) -> str | None:
    """``<--cache>/<kind>/<data folder name>-<digest>``, or ``None`` (the data layer's default,
    ``~/.cache/tensorframes/...``)."""
    return None if cfg.cache is None else default_cache_dir(kind, root, base=cfg.cache)


def cloud_names(ds: Dataset) -> list[str] | None:
    """The file (``MeshFolder``) or shape id (``ModelNet40Normals``) of every cloud of ``ds``
    in dataset order, or ``None`` for data without names (synthetic)."""
    names = getattr(ds, "files", None) or getattr(ds, "shape_ids", None)
    if names is None:
        return None
    return [str(names[int(i)]) for i in ds.indices()]


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return ds.index_select(perm[:n].sort().values)


def check_finite_dataset(ds: Dataset, where: str) -> None:
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


# =============================================================================== batches
def split_batch(batch: Batch, device: torch.device) -> tuple[Batch, torch.Tensor]:
    """Model input (``pos``, ``batch``, ``ptr`` only) and the target normals."""
    batch = batch.to(device)
    target = batch.normal
    del batch.normal
    return batch, target


def rotate_batch(batch: Batch, target: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Apply ``Q[g]`` (``(B, 3, 3)``) to cloud ``g``'s positions and normals (about the
    origin; the clouds are centred). Returns the rotated target; ``batch.pos`` is replaced."""
    Qn = Q.to(device=batch.pos.device)[batch.batch]
    pos = torch.einsum("nij,nj->ni", Qn, batch.pos.to(Qn.dtype)).to(batch.pos.dtype)
    batch.pos = pos
    return torch.einsum("nij,nj->ni", Qn, target.to(Qn.dtype)).to(target.dtype)


def random_o3(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` Haar-random elements of O(3) (reflections included), float64: one per cloud,
    drawn by :func:`tensorframes.testing.random_orthogonal`."""
    return random_orthogonal(n, 3, det=None, generator=generator, dtype=torch.float64)
