"""``wrap``: make any PyG ``MessagePassing`` layer equivariant through local frames.

Semantics (``docs/design.md``): target node ``i`` sees every neighbour ``j`` in its own frame.
The wrapped layer returns exactly what the unmodified layer returns on the *edge-expanded
bipartite graph*: every edge ``j -> i`` gets its own source copy carrying ``rho(R_i R_j^T) x_j``
(and ``R_i pos_j`` for world-frame inputs), while target ``i`` carries ``x_i`` (and
``R_i pos_i``).

Implementation: the expansion (``EdgeExpansion`` in ``_expansion.py``, which documents its
layout) is built explicitly, and the layer is called on it. The source set is
``[self slots | edge copies]``: slot ``n`` (``n < min(N_src, N_dst)``) holds source node ``n``
carried into target ``n``'s frame (for an ordinary graph that is ``x_n`` itself), then one copy
per edge. An edge ``j -> i`` with ``j == i`` points at slot ``j`` instead of its copy, so layers
that remove and re-add self loops (GATConv, PointNetConv, ...) recognise it exactly as on the
original graph, and the self loops they add carry ``x_i`` unchanged. Because the layer only ever
sees the expanded graph, a projection it applies before propagating (GATConv, TransformerConv,
PointTransformerConv, ...) acts after the frame change, as the semantics demand, and no hook is
involved: the result is the same under ``torch.compile``.

Layers that cannot take bipartite input get an adapter that runs their own submodules on the
expansion (see ``_find_adapter``): ``GCNConv`` (normalisation from the original graph's degrees, its
linear map after the frame change) and ``DynamicEdgeConv`` (its k-NN graph computed on
world-frame features, where distances between nodes in different frames are meaningful).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch_geometric.nn import DynamicEdgeConv, GCNConv, MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from .._compat import share_module_state
from ..graph import knn
from ._expansion import EdgeExpansion, expand_args, parse_reps_map, split_pair
from ._frame_ops import EdgeFrames, GraphFrames, RepsLike, to_global


class FrameWrapped(nn.Module):
    """A PyG layer made equivariant by :func:`wrap` (see there).

    Its parameters, buffers and submodules *are* the wrapped layer's (same objects, same
    ``state_dict`` keys), so checkpoints of the plain and the wrapped layer are interchangeable.
    """

    def __init__(
        self,
        layer: MessagePassing,
        local: Mapping[str, RepsLike] | None,
        world: Mapping[str, RepsLike] | None,
    ) -> None:
        super().__init__()
        if not isinstance(layer, MessagePassing):
            raise TypeError(
                f"wrap expects a torch_geometric.nn.MessagePassing instance, got "
                f"{type(layer).__name__}"
            )
        object.__setattr__(self, "_layer", layer)
        # the layer's parameter/buffer/module dicts: state_dict, .to() and parameters() pass
        # through with identical keys
        share_module_state(self, layer)
        self._signature = inspect.signature(layer.forward)
        params = set(self._signature.parameters)
        adapter = _find_adapter(layer)
        self.local = parse_reps_map(local)
        self.world = parse_reps_map(world)
        # node-level inputs of forward; the layer may project them before propagating
        allowed = params - {"edge_index", "edge_weight", "edge_attr", "size", "batch"}
        for kind, mapping in (("local", self.local), ("world", self.world)):
            for name in mapping:
                if name not in allowed:
                    raise ValueError(
                        f"{kind} argument {name!r} is not a node-feature argument of "
                        f"{type(layer).__name__}.forward, which takes {sorted(params)}"
                    )
        if set(self.local) & set(self.world):
            raise ValueError(f"arguments both local and world: {set(self.local) & set(self.world)}")
        if adapter is None and "edge_index" not in params:
            raise ValueError(
                f"{type(layer).__name__}.forward has no edge_index argument and no adapter"
            )
        self._adapter = adapter or _expand_and_call
        extra = [
            inspect.Parameter("frames", inspect.Parameter.KEYWORD_ONLY),
            inspect.Parameter("edge_frames", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
        params_list = list(self._signature.parameters.values())
        var_kw = [p for p in params_list if p.kind is inspect.Parameter.VAR_KEYWORD]
        rest = [p for p in params_list if p.kind is not inspect.Parameter.VAR_KEYWORD]
        # what inspect.signature(wrapped) shows: the layer's forward plus the two keywords
        object.__setattr__(self, "__signature__", self._signature.replace(
            parameters=rest + extra + var_kw))

    @property
    def layer(self) -> MessagePassing:
        """The wrapped PyG layer (the very object passed to :func:`wrap`)."""
        return self._layer

    def forward(
        self,
        *args: Any,
        frames: GraphFrames,
        edge_frames: EdgeFrames | None = None,
        **kwargs: Any,
    ) -> Any:
        """The layer's forward on the edge-expanded graph; arguments as the layer's own."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self._layer).__name__}.forward: {e}") from None
        return self._adapter(self, dict(bound.arguments), frames, edge_frames)

    def train(self, mode: bool = True) -> FrameWrapped:
        super().train(mode)
        self._layer.train(mode)  # the layer's own flag (dropout in GATConv etc.)
        return self

    def reset_parameters(self) -> None:
        self._layer.reset_parameters()

    def __repr__(self) -> str:
        local = {k: str(v) for k, v in self.local.items()}
        world = {k: str(v) for k, v in self.world.items()}
        return f"wrap({self._layer!r}, local={local}, world={world})"


