"""The paths a wrapped layer runs on (``_registry.py`` says which layer takes which).

* :func:`bipartite_call`: the layer on the edge-expanded bipartite graph (``_expansion.py``).
* :func:`hops_call`: the layer on the user's graph, with an instance-level ``propagate`` that
  changes frames along every edge on every call (restored after the call, also on errors). No
  PyG hook is involved, so ``torch.compile`` gives the same numbers.
* :func:`expand_call`: the layer on the homogeneous node set ``[targets | edge copies]``, the
  targets' rows returned; optionally with mirrored in-edges so that degrees are the user's.

Each returns the layer's output with edge-level results (``return_attention_weights``) mapped
back to the user's nodes (:func:`restore_output`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch_geometric.nn import MessagePassing

from .._compat import message_arg_names, shortcut_gathers
from ..reps.base import Reps
from ._expansion import EdgeExpansion, check_rows, expand_args
from ._frame_ops import EdgeFrames, GraphFrames, split_frames

__all__ = ["NotRaw", "bipartite_call", "expand_call", "hops_call", "restore_output"]

#: forward arguments that hold one entry per edge (extended along mirrored edges)
EDGE_LEVEL_PREFIX = "edge_"


class NotRaw(Exception):
    """``propagate`` of a layer on the ``"auto"`` path received something other than the
    layer's own local inputs, so the ``"hops"`` path would not be exact."""


def restore_output(result: Any, expansion: EdgeExpansion, homogeneous: bool) -> Any:
    """The layer's output on the user's nodes: target rows, attention edges mapped back.

    A tensor keeps its first ``N_dst`` rows on the homogeneous node set. An ``(out, (edge_index,
    alpha))`` pair (``return_attention_weights=True``) gets ``edge_index`` in the user's node
    numbering: edges into edge copies (homogeneous set only) are dropped, expanded source rows
    become the user's source nodes; the result has the user's edges plus the self loops the
    layer adds, as the unwrapped layer returns them.
    """
    n = expansion.n_dst
    if isinstance(result, torch.Tensor):
        return result[:n] if homogeneous else result
    if not (isinstance(result, tuple) and len(result) == 2):
        return result
    out, extra = result
    if homogeneous and isinstance(out, torch.Tensor):
        out = out[:n]
    if (isinstance(extra, tuple) and len(extra) == 2 and isinstance(extra[0], torch.Tensor)
            and extra[0].dim() == 2 and extra[0].shape[0] == 2
            and not extra[0].is_floating_point()):
        ei, alpha = extra
        s2t = expansion.flow == "source_to_target"
        rows, cols = (ei[0], ei[1]) if s2t else (ei[1], ei[0])
        if homogeneous:
            keep = cols < n
            rows, cols, alpha = rows[keep], cols[keep], alpha[keep]
        rows = expansion.source_index.index_select(0, rows)
        ei = torch.stack([rows, cols] if s2t else [cols, rows])
        extra = (ei, alpha)
    return out, extra


def bipartite_call(
    layer: MessagePassing,
    signature_params: Mapping[str, Any],
    local: Mapping[str, Reps],
    world: Mapping[str, Reps],
    arguments: dict,
    frames: GraphFrames,
    edge_frames: EdgeFrames | None,
) -> Any:
    """The unmodified layer on the edge-expanded bipartite graph.

    With ``flow="target_to_source"`` PyG's layers read bipartite pairs inconsistently (messages
    from ``x[1]``, root terms also from ``x[1]``), so there the expansion is passed as one
    homogeneous node set ``[targets = self slots | edge copies]`` and the targets' rows are
    returned; bipartite input is refused for such layers.
    """
    name = type(layer).__name__
    expansion = EdgeExpansion(arguments["edge_index"], frames, layer.flow, edge_frames)
    if (expansion.bipartite and expansion.n_dst > expansion.n_src
            and getattr(layer, "add_self_loops", False)):
        # the layer would add loops to every target, also to targets >= n_src, which have no
        # source of the same index in the original graph
        raise ValueError(
            f"{name}(add_self_loops=True) on a bipartite graph with more targets "
            f"({expansion.n_dst}) than sources ({expansion.n_src}) is ambiguous; build the layer "
            "with add_self_loops=False and add the loops to edge_index explicitly"
        )
    new = expand_args(local, world, arguments, expansion)
    new["edge_index"] = expansion.edge_index()
    takes_size = "size" in signature_params
    if layer.flow == "source_to_target":
        if takes_size:
            new["size"] = (expansion.num_sources, expansion.n_dst)
        # the layer's own gather of the expanded sources along the expanded edges is the edge
        # copies themselves: hand it their rows instead of a second (E, dim) copy
        m = expansion.n_slots
        copies = [(value[0], value[0][m:]) for key in (*local, *world)
                  if isinstance(value := new.get(key), tuple)
                  and isinstance(value[0], torch.Tensor)]
        with shortcut_gathers(layer, new["edge_index"][0], copies):
            out = layer(**new)
        return restore_output(out, expansion, homogeneous=False)
    if expansion.bipartite:
        raise ValueError(
            f"{name} has flow='target_to_source', for which PyG layers do not "
            "define bipartite input; use the default flow for bipartite graphs"
        )
    for key in (*local, *world):
        if isinstance(new.get(key), tuple):
            new[key] = new[key][0]  # the sources: slots (= the targets) then edge copies
    if takes_size:
        new["size"] = None
    return restore_output(layer(**new), expansion, homogeneous=True)


