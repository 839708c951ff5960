"""No-learning baseline: the PCA normal estimate."""

from __future__ import annotations

import torch

import tensorframes as tf

from ._common import check_batch


def pca_normals(data, k: int = 16) -> torch.Tensor:
    """The classic estimate: the least-variance axis of each point's k-NN covariance.

    Returns ``(N, 3)`` unit vectors (the last row of :func:`tensorframes.frames.pca`; its sign is
    fixed by the third moment of the neighbourhood, so it is unoriented with respect to the
    surface).
    """
    pos, batch = check_batch(data)
    frames = tf.frames.pca(pos, k=k, batch=batch)
    return frames.matrices[:, 2]
