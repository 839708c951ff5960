"""Which path :func:`tensorframes.nn.wrap` takes for each PyG convolution, or why it refuses.

Every class of ``torch_geometric.nn.conv.__all__`` (torch-geometric 2.8) has one entry here;
``tests/nn/test_all_convs.py`` checks the table against PyG's list, so a new PyG release with a
new convolution fails a test instead of being accepted unchecked. The paths (``_routes.py``):

* ``"bipartite"``: the layer takes a ``(src, dst)`` pair; it runs on the edge-expanded bipartite
  graph (``[self slots | edge copies]`` as sources, the targets as targets).
* ``"hops"``: the layer propagates its input features themselves (no per-node learned map or
  attention before ``propagate``), possibly over several hops; it runs on the user's graph and
  every ``propagate`` call changes frames along each edge, so a message that travels
  ``j -> k -> i`` arrives as ``rho(R_i R_k^T) rho(R_k R_j^T) x_j = rho(R_i R_j^T) x_j``.
  Degrees and normalisations are the user's graph's by construction.
* ``"expand"``: a single-hop layer whose forward takes one node tensor; it runs on the
  homogeneous node set ``[targets | edge copies]`` and the targets' rows are returned. With
  ``degrees=True`` every copy of ``j`` also receives a mirror of ``j``'s in-edges, so any degree
  the layer computes (``gcn_norm``, ``degree(col)``) is the user's graph's.
* ``"adapter"``: a small function for the layer (``GCNConv``, ``DynamicEdgeConv``).
* ``"refuse"``: :func:`wrap` raises ``TypeError`` naming the layer and the reason.

A class that is not in the table (a user's own layer, a subclass) takes ``"auto"``: bipartite
frames take the bipartite path; otherwise the first call tries ``"hops"`` and falls back to
``"expand"`` with ``degrees=True`` if ``propagate`` receives anything other than the layer's
own local inputs (a projection, an attention score), which is exact for every single-hop layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch_geometric.nn.conv as pyg_conv
from torch import nn
from torch_geometric.nn import MessagePassing

__all__ = ["LayerRule", "RULES", "rule_for"]


@dataclass(frozen=True)
class LayerRule:
    """How one PyG convolution is wrapped.

    Attributes:
        route: ``"bipartite"``, ``"hops"``, ``"expand"``, ``"adapter"``, ``"refuse"`` or
            ``"auto"`` (module docstring).
        reason: for ``"refuse"``, why the layer cannot be wrapped exactly.
        degrees: for ``"expand"``, whether copies receive mirrored in-edges (the layer computes
            degrees of sources).
        check: an instance-dependent refusal: returns a reason, or ``None`` if the instance is
            supported (e.g. ``ARMAConv`` with more than one layer).
    """

    route: str
    reason: str = ""
    degrees: bool = False
    check: Callable[[MessagePassing], str | None] | None = None


def _single_layer(attr: str, what: str) -> Callable[[MessagePassing], str | None]:
    def check(layer: MessagePassing) -> str | None:
        n = getattr(layer, attr, 1)
        if n == 1:
            return None
        return (f"with {attr}={n} it {what} between hops, so a node's intermediate state "
                f"depends on the frame it is computed in and the own-frame result cannot be "
                f"reproduced; build it with {attr}=1 (exact) and stack wrapped layers instead")

    return check


_BIPARTITE = LayerRule("bipartite")
_HOPS = LayerRule("hops")
_EXPAND = LayerRule("expand")
_EXPAND_DEG = LayerRule("expand", degrees=True)

_NO_GRAPH = ("builds its own k-NN graph inside forward (no edge_index to expand), and PyG "
             "cannot build it without pyg-lib")

#: One entry per class of ``torch_geometric.nn.conv.__all__`` (torch-geometric 2.8.1).
RULES: dict[str, LayerRule] = {
    "MessagePassing": LayerRule("refuse", "the abstract base class has no forward of its own"),
    "SimpleConv": _BIPARTITE,
    "GCNConv": LayerRule("adapter"),
    "ChebConv": _HOPS,
    "SAGEConv": _BIPARTITE,
    "CuGraphSAGEConv": LayerRule("refuse", "cuGraph's fused CSC kernels bypass propagate"),
    "GraphConv": _BIPARTITE,
    "GravNetConv": LayerRule(
        "refuse", "builds its k-NN graph in a learned feature space inside forward: there is "
        "no edge_index to expand, and the graph would depend on the frame"),
    "GatedGraphConv": LayerRule("expand", check=_single_layer(
        "num_layers", "applies a learned map and a GRU")),
    "ResGatedGraphConv": _BIPARTITE,
    "GATConv": _BIPARTITE,
    "CuGraphGATConv": LayerRule("refuse", "cuGraph's fused CSC kernels bypass propagate"),
    "FusedGATConv": LayerRule("refuse", "its fused CSR/CSC kernel bypasses propagate"),
    "GATv2Conv": _BIPARTITE,
    "TransformerConv": _BIPARTITE,
    "AGNNConv": _EXPAND,
    "TAGConv": _HOPS,
    "GINConv": _BIPARTITE,
    "GINEConv": _BIPARTITE,
    "ARMAConv": LayerRule("expand", degrees=True, check=_single_layer(
        "num_layers", "applies learned weights and an activation")),
    "SGConv": _HOPS,
    "SSGConv": _HOPS,
    "APPNP": _HOPS,
    "MFConv": _BIPARTITE,
    "RGCNConv": _BIPARTITE,
    "FastRGCNConv": _BIPARTITE,
    "CuGraphRGCNConv": LayerRule("refuse", "cuGraph's fused CSC kernels bypass propagate"),
    "RGATConv": _BIPARTITE,
    "SignedConv": LayerRule(
        "refuse", "takes two edge sets (pos_edge_index, neg_edge_index) and, after its first "
        "layer, propagates slices of concatenated features; not supported"),
    "DNAConv": LayerRule(
        "refuse", "its input is 3-D (a history of layer outputs per node) and it attends over "
        "that history with learned projections; one reps per node feature cannot describe it"),
    "PointNetConv": _BIPARTITE,
    "GMMConv": _BIPARTITE,
    "SplineConv": _BIPARTITE,
    "NNConv": _BIPARTITE,
    "CGConv": _BIPARTITE,
    "EdgeConv": _BIPARTITE,
    "DynamicEdgeConv": LayerRule("adapter"),
    "XConv": LayerRule("refuse", _NO_GRAPH),
    "PPFConv": _BIPARTITE,
    "FeaStConv": _BIPARTITE,
    "PointTransformerConv": _BIPARTITE,
    "HypergraphConv": LayerRule(
        "refuse", "propagates over hyperedges (node -> hyperedge -> node), not over an "
        "edge_index between nodes"),
    "LEConv": _BIPARTITE,
    "PNAConv": _EXPAND,
    "ClusterGCNConv": _HOPS,
    "GENConv": _BIPARTITE,
    "GCN2Conv": _HOPS,
    "PANConv": LayerRule(
        "refuse", "propagates over a dense path-integral matrix (a SparseTensor of all paths up "
        "to filter_size) built inside forward, with learned weights per path length"),
    "WLConv": LayerRule(
        "refuse", "hashes discrete node colours; features with a frame have no colours"),
    "WLConvContinuous": _BIPARTITE,
    "FiLMConv": _BIPARTITE,
    "SuperGATConv": _EXPAND,
    "FAConv": _EXPAND_DEG,
    "EGConv": _EXPAND_DEG,
    "PDNConv": _EXPAND_DEG,
    "GeneralConv": _BIPARTITE,
    "HGTConv": LayerRule("refuse", "heterogeneous (dictionaries of node and edge types)"),
    "HEATConv": LayerRule(
        "refuse", "heterogeneous (per-node-type linear maps and edge-type embeddings)"),
    "HeteroConv": LayerRule("refuse", "heterogeneous (dictionaries of node and edge types)"),
    "HANConv": LayerRule("refuse", "heterogeneous (dictionaries of node and edge types)"),
    "LGConv": _HOPS,
    "PointGNNConv": _EXPAND,
    "GPSConv": LayerRule(
        "refuse", "adds global multi-head attention across all nodes of a graph and wraps "
        "another convolution: wrap that convolution instead"),
    "AntiSymmetricConv": LayerRule(
        "refuse", "iterates a nonlinear update around another convolution; wrap that "
        "convolution instead"),
    "DirGNNConv": LayerRule(
        "refuse", "runs another convolution on edge_index and on its reverse; wrap that "
        "convolution twice instead"),
    "MixHopConv": _HOPS,
    "MeshCNNConv": LayerRule(
        "refuse", "needs a mesh's fixed four neighbours per node in a fixed order, which the "
        "edge expansion does not have"),
}

_AUTO = LayerRule("auto")


def rule_for(layer: nn.Module) -> LayerRule:
    """The rule of ``layer``'s exact class (a subclass or a user's own layer: ``"auto"``).

    Raises:
        TypeError: the class, or this instance of it, is refused (the message names the layer
            and the reason).
    """
    cls = type(layer)
    name = cls.__name__
    rule = RULES.get(name, _AUTO) if getattr(pyg_conv, name, None) is cls else _AUTO
    reason = rule.reason if rule.route == "refuse" else (rule.check(layer) if rule.check
                                                         else None)
    if reason:
        raise TypeError(f"wrap cannot make {name} equivariant exactly: {reason}")
    return rule
