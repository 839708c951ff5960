"""The edge expansion: the bipartite graph on which a frame-aware layer runs.

Shared by :func:`tensorframes.nn.wrap` and :class:`tensorframes.nn.TFMessagePassing`; the
meaning is fixed in ``docs/design.md``: target node ``i`` sees every neighbour ``j`` in its own
frame, so the layer runs on the *edge-expanded bipartite graph* in which every edge ``j -> i``
has its own source copy carrying ``rho(R_i R_j^T) x_j`` (and ``R_i p_j`` for world-frame
inputs), while target ``i`` carries ``x_i`` (and ``R_i p_i``).

What :class:`EdgeExpansion` builds, for ``E`` edges, ``N_src`` source and ``N_dst`` target
nodes, ``M = min(N_src, N_dst)``:

* sources ``[self slots | edge copies]``, ``num_sources = M + E`` rows. Slot ``n < M`` holds
  source node ``n`` carried into target ``n``'s frame (``x_n`` itself on an ordinary graph);
  edge copy ``M + e`` holds edge ``e``'s source carried into its target's frame.
* :meth:`EdgeExpansion.edge_index` ``(2, E)``: edge ``e = (j -> i)`` becomes ``(slot_e -> i)``,
  where ``slot_e = j`` for a self loop ``j == i`` (so layers that remove and re-add self loops
  recognise it) and ``M + e`` otherwise; flipped back for ``flow="target_to_source"``.
* :meth:`EdgeExpansion.local` / :meth:`EdgeExpansion.world`: an argument's
  ``(sources (M + E, dim), targets (N_dst, dim))`` pair, the bipartite input PyG layers take.
* :attr:`EdgeExpansion.rel` ``(E, d, d)``: ``R_i R_j^T`` per edge, computed once per call.

:func:`expand_args` applies it to every declared local / world argument of a call. A new
adapter (another PyG layer family) builds one :class:`EdgeExpansion` per call and asks it for
exactly these pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..reps._fused import frame_change
from ..reps.base import Reps
from ._frame_ops import EdgeFrames, GraphFrames, RepsLike, edge_endpoints, parse_reps, split_frames

__all__ = ["EdgeExpansion", "check_rows", "expand_args", "parse_reps_map", "split_pair"]


def parse_reps_map(spec: Mapping[str, RepsLike] | None) -> dict[str, Reps]:
    """``{argument name: Reps}`` from a mapping of names to Reps or reps strings (3-d)."""
    return {k: parse_reps(v, name=f"reps of {k!r}") for k, v in dict(spec or {}).items()}


def split_pair(value: Any, bipartite: bool, name: str) -> tuple[Any, Any]:
    """``(src, dst)`` of a node-level argument given as a tensor or a ``(src, dst)`` pair.

    A single tensor stands for both sides; with bipartite frames a pair is required.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name!r} must be a tensor or a (src, dst) pair")
        return value[0], value[1]
    if bipartite:
        raise ValueError(
            f"bipartite frames were given, so {name!r} must be a (src, dst) pair of tensors"
        )
    return value, value


