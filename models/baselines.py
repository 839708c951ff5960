"""No-learning baseline: the PCA normal estimate (``models.build("pca", "pca", k=16)``)."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data

import tensorframes as tf

from ._common import check_batch


def pca_normals(data: Data, k: int = 16) -> torch.Tensor:
    """The classic estimate: the least-variance axis of each point's k-NN covariance.

    Returns ``(N, 3)`` unit vectors (the last row of :func:`tensorframes.frames.pca`; its sign is
    fixed by the third moment of the neighbourhood, so it is unoriented with respect to the
    surface).
    """
    pos, batch = check_batch(data)
    frames = tf.frames.pca(pos, k=k, batch=batch)
    return frames.matrices[:, 2]


class PCABaseline(nn.Module):
    """:func:`pca_normals` as a parameter-free module (the no-learning baseline).

    Args:
        k: neighbours of each point's covariance (default 16).

    Shapes:
        input: a PyG ``Batch`` with ``pos (N, 3)`` and ``batch (N,)``; output ``(N, 3)``.
    """

    def __init__(self, k: int = 16) -> None:
        super().__init__()
        self.k = int(k)

    def forward(self, data: Data) -> torch.Tensor:
        return pca_normals(data, k=self.k)

    def extra_repr(self) -> str:
        return f"k={self.k}"
