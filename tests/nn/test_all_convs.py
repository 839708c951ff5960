"""Every class of ``torch_geometric.nn.conv.__all__``: exact through ``wrap``, or refused by it.

The table ``CONVS`` below names, for every class PyG exports, how this test builds it and which
inputs it takes. A class PyG adds in a new release is missing here and fails
``test_table_covers_pyg``. For every supported class the wrapped layer must equal, to 1e-10 in
float64, the *own-frame reference*, computed here without any wrapper code: per target ``i``, the
unmodified layer on the original graph with every input written in ``i``'s frame
(``rho(R_i R_j^T) x_j`` for local features, ``R_i p_j`` for world vectors), row ``i`` taken; and
its local outputs must not change under a global O(3) transformation with a reflection. A refused
class must raise ``TypeError`` naming itself when ``wrap`` is called; a class PyG cannot build
here must still fail to build (so the table is revisited where it can).

``docs/layers.md`` is generated from this table: ``python tests/nn/test_all_convs.py`` rewrites
it, and ``test_layers_doc_is_current`` checks it.
"""

from __future__ import annotations

import copy
import pathlib
import sys
from dataclasses import dataclass, field

import pytest
import torch
import torch_geometric
import torch_geometric.nn as gnn
import torch_geometric.nn.conv as pyg_conv
from torch import nn

import tensorframes as tf
from tensorframes.nn import wrap
from tensorframes.nn._registry import RULES
from tensorframes.testing import random_orthogonal

REPS = tf.TensorReps("2x0n + 1x1n + 1x1p + 1x2n")
C = REPS.dim
N, E = 12, 40
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "layers.md"


def _mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 8), nn.Tanh(), nn.Linear(8, o))


@dataclass
class Conv:
    """How the sweep builds and calls one class.

    ``inputs``: forward arguments besides ``x`` and ``edge_index``, in forward order:
    ``pos``/``normal`` (world vectors), ``x_0`` (local), ``edge_attr``, ``edge_weight``,
    ``edge_type``. ``status``: ``exact``, ``refused`` or ``unbuildable`` (PyG refuses to build
    it in this environment). ``slow``: run only in the slow (CI) sweep.
    """

    build: object
    status: str = "exact"
    inputs: tuple = ()
    slow: bool = False
    note: str = ""
    kwargs: dict = field(default_factory=dict)


def _hetero_meta():
    return (["a", "b"], [("a", "to", "b"), ("b", "to", "a")])


