"""Users' own layers, attention weights, input checks and torch.compile for the wrap paths.

References share no code with the wrapper: the own-frame reference runs the unmodified layer
once per target with every input written in that target's frame (dense rho matrices).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_geometric.nn as gnn
from torch import nn
from torch_geometric.utils import add_self_loops, degree

import tensorframes as tf
from tensorframes.nn import wrap
from tensorframes.testing import random_orthogonal

REPS = tf.TensorReps("2x0n + 1x1n + 1x2n")
C = REPS.dim
N, E = 12, 40


class RootConv(gnn.MessagePassing):
    """A user's layer written the usual way (issue 16)."""

    def __init__(self, c: int, out: int):
        super().__init__(aggr="add")
        self.lin = nn.Linear(c, out)
        self.root = nn.Linear(c, out)

    def forward(self, x, edge_index):
        return self.lin(self.propagate(edge_index, x=x)) + self.root(x)


class TutorialGCN(gnn.MessagePassing):
    """The GCNConv of PyG's "Creating message passing networks" tutorial, verbatim."""

    def __init__(self, in_channels, out_channels):
        super().__init__(aggr="add")
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self):
        self.lin.reset_parameters()
        self.bias.data.zero_()

    def forward(self, x, edge_index):
        edge_index, _ = add_self_loops(edge_index, num_nodes=x.size(0))
        x = self.lin(x)
        row, col = edge_index
        deg = degree(col, x.size(0), dtype=x.dtype)
        deg_inv_sqrt = deg.pow(-0.5)
        deg_inv_sqrt[deg_inv_sqrt == float("inf")] = 0
        norm = deg_inv_sqrt[row] * deg_inv_sqrt[col]
        out = self.propagate(edge_index, x=x, norm=norm)
        out = out + self.bias
        return out

    def message(self, x_j, norm):
        return norm.view(-1, 1) * x_j


class TwoHop(gnn.MessagePassing):
    """A user's propagation layer: mean over neighbours, twice, then a linear map."""

    def __init__(self, c: int, out: int):
        super().__init__(aggr="mean")
        self.lin = nn.Linear(c, out)

    def forward(self, x, edge_index):
        h = self.propagate(edge_index, x=x)
        return self.lin(self.propagate(edge_index, x=h))


class PointLike(gnn.MessagePassing):
    """PointNetConv written by a user, positions read per edge."""

    def __init__(self, c: int, out: int):
        super().__init__(aggr="max")
        self.nn = nn.Sequential(nn.Linear(c + 3, 16), nn.Tanh(), nn.Linear(16, out))

    def forward(self, x, pos, edge_index):
        return self.propagate(edge_index, x=x, pos=pos)

    def message(self, x_j, pos_i, pos_j):
        return self.nn(torch.cat([x_j, pos_j - pos_i], -1))


def _data(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, N, (E,), generator=gen)
    dst = torch.randint(0, N, (E,), generator=gen)
    src = torch.where(src == dst, (src + 1) % N, src)
    return dict(
        edge_index=torch.stack([src, dst]), R=random_orthogonal(N, 3, generator=gen),
        x=torch.randn(N, C, generator=gen, dtype=torch.float64),
        pos=torch.randn(N, 3, generator=gen, dtype=torch.float64),
    )


def _own_frame(layer, d, with_pos=False):
    rows = []
    R = d["R"]
    for i in range(N):
        rho = REPS.matrix(R[i] @ R.transpose(1, 2))  # dense rho(R_i R_j^T) for every j
        x = torch.einsum("nab,nb->na", rho, d["x"])
        args = (x, d["pos"] @ R[i].T) if with_pos else (x,)
        rows.append(layer(*args, d["edge_index"])[i])
    return torch.stack(rows)


@pytest.mark.parametrize("cls, route", [(RootConv, "hops"), (TutorialGCN, "expand"),
                                        (TwoHop, "hops"), (PointLike, "hops")])
def test_users_own_layers_equal_own_frame_reference(cls, route):
    torch.manual_seed(0)
    layer = cls(C, 6).double()
    ref_layer = copy.deepcopy(layer)
    with_pos = cls is PointLike
    w = wrap(layer, local={"x": REPS}, world={"pos": "1x1n"} if with_pos else None)
    d = _data()
    args = (d["x"], d["pos"]) if with_pos else (d["x"],)
    out = w(*args, d["edge_index"], frames=tf.Frames(d["R"]))
    assert w.route == route
    torch.testing.assert_close(out, _own_frame(ref_layer, d, with_pos), rtol=0, atol=1e-10)
    # the second call takes the settled path and gives the same numbers
    torch.testing.assert_close(w(*args, d["edge_index"], frames=tf.Frames(d["R"])), out,
                               rtol=0, atol=0)
    # and the frame change matters
    plain = ref_layer(*args, d["edge_index"])
    assert (plain - out).abs().max() > 1e-3


