import pytest
import torch

from tensorframes import graph
from tensorframes.frames import LearnedFrames

from ._clouds import cloud, transform


@pytest.fixture(autouse=True)
def _torch_backend():
    with graph.use_backend("torch"):
        yield


def _conditioning(model, pos, ei):
    """Stability margin of the Gram-Schmidt inputs (small = ambiguous)."""
    vecs = {}
    # recompute the vectors through a forward with a patched gram_schmidt
    import tensorframes.frames._learned as L
    orig = L.gram_schmidt

    def spy(u, v, w=None, *, eps):
        vecs["u"], vecs["v"], vecs["w"] = u, v, w
        return orig(u, v, w, eps=eps)

    L.gram_schmidt = spy
    try:
        model(pos, edge_index=ei)
    finally:
        L.gram_schmidt = orig
    u, v, w = vecs["u"], vecs["v"], vecs["w"]
    c = torch.linalg.cross(u, v, dim=-1)
    sin = c.norm(dim=-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    margin = torch.minimum(sin, u.norm(dim=-1) / u.norm(dim=-1).median())
    if w is not None:
        margin = torch.minimum(margin, (w * c).sum(-1).abs() / (w.norm(dim=-1) * c.norm(dim=-1)))
    return margin


@pytest.mark.parametrize("o3", [True, False])
def test_learned_frames_equivariance(o3):
    torch.manual_seed(0)
    model = LearnedFrames(0, 16, k=16, o3=o3).double()
    for idx in range(2):
        x = cloud(idx, 512)
        q, t, s = transform(idx if o3 else 2 * idx)  # even idx: det +1 for SO(3)
        ei = graph.knn_graph(x, 16)
        m32 = LearnedFrames(0, 16, k=16, o3=o3)
        m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
        f = m32(x.float(), edge_index=ei).detach()
        f2 = m32((s * (x @ q.T) + t).float(), edge_index=ei).detach()
        ok = _conditioning(model, x, ei) > 2e-2
        assert ok.float().mean() > 0.75  # most nodes well conditioned
        err = (f2.matrices - f.matrices @ q.T.float()).abs().amax((1, 2))
        assert err[ok].max() < 1e-4, float(err[ok].max().detach())
        f.validate()
        dets = f.det
        if o3:
            assert (dets < 0).any() and (dets > 0).any()
        else:
            assert (dets > 0).all()


def test_learned_frames_features_batch_and_gradients():
    torch.manual_seed(0)
    x = torch.cat([cloud(0, 100), cloud(1, 80)]).float()
    batch = torch.tensor([0] * 100 + [1] * 80)
    feats = torch.randn(180, 5)
    model = LearnedFrames(5, 16, k=8)
    f = model(x, batch=batch, x=feats)
    assert len(f) == 180
    loss = (f.matrices[:, 2] * torch.tensor([0.3, -1.0, 0.5])).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # radius variant
    model_r = LearnedFrames(0, 8, r=0.3, o3=False)
    model_r(x, batch=batch).validate()
    assert "k=8" in repr(model) and "r=0.3" in repr(model_r)
    with pytest.raises(ValueError):
        model(x, batch=batch)  # missing features


def test_learned_frames_train_step_changes_output():
    torch.manual_seed(0)
    x = cloud(3, 200).float()
    model = LearnedFrames(0, 16, k=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    target = torch.tensor([0.0, 0.0, 1.0])
    losses = []
    for _ in range(5):
        f = model(x)
        loss = (1 - (f.matrices[:, 0] @ target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- issue 17: hardening


def test_learned_frames_dtype_mismatch_is_a_clear_type_error():
    """Reproducer 6: float16 gave index_add_'s dtype error, float64 'mat1 and mat2 ...'."""
    torch.manual_seed(0)
    model = LearnedFrames(0, 16, k=4)
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float16, torch.float64, torch.bfloat16):
        with pytest.raises(TypeError, match=rf"torch.float32 parameters but pos is {dtype}.*"
                                            rf"model.to\({dtype}\) or pos.to\(torch.float32\)"):
            model(x.to(dtype))
    model_f = LearnedFrames(2, 16, k=4)
    with pytest.raises(TypeError, match="but x is torch.float64"):
        model_f(x, x=torch.randn(30, 2, dtype=torch.float64))
    f64 = model.double()(x.double())  # following the advice works
    f64.validate()
    assert f64.matrices.dtype == torch.float64


def test_learned_frames_positions_with_grad_and_checked_edge_index():
    torch.manual_seed(0)
    model = LearnedFrames(0, 16, k=4)
    p = torch.randn(30, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
    (model(p).matrices * torch.randn(30, 3, 3)).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"edge_index\[0, 1\] = 30 .*0 <= index < 30"):
        model(p, edge_index=torch.tensor([[0, 30], [1, 2]]))
    with pytest.raises(TypeError, match="edge_index must have dtype"):
        model(p, edge_index=torch.tensor([[0.0, 3.0], [1.0, 2.0]]))
    bad = p.detach().clone()
    bad[4, 2] = float("inf")
    with pytest.raises(ValueError, match="index 4"):
        model(bad)


@pytest.mark.parametrize("r", [None, 0.9])
def test_learned_frames_large_and_tiny_coordinates(r):
    """Reproducer 1 for LearnedFrames: squared distances overflowed / underflowed."""
    torch.manual_seed(0)
    model = LearnedFrames(0, 16, k=6, r=r)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
    f0 = model(x).matrices.detach()
    if r is None:
        for e in (-100, -60, 60, 120):  # powers of two: bit for bit
            assert torch.equal(model(x * 2.0 ** e).matrices.detach(), f0), e
        for s in (1e-30, 1e-13, 1e13, 1e20, 1e30, 1e37):
            f = model(x * s).matrices.detach()
            assert torch.isfinite(f).all(), s
            torch.testing.assert_close(f, f0, atol=2e-3, rtol=0, msg=str(s))
    else:
        for e in (-100, 100):
            m2 = LearnedFrames(0, 16, k=6, r=r * 2.0 ** e)
            m2.load_state_dict(model.state_dict())
            assert torch.equal(m2(x * 2.0 ** e).matrices.detach(), f0), e
