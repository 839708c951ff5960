"""FrameUpdate: identity at initialisation, world content preserved, equivariance with
reflections, degenerate predictions, input checks, and use between two wrapped layers."""

import math

import pytest
import torch
import torch_geometric.nn as gnn
from torch import nn

import tensorframes as tf
from tensorframes._math import haar_orthogonal
from tensorframes.frames import Frames, FrameUpdate
from tensorframes.nn import to_global, wrap
from tensorframes.testing import POSITIONS, assert_equivariant

REPS = {"tensor": tf.TensorReps("0n + 1n + 2n"), "irreps": tf.Irreps("0e + 1o + 2e"),
        "string": "2x0n + 1x1n"}
METHODS = [("gram_schmidt", True), ("gram_schmidt", False), ("quaternion", True),
           ("quaternion", False), ("axis_angle", True), ("axis_angle", False)]


def _perturbed(reps, method, o3, seed=0, scale=0.5):
    """A float64 FrameUpdate whose last layer is random (far from U = I)."""
    torch.manual_seed(seed)
    mod = FrameUpdate(reps, method=method, o3=o3, hidden_channels=16).double()
    last = mod.mlp[-1]
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        last.weight.copy_(scale * torch.randn(last.weight.shape, generator=g,
                                              dtype=torch.float64))
        last.bias.copy_(scale * torch.randn(last.bias.shape, generator=g, dtype=torch.float64))
    return mod


def _inputs(reps, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = tf.reps.as_reps(reps).dim
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    R = haar_orthogonal(n, generator=g)
    return x, Frames(R)


@pytest.mark.parametrize("reps", list(REPS))
@pytest.mark.parametrize("method,o3", METHODS)
def test_identity_at_initialisation(reps, method, o3):
    torch.manual_seed(1)
    mod = FrameUpdate(REPS[reps], method=method, o3=o3).double()
    x, frames = _inputs(REPS[reps])
    U = mod.local_update(x)
    assert torch.equal(U, torch.eye(3, dtype=torch.float64).expand_as(U))
    x2, f2 = mod(x, frames)
    assert torch.equal(f2.matrices, frames.matrices)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-12)
    if reps != "irreps":  # rho(I) of Cartesian tensors is exact
        assert torch.equal(x2, x)
    # float32 as well (the module's default dtype)
    mod32 = FrameUpdate(REPS[reps], method=method, o3=o3)
    x2, f2 = mod32(x.float(), Frames(frames.matrices.float()))
    assert torch.equal(f2.matrices, frames.matrices.float())
    torch.testing.assert_close(x2, x.float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("reps", list(REPS))
@pytest.mark.parametrize("method,o3", METHODS)
def test_world_content_preserved_and_update_orthogonal(reps, method, o3):
    mod = _perturbed(REPS[reps], method, o3)
    x, frames = _inputs(REPS[reps])
    x2, f2 = mod(x, frames)
    U = mod.local_update(x)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(U @ U.transpose(1, 2), eye.expand_as(U), rtol=0, atol=1e-12)
    torch.testing.assert_close(f2.matrices, U @ frames.matrices, rtol=0, atol=0)
    f2.validate()
    assert (U - eye).abs().amax() > 0.1  # the update does something
    assert (x2 - x).abs().amax() > 0.01
    # the same world feature, expressed in the refined frame
    torch.testing.assert_close(to_global(x2, f2, REPS[reps]), to_global(x, frames, REPS[reps]),
                               rtol=0, atol=1e-12)
    dets = f2.det / frames.det
    if not o3:
        assert torch.allclose(dets, torch.ones_like(dets), atol=1e-12)


@pytest.mark.parametrize("method,o3", METHODS)
def test_equivariance_with_reflections(method, o3):
    """Input frames R g^T (a transformed cloud) give refined frames R' g^T and the same x'."""
    reps = REPS["tensor"]
    mod = _perturbed(reps, method, o3, seed=2)
    x, frames = _inputs(reps, seed=3)
    x2, f2 = mod(x, frames)
    gs = haar_orthogonal(6, generator=torch.Generator().manual_seed(7))
    gs[::2] = gs[::2] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)[:, None]
    assert (torch.linalg.det(gs) < 0).any() and (torch.linalg.det(gs) > 0).any()
    for g in gs:
        x3, f3 = mod(x, Frames(frames.matrices @ g.T))
        torch.testing.assert_close(x3, x2, rtol=0, atol=1e-12)
        torch.testing.assert_close(f3.matrices, f2.matrices @ g.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["gram_schmidt", "quaternion", "axis_angle"])
