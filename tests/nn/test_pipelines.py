"""World-in / world-out pipelines, torch.compile, TFMessagePassing and the architecture pieces."""

import pytest
import torch
import torch_geometric.nn as gnn
from torch import nn

import tensorframes as tf
from tensorframes.nn import (
    TFMessagePassing,
    global_pool,
    knn_interpolate,
    to_global,
    to_local,
    wrap,
)
from tensorframes.testing import POSITIONS, assert_equivariant, random_orthogonal

HIDDEN = tf.TensorReps("8x0n + 4x1n + 2x2n")
IN = tf.TensorReps("1x1n")  # a world-frame input vector per point (e.g. a normal)
OUT = tf.TensorReps("1x0n + 1x1n + 1x2n")


def _cloud(n=64, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    # an anisotropic, skewed blob: PCA frames are unambiguous at almost every point
    pos = torch.randn(n, 3, generator=gen) * torch.tensor([3.0, 1.5, 0.7])
    pos = pos + 0.3 * pos[:, :1] ** 2 * torch.tensor([0.0, 1.0, 0.5])
    vec = torch.randn(n, 3, generator=gen)
    return pos.to(dtype), vec.to(dtype)


class Pipeline(nn.Module):
    """to_local -> two wrapped PyG layers -> to_global, with PCA frames from the positions."""

    def __init__(self):
        super().__init__()
        self.lift = nn.Linear(IN.dim + 1, HIDDEN.dim)  # mixes channels: fine in local frames
        self.conv1 = wrap(gnn.PointNetConv(nn.Sequential(nn.Linear(HIDDEN.dim + 3, 32),
                                                         nn.SiLU(), nn.Linear(32, HIDDEN.dim))),
                          local={"x": HIDDEN}, world={"pos": "1x1n"})
        self.conv2 = wrap(gnn.GATConv(HIDDEN.dim, OUT.dim, heads=1), local={"x": HIDDEN})

    def forward(self, pos, vec):
        edge_index = tf.graph.knn_graph(pos, k=8)
        frames = tf.frames.pca(pos, edge_index=edge_index)
        h = to_local(vec, frames, IN)
        h = self.lift(torch.cat([h, h.norm(dim=-1, keepdim=True)], -1))
        h = self.conv1(h, pos, edge_index, frames=frames).relu()
        h = self.conv2(h, edge_index, frames=frames)
        return to_global(h, frames, OUT)


def test_world_in_world_out_pipeline_is_o3_equivariant():
    torch.manual_seed(0)
    model = Pipeline()
    pos, vec = _cloud()
    report = assert_equivariant(model, (pos, vec), (POSITIONS, IN), OUT, n_samples=4)
    assert report["output[0]"] < 1e-10  # float64 comparison: essentially exact
    # float32 pipeline (as users run it): same check at float32 tolerance
    assert_equivariant(model, (pos, vec), (POSITIONS, IN), OUT, dtype=torch.float32, tol=1e-5)


def test_pipeline_without_frames_is_not_equivariant():
    """The same layers unwrapped (identity frames) fail the check: the test can fail."""
    torch.manual_seed(0)
    model = Pipeline().double()
    pos, vec = _cloud()

    def plain(pos, vec):
        frames = tf.frames.identity(pos.shape[0], dtype=pos.dtype)
        edge_index = tf.graph.knn_graph(pos, k=8)
        h = to_local(vec, frames, IN)
        h = model.lift(torch.cat([h, h.norm(dim=-1, keepdim=True)], -1))
        h = model.conv1(h, pos, edge_index, frames=frames).relu()
        return to_global(model.conv2(h, edge_index, frames=frames), frames, OUT)

    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(plain, (pos.double(), vec.double()), (POSITIONS, IN), OUT,
                           dtype=torch.float64)


def test_node_permutation_permutes_outputs():
    torch.manual_seed(0)
    model = Pipeline().double()
    pos, vec = _cloud(dtype=torch.float64)
    perm = torch.randperm(pos.shape[0], generator=torch.Generator().manual_seed(4))
    out = model(pos, vec)
    out_perm = model(pos[perm], vec[perm])
    torch.testing.assert_close(out_perm, out[perm], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["PointNetConv", "GATConv", "GCNConv", "EdgeConv"])
def test_compiled_equals_eager_and_stays_equivariant(name):
    torch.manual_seed(0)
    C = HIDDEN.dim
    layers = {
        "PointNetConv": (gnn.PointNetConv(nn.Linear(C + 3, C)), {"pos": "1x1n"}),
        "GATConv": (gnn.GATConv(C, C), {}),
        "GCNConv": (gnn.GCNConv(C, C), {}),
        "EdgeConv": (gnn.EdgeConv(nn.Linear(2 * C, C)), {}),
    }
    layer, world = layers[name]
    wrapped = wrap(layer, local={"x": HIDDEN}, world=world)
    pos, _ = _cloud(48)
    edge_index = tf.graph.knn_graph(pos, k=6)
    frames = tf.frames.pca(pos, edge_index=edge_index)
    x = to_local(torch.randn(48, C), frames, HIDDEN)

    def run(module, x, pos):
        args = (x, pos, edge_index) if world else (x, edge_index)
        return module(*args, frames=frames)

    torch._dynamo.reset()
    compiled = torch.compile(wrapped, backend="aot_eager", fullgraph=False)
    eager = run(wrapped, x, pos)
    out = run(compiled, x, pos)
    torch.testing.assert_close(out, eager, rtol=0, atol=1e-5)

    def pipeline(x_world, pos):
        ei = tf.graph.knn_graph(pos, k=6)
        fr = tf.frames.pca(pos, edge_index=ei)
        h = to_local(x_world, fr, HIDDEN)
        args = (h, pos, ei) if world else (h, ei)
        return to_global(compiled(*args, frames=fr), fr, HIDDEN)

    x_world = torch.randn(48, C)
    assert_equivariant(pipeline, (x_world, pos), (HIDDEN, POSITIONS), HIDDEN,
                       dtype=torch.float32, tol=1e-5, n_samples=2)


class VectorConv(TFMessagePassing):
    """A new layer written against TFMessagePassing: a learned sum of carried neighbours."""

    def __init__(self, reps):
        super().__init__(local={"x": reps}, world={"pos": "1x1n"}, aggr="add")
        self.gate = nn.Linear(1, 1)

    def forward(self, x, pos, edge_index, frames):
        return self.propagate(edge_index, frames=frames, x=x, pos=pos)

    def message(self, x_j, pos_i, pos_j, frames_i, frames_j, rel_frames):
        self.seen = (frames_i, frames_j, rel_frames)
        dist = (pos_j - pos_i).norm(dim=-1, keepdim=True)
        return torch.sigmoid(self.gate(dist)) * x_j


class PlainVectorConv(gnn.MessagePassing):
    def __init__(self, gate):
        super().__init__(aggr="add")
        self.gate = gate

    def forward(self, x, pos, edge_index):
        return self.propagate(edge_index, x=x, pos=pos)

    def message(self, x_j, pos_i, pos_j):
        dist = (pos_j - pos_i).norm(dim=-1, keepdim=True)
        return torch.sigmoid(self.gate(dist)) * x_j


def test_tf_message_passing_equals_plain_layer_wrapped():
    reps = tf.TensorReps("2x0n + 1x1n + 1x2p")
    gen = torch.Generator().manual_seed(0)
    n = 12
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(n, reps.dim, generator=gen, dtype=torch.float64)
    R = random_orthogonal(n, 3, generator=gen)
    frames = tf.Frames(R)
    edge_index = torch.randint(0, n, (2, 40), generator=gen)
    layer = VectorConv(reps).double()
    out = layer(x, pos, edge_index, frames)
    plain = wrap(PlainVectorConv(layer.gate), local={"x": reps}, world={"pos": "1x1n"})
    torch.testing.assert_close(out, plain(x, pos, edge_index, frames=frames), rtol=0, atol=1e-12)
    frames_i, frames_j, rel = layer.seen
    src, dst = edge_index
    torch.testing.assert_close(frames_i, R[dst])
    torch.testing.assert_close(rel, R[dst] @ R[src].transpose(1, 2))
    loops = src == dst
    torch.testing.assert_close(frames_j[~loops], R[src][~loops])


def test_knn_interpolate_carries_features_into_receiving_frames():
    reps = tf.TensorReps("1x0n + 1x1n + 1x2n")
    gen = torch.Generator().manual_seed(1)
    pos_x = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    pos_y = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    R_x, R_y = random_orthogonal(30, generator=gen), random_orthogonal(12, generator=gen)
    x_world = torch.randn(30, reps.dim, generator=gen, dtype=torch.float64)
    x = to_local(x_world, tf.Frames(R_x), reps)
    y = knn_interpolate(x, pos_x, pos_y, tf.Frames(R_x), tf.Frames(R_y), reps, k=3)
    # reference: PyG's knn_interpolate in the world frame, then into y's frames
    d2 = torch.cdist(pos_y, pos_x) ** 2
    idx = d2.topk(3, largest=False).indices
    w = 1 / d2.gather(1, idx)
    ref_world = (x_world[idx] * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    torch.testing.assert_close(y, to_local(ref_world, tf.Frames(R_y), reps), rtol=0, atol=1e-10)


def test_global_pool_is_equivariant_and_refuses_max():
    reps = tf.TensorReps("2x0n + 1x1p")
    gen = torch.Generator().manual_seed(2)
    x_world = torch.randn(10, reps.dim, generator=gen, dtype=torch.float64)
    R = random_orthogonal(10, generator=gen)
    batch = torch.tensor([0] * 4 + [1] * 6)
    pooled = global_pool(to_local(x_world, tf.Frames(R), reps), tf.Frames(R), reps, batch)
    ref = torch.stack([x_world[:4].mean(0), x_world[4:].mean(0)])
    torch.testing.assert_close(pooled, ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="max is not equivariant"):
        global_pool(x_world, tf.Frames(R), reps, batch, reduce="max")


def _pyg_builds_dynamic_edge_conv():
    try:
        gnn.DynamicEdgeConv(nn.Linear(2, 1), k=2)
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _pyg_builds_dynamic_edge_conv(),
                    reason="PyG 2.8 builds DynamicEdgeConv only with pyg-lib (docs/layers.md)")
def test_dynamic_edge_conv_uses_world_frame_neighbours():
    reps = tf.TensorReps("2x0n + 2x1n")
    gen = torch.Generator().manual_seed(3)
    n = 20
    x_world = torch.randn(n, reps.dim, generator=gen, dtype=torch.float64)
    R = random_orthogonal(n, generator=gen)
    frames = tf.Frames(R)
    torch.manual_seed(0)
    dyn = gnn.DynamicEdgeConv(nn.Linear(2 * reps.dim, 5), k=4).double()
    out = wrap(dyn, local={"x": reps})(to_local(x_world, frames, reps), frames=frames)
    # reference: the k-NN graph of the world features, then wrapped EdgeConv with the same nn
    edge_index = tf.graph.knn(x_world, x_world, 4).flip(0)
    edge_conv = gnn.EdgeConv(nn.Linear(2 * reps.dim, 5)).double()  # construction resets its nn
    edge_conv.nn.load_state_dict(dyn.nn.state_dict())
    edge = wrap(edge_conv, local={"x": reps})
    ref = edge(to_local(x_world, frames, reps), edge_index, frames=frames)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


def test_tf_message_passing_refuses_target_to_source():
    class Flipped(TFMessagePassing):
        def __init__(self):
            super().__init__(local={"x": "1x1n"}, flow="target_to_source")

    with pytest.raises(ValueError, match="source_to_target"):
        Flipped()
