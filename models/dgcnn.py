"""DGCNN for per-point regression, made equivariant with tensor frames.

Wang et al., "Dynamic Graph CNN for Learning on Point Clouds" (TOG 2019), built from stock
``EdgeConv`` layers wrapped with :func:`tensorframes.nn.wrap`. The first layer works on the k-NN
graph of the positions with the centred positions as input (in each point's frame); later layers
rebuild the graph as the k-NN graph of the *world-frame* features (the only frame in which
distances between features of different points mean something; this is also what a wrapped
``DynamicEdgeConv`` does). With identity frames this is the ordinary DGCNN.

Options beyond the frames: ``messages`` picks what the hidden features are made of (scalars
only, i.e. local canonicalisation, up to tensors or irreps, all 76-dimensional, so every message
type has the same parameter count), and ``update_frames`` refines the frames after every
EdgeConv layer but the last with :class:`tensorframes.frames.FrameUpdate`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import EdgeConv
from torch_geometric.utils import scatter

import tensorframes as tf
from tensorframes.nn import to_global, to_local, wrap

from ._common import (
    FrameBuilder,
    check_batch,
    frame_update,
    hidden_reps,
    mlp,
    normal_head,
    update_method,
)

VECTOR = tf.TensorReps("1x1n")
#: Feature dimension of every EdgeConv layer's output.
DIM = 76


class DGCNN(nn.Module):
    """Equivariant DGCNN predicting one world-frame vector per point.

    Args:
        frames: ``"plain"``, ``"augment"`` (identity frames), ``"pca"``, ``"learned"``,
            ``"three_nn"`` or ``"random"`` (see :class:`models._common.FrameBuilder`).
        messages: ``"scalar"`` (``76x0n``: canonicalisation), ``"vector"`` (``16x0n+20x1n``),
            ``"tensor"`` (``16x0n+8x1n+4x2n``) or ``"irreps"`` (``16x0e+10x1o+6x2e``).
        hidden: reps (a TensorReps or Irreps string) of every EdgeConv layer's output;
            overrides ``messages`` when given.
        update_frames: ``False``; ``True`` or ``"gram_schmidt"``, ``"quaternion"`` or
            ``"axis_angle"``: an O(3) :class:`~tensorframes.frames.FrameUpdate` after every
            EdgeConv layer but the last refines the frames (``U_i R_i``) and re-expresses that
            layer's output (``rho(U_i) x_i``) and every earlier layer's output kept for the
            final concatenation, so all of them are in the same frames. Later layers, their
            k-NN graphs (built on world-frame features) and the head use the refined frames.
            Not with identity frames.
        num_layers: number of EdgeConv layers (the first on positions).
        k: neighbours per point (graph and frames).
        width: hidden width of the MLPs.
    """

    def __init__(
        self,
        *,
        frames: str = "pca",
        messages: str = "tensor",
        hidden: str | None = None,
        update_frames: bool | str = False,
        num_layers: int = 3,
        k: int = 16,
        width: int = 64,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        (default,) = hidden_reps(messages, (DIM,))  # also checks `messages`
        self.messages = messages
        self.reps = tf.reps.as_reps(default if hidden is None else hidden)
        method = update_method(update_frames, frames)
        self.update_frames = method or False
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
        self.updates = (
            nn.ModuleList([frame_update(method, self.reps) for _ in range(num_layers - 1)])
            if method is not None else None
        )

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
            if self.updates is not None and i < len(self.convs) - 1:
                h, new = self.updates[i](h, frames)
                # earlier outputs are still in the old frames: carry them by U_i = R'_i R_i^T
                rel = new.matrices @ frames.matrices.transpose(-1, -2)
                outs = [self.reps.transform(o, rel) for o in outs[:-1]] + [h]
                frames = new
        h = self.mix(torch.cat(outs, -1)).relu()
        return to_global(self.head(h), frames, VECTOR)