def test_reflection_reachable_only_with_o3(method):
    reps = REPS["irreps"]
    x, frames = _inputs(reps, seed=4)
    # o3=True: a bias that flips the handedness gives det U = -1 at every node
    mod = FrameUpdate(reps, method=method, o3=True).double()
    with torch.no_grad():
        if method == "gram_schmidt":
            mod.mlp[-1].bias[8] = -2.0  # u_3 = -e_3
        else:
            mod.mlp[-1].bias[-1] = -2.0  # s = -1
    U = mod.local_update(x)
    torch.testing.assert_close(torch.linalg.det(U), -torch.ones(len(x), dtype=torch.float64),
                               rtol=0, atol=1e-12)
    x2, f2 = mod(x, frames)
    torch.testing.assert_close(to_global(x2, f2, reps), to_global(x, frames, reps), rtol=0,
                               atol=1e-12)
    # o3=False: rotations only, however large the weights
    mod = _perturbed(reps, method, False, seed=5, scale=5.0)
    det = torch.linalg.det(mod.local_update(x))
    torch.testing.assert_close(det, torch.ones_like(det), rtol=0, atol=1e-10)


def _degenerate(method, o3, which):
    """A module whose last layer predicts a fixed degenerate update at every node."""
    mod = FrameUpdate("0n + 1n", method=method, o3=o3, hidden_channels=8).double()
    nn.init.normal_(mod.mlp[-1].weight, std=1e-3)  # keeps gradients flowing to every layer
    b = torch.zeros(mod.num_outputs, dtype=torch.float64)
    if method == "gram_schmidt":
        if which == "zero":        # u_1 = 0, u_2 = 0 (, u_3 = 0)
            b[:] = -torch.eye(3, dtype=torch.float64)[:mod.num_outputs // 3].flatten()
        elif which == "parallel":  # u_2 = u_1 = e_1 (, u_3 = e_1: in the plane)
            b[3:6] = torch.tensor([1.0, -1.0, 0.0])
            if o3:
                b[6:9] = torch.tensor([1.0, 0.0, -1.0])
    elif method == "quaternion":
        if which == "zero":        # q = 0 (, s = 0)
            b[0] = -1.0
            if o3:
                b[4] = -1.0
        elif which == "parallel":  # q = -(1, 0, 0, 0): the same rotation as q
            b[0] = -2.0
    else:
        if which == "zero":        # w = 0 (, s = 0)
            if o3:
                b[3] = -1.0
        elif which == "parallel":  # a full turn, w = (2 pi, 0, 0)
            b[0] = 2 * math.pi
    with torch.no_grad():
        mod.mlp[-1].bias.copy_(b)
        mod.mlp[-1].weight.zero_()
    return mod


@pytest.mark.parametrize("which", ["zero", "parallel"])
@pytest.mark.parametrize("method,o3", METHODS)
def test_degenerate_predictions_are_deterministic_and_nan_free(method, o3, which):
    """Zero / parallel predicted vectors, a zero quaternion, a zero sign s, a full turn: U = I
    (gram_schmidt's fallback takes e_1, then the least aligned axis e_2; a zero quaternion
    blends to the identity; s = 0 counts as +1), finite values and gradients."""
    mod = _degenerate(method, o3, which)
    x, frames = _inputs("0n + 1n", n=6, seed=6)
    x.requires_grad_(True)
    R = frames.matrices.clone().requires_grad_(True)
    U = mod.local_update(x)
    torch.testing.assert_close(U, torch.eye(3, dtype=torch.float64).expand_as(U), rtol=0,
                               atol=1e-12)
    x2, f2 = mod(x, Frames(R))
    (x2.sum() + (f2.matrices * torch.arange(9.0, dtype=torch.float64).view(3, 3)).sum()
     ).backward()
    grads = [x.grad, R.grad] + [p.grad for p in mod.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize("method,o3", METHODS)
def test_gradients_finite_and_correct(method, o3):
    mod = _perturbed("0n + 1n", method, o3, seed=8)
    x, frames = _inputs("0n + 1n", n=5, seed=9)
    x.requires_grad_(True)
    R = frames.matrices.clone().requires_grad_(True)

    def f(x, R):
        x2, f2 = mod(x, Frames(R))
        return x2, f2.matrices

    assert torch.autograd.gradcheck(f, (x, R))
    loss = sum(t.square().sum() for t in f(x, R))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in mod.parameters())
    assert mod.mlp[0].weight.grad.abs().sum() > 0


def test_input_checks():
    mod = FrameUpdate("4x0n + 2x1n")
    x = torch.randn(5, 10)
    frames = tf.frames.random(5, generator=torch.Generator().manual_seed(0))
    mod(x, frames)
    with pytest.raises(ValueError, match=r"shape \(N, 10\)"):
        mod(torch.randn(5, 9), frames)
    with pytest.raises(ValueError, match="5 feature rows but 4 frames"):
        mod(x, frames[:4])
    with pytest.raises(TypeError, match="float64"):
        mod(x.double(), Frames(frames.matrices.double()))
    with pytest.raises(TypeError, match="frames are torch.float64"):
        mod(x, Frames(frames.matrices.double()))
    with pytest.raises(TypeError, match="Frames"):
        mod(x, frames.matrices)
    with pytest.raises(TypeError, match="torch.Tensor"):
        mod(x.tolist(), frames)
    with pytest.raises(ValueError, match="O\\(3\\)"):
        mod(x, tf.frames.identity(5, d=2))
    bad = x.clone()
    bad[3, 4] = float("inf")
    with pytest.raises(ValueError, match="row 3"):
        mod(bad, frames)
    with pytest.raises(ValueError, match="method"):
        FrameUpdate("1n", method="euler")
    with pytest.raises(ValueError, match="O\\(3\\)"):
        FrameUpdate(tf.TensorReps("1n", spatial_dim=2))
    with pytest.raises(ValueError, match="hidden_channels"):
        FrameUpdate("1n", hidden_channels=0)
    with pytest.raises(ValueError, match="cannot parse"):
        FrameUpdate("1q")
    assert "quaternion" in repr(FrameUpdate("1o", method="quaternion"))


HIDDEN = tf.TensorReps("4x0n + 2x1n + 1x2n")
OUT = tf.TensorReps("1x0n + 1x1n")


class _Refined(nn.Module):
    """wrap(PointNetConv) -> FrameUpdate -> wrap(PointNetConv) with PCA frames."""

    def __init__(self, method, o3):
        super().__init__()
        self.conv1 = wrap(gnn.PointNetConv(nn.Sequential(nn.Linear(3, 16), nn.SiLU(),
                                                         nn.Linear(16, HIDDEN.dim))),
                          local={}, world={"pos": "1x1n"})
        self.update = FrameUpdate(HIDDEN, method=method, o3=o3, hidden_channels=16)
        self.conv2 = wrap(gnn.PointNetConv(nn.Sequential(nn.Linear(HIDDEN.dim + 3, 16),
                                                         nn.SiLU(), nn.Linear(16, OUT.dim))),
                          local={"x": HIDDEN}, world={"pos": "1x1n"})
        nn.init.normal_(self.update.mlp[-1].weight, std=0.5)  # away from U = I

    def forward(self, pos):
        edge_index = tf.graph.knn_graph(pos, k=8)
        frames = tf.frames.pca(pos, edge_index=edge_index)
        h = self.conv1(None, pos, edge_index, frames=frames)
        h, frames = self.update(h, frames)
        h = self.conv2(h, pos, edge_index, frames=frames)
        return to_global(h, frames, OUT)


@pytest.mark.parametrize("method,o3", [("gram_schmidt", True), ("quaternion", True),
                                       ("axis_angle", False)])
def test_between_two_wrapped_layers_is_o3_equivariant(method, o3):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(11)
    pos = torch.randn(48, 3, generator=gen) * torch.tensor([3.0, 1.5, 0.7])
    pos = pos + 0.3 * pos[:, :1] ** 2 * torch.tensor([0.0, 1.0, 0.5])  # skewed: PCA unambiguous
    model = _Refined(method, o3).double()
    report = assert_equivariant(model, (pos.double(),), (POSITIONS,), OUT, n_samples=4)
    assert report["output[0]"] < 1e-10
    # the refinement changes the output (the test would see a missing or misplaced update)
    with torch.no_grad():
        p = pos.double()
        ei = tf.graph.knn_graph(p, k=8)
        frames = tf.frames.pca(p, edge_index=ei)
        h = model.conv1(None, p, ei, frames=frames)
        plain = to_global(model.conv2(h, p, ei, frames=frames), frames, OUT)
    assert (plain - model(p)).abs().amax() > 1e-3


def test_axis_angle_matches_matrix_exponential():
    """Rodrigues (and its Taylor branch near 0) against torch.linalg.matrix_exp in float64."""
    from tensorframes.frames._update import _axis_angle_matrix

    g = torch.Generator().manual_seed(12)
    w = torch.randn(50, 3, generator=g, dtype=torch.float64)
    w = w * torch.logspace(-9, 1, 50, dtype=torch.float64)[:, None]  # both branches
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(-1, 3, 3)
    torch.testing.assert_close(_axis_angle_matrix(w), torch.linalg.matrix_exp(K), rtol=0,
                               atol=1e-14)
    assert torch.equal(_axis_angle_matrix(torch.zeros(2, 3)), torch.eye(3).expand(2, 3, 3))
