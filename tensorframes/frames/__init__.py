"""Local frames: the :class:`Frames` container and the ways to build them.

- :func:`pca`: local PCA with per-axis sign disambiguation (O(3)-equivariant),
- :func:`gram_schmidt`: frames from equivariant vectors,
- :func:`three_nn`: frames from the three nearest neighbours (classical local reference frame),
- :class:`LearnedFrames`: a small equivariant network predicting frames,
- :class:`FrameUpdate`: frames refined between layers from the nodes' local features,
- :func:`identity`, :func:`random`, :func:`random_global`: baselines.
"""

from ._baselines import identity, random, random_global
from ._frames import Frames
from ._gram_schmidt import gram_schmidt
from ._learned import LearnedFrames
from ._neighbours import three_nn
from ._pca import AMBIGUITY_THRESHOLD, SIGN_RULES, SIGN_TOL, PCAInfo, pca
from ._update import FrameUpdate

__all__ = [
    "AMBIGUITY_THRESHOLD",
    "FrameUpdate",
    "Frames",
    "LearnedFrames",
    "PCAInfo",
    "SIGN_RULES",
    "SIGN_TOL",
    "gram_schmidt",
    "identity",
    "pca",
    "random",
    "random_global",
    "three_nn",
]