def _refuse_bipartite(layer: MessagePassing, frames: GraphFrames) -> None:
    if isinstance(frames, (tuple, list)):
        raise ValueError(
            f"{type(layer).__name__} takes one node tensor (no bipartite form); pass one Frames"
        )


def expand_call(
    layer: MessagePassing,
    signature_params: Mapping[str, Any],
    local: Mapping[str, Reps],
    world: Mapping[str, Reps],
    arguments: dict,
    frames: GraphFrames,
    edge_frames: EdgeFrames | None,
    *,
    degrees: bool,
    guard: bool = False,
) -> Any:
    """The unmodified layer on the homogeneous node set ``[targets | edge copies]``.

    Local and world arguments become ``(N + E, dim)`` tensors (targets as given, copies carry
    ``rho(R_i R_j^T) x_j`` / ``R_i p_j``), other per-node tensors (``batch``, invariant labels,
    ``x_0``) are copied to the edge copies unchanged, and with ``degrees`` the mirrored in-edges
    of :meth:`EdgeExpansion.mirror_edges` are appended (edge-level arguments, named
    ``edge_*``, extended along them). With ``guard`` (layers of unknown class), a ``propagate``
    fed with the output of an earlier one (multi-hop) raises instead of returning numbers the
    own-frame semantics do not give.
    """
    _refuse_bipartite(layer, frames)
    edge_index = arguments["edge_index"]
    expansion = EdgeExpansion(edge_index, frames, layer.flow, edge_frames)
    n = expansion.n_dst
    new = expand_args(local, world, arguments, expansion)
    for key in (*local, *world):
        if isinstance(new.get(key), tuple):
            new[key] = new[key][0]  # slots (= the targets, in their own frames) then copies
    index = expansion.source_index
    ei = expansion.edge_index()
    num_edges = expansion.src.shape[0]
    edge_ids = None
    if degrees:
        mirror, mirrored = expansion.mirror_edges()
        ei = torch.cat([ei, mirror], 1)
        edge_ids = torch.cat([torch.arange(num_edges, device=ei.device), mirrored])
    for key, value in arguments.items():
        if key in local or key in world or key == "edge_index" or not isinstance(
                value, torch.Tensor) or value.dim() == 0:
            continue
        if key.startswith(EDGE_LEVEL_PREFIX):
            if edge_ids is not None and value.shape[0] == num_edges:
                new[key] = value.index_select(0, edge_ids)
        elif value.shape[0] == n:
            new[key] = value.index_select(0, index)
    new["edge_index"] = ei
    if "size" in signature_params:
        new["size"] = None
    if not guard:
        return restore_output(layer(**new), expansion, homogeneous=True)
    outputs: list[torch.Tensor] = []
    base = _base_propagate(layer)

    def propagate(edge_index: Any, size: Any = None, **kwargs: Any) -> Any:
        if any(v is o for v in kwargs.values() for o in outputs):
            raise ValueError(
                f"{type(layer).__name__} propagates the result of an earlier propagate after "
                "transforming it per node (multi-hop with per-node maps): the own-frame result "
                "of such a layer cannot be reproduced from per-node frames; wrap a single-hop "
                "layer and stack it instead"
            )
        out = base(layer, edge_index, size=size, **kwargs)
        outputs.append(out)
        return out

    return restore_output(_with_propagate(layer, propagate, new), expansion, homogeneous=True)


