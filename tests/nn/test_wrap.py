"""The wrapper against an independent construction of the edge-expanded bipartite graph.

Invariance alone cannot catch a missing or wrong frame change (canonicalised features make any
layer invariant), so every layer is compared, in float64, with the unmodified layer run on the
expanded graph built here edge by edge with dense rho(R_i R_j^T) matrices.
"""

import copy

import pytest
import torch
import torch_geometric.nn as gnn
from torch import nn

import tensorframes as tf
from tensorframes.nn import EdgeFrames, wrap
from tensorframes.testing import random_orthogonal

REPS = {
    "tensor": tf.TensorReps("3x0n + 2x1n + 1x1p + 1x2n"),
    "irreps": tf.Irreps("3x0e + 2x1o + 1x1e + 1x2e"),
}
N, N_SRC, N_DST, E = 10, 10, 6, 30


def _mlp(i, o):
    return nn.Sequential(nn.Linear(i, 16), nn.Tanh(), nn.Linear(16, o))


def _layers(C):
    """name -> (layer factory, extra forward inputs, supports bipartite)."""
    return {
        "GraphConv": (lambda: gnn.GraphConv(C, 8), {}, True),
        "SAGEConv": (lambda: gnn.SAGEConv(C, 8), {}, True),
        "SAGEConv_project": (lambda: gnn.SAGEConv(C, 8, project=True), {}, True),
        "GATConv": (lambda: gnn.GATConv(C, 4, heads=2, add_self_loops=False), {}, True),
        "GATv2Conv": (lambda: gnn.GATv2Conv(C, 4, heads=2, add_self_loops=False), {}, True),
        "TransformerConv": (lambda: gnn.TransformerConv(C, 4, heads=2, edge_dim=3), {"ea": 3},
                            True),
        "GINEConv": (lambda: gnn.GINEConv(_mlp(C, 8), edge_dim=3), {"ea": 3}, True),
        "EdgeConv": (lambda: gnn.EdgeConv(_mlp(2 * C, 8)), {}, True),
        "PointNetConv": (lambda: gnn.PointNetConv(_mlp(C + 3, 8), _mlp(8, 8),
                                                  add_self_loops=False), {"pos": 1}, True),
        "PointTransformerConv": (lambda: gnn.PointTransformerConv(C, 8, add_self_loops=False),
                                 {"pos": 1}, True),
        "PPFConv": (lambda: gnn.PPFConv(_mlp(C + 4, 8), add_self_loops=False),
                    {"pos": 1, "normal": 1}, True),
        "NNConv": (lambda: gnn.NNConv(C, 8, _mlp(3, C * 8)), {"ea": 3}, True),
        "ResGatedGraphConv": (lambda: gnn.ResGatedGraphConv(C, 8), {}, True),
        "GCNConv": (lambda: gnn.GCNConv(C, 8), {}, False),
    }