def test_tutorial_gcn_equals_pyg_gcn_wrapped():
    """The tutorial's layer and PyG's GCNConv compute the same function: so do their wraps."""
    torch.manual_seed(0)
    mine = TutorialGCN(C, 6).double()
    pyg = gnn.GCNConv(C, 6).double()
    pyg.lin.weight.data.copy_(mine.lin.weight.data)
    pyg.bias.data.copy_(torch.randn(6, dtype=torch.float64))
    mine.bias.data.copy_(pyg.bias.data)
    d = _data(1)
    frames = tf.Frames(d["R"])
    a = wrap(mine, local={"x": REPS})(d["x"], d["edge_index"], frames=frames)
    b = wrap(pyg, local={"x": REPS})(d["x"], d["edge_index"], frames=frames)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["GATConv", "GATv2Conv", "TransformerConv", "FAConv"])
def test_attention_weights_on_the_users_edges(name):
    """On identity frames the wrapped layer returns what the unwrapped one returns."""
    torch.manual_seed(0)
    layers = {
        "GATConv": lambda: gnn.GATConv(C, 3, heads=2),
        "GATv2Conv": lambda: gnn.GATv2Conv(C, 3, heads=2),
        "TransformerConv": lambda: gnn.TransformerConv(C, 3, heads=2),
        "FAConv": lambda: gnn.FAConv(C),
    }
    layer = layers[name]().double().eval()
    d = _data()
    eye = tf.Frames(torch.eye(3, dtype=torch.float64).expand(N, 3, 3).contiguous())
    w = wrap(copy.deepcopy(layer), local={"x": REPS, "x_0": REPS} if name == "FAConv" else
             {"x": REPS})
    extra = (d["x"],) if name == "FAConv" else ()
    out, (ei, alpha) = w(d["x"], *extra, d["edge_index"], return_attention_weights=True,
                         frames=eye)
    ref, (ref_ei, ref_alpha) = layer(d["x"], *extra, d["edge_index"],
                                     return_attention_weights=True)
    assert ei.shape == ref_ei.shape and ei.max() < N
    torch.testing.assert_close(ei, ref_ei, rtol=0, atol=0)
    torch.testing.assert_close(alpha, ref_alpha, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_forgotten_world_argument_is_named():
    torch.manual_seed(0)
    d = _data()
    conv = wrap(gnn.PointNetConv(nn.Linear(C + 3, 6)).double(), local={"x": REPS})
    with pytest.raises(ValueError, match=r"'pos' is read per edge.*world=\{'pos': '1x1n'\}"):
        conv(d["x"], d["pos"], d["edge_index"], frames=tf.Frames(d["R"]))
    mine = wrap(PointLike(C, 6).double(), local={"x": REPS})
    with pytest.raises(ValueError, match="'pos' is read per edge.*local="):
        mine(d["x"], d["pos"], d["edge_index"], frames=tf.Frames(d["R"]))


def _layer_cases():
    return {
        "PointNetConv": (lambda: gnn.PointNetConv(nn.Linear(C + 3, 6)), True),
        "SAGEConv": (lambda: gnn.SAGEConv(C, 6), False),
        "GATConv": (lambda: gnn.GATConv(C, 6), False),
        "GCNConv": (lambda: gnn.GCNConv(C, 6), False),
        "SGConv": (lambda: gnn.SGConv(C, 6, K=2), False),
        "AGNNConv": (lambda: gnn.AGNNConv(), False),
        "RootConv": (lambda: RootConv(C, 6), False),
    }


@pytest.mark.parametrize("name", list(_layer_cases()))
def test_bad_edge_index_is_named_before_pyg_sees_it(name):
    """Issue 17, reproducer 3, for wrapped layers on every path."""
    factory, has_pos = _layer_cases()[name]
    w = wrap(factory().double(), local={"x": REPS}, world={"pos": "1x1n"} if has_pos else None)
    d = _data()
    frames = tf.Frames(d["R"])
    pos = (d["pos"],) if has_pos else ()

    def call(ei):
        return w(d["x"], *pos, ei, frames=frames)

    call(d["edge_index"])
    too_big = d["edge_index"].clone()
    too_big[1, 7] = N + 3
    with pytest.raises(ValueError, match=rf"edge_index\[1, 7\] = {N + 3} .*0 <= index < {N}"):
        call(too_big)
    negative = d["edge_index"].clone()
    negative[0, 2] = -1
    with pytest.raises(ValueError, match=rf"edge_index\[0, 2\] = -1 .*0 <= index < {N}"):
        call(negative)
    with pytest.raises(TypeError, match="edge_index must have dtype torch.int64"):
        call(d["edge_index"].double())


@pytest.mark.parametrize("name", ["PointNetConv", "GCNConv", "SGConv", "RootConv"])
def test_non_orthogonal_frames_are_refused(name):
    """Issue 17, reproducer 11: checked by default, switchable per layer and per call."""
    factory, has_pos = _layer_cases()[name]
    layer = factory().double()
    w = wrap(layer, local={"x": REPS}, world={"pos": "1x1n"} if has_pos else None)
    d = _data()
    pos = (d["pos"],) if has_pos else ()
    sheared = d["R"].clone()
    sheared[4, 0, 1] += 0.3
    with pytest.raises(ValueError, match=r"frames: frame 4 is not orthogonal.*validate=False"):
        w(d["x"], *pos, d["edge_index"], frames=sheared)
    w(d["x"], *pos, d["edge_index"], frames=sheared, validate=False)
    quiet = wrap(layer, local={"x": REPS}, world={"pos": "1x1n"} if has_pos else None,
                 validate=False)
    quiet(d["x"], *pos, d["edge_index"], frames=sheared)
    with pytest.raises(ValueError, match="not orthogonal"):
        quiet(d["x"], *pos, d["edge_index"], frames=sheared, validate=True)
    nan = d["R"].clone()
    nan[2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="frame 2 has non-finite"):
        w(d["x"], *pos, d["edge_index"], frames=nan)


@pytest.mark.parametrize("name", ["SGConv", "APPNP", "AGNNConv", "PDNConv", "RootConv",
                                  "TutorialGCN"])
def test_compiled_equals_eager_on_generic_and_multi_hop_paths(name):
    torch.manual_seed(0)
    layers = {
        "SGConv": lambda: gnn.SGConv(C, 6, K=2),
        "APPNP": lambda: gnn.APPNP(K=2, alpha=0.1),
        "AGNNConv": lambda: gnn.AGNNConv(),
        "PDNConv": lambda: gnn.PDNConv(C, 6, edge_dim=3, hidden_channels=8),
        "RootConv": lambda: RootConv(C, 6),
        "TutorialGCN": lambda: TutorialGCN(C, 6),
    }
    layer = layers[name]().double()
    w = wrap(layer, local={"x": REPS})
    fresh = wrap(layer, local={"x": REPS})  # compiled before any eager call (users' layers)
    d = _data()
    frames = tf.Frames(d["R"])
    extra = {}
    if name == "PDNConv":
        extra["edge_attr"] = torch.randn(E, 3, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(3))
    eager = w(d["x"], d["edge_index"], frames=frames, **extra)
    torch._dynamo.reset()
    compiled = torch.compile(fresh, backend="aot_eager", fullgraph=False)
    out = compiled(d["x"], d["edge_index"], frames=frames, **extra)
    torch.testing.assert_close(out, eager, rtol=0, atol=1e-10)
    assert fresh.route == w.route
    # the instance-level propagate never outlives a call
    assert "propagate" not in w.layer.__dict__


def test_instance_propagate_restored_after_an_error():
    w = wrap(gnn.SGConv(C, 6, K=2).double(), local={"x": REPS})
    d = _data()
    bad = d["x"][:, :-1]
    with pytest.raises(ValueError):
        w(bad, d["edge_index"], frames=tf.Frames(d["R"]))
    assert "propagate" not in w.layer.__dict__


def test_an_instance_propagate_of_the_users_is_used_and_kept():
    """PyG installs an instance-level ``propagate`` (explain, decomposed_layers); the per-hop
    path must call it and leave it in place."""
    layer = gnn.SGConv(C, 6, K=2).double()
    calls = []
    own = layer.propagate

    def counting(*args, **kwargs):
        calls.append(1)
        return own(*args, **kwargs)

    layer.__dict__["propagate"] = counting
    w = wrap(layer, local={"x": REPS})
    d = _data()
    plain = wrap(gnn.SGConv(C, 6, K=2).double(), local={"x": REPS})
    plain.load_state_dict(w.state_dict())
    out = w(d["x"], d["edge_index"], frames=tf.Frames(d["R"]))
    assert len(calls) == 2  # K = 2 hops, each through the user's propagate
    assert layer.__dict__["propagate"] is counting
    torch.testing.assert_close(out, plain(d["x"], d["edge_index"], frames=tf.Frames(d["R"])))


def test_bipartite_frames_refused_on_one_tensor_paths():
    d = _data()
    w = wrap(gnn.SGConv(C, 6).double(), local={"x": REPS})
    frames = (tf.Frames(d["R"]), tf.Frames(d["R"]))
    with pytest.raises(ValueError, match="SGConv takes one node tensor"):
        w(d["x"], d["edge_index"], frames=frames)
