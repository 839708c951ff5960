"""``TFMessagePassing``: a base class for new layers whose messages see frame-changed features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch_geometric.nn import MessagePassing

from .._compat import CollectHookMessagePassing, keep_inherited_propagate, message_arg_names
from ._expansion import EdgeExpansion, expand_args, parse_reps_map
from ._frame_ops import EdgeFrames, GraphFrames, RepsLike


class TFMessagePassing(CollectHookMessagePassing):
    """Message passing in local frames (Lippmann et al., "Beyond Canonicalization", ICLR 2025).

    Subclasses declare which propagated arguments are local features and which are world-frame
    inputs, and call ``self.propagate(edge_index, frames=frames, x=x, pos=pos, ...)``. Then
    ``message`` receives

    * every local argument ``<name>_j`` already carried into the target's frame,
      :math:`\\rho(R_i R_j^\\top) x_j`, and ``<name>_i`` as is;
    * every world argument ``<name>_j`` as :math:`R_i p_j` and ``<name>_i`` as :math:`R_i p_i`;
    * if it asks for them: ``frames_i`` / ``frames_j`` (the ``(d, d)`` frames of target and
      source) and ``rel_frames`` (:math:`R_i R_j^\\top`, one per edge).

    The graph is expanded exactly as in :func:`tensorframes.nn.wrap` (self loops carry ``x_i``
    unchanged), so the same layer written with ``TFMessagePassing`` or plain ``MessagePassing``
    plus ``wrap`` gives the same numbers, and no hook is involved (``torch.compile``-safe).

    Args:
        local: ``{"x": reps}`` for local feature arguments.
        world: ``{"pos": "1x1n"}`` for world-frame arguments.
        **kwargs: passed to :class:`torch_geometric.nn.MessagePassing` (``aggr``, ``flow``, ...).
    """

    def __init__(
        self,
        *,
        local: Mapping[str, RepsLike] | None = None,
        world: Mapping[str, RepsLike] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.flow != "source_to_target":
            raise ValueError(
                "TFMessagePassing supports flow='source_to_target' only (its expansion is "
                f"bipartite, which PyG layers read inconsistently otherwise); got {self.flow!r}"
            )
        self.local_reps = parse_reps_map(local)
        self.world_reps = parse_reps_map(world)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # PyG would give a subclass a generated `propagate`, bypassing the frame-aware one
        keep_inherited_propagate(cls)

    def propagate(
        self,
        edge_index: torch.Tensor,
        size: tuple[int, int] | None = None,
        *,
        frames: GraphFrames,
        edge_frames: EdgeFrames | None = None,
        **kwargs: Any,
    ) -> Any:
        """Frame-aware ``propagate``: ``frames`` is a Frames or a ``(src, dst)`` pair.

        ``size`` is accepted for PyG compatibility and ignored: the expanded graph's size is
        ``(M + E, N_dst)`` (see ``_expansion.py``).
        """
        expansion = EdgeExpansion(edge_index, frames, self.flow, edge_frames)
        kwargs = expand_args(self.local_reps, self.world_reps, kwargs, expansion)
        wanted = message_arg_names(self)
        if {"frames_i", "frames_j"} & wanted:
            src_frames = torch.cat(
                [expansion.R_src[: expansion.n_slots], expansion.R_src[expansion.src]]
            )
            # flattened: PyG reads the node axis at -2; restored to (E, d, d) in after_collect
            kwargs["frames"] = (src_frames.flatten(1), expansion.R_dst.flatten(1))
        if "rel_frames" in wanted:
            kwargs["rel_frames"] = expansion.rel
        return MessagePassing.propagate(
            self,
            expansion.edge_index(),
            size=(expansion.num_sources, expansion.n_dst),
            **kwargs,
        )

    def after_collect(self, collected: dict[str, Any]) -> dict[str, Any]:
        """``frames_i`` / ``frames_j`` back to ``(E, d, d)`` after PyG lifted them per edge."""
        out = collected
        for key in ("frames_i", "frames_j"):
            value = out.get(key)
            if isinstance(value, torch.Tensor):
                d = int(round(value.shape[-1] ** 0.5))
                out[key] = value.unflatten(-1, (d, d))
        return out

    def __repr__(self) -> str:
        local = {k: str(v) for k, v in self.local_reps.items()}
        return f"{self.__class__.__name__}(local={local})"
