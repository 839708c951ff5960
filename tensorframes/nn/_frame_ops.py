"""Frame changes: world <-> local coordinates and the per-edge relative frames ``R_i R_j^T``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..frames import Frames
from ..reps import as_reps
from ..reps.base import Reps, check_matrices

#: One frame per node: a :class:`~tensorframes.Frames` or its raw ``(N, d, d)`` matrices.
FramesLike = Frames | torch.Tensor
#: ``frames`` of a graph: one :data:`FramesLike`, or a ``(frames_src, frames_dst)`` pair.
GraphFrames = FramesLike | tuple[FramesLike, FramesLike] | list
#: Reps of a feature: a :class:`~tensorframes.reps.Reps` or a reps string.
RepsLike = Reps | str


def parse_reps(spec: RepsLike, *, name: str = "reps", spatial_dim: int = 3) -> Reps:
    """``spec`` as a :class:`Reps`: a Reps as is, a string through
    :func:`tensorframes.reps.as_reps` (``"...n"``/``"...p"`` tokens as TensorReps in
    ``spatial_dim``, ``"...e"``/``"...o"`` as Irreps).

    Raises:
        TypeError: ``spec`` is neither a Reps nor a string.
        ValueError: a string that parses as neither.
    """
    try:
        return as_reps(spec, spatial_dim=spatial_dim)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name}: {err}") from None


def frame_matrices(frames: FramesLike, *, name: str = "frames") -> torch.Tensor:
    """The ``(N, d, d)`` matrices of a :class:`~tensorframes.Frames` (or of a raw tensor)."""
    mats = getattr(frames, "matrices", frames)
    if not isinstance(mats, torch.Tensor):
        raise TypeError(f"{name} must be a tensorframes.Frames or a tensor, got {type(frames)}")
    if mats.dim() != 3:
        raise ValueError(f"{name} must hold (N, d, d) matrices, got shape {tuple(mats.shape)}")
    check_matrices(mats, mats.shape[-1], name=name)
    return mats


def _check_reps_input(x: torch.Tensor, frames: torch.Tensor, reps: Reps, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != reps.dim:
        raise ValueError(
            f"{name} has width {x.shape[-1] if x.dim() else None}, but its reps {reps!r} have "
            f"dim {reps.dim}"
        )
    if x.shape[0] != frames.shape[0]:
        raise ValueError(
            f"{name} has {x.shape[0]} rows but there are {frames.shape[0]} frames"
        )
    if frames.shape[-1] != reps.spatial_dim:
        raise ValueError(
            f"frames are {frames.shape[-1]}-dimensional but {reps!r} is for d={reps.spatial_dim}"
        )


def to_local(x: torch.Tensor, frames: FramesLike, reps: RepsLike) -> torch.Tensor:
    """World-frame features to each node's local frame: ``rho(R_i) x_i``.

    ``reps`` is a :class:`~tensorframes.reps.Reps` or a reps string (``"1x1n"`` parses as
    TensorReps in the frames' dimension, ``"1x1o"`` as Irreps).

    Shapes:
        x: ``(N, reps.dim)``; frames: ``N`` frames; returns ``(N, reps.dim)``.
    """
    R = frame_matrices(frames)
    reps = parse_reps(reps, spatial_dim=R.shape[-1])
    _check_reps_input(x, R, reps, "x")
    return reps.transform(x, R.to(x.dtype))


def to_global(x: torch.Tensor, frames: FramesLike, reps: RepsLike) -> torch.Tensor:
    """Local features back to world coordinates: ``rho(R_i^T) x_i`` (undoes :func:`to_local`).

    ``reps`` as in :func:`to_local` (a Reps or a reps string).
    """
    R = frame_matrices(frames)
    reps = parse_reps(reps, spatial_dim=R.shape[-1])
    _check_reps_input(x, R, reps, "x")
    return reps.transform(x, R.transpose(-1, -2).to(x.dtype))


class EdgeFrames(NamedTuple):
    """Per-edge relative frames of a graph, computed once and shared by every layer using it.

    ``rel[e] = R_i R_j^T`` for edge ``e = (j -> i)`` carries a feature from the source's frame into
    the target's; ``src``/``dst`` are the edge's source and target indices (``flow`` resolved).
    Holding on to one ``EdgeFrames`` and passing it to every wrapped layer of the same graph
    (``layer(..., frames=frames, edge_frames=ef)``) avoids recomputing ``rel``.
    """

    src: torch.Tensor
    dst: torch.Tensor
    rel: torch.Tensor

    @classmethod
    def compute(
        cls, edge_index: torch.Tensor, frames: GraphFrames, *, flow: str = "source_to_target"
    ) -> EdgeFrames:
        """Relative frames for ``edge_index`` and ``frames`` (a Frames or ``(src, dst)`` pair)."""
        R_src, R_dst = split_frames(frames)
        src, dst = edge_endpoints(edge_index, flow)
        return cls(src, dst, cls.compute_rel(src, dst, R_src, R_dst))

    @staticmethod
    def compute_rel(
        src: torch.Tensor, dst: torch.Tensor, R_src: torch.Tensor, R_dst: torch.Tensor
    ) -> torch.Tensor:
        """``R_dst[dst] @ R_src[src]^T``, one ``(d, d)`` matrix per edge."""
        return R_dst.index_select(0, dst) @ R_src.index_select(0, src).transpose(-1, -2)


def split_frames(frames: GraphFrames) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R_src, R_dst)`` matrices from a Frames or a ``(frames_src, frames_dst)`` pair."""
    if isinstance(frames, (tuple, list)):
        if len(frames) != 2:
            raise ValueError(f"bipartite frames must be a (src, dst) pair, got {len(frames)} items")
        return frame_matrices(frames[0], name="frames[0]"), frame_matrices(
            frames[1], name="frames[1]"
        )
    R = frame_matrices(frames)
    return R, R


def edge_endpoints(edge_index: torch.Tensor, flow: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(source j, target i)`` index vectors of ``edge_index`` under PyG's ``flow``."""
    if not isinstance(edge_index, torch.Tensor) or edge_index.is_sparse:
        raise TypeError(
            "edge_index must be a dense (2, E) LongTensor; SparseTensor / sparse adjacencies "
            "would let fused message passing bypass the frame change"
        )
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if flow == "source_to_target":
        return edge_index[0], edge_index[1]
    if flow == "target_to_source":
        return edge_index[1], edge_index[0]
    raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")