CONVS: dict[str, Conv] = {
    # not initialised: PyG's __init__ on the bare base class regenerates MessagePassing.propagate
    # for every later subclass (a PyG quirk); wrap refuses by class before touching the instance
    "MessagePassing": Conv(lambda: gnn.MessagePassing.__new__(gnn.MessagePassing), "refused"),
    "SimpleConv": Conv(lambda: gnn.SimpleConv(aggr="mean"), inputs=("edge_weight",)),
    "GCNConv": Conv(lambda: gnn.GCNConv(C, 6), inputs=("edge_weight",)),
    "ChebConv": Conv(lambda: gnn.ChebConv(C, 6, K=3), inputs=("edge_weight",)),
    "SAGEConv": Conv(lambda: gnn.SAGEConv(C, 6)),
    "CuGraphSAGEConv": Conv(lambda: gnn.CuGraphSAGEConv(C, 6), "unbuildable"),
    "GraphConv": Conv(lambda: gnn.GraphConv(C, 6), inputs=("edge_weight",)),
    "GravNetConv": Conv(lambda: gnn.GravNetConv(C, 6, 2, 3, 4), "unbuildable"),
    "GatedGraphConv": Conv(lambda: gnn.GatedGraphConv(C + 2, num_layers=1),
                           inputs=("edge_weight",)),
    "ResGatedGraphConv": Conv(lambda: gnn.ResGatedGraphConv(C, 6)),
    "GATConv": Conv(lambda: gnn.GATConv(C, 3, heads=2)),
    "CuGraphGATConv": Conv(lambda: gnn.CuGraphGATConv(C, 6), "unbuildable"),
    "FusedGATConv": Conv(lambda: gnn.FusedGATConv(C, 6, add_self_loops=False), "unbuildable"),
    "GATv2Conv": Conv(lambda: gnn.GATv2Conv(C, 3, heads=2, edge_dim=3), inputs=("edge_attr",)),
    "TransformerConv": Conv(lambda: gnn.TransformerConv(C, 3, heads=2, edge_dim=3),
                            inputs=("edge_attr",)),
    "AGNNConv": Conv(lambda: gnn.AGNNConv()),
    "TAGConv": Conv(lambda: gnn.TAGConv(C, 6, K=2), inputs=("edge_weight",)),
    "GINConv": Conv(lambda: gnn.GINConv(_mlp(C, 6), train_eps=True)),
    "GINEConv": Conv(lambda: gnn.GINEConv(_mlp(C, 6), edge_dim=3), inputs=("edge_attr",)),
    "ARMAConv": Conv(lambda: gnn.ARMAConv(C, 6, num_stacks=2, num_layers=1),
                     inputs=("edge_weight",)),
    "SGConv": Conv(lambda: gnn.SGConv(C, 6, K=2), inputs=("edge_weight",)),
    "SSGConv": Conv(lambda: gnn.SSGConv(C, 6, alpha=0.1, K=3), inputs=("edge_weight",)),
    "APPNP": Conv(lambda: gnn.APPNP(K=3, alpha=0.1), inputs=("edge_weight",)),
    "MFConv": Conv(lambda: gnn.MFConv(C, 6, max_degree=6)),
    "RGCNConv": Conv(lambda: gnn.RGCNConv(C, 6, num_relations=2), inputs=("edge_type",)),
    "FastRGCNConv": Conv(lambda: gnn.FastRGCNConv(C, 6, num_relations=2), inputs=("edge_type",),
                         slow=True),
    "CuGraphRGCNConv": Conv(lambda: gnn.CuGraphRGCNConv(C, 6, 2), "unbuildable"),
    "RGATConv": Conv(lambda: gnn.RGATConv(C, 6, num_relations=2), inputs=("edge_type",),
                     slow=True),
    "SignedConv": Conv(lambda: gnn.SignedConv(C, 6, first_aggr=True), "refused"),
    "DNAConv": Conv(lambda: gnn.DNAConv(C, heads=1), "refused"),
    "PointNetConv": Conv(lambda: gnn.PointNetConv(_mlp(C + 3, 6), _mlp(6, 6)), inputs=("pos",)),
    "GMMConv": Conv(lambda: gnn.GMMConv(C, 6, dim=3, kernel_size=2), inputs=("edge_attr",),
                    slow=True),
    "SplineConv": Conv(lambda: gnn.SplineConv(C, 6, dim=3, kernel_size=3), "unbuildable"),
    "NNConv": Conv(lambda: gnn.NNConv(C, 6, _mlp(3, C * 6)), inputs=("edge_attr",)),
    "CGConv": Conv(lambda: gnn.CGConv(C, dim=3), inputs=("edge_attr",), slow=True),
    "EdgeConv": Conv(lambda: gnn.EdgeConv(_mlp(2 * C, 6))),
    "DynamicEdgeConv": Conv(lambda: gnn.DynamicEdgeConv(_mlp(2 * C, 6), k=4), "unbuildable",
                            note="wrap has an adapter (k-NN of world-frame features)"),
    "XConv": Conv(lambda: gnn.XConv(C, 6, dim=3, kernel_size=4), "unbuildable"),
    "PPFConv": Conv(lambda: gnn.PPFConv(_mlp(C + 4, 6)), inputs=("pos", "normal")),
    "FeaStConv": Conv(lambda: gnn.FeaStConv(C, 6, heads=2), slow=True),
    "PointTransformerConv": Conv(lambda: gnn.PointTransformerConv(C, 6), inputs=("pos",)),
    "HypergraphConv": Conv(lambda: gnn.HypergraphConv(C, 6), "refused"),
    "LEConv": Conv(lambda: gnn.LEConv(C, 6), inputs=("edge_weight",), slow=True),
    "PNAConv": Conv(lambda: gnn.PNAConv(C, 6, ["mean", "max", "std"],
                                        ["identity", "amplification"],
                                        deg=torch.tensor([0, 2, 4, 3, 2, 1]), edge_dim=3),
                    inputs=("edge_attr",)),
    "ClusterGCNConv": Conv(lambda: gnn.ClusterGCNConv(C, 6)),
    "GENConv": Conv(lambda: gnn.GENConv(C, 6, edge_dim=3), inputs=("edge_attr",), slow=True),
    "GCN2Conv": Conv(lambda: gnn.GCN2Conv(C, alpha=0.2, theta=0.5, layer=2),
                     inputs=("x_0", "edge_weight")),
    "PANConv": Conv(lambda: gnn.PANConv(C, 6, filter_size=2), "refused"),
    "WLConv": Conv(lambda: gnn.WLConv(), "refused"),
    "WLConvContinuous": Conv(lambda: gnn.WLConvContinuous(), inputs=("edge_weight",),
                             slow=True),
    "FiLMConv": Conv(lambda: gnn.FiLMConv(C, 6, num_relations=2), inputs=("edge_type",),
                     slow=True),
    "SuperGATConv": Conv(lambda: gnn.SuperGATConv(C, 3, heads=2),
                         note="in training mode its attention loss samples negative edges "
                              "among the targets and edge copies"),
    "FAConv": Conv(lambda: gnn.FAConv(C, eps=0.2), inputs=("x_0",)),
    "EGConv": Conv(lambda: gnn.EGConv(C, 8, aggregators=["symnorm", "max"], num_heads=2,
                                      num_bases=2)),
    "PDNConv": Conv(lambda: gnn.PDNConv(C, 6, edge_dim=3, hidden_channels=8),
                    inputs=("edge_attr",)),
    "GeneralConv": Conv(lambda: gnn.GeneralConv(C, 6, in_edge_channels=3, attention=True),
                        inputs=("edge_attr",), slow=True),
    "HGTConv": Conv(lambda: gnn.HGTConv(C, 6, _hetero_meta()), "refused"),
    "HEATConv": Conv(lambda: gnn.HEATConv(C, 6, 2, 2, 2, 3, 2), "refused"),
    "HeteroConv": Conv(lambda: gnn.HeteroConv({("a", "to", "b"): gnn.SAGEConv(C, 6)}),
                       "refused"),
    "HANConv": Conv(lambda: gnn.HANConv(C, 6, _hetero_meta()), "refused"),
    "LGConv": Conv(lambda: gnn.LGConv(), inputs=("edge_weight",)),
    "PointGNNConv": Conv(lambda: gnn.PointGNNConv(_mlp(C, 3), _mlp(C + 3, 6), _mlp(6, C)),
                         inputs=("pos",)),
    "GPSConv": Conv(lambda: gnn.GPSConv(C, gnn.GINConv(_mlp(C, C))), "refused"),
    "AntiSymmetricConv": Conv(lambda: gnn.AntiSymmetricConv(C), "refused"),
    "DirGNNConv": Conv(lambda: gnn.DirGNNConv(gnn.GCNConv(C, 6)), "refused"),
    "MixHopConv": Conv(lambda: gnn.MixHopConv(C, 4, powers=[0, 1, 2]), inputs=("edge_weight",)),
    "MeshCNNConv": Conv(lambda: gnn.MeshCNNConv(C, 6), "refused"),
}