_MISSING = object()


def _base_propagate(layer: MessagePassing) -> Any:
    """``propagate`` as ``base(layer, edge_index, size=..., **kwargs)``: the instance's own if PyG
    installed one (``explain``, ``decomposed_layers``), else the class's."""
    own = layer.__dict__.get("propagate")
    if own is None:
        return type(layer).propagate
    return lambda _layer, *args, **kwargs: own(*args, **kwargs)


def _with_propagate(layer: MessagePassing, propagate: Any, arguments: dict) -> Any:
    """``layer(**arguments)`` with an instance-level ``propagate``; whatever the instance held
    before (PyG sets one for ``explain`` / ``decomposed_layers``) is restored afterwards, also
    on errors. Not thread-safe for one layer called from two threads at once."""
    previous = layer.__dict__.get("propagate", _MISSING)
    layer.__dict__["propagate"] = propagate
    try:
        return layer(**arguments)
    finally:
        if previous is _MISSING:
            layer.__dict__.pop("propagate", None)
        else:
            layer.__dict__["propagate"] = previous


def hops_call(
    layer: MessagePassing,
    local: Mapping[str, Reps],
    world: Mapping[str, Reps],
    arguments: dict,
    frames: GraphFrames,
    edge_frames: EdgeFrames | None,
    *,
    strict: bool,
) -> Any:
    """The layer on the user's graph; every ``propagate`` call changes frames along its edges.

    ``propagate(edge_index, x=h, ...)`` (``edge_index`` as the layer passes it, self loops and
    normalisation included) runs on the bipartite expansion of that edge set: sources carry
    ``rho(R_i R_j^T) h_j``, targets ``h_i``. World arguments enter the layer in every node's
    own frame (``R_n p_n``) and are carried like ``1x1n`` features (``R_i R_j^T R_j p_j =
    R_i p_j``). With ``strict`` (layers of unknown class) a ``propagate`` argument that is read
    per edge and is neither one of the layer's local inputs nor the output of an earlier
    ``propagate`` raises :class:`NotRaw` (the caller falls back to :func:`expand_call`).
    """
    _refuse_bipartite(layer, frames)
    R = split_frames(frames)[0]
    n = R.shape[0]
    carried = {**local, **world}
    new = dict(arguments)
    for key, reps in carried.items():
        value = new.get(key)
        if value is None:
            continue
        if isinstance(value, (tuple, list)):
            raise ValueError(f"{key!r}: {type(layer).__name__} takes one tensor, not a pair")
        check_rows(value, n, reps, key, "source")
        if key in world:
            new[key] = reps.transform(value, R.to(value.dtype))
    tracked: list[torch.Tensor] = [new[k] for k in carried if new.get(k) is not None]
    wanted = message_arg_names(layer) if strict else frozenset()
    user_edge_index = arguments["edge_index"]
    base = _base_propagate(layer)
    s2t = layer.flow == "source_to_target"

    def propagate(edge_index: Any, size: Any = None, **kwargs: Any) -> Any:
        ef = edge_frames if edge_index is user_edge_index else None
        expansion = EdgeExpansion(edge_index, frames, layer.flow, ef)
        copies = []
        for key, value in kwargs.items():
            if key in carried and isinstance(value, torch.Tensor):
                if strict and not any(value is t for t in tracked):
                    raise NotRaw(key)
                sources, _ = expansion.local(value, carried[key], key)
                copies.append((sources, sources[expansion.n_slots:]))
                # target_to_source: PyG's generated propagate reads x_j from x[0] whatever the
                # flow, so there the sources [slots = targets | copies] are one node set
                kwargs[key] = (sources, value) if s2t else sources
            elif strict and value is not None and (
                    f"{key}_j" in wanted or (not s2t and f"{key}_i" in wanted)):
                raise NotRaw(key)
        expanded = expansion.edge_index()
        if s2t:  # the gather of the sources along the expanded edges: the copies themselves
            with shortcut_gathers(layer, expanded[0], copies):
                return keep(base(layer, expanded, size=(expansion.num_sources, n), **kwargs))
        return keep(base(layer, expanded, size=None, **kwargs)[:n])

    def keep(out: torch.Tensor) -> torch.Tensor:
        tracked.append(out)
        return out

    return _with_propagate(layer, propagate, new)
