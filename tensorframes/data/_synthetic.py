"""``SyntheticShapes``: seeded point clouds of analytic surfaces with exact normals."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from .._math import haar_orthogonal_np
from ._cache import CachedInMemoryDataset
from ._shapes import CAD_CATALOGUE, CATALOGUE
from ._validate import check_points

#: The default shapes of ``SyntheticShapes``; ``y`` is the index in :data:`ALL_SHAPES`, whose
#: first entries these are.
SHAPES: tuple[str, ...] = tuple(CATALOGUE)
#: CAD-like, noise-free-friendly shapes (flat faces, sharp edges, exact symmetries); drawn only
#: when asked for, e.g. ``SyntheticShapes(root, shapes=CAD_SHAPES, noise=0.0)``.
CAD_SHAPES: tuple[str, ...] = ("cube", "cylinder", "hex_prism", "slotted_box")
#: Every name ``shapes=`` accepts: :data:`SHAPES`, then the CAD-only names.
ALL_SHAPES: tuple[str, ...] = SHAPES + tuple(CAD_CATALOGUE)
_PRIMITIVES = {**CATALOGUE, **CAD_CATALOGUE}

_SPLITS = {"train": 0, "test": 1}
_DENSITIES = ("uniform", "nonuniform")
#: Relative density at the sparse end of a ``density="nonuniform"`` gradient (dense end: 1).
NONUNIFORM_MIN_DENSITY = 0.1


class SyntheticShapes(CachedInMemoryDataset):
    r"""Point clouds sampled from analytic surfaces, with exact unit normals.

    A built-in, deterministic generator for normal regression; nothing is downloaded. Cloud
    ``i`` of a split is drawn from its own random stream derived from ``(seed, split, i)``
    (train and test use different streams), so the same arguments give bit-identical tensors
    on every run. Generated once and cached under ``root/processed``.

    **Shape catalogue** (:data:`SHAPES`; parameters drawn at random per cloud, canonical size
    about 1):

    * ``"ellipsoid"``: random axes in ``[0.4, 1]``.
    * ``"torus"``: tube radius ``r`` below the centre-circle radius ``R``.
    * ``"superquadric"``: superellipsoid with exponents ``e1, e2`` in ``[0.3, 1.8]`` (from
      rounded boxes to pinched shapes); normals are the normalised gradient of the implicit
      function.
    * ``"cylinder"``: closed cylinder with both caps. ``"cone"``: closed cone with its base.
    * ``"box"``: box with sharp edges (normals of its six faces).
    * ``"paraboloid"``, ``"saddle"``: open patches of ``z = (k1 x^2 + k2 y^2) / 2`` over a disk
      (normals on the ``+z`` side); ``"open_cylinder"``: a cylinder without caps (normals away
      from the axis).
    * ``"union"``: 2-3 randomly placed closed primitives. Points of one part lying inside
      another part's volume are **removed**, so only the union's visible boundary is sampled;
      each point's normal is the exact outward normal of the part it came from.

    **CAD-like shapes** (:data:`CAD_SHAPES`, only when named in ``shapes``; the default
    ``shapes`` and so the default data are unchanged): ``"cube"`` (half edge in
    ``[0.4, 0.8]``), ``"cylinder"`` (flat caps, as above), ``"hex_prism"`` (hexagonal prism
    with a round hole on its axis, like a nut without thread) and ``"slotted_box"`` (a box
    with a slot through its height: U-shaped cross-section). Flat faces, sharp and concave
    edges, exact face normals (outward; into the hole at a hole) and exact symmetries; with
    ``noise=0`` (the default) the points lie exactly on the faces (up to float rounding), the
    setting that tests the equivariant sign tie-break of :func:`tensorframes.frames.pca`.

    Sampling is exactly area-uniform (faces and parts in proportion to their areas, curved
    surfaces by rejection on the exact area element). Closed-surface normals point outward.
    Each cloud then gets a random rotation (SO(3); unless ``rotate=False``), scale
    (log-uniform in ``[0.5, 2]``) and centre (uniform in ``[-1, 1]^3``), stored as
    ``pose_rotation`` ``(1, 3, 3)``, ``pose_scale`` ``(1,)`` and ``pose_translation``
    ``(1, 3)`` with ``pos_clean = pose_scale * canonical @ pose_rotation.T + pose_translation``.

    Args:
        root: directory for the processed cache.
        split: ``"train"`` or ``"test"``.
        num_shapes: number of clouds; shape kinds are balanced (``i % len(shapes)``) and
            shuffled.
        num_points: points per cloud.
        noise: Gaussian displacement with root-mean-square length ``sigma = noise * scale``,
            ``scale`` being the cloud's radius (largest distance of its clean points from their
            centroid). A fraction ``noise_normal_frac`` of the variance lies along the normal,
            the rest is split equally between the two tangent directions, i.e. the normal
            component has std ``sigma * sqrt(f)`` and each tangential one
            ``sigma * sqrt((1 - f) / 2)``. The default ``f = 1/3`` is isotropic noise (std
            ``sigma / sqrt(3)`` per axis). Normals stay those of the clean surface point.
        noise_normal_frac: ``f`` in ``[0, 1]`` above.
        density: ``"uniform"`` (area-uniform) or ``"nonuniform"``: thinned by rejection so the
            density (relative to area) grows linearly from :data:`NONUNIFORM_MIN_DENSITY` to 1
            along a random direction across the shape's extent in that direction (estimated
            from 4096 auxiliary samples).
        outliers: fraction in ``[0, 1]``; ``round(outliers * num_points)`` points (chosen at
            random) are replaced by points uniform in the cloud's axis-aligned bounding box.
            They keep the normal of the point they replace and are flagged in the boolean
            mask ``is_outlier`` ``(N,)`` (present, all ``False``, when ``outliers == 0``).
        shapes: the shape kinds to draw from (names from :data:`ALL_SHAPES`; default
            :data:`SHAPES`; :data:`CAD_SHAPES` for the CAD-like set).
        seed: non-negative integer seed.
        rotate: draw a random rotation per cloud (default). ``False`` keeps every shape in its
            canonical orientation (scale and centre are still random): the setting in which a
            plain network can exploit orientation, and so where its error under random O(3)
            exposes the missing equivariance.
        transform, pre_transform: as in PyG (``pre_transform`` is part of the cache key via its
            ``repr``).
        force_reload: regenerate even if a valid cache exists.

    Every :class:`~torch_geometric.data.Data` has ``pos`` ``(N, 3)`` float32, ``normal``
    ``(N, 3)`` float32 unit vectors, ``y`` ``(1,)`` the index of the shape name in
    :data:`ALL_SHAPES` (= its index in :data:`SHAPES` for the default shapes), ``is_outlier``
    ``(N,)`` bool and the pose fields above.

    The processed file name is ``synthetic_<split>_<num_shapes>x<num_points>_<digest>.pt``,
    the digest being a SHA-256 of every option (and ``repr(pre_transform)``); the file also
    stores the option key and a checksum of its tensors, and is regenerated if either does not
    match.
    """

    #: The shape-name tuples of this module, for access from the class.
    SHAPES = SHAPES
    CAD_SHAPES = CAD_SHAPES
    ALL_SHAPES = ALL_SHAPES

    def __init__(
        self,
        root: str,
        *,
        split: str = "train",
        num_shapes: int = 512,
        num_points: int = 1024,
        noise: float = 0.0,
        noise_normal_frac: float = 1.0 / 3.0,
        density: str = "uniform",
        outliers: float = 0.0,
        shapes: Sequence[str] = SHAPES,
        seed: int = 0,
        rotate: bool = True,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.num_shapes = _positive_int("num_shapes", num_shapes)
        self.num_points = _positive_int("num_points", num_points)
        self.noise = _fraction("noise", noise, upper=None)
        self.noise_normal_frac = _fraction("noise_normal_frac", noise_normal_frac)
        if density not in _DENSITIES:
            raise ValueError(f"density must be one of {_DENSITIES}, got {density!r}")
        self.density = density
        self.outliers = _fraction("outliers", outliers)
        if isinstance(shapes, str):
            shapes = (shapes,)
        shapes = tuple(shapes)
        unknown = [s for s in shapes if s not in _PRIMITIVES]
        if not shapes or unknown or len(set(shapes)) != len(shapes):
            raise ValueError(
                f"shapes must be a non-empty sequence of distinct names from {ALL_SHAPES}, "
                f"got {shapes!r}"
            )
        self.shapes = shapes
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        if not isinstance(rotate, bool):
            raise TypeError(f"rotate must be a bool, got {type(rotate).__name__}")
        self.rotate = rotate
        super().__init__(root, transform, pre_transform, force_reload)

    def _cache_prefix(self) -> str:
        return f"synthetic_{self.split}_{self.num_shapes}x{self.num_points}"

    def _cache_key(self) -> dict:
        return {
            "split": self.split,
            "num_shapes": self.num_shapes,
            "num_points": self.num_points,
            "noise": self.noise,
            "noise_normal_frac": self.noise_normal_frac,
            "density": self.density,
            "outliers": self.outliers,
            "shapes": list(self.shapes),
            "seed": self.seed,
            "rotate": self.rotate,
        }

    def _generate(self) -> tuple[list[Data], dict]:
        split_id = _SPLITS[self.split]
        order_rng = np.random.default_rng(np.random.SeedSequence([self.seed, split_id]))
        kinds = order_rng.permutation(np.arange(self.num_shapes) % len(self.shapes))
        data_list = []
        for i, k in enumerate(kinds):
            name = self.shapes[int(k)]
            cloud = generate_cloud(
                name,
                np.random.SeedSequence([self.seed, split_id, i]),
                num_points=self.num_points,
                noise=self.noise,
                noise_normal_frac=self.noise_normal_frac,
                density=self.density,
                outliers=self.outliers,
                rotate=self.rotate,
            )
            check_points(cloud["pos"], cloud["normal"], f"shape index {i} ({name})")
            data_list.append(
                Data(
                    pos=torch.from_numpy(cloud["pos"].astype(np.float32)),
                    normal=torch.from_numpy(cloud["normal"].astype(np.float32)),
                    y=torch.tensor([ALL_SHAPES.index(name)]),
                    is_outlier=torch.from_numpy(cloud["is_outlier"]),
                    pose_rotation=torch.from_numpy(cloud["rotation"].astype(np.float32))[None],
                    pose_scale=torch.tensor([cloud["scale"]], dtype=torch.float32),
                    pose_translation=torch.from_numpy(cloud["translation"].astype(np.float32))[
                        None
                    ],
                )
            )
        return data_list, {}

    @property
    def num_classes(self) -> int:
        """``len(SHAPES)``, or ``len(ALL_SHAPES)`` when a CAD-only shape is drawn."""
        return len(SHAPES) if all(s in SHAPES for s in self.shapes) else len(ALL_SHAPES)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)}, split={self.split!r}, "
            f"num_points={self.num_points}, noise={self.noise}, density={self.density!r}, "
            f"outliers={self.outliers})"
        )


def generate_cloud(
    name: str,
    seed_seq: np.random.SeedSequence,
    *,
    num_points: int,
    noise: float = 0.0,
    noise_normal_frac: float = 1.0 / 3.0,
    density: str = "uniform",
    outliers: float = 0.0,
    rotate: bool = True,
) -> dict:
    """One cloud in float64 numpy (the work horse of :class:`SyntheticShapes`).

    Independent child streams are used for the shape parameters, the surface samples, the
    density direction, the pose, the noise and the outliers, so e.g. clouds that differ only in
    ``noise`` share their clean points exactly. Returns a dict with ``pos``, ``normal``,
    ``is_outlier``, the pose (``rotation``, ``scale``, ``translation``) and
    ``density_direction`` (world frame; the density grows along it when non-uniform)."""
    ss_shape, ss_sample, ss_density, ss_pose, ss_noise, ss_out = seed_seq.spawn(6)
    shape = _PRIMITIVES[name].random(np.random.default_rng(ss_shape))

    accept = None
    density_rng = np.random.default_rng(ss_density)
    direction = haar_orthogonal_np(density_rng, 3, det=1)[0]  # a uniform unit vector
    if density == "nonuniform":
        # extent of the shape along `direction`, from auxiliary area-uniform samples
        proj = shape.sample(density_rng, 4096)[0] @ direction
        lo, hi = float(proj.min()), float(proj.max())
        floor = NONUNIFORM_MIN_DENSITY

        def accept(p: np.ndarray) -> np.ndarray:
            t = np.clip((p @ direction - lo) / (hi - lo), 0.0, 1.0)
            return floor + (1.0 - floor) * t

    p, n, _ = shape.sample(np.random.default_rng(ss_sample), num_points, accept)

    pose_rng = np.random.default_rng(ss_pose)
    # drawn even when unused: the other pose draws stay the same
    R = haar_orthogonal_np(pose_rng, 3, det=1)
    if not rotate:
        R = np.eye(3)
    scale = float(math.exp(pose_rng.uniform(math.log(0.5), math.log(2.0))))
    translation = pose_rng.uniform(-1.0, 1.0, 3)
    p = scale * (p @ R.T) + translation
    n = n @ R.T
    n = n / np.linalg.norm(n, axis=1, keepdims=True)

    if noise > 0:
        rng = np.random.default_rng(ss_noise)
        sigma = noise * float(np.linalg.norm(p - p.mean(0), axis=1).max())
        t1, t2 = tangent_basis(n)
        xi = rng.standard_normal((len(p), 3))
        f = noise_normal_frac
        p = p + sigma * (
            math.sqrt(f) * xi[:, :1] * n
            + math.sqrt((1.0 - f) / 2.0) * (xi[:, 1:2] * t1 + xi[:, 2:3] * t2)
        )

    is_outlier = np.zeros(len(p), dtype=bool)
    n_out = int(math.floor(outliers * len(p) + 0.5))
    if n_out > 0:
        rng = np.random.default_rng(ss_out)
        idx = rng.choice(len(p), size=n_out, replace=False)
        lo_box, hi_box = p.min(0), p.max(0)
        p = p.copy()
        p[idx] = lo_box + rng.random((n_out, 3)) * (hi_box - lo_box)
        is_outlier[idx] = True

    return {
        "pos": p,
        "normal": n,
        "is_outlier": is_outlier,
        "rotation": R,
        "scale": scale,
        "translation": translation,
        "density_direction": direction @ R.T,
    }


def tangent_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit tangent vectors completing each unit normal to an orthonormal basis."""
    helper = np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t1 = np.cross(n, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    return t1, np.cross(n, t1)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _fraction(name: str, value: object, upper: float | None = 1.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (upper is not None and v > upper):
        rng = "[0, 1]" if upper is not None else ">= 0"
        raise ValueError(f"{name} must be finite and {rng}, got {value!r}")
    return v