#: instances refused although their class is supported (checked like the refused classes)
REFUSED_INSTANCES = {
    "ARMAConv(num_layers=2)": lambda: gnn.ARMAConv(C, 6, num_layers=2),
    "GatedGraphConv(num_layers=2)": lambda: gnn.GatedGraphConv(C + 2, num_layers=2),
}

WORLD = ("pos", "normal")
LOCAL_EXTRA = ("x_0",)


def _data(seed: int = 0, loops: bool = False) -> dict:
    """A random graph without self loops; with ``loops``, a few self loops and a repeated edge
    (the edge count stays ``E``)."""
    gen = torch.Generator().manual_seed(seed)
    f = dict(dtype=torch.float64)
    src = torch.randint(0, N, (E,), generator=gen)
    dst = torch.randint(0, N, (E,), generator=gen)
    src = torch.where(src == dst, (src + 1) % N, src)
    if loops:
        src[:3] = dst[:3]  # self loops on three nodes
        src[3], dst[3] = src[4], dst[4]  # a repeated edge
    R = random_orthogonal(N, 3, generator=gen)
    assert (torch.linalg.det(R) < 0).any() and (torch.linalg.det(R) > 0).any()
    normal = torch.nn.functional.normalize(torch.randn(N, 3, generator=gen, **f), dim=-1)
    return dict(
        edge_index=torch.stack([src, dst]), R=R,
        x=torch.randn(N, C, generator=gen, **f), x_0=torch.randn(N, C, generator=gen, **f),
        pos=torch.randn(N, 3, generator=gen, **f), normal=normal,
        edge_attr=torch.randn(E, 3, generator=gen, **f),
        edge_weight=torch.rand(E, generator=gen, **f) + 0.5,
        edge_type=torch.randint(0, 2, (E,), generator=gen),
    )


def _args(spec: Conv, d: dict, x: torch.Tensor, extra: dict) -> dict:
    args = {"x": x, "edge_index": d["edge_index"]}
    for name in spec.inputs:
        args[name] = extra.get(name, d[name])
    return args


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CONVS[name].build().double().eval()


def _wrapped(name: str, layer: nn.Module) -> nn.Module:
    spec = CONVS[name]
    local = {"x": REPS, **{k: REPS for k in spec.inputs if k in LOCAL_EXTRA}}
    world = {k: "1x1n" for k in spec.inputs if k in WORLD}
    return wrap(layer, local=local, world=world)


