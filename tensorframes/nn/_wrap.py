"""``wrap``: make any PyG ``MessagePassing`` layer equivariant through local frames.

Semantics (``shared/DESIGN.md``): target node ``i`` sees every neighbour ``j`` in its own frame.
The wrapped layer returns exactly what the unmodified layer returns on the *edge-expanded
bipartite graph*: every edge ``j -> i`` gets its own source copy carrying ``rho(R_i R_j^T) x_j``
(and ``R_i pos_j`` for world-frame inputs), while target ``i`` carries ``x_i`` (and
``R_i pos_i``).

Implementation: the expansion is built explicitly, and the layer is called on it. The source set
is ``[self slots | edge copies]``: slot ``n`` (``n < min(N_src, N_dst)``) holds source node ``n``
carried into target ``n``'s frame (for an ordinary graph that is ``x_n`` itself), then one copy
per edge. An edge ``j -> i`` with ``j == i`` points at slot ``j`` instead of its copy, so layers
that remove and re-add self loops (GATConv, PointNetConv, ...) recognise it exactly as on the
original graph, and the self loops they add carry ``x_i`` unchanged. Because the layer only ever
sees the expanded graph, a projection it applies before propagating (GATConv, TransformerConv,
PointTransformerConv, ...) acts after the frame change, as the semantics demand, and no hook is
involved: the result is the same under ``torch.compile``.

Layers that cannot take bipartite input get an adapter that runs their own submodules on the
expansion (see ``_ADAPTERS``): ``GCNConv`` (normalisation from the original graph's degrees, its
linear map after the frame change) and ``DynamicEdgeConv`` (its k-NN graph computed on
world-frame features, where distances between nodes in different frames are meaningful).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from ..reps.base import Reps
from ._frame_ops import EdgeFrames, edge_endpoints, split_frames


def _as_reps(spec, name: str) -> Reps:
    from ..reps import as_reps

    try:
        return as_reps(spec)
    except (TypeError, ValueError) as err:
        raise type(err)(f"reps of {name!r}: {err}") from None


def _pair(value, bipartite: bool, name: str):
    """``(src, dst)`` of a node-level argument given as a tensor or a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name!r} must be a tensor or a (src, dst) pair")
        return value[0], value[1]
    if bipartite:
        raise ValueError(
            f"bipartite frames were given, so {name!r} must be a (src, dst) pair of tensors"
        )
    return value, value


def _check_rows(x: torch.Tensor, n: int, reps: Reps, name: str, which: str) -> None:
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


class _Expansion:
    """The edge-expanded bipartite graph of one call, shared by all wrapped arguments."""

    def __init__(self, edge_index, frames, flow, edge_frames: EdgeFrames | None):
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
        self._gather_cache = None

    @property
    def rel(self) -> torch.Tensor:
        """``R_i R_j^T`` per edge (shared by every argument of the call)."""
        if self._rel is None:
            self._rel = EdgeFrames.compute_rel(self.src, self.dst, self.R_src, self.R_dst)
        return self._rel

    @property
    def num_sources(self) -> int:
        return self.n_slots + self.src.shape[0]

    def edge_index(self) -> torch.Tensor:
        ei = torch.stack([self.slot, self.dst])
        return ei if self.flow == "source_to_target" else ei.flip(0)

    def _gather(self):
        """Source row of every expanded source and the matrix carrying it into its target.

        One gather and one transform produce all ``M + E`` sources, so no concatenation pass
        over the edge copies is needed. Slots carry ``R_n R_n^T = 1`` on ordinary graphs.
        """
        if self._gather_cache is None:
            m = self.n_slots
            index = torch.cat([torch.arange(m, device=self.src.device), self.src])
            slot_rel = self.R_dst[:m] @ self.R_src[:m].transpose(-1, -2)
            self._gather_cache = index, torch.cat([slot_rel, self.rel])
        return self._gather_cache

    def local(self, value, reps: Reps, name: str):
        """``(sources, dst)`` for a local feature: copies carry ``rho(R_i R_j^T) x_j``."""
        x_src, x_dst = _pair(value, self.bipartite, name)
        if x_src is None:
            return None if x_dst is None else (None, x_dst)
        _check_rows(x_src, self.n_src, reps, name, "source")
        if x_dst is not None and x_dst is not x_src:
            _check_rows(x_dst, self.n_dst, reps, name, "target")
        index, rel = self._gather()
        return reps.transform(x_src.index_select(0, index), rel.to(x_src.dtype)), x_dst

    def world(self, value, reps: Reps, name: str):
        """``(sources, dst)`` for a world-frame input: ``R_i p_j`` on copies, ``R_i p_i`` on i."""
        p_src, p_dst = _pair(value, self.bipartite, name)
        if p_src is None:
            return value
        _check_rows(p_src, self.n_src, reps, name, "source")
        R_dst = self.R_dst.to(p_src.dtype)
        index, _ = self._gather()
        receivers = torch.cat([torch.arange(self.n_slots, device=index.device), self.dst])
        sources = reps.transform(p_src.index_select(0, index), R_dst.index_select(0, receivers))
        if p_dst is None:
            dst = None
        elif p_dst is p_src and self.n_slots == self.n_dst:
            dst = sources[: self.n_dst]  # slot n is node n in its own frame
        else:
            if p_dst is not p_src:
                _check_rows(p_dst, self.n_dst, reps, name, "target")
            dst = reps.transform(p_dst, R_dst)
        return sources, dst


