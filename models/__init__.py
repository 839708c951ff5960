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
``"pca"`` (PCA frames), ``"learned"`` (``LearnedFrames``), ``"three_nn"`` (frames from the three
nearest neighbours, ``tf.frames.three_nn``) and ``"random"`` (a control: Haar-random O(3) frames
per point, drawn afresh on every call from the global torch RNG; equivariant only in
distribution, it shows what frames consistent with the geometry buy).

Options of the frame-based archs (stored in ``model.options``, so checkpoints rebuild them):

* ``messages``: what the hidden features are made of, at one feature dimension per level (38 /
  76 / 152 for PointNet++, 76 for DGCNN), so all types have the same parameter count:
  ``"scalar"`` (``0n`` only: local canonicalisation, a neighbour's numbers arrive in its own
  frame's coordinates), ``"vector"`` (``0n + 1n``), ``"tensor"`` (``0n + 1n + 2n``, the default)
  or ``"irreps"`` (``0e + 1o + 2e``, spherical). An explicit ``hidden=`` overrides it.
* ``update_frames``: ``False`` (default), ``True`` / ``"gram_schmidt"``, ``"quaternion"`` or
  ``"axis_angle"``: an O(3) ``tf.frames.FrameUpdate`` after every wrapped layer but the last
  refines the frames (``U_i R_i``) and re-expresses the features held in them; all later
  layers, interpolation and the head use the refined frames. Frame flavours only
  (``ValueError`` for plain/augment).

``models.load(path)`` rebuilds the model of a checkpoint written by
``python -m examples.normals train`` and loads its weights. ``models.predict_normals(model,
pos)`` runs any of them on one cloud of any size (spatial tiles with a k-NN halo above
``tile_points``, every tile normalised like the whole cloud; see its docstring for which models
tile exactly).
"""

from ._common import MESSAGES
from ._predict import predict_normals
from ._registry import ARCHS, FLAVOURS, build, load
from .baselines import PCABaseline, pca_normals

__all__ = [
    "ARCHS", "FLAVOURS", "MESSAGES", "PCABaseline", "build", "load", "pca_normals",
    "predict_normals",
]