def _out(result: object) -> torch.Tensor:
    return result[0] if isinstance(result, tuple) else result


def own_frame_reference(name: str, layer: nn.Module, d: dict) -> torch.Tensor:
    """Per target i: the unmodified layer on the original graph, all inputs in i's frame."""
    spec = CONVS[name]
    R = d["R"]
    rows = []
    for i in range(N):
        rho = REPS.matrix(R[i] @ R.transpose(1, 2))  # dense rho(R_i R_j^T) for every node j
        extra = {}
        for k in spec.inputs:
            if k in LOCAL_EXTRA:
                extra[k] = torch.einsum("nab,nb->na", rho, d[k])
            elif k in WORLD:
                extra[k] = d[k] @ R[i].T
        x = torch.einsum("nab,nb->na", rho, d["x"])
        rows.append(_out(layer(**_args(spec, d, x, extra)))[i])
    return torch.stack(rows)


def _supported(slow: bool) -> list:
    marks = [pytest.mark.slow] if slow else []
    return [pytest.param(n, marks=marks, id=n) for n, s in CONVS.items()
            if s.status == "exact" and s.slow == slow]


def test_table_covers_pyg():
    """A class PyG adds (or removes) must be placed in the table and in wrap's registry."""
    assert sorted(CONVS) == sorted(pyg_conv.__all__)
    assert sorted(RULES) == sorted(pyg_conv.__all__)
    for name, spec in CONVS.items():
        if spec.status == "refused":
            assert RULES[name].route == "refuse", name
        elif spec.status == "exact":
            assert RULES[name].route != "refuse", name