def _expand_and_call(
    module: FrameWrapped, arguments: dict, frames: GraphFrames, edge_frames: EdgeFrames | None
) -> Any:
    """Generic path: call the unmodified layer on the edge-expanded bipartite graph.

    With ``flow="target_to_source"`` PyG's layers read bipartite pairs inconsistently (messages
    from ``x[1]``, root terms also from ``x[1]``), so there the expansion is passed as one
    homogeneous node set ``[targets = self slots | edge copies]`` and the targets' rows are
    returned; bipartite input is refused for such layers.
    """
    layer = module.layer
    edge_index = arguments["edge_index"]
    expansion = EdgeExpansion(edge_index, frames, layer.flow, edge_frames)
    if (expansion.bipartite and expansion.n_dst > expansion.n_src
            and getattr(layer, "add_self_loops", False)):
        # the layer would add loops to every target, also to targets >= n_src, which have no
        # source of the same index in the original graph
        raise ValueError(
            f"{type(layer).__name__}(add_self_loops=True) on a bipartite graph with more targets "
            f"({expansion.n_dst}) than sources ({expansion.n_src}) is ambiguous; build the layer "
            "with add_self_loops=False and add the loops to edge_index explicitly"
        )
    new = expand_args(module.local, module.world, arguments, expansion)
    new["edge_index"] = expansion.edge_index()
    takes_size = "size" in module._signature.parameters
    if layer.flow == "source_to_target":
        if takes_size:
            new["size"] = (expansion.num_sources, expansion.n_dst)
        return layer(**new)
    if expansion.bipartite:
        raise ValueError(
            f"{type(layer).__name__} has flow='target_to_source', for which PyG layers do not "
            "define bipartite input; use the default flow for bipartite graphs"
        )
    for name in (*module.local, *module.world):
        if isinstance(new.get(name), tuple):
            new[name] = new[name][0]  # the sources: slots (= the targets) then edge copies
    if takes_size:
        new["size"] = None
    return layer(**new)[: expansion.n_dst]


def _gcn_conv(
    module: FrameWrapped, arguments: dict, frames: GraphFrames, edge_frames: EdgeFrames | None
) -> torch.Tensor:
    """GCNConv: symmetric normalisation from the original graph, ``lin`` after the frame change.

    ``out_i = b + sum_{j in N(i) + {i}} w_ij Theta rho(R_i R_j^T) x_j`` with GCNConv's own
    ``w_ij`` (degrees of the original graph, its self loops and ``improved`` fill value).
    """
    layer = module.layer
    if isinstance(frames, (tuple, list)):
        raise ValueError("GCNConv does not support bipartite graphs; pass one Frames")
    x, edge_index = arguments["x"], arguments["edge_index"]
    edge_weight = arguments.get("edge_weight")
    if edge_frames is not None:
        raise ValueError("GCNConv adds self loops before the frame change: omit edge_frames")
    n = x.shape[0]
    if layer.normalize:
        edge_index, edge_weight = gcn_norm(
            edge_index, edge_weight, n, layer.improved, layer.add_self_loops, layer.flow, x.dtype
        )
    expansion = EdgeExpansion(edge_index, frames, layer.flow, None)
    sources, _ = expansion.local(x, module.local["x"], "x")
    h = layer.lin(sources)
    out = layer.propagate(expansion.edge_index(), x=h, edge_weight=edge_weight, size=None)
    out = out[:n]  # homogeneous node set [targets = self slots | edge copies]
    if layer.bias is not None:
        out = out + layer.bias
    return out


