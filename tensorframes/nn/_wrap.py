"""``wrap``: make any PyG ``MessagePassing`` layer equivariant through local frames.

Semantics (``docs/design.md``): target node ``i`` sees every neighbour ``j`` in its own frame.
The wrapped layer returns exactly what the unmodified layer returns on the *edge-expanded
bipartite graph*: every edge ``j -> i`` gets its own source copy carrying ``rho(R_i R_j^T) x_j``
(and ``R_i pos_j`` for world-frame inputs), while target ``i`` carries ``x_i`` (and
``R_i pos_i``).

Implementation: every PyG convolution has an entry in ``_registry.py`` naming its path
(``_routes.py``): layers that take a ``(src, dst)`` pair run on the explicitly built bipartite
expansion (``_expansion.py`` documents its layout; self loops point at the node itself, so layers
that remove and re-add them recognise them); single-hop layers that take one node tensor run on
the homogeneous node set ``[targets | edge copies]`` (with mirrored in-edges where they compute
degrees); propagation layers (SGConv, APPNP, ChebConv, ...) run on the user's graph with an
instance-level ``propagate`` that changes frames on every hop, which equals the own-frame result
(per target ``i``, the layer on the whole graph with every input written in ``i``'s frame). A
projection a layer applies before propagating therefore acts after the frame change, and no hook
is involved: the result is the same under ``torch.compile``. ``GCNConv`` and ``DynamicEdgeConv``
have small adapters; what cannot be exact is refused when :func:`wrap` is called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch_geometric.nn import GCNConv, MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from .._checks import check_edge_index, compiling
from .._compat import message_arg_names, share_module_state
from ..frames import Frames
from ..graph import knn
from ._expansion import EdgeExpansion, check_rows, parse_reps_map, split_pair
from ._frame_ops import EdgeFrames, GraphFrames, RepsLike, split_frames, to_global
from ._registry import LayerRule, rule_for
from ._routes import NotRaw, bipartite_call, expand_call, hops_call

#: forward arguments that are never node features
_NOT_NODE_LEVEL = {"edge_index", "edge_weight", "edge_attr", "edge_type", "size", "batch"}


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
        validate: bool = True,
    ) -> None:
        super().__init__()
        # by class first: a named reason, also for convolutions that are no MessagePassing
        self._rule: LayerRule = rule_for(layer)
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
        self.local = parse_reps_map(local)
        self.world = parse_reps_map(world)
        self.validate = bool(validate)
        # node-level inputs of forward; the layer may project them before propagating
        allowed = params - _NOT_NODE_LEVEL
        for kind, mapping in (("local", self.local), ("world", self.world)):
            for name in mapping:
                if name not in allowed:
                    raise ValueError(
                        f"{kind} argument {name!r} is not a node-feature argument of "
                        f"{type(layer).__name__}.forward, which takes {sorted(params)}"
                    )
        if set(self.local) & set(self.world):
            raise ValueError(f"arguments both local and world: {set(self.local) & set(self.world)}")
        if self._rule.route != "adapter" and "edge_index" not in params:
            raise TypeError(
                f"wrap cannot make {type(layer).__name__} equivariant: its forward has no "
                "edge_index argument"
            )
        #: the path an ``"auto"`` layer settled on at its first call (``None`` before)
        self._auto_route: str | None = None
        extra = [
            inspect.Parameter("frames", inspect.Parameter.KEYWORD_ONLY),
            inspect.Parameter("edge_frames", inspect.Parameter.KEYWORD_ONLY, default=None),
            inspect.Parameter("validate", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
        params_list = list(self._signature.parameters.values())
        var_kw = [p for p in params_list if p.kind is inspect.Parameter.VAR_KEYWORD]
        rest = [p for p in params_list if p.kind is not inspect.Parameter.VAR_KEYWORD]
        # what inspect.signature(wrapped) shows: the layer's forward plus the keywords
        object.__setattr__(self, "__signature__", self._signature.replace(
            parameters=rest + extra + var_kw))

    @property
    def layer(self) -> MessagePassing:
        """The wrapped PyG layer (the very object passed to :func:`wrap`)."""
        return self._layer

    @property
    def route(self) -> str:
        """The path this layer takes (``"bipartite"``, ``"hops"``, ``"expand"``, ``"adapter"``;
        ``"auto"`` until an unlisted layer's first call decided)."""
        if self._rule.route == "auto":
            return self._auto_route or "auto"
        return self._rule.route

    def forward(
        self,
        *args: Any,
        frames: GraphFrames,
        edge_frames: EdgeFrames | None = None,
        validate: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """The layer's forward in local frames; arguments as the layer's own.

        ``validate`` (default: the one given to :func:`wrap`) checks that the frames are
        orthogonal; ``edge_index`` is always checked (dtype, shape, range). Value checks are
        skipped while ``torch.compile`` traces.
        """
        name = type(self._layer).__name__
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}.forward: {e}") from None
        arguments = dict(bound.arguments)
        if isinstance(frames, (tuple, list)) and (
                self._rule.route in ("hops", "expand") or type(self._layer) is GCNConv):
            raise ValueError(f"{name} takes one node tensor (no bipartite form); pass one Frames")
        R_src, R_dst = split_frames(frames)
        if self.validate if validate is None else validate:
            _check_orthogonal(R_src, "frames" if R_src is R_dst else "frames[0]")
            if R_dst is not R_src:
                _check_orthogonal(R_dst, "frames[1]")
        self._check_rows(arguments, frames, R_src.shape[0], R_dst.shape[0])
        if "edge_index" in arguments:
            _check_edge_index(arguments["edge_index"], R_src.shape[0], R_dst.shape[0],
                              self._layer.flow)
        self._check_undeclared(arguments, R_src.shape[0])
        return self._dispatch(arguments, frames, edge_frames)

    def _dispatch(self, arguments: dict, frames: GraphFrames, edge_frames: Any) -> Any:
        layer, rule = self._layer, self._rule
        params = self._signature.parameters
        route = rule.route
        if route == "adapter":
            return _find_adapter(layer)(self, arguments, frames, edge_frames)
        if route == "bipartite" or (route == "auto" and isinstance(frames, (tuple, list))):
            return bipartite_call(layer, params, self.local, self.world, arguments, frames,
                                  edge_frames)
        if route == "hops":
            return hops_call(layer, self.local, self.world, arguments, frames, edge_frames,
                             strict=False)
        if route == "expand":
            return expand_call(layer, params, self.local, self.world, arguments, frames,
                               edge_frames, degrees=rule.degrees)
        # "auto": a layer of unknown class
        if self._auto_route != "expand":
            try:
                out = hops_call(layer, self.local, self.world, arguments, frames, edge_frames,
                                strict=True)
            except NotRaw:
                self._auto_route = "expand"
            else:
                self._auto_route = "hops"
                return out
        return expand_call(layer, params, self.local, self.world, arguments, frames,
                           edge_frames, degrees=True, guard=True)

    def _check_rows(self, arguments: dict, frames: GraphFrames, n_src: int, n_dst: int) -> None:
        """Shapes of the local / world arguments against the frames (before any index)."""
        bipartite = isinstance(frames, (tuple, list))
        for key, reps in (*self.local.items(), *self.world.items()):
            value = arguments.get(key)
            if value is None:
                continue
            src, dst = split_pair(value, bipartite, key)
            if isinstance(src, torch.Tensor):
                check_rows(src, n_src, reps, key, "source")
            if isinstance(dst, torch.Tensor) and dst is not src:
                check_rows(dst, n_dst, reps, key, "target")

    def _check_undeclared(self, arguments: dict, n_src: int) -> None:
        """A per-node float argument read per edge must be declared local or world."""
        wanted = message_arg_names(self._layer)
        for key, value in arguments.items():
            if (key in self.local or key in self.world or key in _NOT_NODE_LEVEL
                    or f"{key}_j" not in wanted):
                continue
            first = value[0] if isinstance(value, (tuple, list)) and value else value
            if isinstance(first, torch.Tensor) and first.is_floating_point() and (
                    first.dim() >= 1 and first.shape[0] == n_src):
                raise ValueError(
                    f"{type(self._layer).__name__}: argument {key!r} is read per edge (its "
                    f"message takes {key}_j) but is declared neither local nor world, so it "
                    "would not be carried into the receiving frames; positions and other "
                    f"world-frame vectors: wrap(..., world={{{key!r}: '1x1n'}}); features in "
                    f"the nodes' own frames: wrap(..., local={{{key!r}: reps}})"
                )

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


def _check_edge_index(edge_index: Any, n_src: int, n_dst: int, flow: str) -> None:
    if isinstance(edge_index, torch.Tensor) and edge_index.is_sparse:
        raise TypeError(
            "edge_index must be a dense (2, E) LongTensor; SparseTensor / sparse adjacencies "
            "would let fused message passing bypass the frame change"
        )
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(
            "edge_index must be a dense (2, E) LongTensor, got "
            f"{type(edge_index).__name__} (SparseTensor / sparse adjacencies would let fused "
            "message passing bypass the frame change)"
        )
    sizes = (n_src, n_dst) if flow == "source_to_target" else (n_dst, n_src)
    check_edge_index(edge_index, sizes)


def _check_orthogonal(R: torch.Tensor, name: str) -> None:
    """Frames must be orthogonal: ``rho(R_i R_k^T) rho(R_k R_j^T) = rho(R_i R_j^T)`` needs it."""
    if compiling():
        return
    try:
        Frames(R).validate()
    except ValueError as err:
        raise ValueError(
            f"{name}: {err}. Build frames with tensorframes.frames (pca, gram_schmidt, ...) or "
            "pass validate=False to skip this check"
        ) from None


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
    if layer.flow != "source_to_target":
        raise ValueError("wrapped DynamicEdgeConv supports flow='source_to_target' only")
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
    return layer.propagate(
        expansion.edge_index(), x=(sources, dst), size=(expansion.num_sources, expansion.n_dst)
    )


#: ``adapter(module, bound arguments, frames, edge_frames) -> output`` for a layer type.
_Adapter = Callable[[FrameWrapped, dict, GraphFrames, "EdgeFrames | None"], Any]


def _find_adapter(layer: MessagePassing) -> _Adapter:
    adapters: dict[str, _Adapter] = {"GCNConv": _gcn_conv, "DynamicEdgeConv": _dynamic_edge_conv}
    try:
        return adapters[type(layer).__name__]
    except KeyError:
        raise TypeError(f"no wrap adapter for {type(layer).__name__}") from None


def wrap(
    layer: MessagePassing,
    *,
    local: Mapping[str, RepsLike] | None = None,
    world: Mapping[str, RepsLike] | None = None,
    validate: bool = True,
) -> FrameWrapped:
    """Make an existing, unmodified PyG ``MessagePassing`` layer O(d)-equivariant.

    The returned module keeps the layer's forward signature and adds the keyword ``frames``
    (a :class:`~tensorframes.Frames`, or a ``(frames_src, frames_dst)`` pair for bipartite
    graphs) and, optionally, ``edge_frames`` (a precomputed :class:`EdgeFrames` shared by every
    layer on the same graph) and ``validate``. Target node ``i`` sees each neighbour ``j`` in
    ``i``'s frame:

    .. math::
        \\text{out}_i = \\text{layer}\\big(x_i,\\ \\{\\rho(R_i R_j^\\top) x_j\\}_{j},\\
        R_i p_i,\\ \\{R_i p_j\\}_j\\big)

    exactly the layer applied to the edge-expanded bipartite graph (module docstring); for
    propagation over several hops (SGConv, APPNP, ChebConv, ...) a message that travels
    ``j -> k -> i`` arrives as ``rho(R_i R_k^T) rho(R_k R_j^T) x_j = rho(R_i R_j^T) x_j``, the
    layer run with every input written in ``i``'s frame. Outputs stay in the target nodes'
    frames; attention weights (``return_attention_weights=True``) come back on the user's
    ``edge_index`` (plus the self loops the layer adds). ``docs/layers.md`` lists every PyG
    convolution with its path or the reason it is refused.

    Args:
        layer: a ``torch_geometric.nn.MessagePassing`` instance, used as is.
        local: forward arguments holding local features, with their reps
            (``{"x": "16x0n + 8x1n"}``; strings parse as TensorReps, then as Irreps).
        world: forward arguments in world coordinates (``{"pos": "1x1n"}``, normals, ...).
        validate: check at every call that the frames are orthogonal (one batched product,
            skipped while compiling; a call's ``validate=`` overrides it).

    Raises:
        TypeError: a layer that cannot be made equivariant exactly (the message names the layer
            and the reason; see ``docs/layers.md``); at call time, an ``edge_index`` that is not
            an integer tensor.
        ValueError: a name that is not a propagated forward argument; at call time, feature
            widths that do not match their reps, frames of the wrong length or not orthogonal,
            ``edge_index`` entries out of range, a per-node argument read per edge but declared
            neither local nor world.
    """
    return FrameWrapped(layer, local or {}, world or {}, validate)