def check_rows(x: Any, n: int, reps: Reps, name: str, which: str) -> None:
    """Refuse anything but an ``(n, reps.dim)`` tensor for argument ``name`` (``which`` side)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name!r} ({which}) must be a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[-1] != reps.dim:
        raise ValueError(
            f"{name!r} ({which}) must have shape (N, {reps.dim}) for reps {reps!r}, "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] != n:
        raise ValueError(
            f"{name!r} ({which}) has {x.shape[0]} rows but the {which} frames number {n}"
        )


class EdgeExpansion:
    """The edge-expanded bipartite graph of one call, shared by all its frame-aware arguments.

    Args:
        edge_index: ``(2, E)`` dense edge indices of the original graph.
        frames: a Frames (or ``(N, d, d)`` matrices), or a ``(frames_src, frames_dst)`` pair.
        flow: the layer's PyG ``flow``.
        edge_frames: precomputed :class:`EdgeFrames` of this graph and flow, or ``None``.

    Attributes:
        bipartite: whether ``frames`` was a pair.
        R_src, R_dst: ``(N_src, d, d)`` / ``(N_dst, d, d)`` frame matrices.
        src, dst: ``(E,)`` source ``j`` and target ``i`` of every edge (``flow`` resolved).
        n_src, n_dst, n_slots: ``N_src``, ``N_dst`` and ``M = min(N_src, N_dst)``.
        slot: ``(E,)`` source row of every edge in the expanded graph.
    """

    def __init__(
        self,
        edge_index: torch.Tensor,
        frames: GraphFrames,
        flow: str,
        edge_frames: EdgeFrames | None = None,
    ) -> None:
        self.bipartite = isinstance(frames, (tuple, list))
        self.R_src, self.R_dst = split_frames(frames)
        self.flow = flow
        if edge_frames is None:
            src, dst = edge_endpoints(edge_index, flow)
            self._rel = None  # computed on first use, after the inputs were checked
        else:
            src, dst, self._rel = edge_frames
            e_src, e_dst = edge_endpoints(edge_index, flow)
            same = src.shape == e_src.shape and torch.equal(src, e_src) and torch.equal(dst, e_dst)
            if not same:
                raise ValueError(
                    "edge_frames were computed for another graph or flow: their "
                    f"{src.shape[0]} edges do not match edge_index ({e_src.shape[0]} edges, "
                    f"flow={flow!r}); use EdgeFrames.compute(edge_index, frames, flow=layer.flow)"
                )
        self.src, self.dst = src, dst
        self.n_src, self.n_dst = self.R_src.shape[0], self.R_dst.shape[0]
        self.n_slots = min(self.n_src, self.n_dst)
        copy_index = self.n_slots + torch.arange(src.shape[0], device=src.device)
        # self loops point at their slot so that layers recognise them as self loops
        self.slot = torch.where(src == dst, src, copy_index)
        self._source_index = self._receivers = self._full_rel = None

    @property
    def rel(self) -> torch.Tensor:
        """``R_i R_j^T`` per edge, ``(E, d, d)`` (shared by every argument of the call)."""
        if self._rel is None:
            self._rel = EdgeFrames.compute_rel(self.src, self.dst, self.R_src, self.R_dst)
        return self._rel

    @property
    def num_sources(self) -> int:
        """Rows of the expanded source set: ``M`` self slots plus ``E`` edge copies."""
        return self.n_slots + self.src.shape[0]

    def edge_index(self) -> torch.Tensor:
        """``(2, E)`` edges of the expanded graph (``[source rows; targets]`` under ``flow``)."""
        ei = torch.stack([self.slot, self.dst])
        return ei if self.flow == "source_to_target" else ei.flip(0)

    @property
    def source_index(self) -> torch.Tensor:
        """``(M + E,)`` original source node of every expanded source (slot ``n`` -> ``n``)."""
        if self._source_index is None:
            arange = torch.arange(self.n_slots, device=self.src.device)
            self._source_index = torch.cat([arange, self.src])
        return self._source_index

    @property
    def receivers(self) -> torch.Tensor:
        """``(M + E,)`` target node whose frame every expanded source is written in."""
        if self._receivers is None:
            arange = torch.arange(self.n_slots, device=self.src.device)
            self._receivers = torch.cat([arange, self.dst])
        return self._receivers

    def _carry(self, reps: Reps, x_src: torch.Tensor) -> torch.Tensor:
        """All ``M + E`` expanded sources in one frame change (:func:`frame_change`: the compiled
        kernel on CPU, which forms ``R_i R_j^T`` per edge on the fly, so no ``(E, d, d)`` tensor
        is built). Slot ``n`` carries ``R_n R_n^T = 1`` on ordinary graphs. With precomputed
        :class:`EdgeFrames` their ``rel`` is used (slots' relative frames prepended)."""
        dtype = x_src.dtype
        if self._rel is None:
            return frame_change(reps, x_src, self.source_index, R_src=self.R_src.to(dtype),
                                R_dst=self.R_dst.to(dtype), dst=self.receivers)
        if self._full_rel is None:
            m = self.n_slots
            slot_rel = self.R_dst[:m] @ self.R_src[:m].transpose(-1, -2)
            self._full_rel = torch.cat([slot_rel, self._rel])
        return frame_change(reps, x_src, self.source_index, rel=self._full_rel.to(dtype))

    def mirror_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """In-edges that give every edge copy of ``j`` the in-degree ``j`` has (homogeneous set).

        For the homogeneous node set ``[targets | edge copies]`` (``M = N``): the copy of edge
        ``e = (j -> i)`` (``j != i``) receives one edge per in-edge ``k -> j`` of the original
        graph, from target row ``k``, and a self loop where ``j`` has one, so every degree a
        layer computes is the user's graph's (``gcn_norm``, ``degree(col)``). Only the copies'
        rows, which are discarded, receive these edges.

        Returns:
            ``(2, F)`` edges (``[source rows; targets]`` under ``flow``) and ``(F,)`` the user's
            edge each mirrors (to extend edge-level arguments).
        """
        src, dst, n = self.src, self.dst, self.n_slots
        num_edges = src.shape[0]
        order = torch.argsort(dst, stable=True)
        indeg = torch.bincount(dst, minlength=n)
        first = torch.cumsum(indeg, 0) - indeg
        counts = torch.where(src != dst, indeg.index_select(0, src), 0)
        copy = torch.repeat_interleave(torch.arange(num_edges, device=src.device), counts)
        offset = torch.arange(copy.shape[0], device=src.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        mirrored = order.index_select(0, first.index_select(0, src.index_select(0, copy)) + offset)
        node = n + copy
        m_src, m_dst = src.index_select(0, mirrored), dst.index_select(0, mirrored)
        ei = torch.stack([torch.where(m_src == m_dst, node, m_src), node])
        return (ei if self.flow == "source_to_target" else ei.flip(0)), mirrored

    def local(self, value: Any, reps: Reps, name: str) -> tuple[Any, Any] | None:
        """``(sources, dst)`` for a local feature: copies carry ``rho(R_i R_j^T) x_j``.

        ``value`` is an ``(N, reps.dim)`` tensor or a ``(src, dst)`` pair (either may be
        ``None``, as PyG allows); returns ``((M + E, reps.dim), dst as given)``.
        """
        x_src, x_dst = split_pair(value, self.bipartite, name)
        if x_src is None:
            return None if x_dst is None else (None, x_dst)
        check_rows(x_src, self.n_src, reps, name, "source")
        if x_dst is not None and x_dst is not x_src:
            check_rows(x_dst, self.n_dst, reps, name, "target")
        return self._carry(reps, x_src), x_dst

    def world(self, value: Any, reps: Reps, name: str) -> Any:
        """``(sources, dst)`` for a world-frame input: ``R_i p_j`` on copies, ``R_i p_i`` on i.

        Returns ``((M + E, reps.dim), (N_dst, reps.dim))`` (or ``value`` unchanged if its
        source side is ``None``).
        """
        p_src, p_dst = split_pair(value, self.bipartite, name)
        if p_src is None:
            return value
        check_rows(p_src, self.n_src, reps, name, "source")
        R_dst = self.R_dst.to(p_src.dtype)
        sources = frame_change(reps, p_src, self.source_index, R_dst=R_dst, dst=self.receivers)
        if p_dst is None:
            dst = None
        elif p_dst is p_src and self.n_slots == self.n_dst:
            dst = sources[: self.n_dst]  # slot n is node n in its own frame
        else:
            if p_dst is not p_src:
                check_rows(p_dst, self.n_dst, reps, name, "target")
            dst = reps.transform(p_dst, R_dst)
        return sources, dst


def expand_args(
    local: Mapping[str, Reps],
    world: Mapping[str, Reps],
    arguments: Mapping[str, Any],
    expansion: EdgeExpansion,
) -> dict[str, Any]:
    """``arguments`` with every local / world argument replaced by its ``(sources, dst)``.

    Arguments not named in ``local`` or ``world`` pass through unchanged; the input mapping is
    not modified.
    """
    new = dict(arguments)
    for name, reps in local.items():
        if name in new:
            new[name] = expansion.local(new[name], reps, name)
    for name, reps in world.items():
        if name in new:
            new[name] = expansion.world(new[name], reps, name)
    return new