def _dynamic_edge_conv(
    module: FrameWrapped, arguments: dict, frames: GraphFrames, edge_frames: EdgeFrames | None
) -> torch.Tensor:
    """DynamicEdgeConv: k-NN in world-frame feature space, then EdgeConv on the expansion.

    Distances between features of different nodes only mean something in one common frame; since
    every ``rho`` is orthogonal, ``|x_i - rho(R_i R_j^T) x_j| = |x_i^world - x_j^world|``, so the
    graph is the k-NN graph of the world-frame features (``tensorframes.graph.knn``).
    """
    layer = module.layer
    if "x" not in module.local:
        raise ValueError("wrapping DynamicEdgeConv needs local={'x': reps}")
    if edge_frames is not None:
        raise ValueError("DynamicEdgeConv builds its own graph: omit edge_frames")
    reps = module.local["x"]
    bipartite = isinstance(frames, (tuple, list))
    x_src, x_dst = split_pair(arguments["x"], bipartite, "x")
    b = arguments.get("batch")
    b_src, b_dst = (b if isinstance(b, (tuple, list)) else (b, b)) if b is not None else (None,
                                                                                         None)
    f_src, f_dst = (frames if bipartite else (frames, frames))
    world_src = to_global(x_src, f_src, reps)
    world_dst = world_src if not bipartite else to_global(x_dst, f_dst, reps)
    edge_index = knn(world_src, world_dst, layer.k, b_src, b_dst).flip([0])
    expansion = EdgeExpansion(edge_index, frames, layer.flow, None)
    sources, dst = expansion.local(arguments["x"], reps, "x")
    if layer.flow != "source_to_target":
        raise ValueError("wrapped DynamicEdgeConv supports flow='source_to_target' only")
    return layer.propagate(
        expansion.edge_index(), x=(sources, dst), size=(expansion.num_sources, expansion.n_dst)
    )


#: ``adapter(module, bound arguments, frames, edge_frames) -> output`` for a layer type.
_Adapter = Callable[[FrameWrapped, dict, GraphFrames, "EdgeFrames | None"], Any]


def _find_adapter(layer: MessagePassing) -> _Adapter | None:
    for cls, fn in ((GCNConv, _gcn_conv), (DynamicEdgeConv, _dynamic_edge_conv)):
        if type(layer) is cls:
            return fn
    return None


def wrap(
    layer: MessagePassing,
    *,
    local: Mapping[str, RepsLike] | None = None,
    world: Mapping[str, RepsLike] | None = None,
) -> FrameWrapped:
    """Make an existing, unmodified PyG ``MessagePassing`` layer O(d)-equivariant.

    The returned module keeps the layer's forward signature and adds the keyword ``frames``
    (a :class:`~tensorframes.Frames`, or a ``(frames_src, frames_dst)`` pair for bipartite
    graphs) and, optionally, ``edge_frames`` (a precomputed :class:`EdgeFrames` shared by every
    layer on the same graph). Target node ``i`` sees each neighbour ``j`` in ``i``'s frame:

    .. math::
        \\text{out}_i = \\text{layer}\\big(x_i,\\ \\{\\rho(R_i R_j^\\top) x_j\\}_{j},\\
        R_i p_i,\\ \\{R_i p_j\\}_j\\big)

    exactly the layer applied to the edge-expanded bipartite graph (module docstring). Outputs
    stay in the target nodes' frames.

    Args:
        layer: a ``torch_geometric.nn.MessagePassing`` instance, used as is.
        local: forward arguments holding local features, with their reps
            (``{"x": "16x0n + 8x1n"}``; strings parse as TensorReps, then as Irreps).
        world: forward arguments in world coordinates (``{"pos": "1x1n"}``, normals, ...).

    Raises:
        ValueError: a name that is not a propagated forward argument; at call time, feature
            widths that do not match their reps, frames of the wrong length.
    """
    return FrameWrapped(layer, local or {}, world or {})
