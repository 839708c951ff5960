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

from tensorframes.data import CenterScale, MeshFolder, ModelNet40Normals, SyntheticShapes
from tensorframes.testing import random_orthogonal

from ._normals_config import SYNTHETIC_DEFAULT_SHAPES, Config

__all__ = [
    "KeepNormalTarget",
    "build_datasets",
    "check_finite_dataset",
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


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """``(train, test)`` datasets for ``cfg``; raises ``ValueError`` / ``FileNotFoundError``
    with the data layer's message for corrupted or missing data."""
    root = cfg.data_root
    transform = normals_transform()
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
        train = ModelNet40Normals(root, "train", num_points=cfg.num_points, transform=transform)
        test = ModelNet40Normals(root, "test", num_points=cfg.num_points, transform=transform)
        train = _subset(train, cfg.num_shapes, cfg.data_seed)
        test = _subset(test, cfg.num_test_shapes, cfg.data_seed + 1)
    else:
        full = MeshFolder(root, num_points=cfg.num_points, seed=cfg.data_seed, transform=transform)
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