def _graph(bipartite, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n_src, n_dst = (N_SRC, N_DST) if bipartite else (N, N)
    src = torch.randint(0, n_src, (E,), generator=gen)
    dst = torch.randint(0, n_dst, (E,), generator=gen)
    if not bipartite:  # no self loops in the base graph (tested separately)
        src = torch.where(src == dst, (src + 1) % n_src, src)
    return torch.stack([src, dst]), n_src, n_dst, gen


def _inputs(reps, bipartite, seed=0):
    ei, n_src, n_dst, gen = _graph(bipartite, seed)
    f = dict(dtype=torch.float64)
    R_src = random_orthogonal(n_src, 3, generator=gen)
    R_dst = R_src if not bipartite else random_orthogonal(n_dst, 3, generator=gen)
    assert (torch.linalg.det(R_src) < 0).any() and (torch.linalg.det(R_src) > 0).any()
    x_src = torch.randn(n_src, reps.dim, generator=gen, **f)
    x_dst = x_src if not bipartite else torch.randn(n_dst, reps.dim, generator=gen, **f)
    pos_src = torch.randn(n_src, 3, generator=gen, **f)
    pos_dst = pos_src if not bipartite else torch.randn(n_dst, 3, generator=gen, **f)
    nrm_src = torch.nn.functional.normalize(torch.randn(n_src, 3, generator=gen, **f), dim=-1)
    nrm_dst = nrm_src if not bipartite else torch.nn.functional.normalize(
        torch.randn(n_dst, 3, generator=gen, **f), dim=-1)
    ea = torch.randn(E, 3, generator=gen, **f)
    return dict(ei=ei, R_src=R_src, R_dst=R_dst, x=(x_src, x_dst), pos=(pos_src, pos_dst),
                normal=(nrm_src, nrm_dst), ea=ea)


def _reference_expansion(reps, d):
    """Edge-expanded bipartite graph built edge by edge with dense rho matrices."""
    (x_src, x_dst), (p_src, p_dst), (n_src, n_dst) = d["x"], d["pos"], d["normal"]
    src, dst = d["ei"]
    xs, ps, ns = [], [], []
    for j, i in zip(src.tolist(), dst.tolist()):
        rel = d["R_dst"][i] @ d["R_src"][j].T
        xs.append(reps.matrix(rel) @ x_src[j])
        ps.append(d["R_dst"][i] @ p_src[j])
        ns.append(d["R_dst"][i] @ n_src[j])
    loc_p_dst = torch.einsum("nij,nj->ni", d["R_dst"], p_dst)
    loc_n_dst = torch.einsum("nij,nj->ni", d["R_dst"], n_dst)
    ei = torch.stack([torch.arange(len(xs)), dst])
    return dict(x=(torch.stack(xs), x_dst), pos=(torch.stack(ps), loc_p_dst),
                normal=(torch.stack(ns), loc_n_dst), ei=ei)


def _call(layer, x, ei, extra, d, pos=None, normal=None, **kw):
    args = {}
    if "pos" in extra:
        args["pos"] = pos
    if "normal" in extra:
        args["normal"] = normal
    if "ea" in extra:
        args["edge_attr"] = d["ea"]
    return layer(x=x, edge_index=ei, **args, **kw)


def _world(extra):
    return {k: "1x1n" for k in ("pos", "normal") if k in extra}


CASES = [(name, kind, bip) for name in _layers(1) for kind in REPS for bip in (False, True)]


@pytest.mark.parametrize("name, kind, bipartite", CASES)
def test_wrapped_layer_equals_layer_on_expanded_graph(name, kind, bipartite):
    reps = REPS[kind]
    factory, extra, supports_bipartite = _layers(reps.dim)[name]
    if bipartite and not supports_bipartite:
        pytest.skip(f"{name} has no bipartite form")
    torch.manual_seed(1)
    layer = factory().double()
    wrapped = wrap(copy.deepcopy(layer), local={"x": reps}, world=_world(extra))
    d = _inputs(reps, bipartite)
    frames = (tf.Frames(d["R_src"]), tf.Frames(d["R_dst"])) if bipartite else tf.Frames(d["R_src"])
    x = d["x"] if bipartite else d["x"][0]
    pos = d["pos"] if bipartite else d["pos"][0]
    normal = d["normal"] if bipartite else d["normal"][0]
    out = _call(wrapped, x, d["ei"], extra, d, pos=pos, normal=normal, frames=frames)

    ref = _reference_expansion(reps, d)
    if name == "GCNConv":
        expected = _gcn_reference(layer, reps, d, ref)
    else:
        expected = _call(layer, ref["x"], ref["ei"], extra, d, pos=ref["pos"],
                         normal=ref["normal"])
    assert out.shape == expected.shape == (d["R_dst"].shape[0], expected.shape[-1])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    # and the frame change matters: without it the numbers differ
    plain = _call(layer, x, d["ei"], extra, d, pos=pos, normal=normal)
    assert (plain - expected).abs().max() > 1e-3


def _gcn_reference(layer, reps, d, ref):
    """GCN on the expansion, with the original graph's symmetric normalisation and self loops."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    x = d["x"][0]
    ei_loops, w = gcn_norm(d["ei"], None, N, add_self_loops=True, dtype=x.dtype)
    # copies in edge order; the added self loops carry x_i unchanged
    copies = torch.cat([ref["x"][0], x])
    src = torch.cat([torch.arange(E), E + torch.arange(N)])
    assert torch.equal(ei_loops[1], torch.cat([d["ei"][1], torch.arange(N)]))
    plain = gnn.GCNConv(reps.dim, 8, normalize=False, add_self_loops=False).double()
    plain.load_state_dict(layer.state_dict())
    nodes = torch.cat([x, copies])  # targets first, then the copies
    ei = torch.stack([N + src, ei_loops[1]])
    return plain(nodes, ei, w)[:N]


@pytest.mark.parametrize("kind", list(REPS))
@pytest.mark.parametrize("name", ["GATConv", "PointNetConv", "GCNConv"])
def test_self_loops_carry_x_i_unchanged(kind, name):
    """A layer adding self loops equals the same layer without, on the graph with explicit
    loops; and explicit loops in the input are recognised (not doubled)."""
    reps = REPS[kind]
    C = reps.dim
    d = _inputs(reps, False)
    frames = tf.Frames(d["R_src"])
    x, pos = d["x"][0], d["pos"][0]
    torch.manual_seed(2)
    if name == "GATConv":
        with_loops, without = gnn.GATConv(C, 4, heads=2), gnn.GATConv(C, 4, heads=2,
                                                                      add_self_loops=False)
    elif name == "PointNetConv":
        with_loops = gnn.PointNetConv(_mlp(C + 3, 8))
        without = gnn.PointNetConv(_mlp(C + 3, 8), add_self_loops=False)
    else:
        with_loops, without = gnn.GCNConv(C, 8), None
    with_loops.double()
    extra = {"pos": 1} if name == "PointNetConv" else {}
    w_loops = wrap(with_loops, local={"x": reps}, world=_world(extra))
    loops = torch.arange(N).repeat(2, 1)
    ei_explicit = torch.cat([d["ei"], loops], 1)
    out = _call(w_loops, x, d["ei"], extra, d, pos=pos, frames=frames)
    out_explicit_input = _call(w_loops, x, ei_explicit, extra, d, pos=pos, frames=frames)
    torch.testing.assert_close(out, out_explicit_input, rtol=0, atol=1e-10)
    if without is not None:
        without.double().load_state_dict(with_loops.state_dict())
        w_without = wrap(without, local={"x": reps}, world=_world(extra))
        expected = _call(w_without, x, ei_explicit, extra, d, pos=pos, frames=frames)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_state_dict_parameters_repr_pass_through():
    layer = gnn.GATConv(8, 4, heads=2, dropout=0.5)
    wrapped = wrap(layer, local={"x": "8x0n"})
    assert list(wrapped.state_dict()) == list(layer.state_dict())
    assert [p is q for p, q in zip(wrapped.parameters(), layer.parameters())] == [True] * len(
        list(layer.parameters()))
    wrapped.load_state_dict(layer.state_dict())
    before = layer.lin.weight.clone()
    wrapped.reset_parameters()
    assert not torch.equal(before, layer.lin.weight)
    wrapped.eval()
    assert not layer.training
    wrapped.double()
    assert layer.lin.weight.dtype == torch.float64
    assert "GATConv(8, 4, heads=2)" in repr(wrapped) and "8x0n" in repr(wrapped)


def test_edge_frames_shared_across_layers_give_same_result():
    reps = REPS["tensor"]
    d = _inputs(reps, False)
    frames = tf.Frames(d["R_src"])
    layer = wrap(gnn.EdgeConv(_mlp(2 * reps.dim, 8)).double(), local={"x": reps})
    ef = EdgeFrames.compute(d["ei"], frames)
    a = layer(d["x"][0], d["ei"], frames=frames)
    b = layer(d["x"][0], d["ei"], frames=frames, edge_frames=ef)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)  # rel computed in the kernel or by matmul


def test_flow_target_to_source_respected():
    reps = REPS["tensor"]
    d = _inputs(reps, False)
    frames = tf.Frames(d["R_src"])
    torch.manual_seed(0)
    a = gnn.GraphConv(reps.dim, 8).double()
    b = gnn.GraphConv(reps.dim, 8, flow="target_to_source").double()
    b.load_state_dict(a.state_dict())
    out_a = wrap(a, local={"x": reps})(d["x"][0], d["ei"], frames=frames)
    out_b = wrap(b, local={"x": reps})(d["x"][0], d["ei"].flip(0), frames=frames)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-12)


def test_malformed_use_fails_loudly():
    reps = REPS["tensor"]
    d = _inputs(reps, False)
    frames = tf.Frames(d["R_src"])
    layer = gnn.PointNetConv(_mlp(reps.dim + 3, 8)).double()
    with pytest.raises(ValueError, match="'feat' is not a node-feature argument of PointNetConv"):
        wrap(layer, local={"feat": reps})
    with pytest.raises(ValueError, match="cannot parse"):
        wrap(layer, local={"x": "3x1q"})
    w = wrap(layer, local={"x": reps}, world={"pos": "1x1n"})
    x, pos = d["x"][0], d["pos"][0]
    with pytest.raises(ValueError, match=r"'x' \(source\) must have shape \(N, 21\)"):
        w(x[:, :-1], pos, d["ei"], frames=frames)
    with pytest.raises(ValueError, match=r"'x' \(source\) has 10 rows but the source frames "
                                         r"number 9"):
        w(x, pos, d["ei"], frames=tf.Frames(d["R_src"][:9]))
    with pytest.raises(TypeError, match="frames"):
        w(x, pos, d["ei"])
    with pytest.raises(TypeError, match="SparseTensor"):
        w(x, pos, d["ei"].to_sparse(), frames=frames)


def test_refusals_that_keep_results_honest():
    """Ambiguous or mismatched use raises instead of returning wrong numbers."""
    reps = REPS["tensor"]
    d = _inputs(reps, True)  # N_SRC = 10 sources, N_DST = 6 targets
    frames_small_src = (tf.Frames(d["R_dst"]), tf.Frames(d["R_src"]))  # 6 sources, 10 targets
    x_src, x_dst = d["x"][1], d["x"][0]
    ei = d["ei"].flip(0) % 6  # any edges within range: 6 sources -> 10 targets
    layer = wrap(gnn.GATConv(reps.dim, 4).double(), local={"x": reps})  # adds self loops
    with pytest.raises(ValueError, match="more targets"):
        layer((x_src, x_dst), ei, frames=frames_small_src)
    # EdgeFrames of another graph with the same number of edges
    d0 = _inputs(reps, False)
    frames = tf.Frames(d0["R_src"])
    edge = wrap(gnn.EdgeConv(_mlp(2 * reps.dim, 8)).double(), local={"x": reps})
    other = EdgeFrames.compute(d0["ei"].flip(0), frames)
    with pytest.raises(ValueError, match="another graph or flow"):
        edge(d0["x"][0], d0["ei"], frames=frames, edge_frames=other)


def test_wrapped_signature_is_the_layers_plus_frames():
    import inspect

    layer = gnn.PointNetConv(_mlp(REPS["tensor"].dim + 3, 8))
    sig = inspect.signature(wrap(layer, local={"x": REPS["tensor"]}, world={"pos": "1x1n"}))
    assert list(sig.parameters)[:3] == list(inspect.signature(layer.forward).parameters)[:3]
    assert sig.parameters["frames"].kind is inspect.Parameter.KEYWORD_ONLY


def _count_gathers(monkeypatch) -> list[int]:
    """The rows of every source PyG's ``_index_select`` gathers from, in call order."""
    rows: list[int] = []
    original = gnn.MessagePassing._index_select

    def counting(self, src, index):
        rows.append(src.shape[0])
        return original(self, src, index)

    monkeypatch.setattr(gnn.MessagePassing, "_index_select", counting)
    return rows


@pytest.mark.parametrize("with_edge_frames", [False, True])
def test_layer_reads_the_edge_copies_without_gathering_them_again(monkeypatch, with_edge_frames):
    """The bipartite route hands the layer the edge copies' rows for its ``x_j`` / ``pos_j``
    (no second ``(E, dim)`` gather); the numbers equal those of the layer's own gather, also with
    self loops in the user's graph (their slot row and edge copy hold the same values)."""
    import contextlib

    import tensorframes.nn._routes as routes

    reps = REPS["irreps"]
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, reps.dim, generator=gen, dtype=torch.float64)
    pos = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    ei = torch.randint(0, N, (2, E), generator=gen)
    ei[:, :4] = torch.arange(4).repeat(2, 1)  # self loops at the front
    frames = tf.Frames(random_orthogonal(N, 3, generator=gen, dtype=torch.float64))
    torch.manual_seed(0)
    layer = wrap(gnn.PointNetConv(_mlp(reps.dim + 3, 8), add_self_loops=False).double(),
                 local={"x": reps}, world={"pos": "1x1o"})
    ef = EdgeFrames.compute(ei, frames) if with_edge_frames else None
    gathered = _count_gathers(monkeypatch)

    def run():
        xr = x.clone().requires_grad_()
        out = layer(xr, pos, ei, frames=frames, edge_frames=ef)
        (out.square().sum()).backward()
        return out.detach(), xr.grad

    out, grad = run()
    assert gathered == [N]  # only pos_i along the targets; x_j and pos_j were handed over
    gathered.clear()
    monkeypatch.setattr(routes, "shortcut_gathers", lambda *a: contextlib.nullcontext())
    out_ref, grad_ref = run()
    assert sorted(gathered) == [N, N + E, N + E]  # the layer's own gathers of the sources
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)


def test_hops_route_reads_the_edge_copies_without_gathering_them_again(monkeypatch):
    """Per-hop frame change (SGConv, two hops): every hop's gather of the expanded sources is
    handed the edge copies; numbers equal those of the layer's own gathers."""
    import contextlib

    import tensorframes.nn._routes as routes

    reps = REPS["tensor"]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(N, reps.dim, generator=gen, dtype=torch.float64)
    ei = torch.randint(0, N, (2, E), generator=gen)
    frames = tf.Frames(random_orthogonal(N, 3, generator=gen, dtype=torch.float64))
    torch.manual_seed(0)
    layer = wrap(gnn.SGConv(reps.dim, 8, K=2).double(), local={"x": reps})
    assert layer.route == "hops"
    rows = _count_gathers(monkeypatch)
    out = layer(x, ei, frames=frames)
    assert all(r <= N for r in rows)  # no gather of the (N + E')-row expanded sources
    monkeypatch.setattr(routes, "shortcut_gathers", lambda *a: contextlib.nullcontext())
    rows.clear()
    out_ref = layer(x, ei, frames=frames)
    assert sum(r > N for r in rows) == 2  # one per hop without the shortcut
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-13)