def _check_exact(name: str, loops: bool = False, flow: str | None = None) -> None:
    layer = _build(name)
    if flow is not None:
        layer.flow = flow
    reference_layer = copy.deepcopy(layer)
    wrapped = _wrapped(name, layer)
    d = _data(loops=loops)
    if flow == "target_to_source":
        d["edge_index"] = d["edge_index"].flip(0)
    spec = CONVS[name]
    extra = {k: d[k] for k in WORLD if k in spec.inputs}
    out = _out(wrapped(**_args(spec, d, d["x"], extra), frames=tf.Frames(d["R"])))
    expected = own_frame_reference(name, reference_layer, d)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    # O(3) with a reflection: world vectors Q p, frames R Q^T, local inputs unchanged
    Q = random_orthogonal(1, 3, generator=torch.Generator().manual_seed(5))[0]
    if torch.linalg.det(Q) > 0:
        Q = -Q
    moved = {k: d[k] @ Q.T for k in extra}
    out_q = _out(wrapped(**_args(spec, d, d["x"], moved), frames=tf.Frames(d["R"] @ Q.T)))
    torch.testing.assert_close(out_q, out, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", _supported(slow=False))
def test_supported_layer_equals_own_frame_reference(name):
    _check_exact(name)


@pytest.mark.parametrize("name", _supported(slow=True))
def test_supported_layer_equals_own_frame_reference_slow(name):
    _check_exact(name)


ONE_TENSOR = ["GCNConv", "ChebConv", "SGConv", "APPNP", "ClusterGCNConv", "ARMAConv", "PDNConv",
              "FAConv", "EGConv", "AGNNConv", "SuperGATConv", "GATConv", "PointNetConv"]


@pytest.mark.parametrize("name", ONE_TENSOR)
def test_graph_with_self_loops_and_a_repeated_edge(name):
    _check_exact(name, loops=True)


@pytest.mark.parametrize("name", ["ChebConv", "SGConv", "APPNP", "ARMAConv", "PDNConv",
                                  "AGNNConv", "GraphConv"])
def test_flow_target_to_source(name):
    _check_exact(name, flow="target_to_source")


@pytest.mark.parametrize("name", [n for n, s in CONVS.items() if s.status == "refused"])
def test_refused_at_wrap_time(name):
    layer = CONVS[name].build()
    with pytest.raises(TypeError, match=f"wrap cannot make {name} equivariant"):
        wrap(layer, local={"x": REPS})


@pytest.mark.parametrize("label", list(REFUSED_INSTANCES))
def test_refused_instances(label):
    name = label.split("(")[0]
    with pytest.raises(TypeError, match=f"wrap cannot make {name} equivariant.*num_layers=2"):
        wrap(REFUSED_INSTANCES[label](), local={"x": REPS})


@pytest.mark.parametrize("name", [n for n, s in CONVS.items() if s.status == "unbuildable"])
def test_unbuildable_here_still_unbuildable(name):
    """PyG refuses to build these in this environment; if it starts to, test them."""
    with pytest.raises((ImportError, ModuleNotFoundError, ValueError)):
        CONVS[name].build()


def _build_error(name: str) -> str:
    try:
        CONVS[name].build()
    except (ImportError, ValueError) as err:
        return f"`{type(err).__name__}: {err}`".replace("|", "\\|")
    return "builds"


def render_layers_doc() -> str:
    """``docs/layers.md``, generated from ``CONVS`` and wrap's registry."""
    paths = {
        "bipartite": "bipartite expansion",
        "hops": "per-hop frame change",
        "expand": "targets + edge copies",
        "adapter": "adapter",
    }
    lines = [
        "# PyG convolutions under `wrap`",
        "",
        "Generated by `python tests/nn/test_all_convs.py` from the table the test "
        "`tests/nn/test_all_convs.py` runs (torch-geometric "
        f"{torch_geometric.__version__}); do not edit by hand.",
        "",
        "Every class of `torch_geometric.nn.conv.__all__` is either **exact** (the wrapped layer "
        "equals, to 1e-10 in float64, the unmodified layer run for each target `i` on the "
        "original graph with every input written in `i`'s frame, and its local outputs are "
        "unchanged under O(3) with reflections) or **refused** by `wrap` with a `TypeError` "
        "naming the layer and the reason. Layers PyG itself cannot build in the test "
        "environment (they need pyg-lib, cuGraph or dgNN) are marked so.",
        "",
        "Paths: *bipartite expansion*: the layer runs on the edge-expanded bipartite graph "
        "(one source copy per edge carrying `rho(R_i R_j^T) x_j`); *targets + edge copies*: "
        "the same copies as one homogeneous node set, targets' rows returned (*with degrees*: "
        "each copy of `j` also receives `j`'s in-edges, so degree normalisations are the "
        "user's graph's); *per-hop frame change*: the layer runs on the user's graph and every "
        "`propagate` carries features along each edge, so a message travelling `j -> k -> i` "
        "arrives as `rho(R_i R_j^T) x_j`. A layer of any other class (a user's own layer) "
        "tries the per-hop path at its first call and takes targets + edge copies with "
        "degrees if `propagate` receives anything but its local inputs (it is assumed to "
        "read neighbours only through `propagate`).",
        "",
        "Checked at every call, before PyG sees the input: `edge_index` (integer dtype, shape "
        "`(2, E)`, every entry in range; `TypeError`/`ValueError` naming the entry and the "
        "range), the frames' orthogonality (`wrap(..., validate=True)` by default, per call "
        "`validate=`; skipped while compiling), and per-node arguments that the layer reads "
        "per edge but that are declared neither `local` nor `world` (the error suggests "
        "`world={'pos': '1x1n'}` or `local=`). Returned attention weights "
        "(`return_attention_weights=True`) are on the user's `edge_index` plus the self loops "
        "the layer adds, as the unwrapped layer returns them.",
        "",
        "| class | status | path | inputs in the test | note |",
        "|---|---|---|---|---|",
    ]
    for name, spec in CONVS.items():
        rule = RULES[name]
        path = paths.get(rule.route, "")
        if rule.route == "expand" and rule.degrees:
            path += " with degrees"
        if spec.status == "exact":
            status = "exact"
        elif spec.status == "refused":
            status = "refused"
        else:
            status = ("refused; PyG cannot build it here" if rule.route == "refuse"
                      else "supported, untested here: PyG cannot build it here")
        note = rule.reason if rule.route == "refuse" else spec.note
        if spec.status == "unbuildable":
            note = f"{note}; PyG here: {_build_error(name)}".lstrip("; ")
        if rule.check is not None:
            note = "refused with more than one layer (`num_layers > 1`): learned maps between hops"
        inputs = ", ".join(f"`{k}`" for k in ("x", *spec.inputs)) if spec.status == "exact" \
            else ""
        lines.append(f"| `{name}` | {status} | {path} | {inputs} | {note} |")
    counts = {s: sum(c.status == s for c in CONVS.values()) for s in
              ("exact", "refused", "unbuildable")}
    lines += ["", f"{counts['exact']} exact, {counts['refused']} refused, "
              f"{counts['unbuildable']} that PyG cannot build here.", ""]
    return "\n".join(lines)


def test_layers_doc_is_current():
    assert DOC.read_text() == render_layers_doc(), (
        "docs/layers.md is stale: run `python tests/nn/test_all_convs.py`")


if __name__ == "__main__":
    DOC.write_text(render_layers_doc())
    sys.stdout.write(f"wrote {DOC}\n")
