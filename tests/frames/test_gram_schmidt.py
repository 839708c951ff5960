import pytest
import torch

import tensorframes as tf
from tensorframes.frames import gram_schmidt
from tensorframes.testing import tolerance

from ._clouds import transform


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_w", [False, True])
def test_equivariance(dtype, with_w):
    g = torch.Generator().manual_seed(0)
    u, v, w = (torch.randn(500, 3, generator=g, dtype=torch.float64) for _ in range(3))
    f = gram_schmidt(u.to(dtype), v.to(dtype), w.to(dtype) if with_w else None)
    f.validate()
    atol = 1e-4 if dtype == torch.float32 else 100 * tolerance(dtype)
    for idx in range(4):
        q, _, _ = transform(idx)
        if not with_w and torch.linalg.det(q) < 0:
            # SO(3) frames: only rotations are symmetries; reflections flip handedness
            f2 = gram_schmidt((u @ q.T).to(dtype), (v @ q.T).to(dtype))
            assert (f2.det > 0).all()
            continue
        args = [(a @ q.T).to(dtype) for a in ((u, v, w) if with_w else (u, v))]
        f2 = gram_schmidt(*args)
        torch.testing.assert_close(f2.matrices, f.matrices @ q.T.to(dtype), atol=atol, rtol=0)
    # rows: e1 is u normalised, e2 in span(u, v)
    torch.testing.assert_close(f.matrices[:, 0].double(), u / u.norm(dim=1, keepdim=True),
                               atol=atol, rtol=0)
    if with_w:
        dets = f.det
        assert ((dets < 0).any() and (dets > 0).any())
        s = torch.sign((w * torch.linalg.cross(u, v, dim=-1)).sum(-1))
        torch.testing.assert_close(dets.double(), s, atol=1e-4, rtol=0)


