"""Data for normal regression on point clouds.

Datasets (PyG :class:`~torch_geometric.data.InMemoryDataset`; every item a
:class:`~torch_geometric.data.Data` with ``pos`` ``(N, 3)`` float32 and unit ``normal``
``(N, 3)`` float32):

* :class:`SyntheticShapes`: built-in seeded analytic surfaces with exact normals.
* :class:`ModelNet40Normals`: the ``modelnet40_normal_resampled`` files (never downloaded).
* :class:`MeshFolder`: points sampled from any folder of ``.off`` / ``.ply`` meshes.

Transforms in :mod:`tensorframes.data.transforms`: :class:`RandomO3`, :class:`CenterScale`,
:class:`Jitter`. Batch with :class:`torch_geometric.loader.DataLoader`.
"""

from . import transforms
from ._cache import CacheWarning
from ._mesh import MeshFolder, read_mesh, read_off, read_ply, sample_triangles
from ._modelnet import ModelNet40Normals, read_xyz_normal
from ._synthetic import NONUNIFORM_MIN_DENSITY, SHAPES, SyntheticShapes
from .transforms import CenterScale, Jitter, RandomO3

__all__ = [
    "NONUNIFORM_MIN_DENSITY",
    "SHAPES",
    "CacheWarning",
    "CenterScale",
    "Jitter",
    "MeshFolder",
    "ModelNet40Normals",
    "RandomO3",
    "SyntheticShapes",
    "read_mesh",
    "read_off",
    "read_ply",
    "read_xyz_normal",
    "sample_triangles",
    "transforms",
]
