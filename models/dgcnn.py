"""DGCNN for per-point regression, made equivariant with tensor frames.

Wang et al., "Dynamic Graph CNN for Learning on Point Clouds" (TOG 2019), built from stock
``EdgeConv`` layers wrapped with :func:`tensorframes.nn.wrap`. The first layer works on the k-NN
graph of the positions with the centred positions as input (in each point's frame); later layers
rebuild the graph as the k-NN graph of the *world-frame* features (the only frame in which
distances between features of different points mean something; this is also what a wrapped
``DynamicEdgeConv`` does). With identity frames this is the ordinary DGCNN.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import EdgeConv
from torch_geometric.utils import scatter

import tensorframes as tf
from tensorframes.nn import to_global, to_local, wrap

from ._common import FrameBuilder, check_batch, mlp, normal_head

VECTOR = tf.TensorReps("1x1n")


class DGCNN(nn.Module):
    """Equivariant DGCNN predicting one world-frame vector per point.

    Args:
        frames: ``"plain"``, ``"augment"`` (identity frames), ``"pca"`` or ``"learned"``.
        hidden: reps of every EdgeConv layer's output.
        num_layers: number of EdgeConv layers (the first on positions).
        k: neighbours per point (graph and frames).
        width: hidden width of the MLPs.
    """

    def __init__(
        self,
        *,
        frames: str = "pca",
        hidden: str = "16x0n+8x1n+4x2n",
        num_layers: int = 3,
        k: int = 16,
        width: int = 64,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.reps = tf.TensorReps(hidden)
        self.k = k
        self.frames = FrameBuilder(frames, k=k)
        c = self.reps.dim
        self.convs = nn.ModuleList(
            [wrap(EdgeConv(mlp(2 * VECTOR.dim, width, c)), local={"x": VECTOR})]
            + [wrap(EdgeConv(mlp(2 * c, width, c)), local={"x": self.reps})
               for _ in range(num_layers - 1)]
        )
        self.mix = mlp(num_layers * c, width, c)
        self.head = normal_head(c, width)

    def forward(self, data: Data) -> torch.Tensor:
        pos, batch = check_batch(data)
        with torch.no_grad():
            edge_index = tf.graph.knn_graph(pos, self.k, batch)
        frames = self.frames(pos, batch, edge_index)
        centred = pos - scatter(pos, batch, 0, reduce="mean")[batch]
        h = to_local(centred, frames, VECTOR)
        outs = []
        for i, conv in enumerate(self.convs):
            if i > 0:
                with torch.no_grad():
                    world = to_global(h, frames, self.reps)
                    edge_index = tf.graph.knn_graph(world, self.k, batch)
            h = conv(h, edge_index, frames=frames).relu()
            outs.append(h)
        h = self.mix(torch.cat(outs, -1)).relu()
        return to_global(self.head(h), frames, VECTOR)