def test_degenerate_inputs_are_finite_with_finite_gradients():
    u = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                      [-1e-7, 0.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64,
                     requires_grad=True)
    v = torch.tensor([[1.0, 1.0, 0.0], [2.0, 4.0, 6.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                      [0.0, 1.0, 0.0], [0.0, 0.0, -5.0]], dtype=torch.float64,
                     requires_grad=True)
    w = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    f = gram_schmidt(u, v, w)
    f.validate()
    m = f.matrices
    # deterministic documented fallbacks
    torch.testing.assert_close(m[0, 0], torch.tensor([1.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(m[3, 0], torch.tensor([1.0, 0, 0], dtype=torch.float64))
    # u = e_x, v = 0: least aligned axis of e_x is y (tie y/z -> lower index)
    torch.testing.assert_close(m[2, 1], torch.tensor([0.0, 1.0, 0], dtype=torch.float64))
    # parallel v: e2 orthogonal to e1 anyway
    assert abs(float(m[1, 0].detach() @ m[1, 1].detach())) < 1e-12
    (m * torch.randn_like(m)).sum().backward()
    for t in (u, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert w.grad is None or torch.isfinite(w.grad).all()  # w only picks a sign
    f2 = gram_schmidt(u.detach(), v.detach(), w.detach())
    torch.testing.assert_close(f2.matrices, m.detach())  # deterministic


def test_smooth_blend_continuity():
    # near-parallel v: frames change continuously through the fallback region
    e = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    eps = torch.logspace(-9, -3, 61, dtype=torch.float64)
    u = e.expand(61, 3)
    v = 2 * e + eps[:, None] * torch.tensor([0.0, 3.0, -2.0], dtype=torch.float64)
    m = gram_schmidt(u, v).matrices
    assert torch.isfinite(m).all()
    jumps = (m[1:] - m[:-1]).abs().amax((1, 2))
    assert jumps.max() < 0.5


def test_bad_shapes():
    with pytest.raises(ValueError):
        gram_schmidt(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError):
        gram_schmidt(torch.randn(3, 3), torch.randn(4, 3))


def test_random_frames_are_equivariant_baseline_is_not():
    # sanity check that the equivariance test above can fail
    u, v = torch.randn(10, 3), torch.randn(10, 3)
    q = tf.frames.random(1, generator=torch.Generator().manual_seed(2)).matrices[0]
    f, f2 = gram_schmidt(u, v), gram_schmidt(u @ q.T, v @ q.T)
    assert not torch.allclose(f2.matrices, f.matrices, atol=1e-3)


# ---------------------------------------------------------------- issue 17: hardening


def test_non_finite_inputs_raise_naming_argument_and_row():
    """Reproducer 5: NaN in u was hidden (identity frame); inf gave a non-finite frame."""
    u = torch.tensor([[1.0, 0, 0], [float("nan"), 0, 0]])
    v = torch.tensor([[0.0, 1, 0], [0.0, 1, 0]])
    with pytest.raises(ValueError, match=r"u\[1\] = \[nan, 0.0, 0.0\] is not finite"):
        gram_schmidt(u, v)
    with pytest.raises(ValueError, match=r"u\[0\]"):
        gram_schmidt(torch.tensor([[float("nan"), 0, 0]]), torch.tensor([[0.0, 1, 0]]))
    with pytest.raises(ValueError, match=r"v\[1\] = \[0.0, inf, 0.0\]"):
        gram_schmidt(v, torch.tensor([[1.0, 0, 1], [0, float("inf"), 0]]))
    with pytest.raises(ValueError, match=r"w\[0\]"):
        gram_schmidt(v[:1], u[:1], torch.tensor([[0.0, float("-inf"), 0]]))


def _orth_err(m):
    eye = torch.eye(3, dtype=m.dtype)
    return float((m @ m.transpose(1, 2) - eye).abs().max())


def test_large_and_tiny_magnitudes_stay_orthogonal():
    """Reproducer 5: u = (1e20, 0, 0), v = (0, 1e20, 1e20) gave max |R R^T - I| = 1."""
    m = gram_schmidt(torch.tensor([[1e20, 0.0, 0.0]]), torch.tensor([[0.0, 1e20, 1e20]])).matrices
    assert _orth_err(m) < 1e-6
    r = 0.5 ** 0.5
    torch.testing.assert_close(m[0], torch.tensor([[1.0, 0, 0], [0, r, r], [0, -r, r]]))
    g = torch.Generator().manual_seed(5)
    for dtype, scales in ((torch.float32, [1e-45, 1e-38, 1e-30, 1e-6, 1e6, 1e20, 1e30, 1e38]),
                          (torch.float64, [5e-324, 1e-300, 1e-30, 1e30, 1e300, 1.7e308])):
        u, v, w = (torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(3))
        u, v, w = (t / t.abs().amax(1, keepdim=True) for t in (u, v, w))  # entries <= 1
        ref = gram_schmidt(u.to(dtype), v.to(dtype), w.to(dtype), eps=0.0).matrices
        for s in scales:
            for eps in (0.0, 1e-6):
                args = [(t * s).to(dtype) for t in (u, v, w)]
                m = gram_schmidt(*args, eps=eps).matrices
                assert torch.isfinite(m).all(), (dtype, s, eps)
                assert _orth_err(m) < 10 * torch.finfo(dtype).eps, (dtype, s, eps)
                if eps == 0.0 and s * torch.finfo(dtype).eps > torch.finfo(dtype).tiny:
                    # no blending: the frame of the unscaled vectors, to round-off
                    torch.testing.assert_close(m, ref, atol=1e3 * torch.finfo(dtype).eps,
                                               rtol=0, msg=f"{dtype} {s}")
    # below eps the documented fallbacks: u ~ 0 -> e1 = x; v ~ 0 -> least aligned axis
    m = gram_schmidt(torch.tensor([[1e-30, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1e-30]]))
    torch.testing.assert_close(m.matrices[0], torch.eye(3), atol=1e-6, rtol=0)
