"""Reference architectures for normal regression, built on tensorframes.

``models.build(arch, flavour, **options)`` returns an ``nn.Module`` called as ``model(batch)`` on a
PyG ``Batch`` holding ``pos`` (and ``batch``); it returns ``(N, 3)`` world-frame normals
(unnormalised vectors; the sign is meaningless for unoriented normals).

* ``arch="pointnet2"``: PointNet++ (set abstraction with wrapped ``PointNetConv``, feature
  propagation with frame-aware ``knn_interpolate``).
* ``arch="dgcnn"``: DGCNN (wrapped ``EdgeConv``; later layers on the k-NN graph of world-frame
  features).
* ``arch="tp"``: a tensor-product network of ``TPConv`` layers (``flavour="cg"`` or ``"gaunt"``).
* ``arch="pca"``: the PCA normal estimate (``flavour="pca"``; no parameters, no learning).

Flavours of the frame-based archs: ``"plain"`` (identity frames: an ordinary network),
``"augment"`` (plain, and ``model.augment = True`` asks the trainer for random O(3) augmentation),
``"pca"`` (PCA frames), ``"learned"`` (``LearnedFrames``).

``models.load(path)`` rebuilds the model of a checkpoint written by
``python -m examples.normals train`` and loads its weights.
"""

from ._registry import ARCHS, FLAVOURS, build, load
from .baselines import PCABaseline, pca_normals

__all__ = ["ARCHS", "FLAVOURS", "PCABaseline", "build", "load", "pca_normals"]
