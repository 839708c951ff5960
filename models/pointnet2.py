"""PointNet++ for per-point regression, made equivariant with tensor frames.

Qi et al., "PointNet++" (NeurIPS 2017), segmentation variant, built from stock PyG layers:
set abstraction = farthest-point sampling + k-NN grouping + ``PointNetConv``; feature
propagation = ``knn_interpolate`` + skip connection + MLP. Every ``PointNetConv`` is wrapped with
:func:`tensorframes.nn.wrap`, so neighbours' tensorial features are carried into the receiving
point's frame; interpolation is the frame-aware :func:`tensorframes.nn.knn_interpolate`. With
identity frames (``plain``/``augment``) this is exactly the ordinary network.

Options beyond the frames: ``messages`` picks what the hidden features are made of (scalars
only, i.e. local canonicalisation, up to tensors or irreps, at one feature dimension per level,
so every message type has the same parameter count), and ``update_frames`` refines the frames
after the first two set-abstraction layers with :class:`tensorframes.frames.FrameUpdate`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import PointNetConv

import tensorframes as tf
from tensorframes.nn import knn_interpolate, to_global, wrap

from ._common import (
    FrameBuilder,
    check_batch,
    frame_update,
    hidden_reps,
    mlp,
    normal_head,
    update_method,
)

#: Feature dimension per level (full resolution, first and second sampled level).
DIMS = (38, 76, 152)
VECTOR = tf.TensorReps("1x1n")


class PointNet2(nn.Module):
    """Equivariant PointNet++ predicting one world-frame vector per point.

    Args:
        frames: ``"plain"``, ``"augment"`` (identity frames), ``"pca"``, ``"learned"``,
            ``"three_nn"`` or ``"random"`` (see :class:`models._common.FrameBuilder`).
        messages: ``"scalar"`` (``38x0n / 76x0n / 152x0n``: canonicalisation), ``"vector"``
            (``8x0n+10x1n`` and multiples), ``"tensor"`` (``8x0n+4x1n+2x2n`` and multiples) or
            ``"irreps"`` (``8x0e+5x1o+3x2e`` and multiples, spherical); 38 / 76 / 152 dims.
        hidden: reps (TensorReps or Irreps strings) of the features at full resolution and at
            the two sampled levels; overrides ``messages`` when given.
        update_frames: ``False``; ``True`` or ``"gram_schmidt"``, ``"quaternion"`` or
            ``"axis_angle"``: an O(3) :class:`~tensorframes.frames.FrameUpdate` after the
            first and the second set-abstraction layer refines that level's frames
            (``U_i R_i``) and re-expresses its features (``rho(U_i) x_i``); the coarser levels
            sample the refined frames, and interpolation, skip connections and the head use
            them. Not with identity frames.
        ratios: sampling ratios of the two set-abstraction levels.
        k: neighbours per point in every grouping (and for the frames).
        width: hidden width of the MLPs.

    Shapes:
        input: a PyG ``Batch`` with ``pos (N, 3)`` and ``batch (N,)``; output ``(N, 3)``.
    """

    def __init__(
        self,
        *,
        frames: str = "pca",
        messages: str = "tensor",
        hidden: tuple[str, str, str] | None = None,
        update_frames: bool | str = False,
        ratios: tuple[float, float] = (0.25, 0.25),
        k: int = 16,
        width: int = 64,
    ) -> None:
        super().__init__()
        default = hidden_reps(messages, DIMS)  # also checks `messages`
        hidden = default if hidden is None else hidden
        if isinstance(hidden, str) or len(hidden) != 3:
            raise ValueError(f"hidden must give the reps of the 3 levels, got {hidden!r}")
        self.messages = messages
        self.reps = [tf.reps.as_reps(h) for h in hidden]
        method = update_method(update_frames, frames)
        self.update_frames = method or False
        self.ratios, self.k = tuple(ratios), k
        self.frames = FrameBuilder(frames, k=k)
        c0, c1, c2 = (r.dim for r in self.reps)
        pos_world = {"pos": "1x1n"}
        self.conv0 = wrap(PointNetConv(mlp(3, width, c0), add_self_loops=False),
                          local={"x": self.reps[0]}, world=pos_world)
        self.conv1 = wrap(PointNetConv(mlp(c0 + 3, width, c1), add_self_loops=False),
                          local={"x": self.reps[0]}, world=pos_world)
        self.conv2 = wrap(PointNetConv(mlp(c1 + 3, width, c2), add_self_loops=False),
                          local={"x": self.reps[1]}, world=pos_world)
        self.fp2 = mlp(c2 + c1, width, c1)
        self.fp1 = mlp(c1 + c0, width, c0)
        self.head = normal_head(c0, width)
        self.update0 = frame_update(method, self.reps[0])
        self.update1 = frame_update(method, self.reps[1])

    def _sample(
        self, pos: torch.Tensor, batch: torch.Tensor, ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            idx = tf.graph.fps(pos, batch, ratio, random_start=False)
            sub_pos, sub_batch = pos[idx], batch[idx]
            # bipartite k-NN: row 0 = neighbours in the finer level, row 1 = sampled centres
            y_idx, x_idx = tf.graph.knn(pos, sub_pos, self.k, batch, sub_batch)
        return idx, sub_pos, sub_batch, torch.stack([x_idx, y_idx])

    def forward(self, data: Data) -> torch.Tensor:
        pos, batch = check_batch(data)
        with torch.no_grad():
            edge_index0 = tf.graph.knn_graph(pos, self.k, batch)
        F0 = self.frames(pos, batch, edge_index0)
        h0 = self.conv0(None, pos, edge_index0, frames=F0).relu()
        if self.update0 is not None:
            h0, F0 = self.update0(h0, F0)

        idx1, pos1, batch1, ei1 = self._sample(pos, batch, self.ratios[0])
        F1 = F0.index_select(idx1)
        h1 = self.conv1((h0, h0[idx1]), (pos, pos1), ei1, frames=(F0, F1)).relu()
        if self.update1 is not None:
            h1, F1 = self.update1(h1, F1)

        idx2, pos2, batch2, ei2 = self._sample(pos1, batch1, self.ratios[1])
        F2 = F1.index_select(idx2)
        h2 = self.conv2((h1, h1[idx2]), (pos1, pos2), ei2, frames=(F1, F2)).relu()

        up1 = knn_interpolate(h2, pos2, pos1, F2, F1, self.reps[2], batch2, batch1, k=3)
        g1 = self.fp2(torch.cat([up1, h1], -1)).relu()
        up0 = knn_interpolate(g1, pos1, pos, F1, F0, self.reps[1], batch1, batch, k=3)
        g0 = self.fp1(torch.cat([up0, h0], -1)).relu()
        return to_global(self.head(g0), F0, VECTOR)
