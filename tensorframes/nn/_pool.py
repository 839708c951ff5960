"""Pieces of real architectures: equivariant pooling, frame-aware interpolation, I/O layers."""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from ..graph import knn
from ..reps.base import Reps
from ._frame_ops import FramesLike, RepsLike, frame_matrices, parse_reps, to_global, to_local


def global_pool(
    x: torch.Tensor,
    frames: FramesLike,
    reps: RepsLike,
    batch: torch.Tensor | None = None,
    *,
    reduce: str = "mean",
    size: int | None = None,
    out_frames: FramesLike | None = None,
) -> torch.Tensor:
    """Equivariant global pooling: local features to the world frame, pool per graph, and back.

    Returns world-frame graph features ``(B, reps.dim)``, or, with ``out_frames`` (one frame per
    graph), the pooled features in those frames. Only ``"mean"`` and ``"sum"`` are offered: a
    component-wise max of vectors is not equivariant. ``reps`` is a Reps or a reps string
    (TensorReps strings in the frames' dimension).
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum' (max is not equivariant), got {reduce!r}")
    world = to_global(x, frames, reps)  # parses a reps string (and refuses other types)
    if batch is None:
        batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    pooled = scatter(world, batch, dim=0, dim_size=size, reduce=reduce)
    return pooled if out_frames is None else to_local(pooled, out_frames, reps)


def knn_interpolate(
    x: torch.Tensor,
    pos_x: torch.Tensor,
    pos_y: torch.Tensor,
    frames_x: FramesLike,
    frames_y: FramesLike,
    reps: RepsLike,
    batch_x: torch.Tensor | None = None,
    batch_y: torch.Tensor | None = None,
    k: int = 3,
) -> torch.Tensor:
    """Frame-aware ``knn_interpolate`` (PointNet++ feature propagation).

    As :func:`torch_geometric.nn.knn_interpolate` (inverse squared distance weights over the
    ``k`` nearest points of ``pos_x``), except that each neighbour's local features are carried
    into the receiving point's frame before averaging:

    .. math::
        y_i = \\frac{\\sum_{j} w_{ij}\\, \\rho(R_i R_j^\\top) x_j}{\\sum_j w_{ij}},
        \\qquad w_{ij} = 1 / \\max(\\|p_j - p_i\\|^2, 10^{-16})

    ``reps`` is a Reps or a reps string (TensorReps strings in the frames' dimension).

    Shapes:
        x: ``(N_x, reps.dim)``; pos_x: ``(N_x, 3)``; pos_y: ``(N_y, 3)``; returns
        ``(N_y, reps.dim)`` in the frames of ``y``.
    """
    R_x, R_y = frame_matrices(frames_x, name="frames_x"), frame_matrices(frames_y, name="frames_y")
    reps = parse_reps(reps, spatial_dim=R_x.shape[-1])
    if R_x.shape[0] != x.shape[0] or R_y.shape[0] != pos_y.shape[0]:
        raise ValueError(
            f"frames_x/frames_y must have one frame per point: got {R_x.shape[0]} for "
            f"{x.shape[0]} points and {R_y.shape[0]} for {pos_y.shape[0]} points"
        )
    with torch.no_grad():
        y_idx, x_idx = knn(pos_x, pos_y, k, batch_x, batch_y)
    diff = pos_x.index_select(0, x_idx) - pos_y.index_select(0, y_idx)
    weights = 1.0 / (diff * diff).sum(-1, keepdim=True).clamp_min(1e-16)
    rel = R_y.index_select(0, y_idx) @ R_x.index_select(0, x_idx).transpose(-1, -2)
    carried = reps.transform(x.index_select(0, x_idx), rel.to(x.dtype))
    num = scatter(carried * weights, y_idx, 0, dim_size=pos_y.shape[0], reduce="sum")
    den = scatter(weights, y_idx, 0, dim_size=pos_y.shape[0], reduce="sum")
    return num / den


class ToLocal(nn.Module):
    """Input layer: world-frame inputs (normals, velocities, ...) into local features.

    Args:
        reps: a Reps or a reps string (TensorReps strings in ``spatial_dim``, default 3).
    """

    def __init__(self, reps: RepsLike, *, spatial_dim: int = 3) -> None:
        super().__init__()
        self.reps: Reps = parse_reps(reps, spatial_dim=spatial_dim)

    def forward(self, x: torch.Tensor, frames: FramesLike) -> torch.Tensor:
        """``to_local(x, frames, self.reps)``."""
        return to_local(x, frames, self.reps)

    def extra_repr(self) -> str:
        return f"reps={self.reps}"


class ToGlobal(nn.Module):
    """Output layer: local vector/tensor outputs back to world coordinates.

    Args:
        reps: a Reps or a reps string (TensorReps strings in ``spatial_dim``, default 3).
    """

    def __init__(self, reps: RepsLike, *, spatial_dim: int = 3) -> None:
        super().__init__()
        self.reps: Reps = parse_reps(reps, spatial_dim=spatial_dim)

    def forward(self, x: torch.Tensor, frames: FramesLike) -> torch.Tensor:
        """``to_global(x, frames, self.reps)``."""
        return to_global(x, frames, self.reps)

    def extra_repr(self) -> str:
        return f"reps={self.reps}"