class FrameWrapped(nn.Module):
    """A PyG layer made equivariant by :func:`wrap` (see there).

    Its parameters, buffers and submodules *are* the wrapped layer's (same objects, same
    ``state_dict`` keys), so checkpoints of the plain and the wrapped layer are interchangeable.
    """

    def __init__(self, layer: MessagePassing, local: Mapping, world: Mapping):
        super().__init__()
        if not isinstance(layer, MessagePassing):
            raise TypeError(
                f"wrap expects a torch_geometric.nn.MessagePassing instance, got "
                f"{type(layer).__name__}"
            )
        object.__setattr__(self, "_layer", layer)
        # share the layer's parameter/buffer/module dicts: state_dict, .to() and parameters()
        # pass through with identical keys
        object.__setattr__(self, "_parameters", layer._parameters)
        object.__setattr__(self, "_buffers", layer._buffers)
        object.__setattr__(self, "_modules", layer._modules)
        self._signature = inspect.signature(layer.forward)
        params = set(self._signature.parameters)
        adapter = _find_adapter(layer)
        self.local = {k: _as_reps(v, k) for k, v in dict(local or {}).items()}
        self.world = {k: _as_reps(v, k) for k, v in dict(world or {}).items()}
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
        return self._layer

    def forward(self, *args, frames, edge_frames: EdgeFrames | None = None, **kwargs):
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self._layer).__name__}.forward: {e}") from None
        return self._adapter(self, dict(bound.arguments), frames, edge_frames)

    def train(self, mode: bool = True):
        super().train(mode)
        self._layer.train(mode)  # the layer's own flag (dropout in GATConv etc.)
        return self

    def reset_parameters(self) -> None:
        self._layer.reset_parameters()

    def __repr__(self) -> str:
        local = {k: str(v) for k, v in self.local.items()}
        world = {k: str(v) for k, v in self.world.items()}
        return f"wrap({self._layer!r}, local={local}, world={world})"


def _expand_args(local: Mapping, world: Mapping, arguments: dict, expansion: _Expansion) -> dict:
    """``arguments`` with every local / world argument replaced by its ``(sources, dst)``."""
    new = dict(arguments)
    for name, reps in local.items():
        if name in new:
            new[name] = expansion.local(new[name], reps, name)
    for name, reps in world.items():
        if name in new:
            new[name] = expansion.world(new[name], reps, name)
    return new


