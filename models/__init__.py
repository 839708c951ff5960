"""Reference architectures for normal regression, built on tensorframes.

``models.build(arch, flavour, **options)`` returns an ``nn.Module`` called as ``model(batch)`` on a
PyG ``Batch`` holding ``pos`` (and ``batch``); it returns ``(N, 3)`` world-frame normals
(unnormalised vectors; the sign is meaningless for unoriented normals).

* ``arch="pointnet2"``: PointNet++ (set abstraction with wrapped ``PointNetConv``, feature
  propagation with frame-aware ``knn_interpolate``).
* ``arch="dgcnn"``: DGCNN (wrapped ``EdgeConv``; later layers on the k-NN graph of world-frame
  features).
* ``arch="tp"``: a tensor-product network of ``TPConv`` layers (``flavour="cg"`` or ``"gaunt"``).

Flavours of the frame-based archs: ``"plain"`` (identity frames: an ordinary network),
``"augment"`` (plain, and ``model.augment = True`` asks the trainer for random O(3) augmentation),
``"pca"`` (PCA frames), ``"learned"`` (``LearnedFrames``).
"""

from ._registry import ARCHS, FLAVOURS, build
from .baselines import pca_normals

__all__ = ["ARCHS", "FLAVOURS", "build", "pca_normals"]
