"""Data for normal regression on point clouds.

Datasets (PyG :class:`~torch_geometric.data.InMemoryDataset`; every item a
:class:`~torch_geometric.data.Data` with ``pos`` ``(N, 3)`` float32 and unit ``normal``
``(N, 3)`` float32):

* :class:`SyntheticShapes`: built-in seeded analytic surfaces with exact normals (and, on
  request, noise-free CAD-like solids: :data:`CAD_SHAPES`).
* :class:`ModelNet40Normals`: the ``modelnet40_normal_resampled`` files (never downloaded).
* :class:`MeshFolder`: points sampled from any folder of ``.off`` / ``.ply`` / ``.obj`` /
  ``.stl`` meshes.

Users' files: :func:`read_points` (``.ply`` / ``.off`` / ``.obj`` / ``.stl`` / ``.xyz`` /
``.txt`` / ``.pts`` / ``.npy`` -> ``(N, 3)`` float64) and :func:`write_ply` (points and
normals -> PLY).

Transforms in :mod:`tensorframes.data.transforms`: :class:`RandomO3`, :class:`CenterScale`,
:class:`Jitter`. Batch with :class:`torch_geometric.loader.DataLoader`.
"""

from . import transforms
from ._cache import CacheWarning, default_cache_dir
from ._mesh import MeshFolder, read_mesh, read_obj, read_off, read_ply, read_stl, sample_triangles
from ._modelnet import ModelNet40Normals, read_xyz_normal
from ._pointio import POINT_EXTENSIONS, read_points, write_ply
from ._synthetic import ALL_SHAPES, CAD_SHAPES, NONUNIFORM_MIN_DENSITY, SHAPES, SyntheticShapes
from .transforms import CenterScale, Jitter, RandomO3

__all__ = [
    "ALL_SHAPES",
    "CAD_SHAPES",
    "NONUNIFORM_MIN_DENSITY",
    "POINT_EXTENSIONS",
    "SHAPES",
    "CacheWarning",
    "CenterScale",
    "Jitter",
    "MeshFolder",
    "ModelNet40Normals",
    "RandomO3",
    "SyntheticShapes",
    "default_cache_dir",
    "read_mesh",
    "read_obj",
    "read_off",
    "read_ply",
    "read_points",
    "read_stl",
    "read_xyz_normal",
    "sample_triangles",
    "transforms",
    "write_ply",
]