def _expand_and_call(module: FrameWrapped, arguments: dict, frames, edge_frames):
    """Generic path: call the unmodified layer on the edge-expanded bipartite graph.

    With ``flow="target_to_source"`` PyG's layers read bipartite pairs inconsistently (messages
    from ``x[1]``, root terms also from ``x[1]``), so there the expansion is passed as one
    homogeneous node set ``[targets = self slots | edge copies]`` and the targets' rows are
    returned; bipartite input is refused for such layers.
    """
    layer = module.layer
    edge_index = arguments["edge_index"]
    expansion = _Expansion(edge_index, frames, layer.flow, edge_frames)
    if (expansion.bipartite and expansion.n_dst > expansion.n_src
            and getattr(layer, "add_self_loops", False)):
        # the layer would add loops to every target, also to targets >= n_src, which have no
        # source of the same index in the original graph
        raise ValueError(
            f"{type(layer).__name__}(add_self_loops=True) on a bipartite graph with more targets "
            f"({expansion.n_dst}) than sources ({expansion.n_src}) is ambiguous; build the layer "
            "with add_self_loops=False and add the loops to edge_index explicitly"
        )
    new = _expand_args(module.local, module.world, arguments, expansion)
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


def _gcn_conv(module: FrameWrapped, arguments: dict, frames, edge_frames):
    """GCNConv: symmetric normalisation from the original graph, ``lin`` after the frame change.

    ``out_i = b + sum_{j in N(i) + {i}} w_ij Theta rho(R_i R_j^T) x_j`` with GCNConv's own
    ``w_ij`` (degrees of the original graph, its self loops and ``improved`` fill value).
    """
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

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
    expansion = _Expansion(edge_index, frames, layer.flow, None)
    sources, _ = expansion.local(x, module.local["x"], "x")
    h = layer.lin(sources)
    out = layer.propagate(expansion.edge_index(), x=h, edge_weight=edge_weight, size=None)
    out = out[:n]  # homogeneous node set [targets = self slots | edge copies]
    if layer.bias is not None:
        out = out + layer.bias
    return out


def _dynamic_edge_conv(module: FrameWrapped, arguments: dict, frames, edge_frames):
    """DynamicEdgeConv: k-NN in world-frame feature space, then EdgeConv on the expansion.

    Distances between features of different nodes only mean something in one common frame; since
    every ``rho`` is orthogonal, ``|x_i - rho(R_i R_j^T) x_j| = |x_i^world - x_j^world|``, so the
    graph is the k-NN graph of the world-frame features (``tensorframes.graph.knn``).
    """
    from .. import graph
    from ._frame_ops import to_global

    layer = module.layer
    if "x" not in module.local:
        raise ValueError("wrapping DynamicEdgeConv needs local={'x': reps}")
    if edge_frames is not None:
        raise ValueError("DynamicEdgeConv builds its own graph: omit edge_frames")
    reps = module.local["x"]
    bipartite = isinstance(frames, (tuple, list))
    x_src, x_dst = _pair(arguments["x"], bipartite, "x")
    b = arguments.get("batch")
    b_src, b_dst = (b if isinstance(b, (tuple, list)) else (b, b)) if b is not None else (None,
                                                                                         None)
    f_src, f_dst = (frames if bipartite else (frames, frames))
    world_src = to_global(x_src, f_src, reps)
    world_dst = world_src if not bipartite else to_global(x_dst, f_dst, reps)
    edge_index = graph.knn(world_src, world_dst, layer.k, b_src, b_dst).flip([0])
    expansion = _Expansion(edge_index, frames, layer.flow, None)
    sources, dst = expansion.local(arguments["x"], reps, "x")
    if layer.flow != "source_to_target":
        raise ValueError("wrapped DynamicEdgeConv supports flow='source_to_target' only")
    return layer.propagate(
        expansion.edge_index(), x=(sources, dst), size=(expansion.num_sources, expansion.n_dst)
    )


def _find_adapter(layer: MessagePassing):
    from torch_geometric.nn import DynamicEdgeConv, GCNConv

    for cls, fn in ((GCNConv, _gcn_conv), (DynamicEdgeConv, _dynamic_edge_conv)):
        if type(layer) is cls:
            return fn
    return None


def wrap(layer: MessagePassing, *, local: Mapping | None = None, world: Mapping | None = None):
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
