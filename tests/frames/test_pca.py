import pytest
import torch

import tensorframes as tf
from tensorframes import graph
from tensorframes.frames import AMBIGUITY_THRESHOLD, pca
from tensorframes.frames._eigh3 import eigh3

from ._clouds import cloud, transform


@pytest.fixture(autouse=True)
def _torch_backend():
    with graph.use_backend("torch"):
        yield


def _check_equivariant(idx: int, k: int = 16, weight="uniform", center="self"):
    x = cloud(idx)
    q, t, s = transform(idx)
    ei = graph.knn_graph(x.float(), k)  # same neighbourhoods for both (scale/rotation safe)
    f, info = pca(x.float(), edge_index=ei, weight=weight, center=center, return_info=True)
    y = (s * (x @ q.T) + t).float()
    f2, info2 = pca(y, edge_index=ei, weight=weight, center=center, return_info=True)
    ok = info.ambiguity < AMBIGUITY_THRESHOLD
    assert ok.float().mean() > 0.9, f"only {ok.float().mean():.3f} of nodes unambiguous"
    err = (f2.matrices - f.matrices @ q.T.float()).abs().amax((1, 2))
    assert err[ok].max() < 1e-4, float(err[ok].max())
    f.validate()
    f2.validate()
    return f


@pytest.mark.parametrize("idx", range(4))
def test_pca_equivariance_o3(idx):
    f = _check_equivariant(idx)
    assert (f.det < 0).any() and (f.det > 0).any()  # genuinely O(3) frames


@pytest.mark.parametrize("weight,center", [("gaussian", "self"), ("uniform", "mean"),
                                           (lambda d, s: 1.0 / (1.0 + (d / s) ** 2), "self")])
def test_pca_equivariance_options(weight, center):
    _check_equivariant(5, weight=weight, center=center)


@pytest.mark.slow
@pytest.mark.parametrize("idx", range(100))
def test_pca_equivariance_100_clouds(idx):
    _check_equivariant(idx)


def test_pca_with_k_and_r_and_batch():
    x = torch.cat([cloud(0, 300), cloud(1, 200)]).float()
    batch = torch.tensor([0] * 300 + [1] * 200)
    f1 = pca(x, k=12, batch=batch)
    ei = graph.knn_graph(x, 12, batch)
    f2 = pca(x, edge_index=ei)
    torch.testing.assert_close(f1.matrices, f2.matrices)
    f3 = pca(x, r=0.3, batch=batch)
    f3.validate()
    with pytest.raises(ValueError, match="only one"):
        pca(x, k=4, r=0.1)


def _naive_reference(pos, ei):
    """float64 covariance about the node + torch.linalg.eigh."""
    j, i = ei
    d = pos[j] - pos[i]
    n = pos.shape[0]
    cov = torch.zeros(n, 3, 3, dtype=pos.dtype).index_add_(0, i, d[:, :, None] * d[:, None, :])
    cov = cov / torch.bincount(i, minlength=n).clamp_min(1)[:, None, None]
    vals, vecs = torch.linalg.eigh(cov)
    return vals.flip(-1), vecs.flip(-1).transpose(-1, -2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pca_matches_eigh_reference(dtype):
    x = cloud(2) + 0.05 * torch.randn(1024, 3, dtype=torch.float64)
    ei = graph.knn_graph(x, 16)
    vals_ref, R_ref = _naive_reference(x, ei)
    f, info = pca(x.to(dtype), edge_index=ei, return_info=True)
    ok = info.ambiguity < AMBIGUITY_THRESHOLD
    assert ok.float().mean() > 0.9
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(info.eigenvalues.double(), vals_ref, atol=tol * vals_ref.max(),
                               rtol=0)
    # axes equal up to sign
    dots = (f.matrices.double() * R_ref).sum(-1).abs()
    assert (1 - dots[ok]).abs().max() < tol


def test_general_dimension_path():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64)
    q = tf.frames.random(1, d=4, generator=g, dtype=torch.float64).matrices[0]
    ei = graph.knn_graph(x, 12)
    f, info = pca(x, edge_index=ei, return_info=True)
    f2 = pca(x @ q.T + 1.0, edge_index=ei)
    ok = info.ambiguity < AMBIGUITY_THRESHOLD
    assert ok.float().mean() > 0.8
    err = (f2.matrices - f.matrices @ q.T).abs().amax((1, 2))
    assert err[ok].max() < 1e-8
    # 3-d closed form agrees with the general path
    x3 = cloud(4).float()
    ei3 = graph.knn_graph(x3, 16)
    from tensorframes.frames._moments import _pca3, _pca_general
    R1, v1, s1 = _pca3(x3.double(), ei3, "uniform", "self")[:3]
    R2, v2, s2 = _pca_general(x3.double(), ei3, "uniform", "self")[:3]
    torch.testing.assert_close(v1, v2)
    okk = (v1[:, :-1] - v1[:, 1:]).amin(1) > 1e-6 * v1[:, 0]
    torch.testing.assert_close(R1[okk], R2[okk])
    torch.testing.assert_close(s1, s2)


def _octahedron():
    e = torch.eye(3, dtype=torch.float64)
    return torch.cat([e, -e])


DEGENERATE = {
    "single": torch.tensor([[0.3, -1.0, 2.0]]),
    "two": torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
    "duplicates": torch.tensor([[1.0, 2.0, 3.0]]).repeat(8, 1),
    "collinear": torch.linspace(0, 1, 9)[:, None] * torch.tensor([[1.0, -2.0, 0.5]]),
    "coplanar_square": torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]]),
    "octahedron": _octahedron().float(),
    "cube": torch.tensor([[a, b, c] for a in (-1.0, 1.0) for b in (-1.0, 1.0)
                          for c in (-1.0, 1.0)]),
}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_neighbourhoods(name, dtype):
    x = DEGENERATE[name].to(dtype)
    n = x.shape[0]
    k = max(1, n - 1)
    f, info = pca(x, k=k, return_info=True)
    f.validate()
    assert torch.isfinite(info.ambiguity).all() and torch.isfinite(info.eigenvalues).all()
    assert (info.ambiguity >= AMBIGUITY_THRESHOLD).all(), info.ambiguity
    if name != "two":  # two points: a single offset, its ambiguity comes from the gap
        assert (info.ambiguity > 0.9).all()
    f2 = pca(x.clone(), k=k)
    torch.testing.assert_close(f2.matrices, f.matrices)  # deterministic


def test_node_without_neighbours_and_planar_cloud():
    x = torch.randn(50, 3)
    x[:, 2] = 0.0  # exactly planar cloud: the normal's sign is ambiguous
    f, info = pca(x, k=8, return_info=True)
    f.validate()
    assert (info.ambiguity >= AMBIGUITY_THRESHOLD).all()
    # isolated node: empty edge_index -> identity-like fallback, ambiguity 1
    f, info = pca(x, edge_index=torch.empty(2, 0, dtype=torch.long), return_info=True)
    f.validate()
    assert (info.ambiguity == 1).all()


def test_nonfinite_positions_raise():
    x = torch.randn(20, 3)
    x[7, 1] = float("nan")
    with pytest.raises(ValueError, match="index 7"):
        pca(x, k=4)
    x[7, 1] = 0.0
    x[11, 0] = float("inf")
    with pytest.raises(ValueError, match="index 11"):
        pca(x, k=4)


def test_eigh3_against_linalg_and_degenerate():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 3, 3, generator=g, dtype=torch.float64)
    A = a @ a.transpose(1, 2)
    lam, V = eigh3(A)
    ref = torch.linalg.eigh(A).eigenvalues.flip(-1)
    torch.testing.assert_close(lam, ref, atol=1e-12 * A.abs().max(), rtol=0)
    torch.testing.assert_close(A @ V.transpose(1, 2), V.transpose(1, 2) * lam[:, None, :],
                               atol=1e-10, rtol=0)
    q = tf.frames.random(4, generator=g, dtype=torch.float64).matrices
    D = torch.diag_embed(torch.tensor([[0.0, 0, 0], [2.0, 2, 2], [1.0, 1, 0], [3.0, 1, 1]],
                                      dtype=torch.float64))
    B = q @ D @ q.transpose(1, 2)
    for M in (D, B, B.float()):
        lam, V = eigh3(M)
        assert torch.isfinite(V).all()
        Frames_ = tf.Frames(V)
        Frames_.validate()
        torch.testing.assert_close(lam.double(), D.diagonal(dim1=1, dim2=2).double(),
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("weight", ["uniform", "gaussian"])
def test_knn_layout_dense_path_equals_scatter_path(weight):
    """k-regular graphs sorted by centre (knn_graph's layout) skip the scatter; shuffling the
    edges forces the scatter path, which must give the same frames and info."""
    from tensorframes.frames._moments import _regular_degree

    gen = torch.Generator().manual_seed(7)
    pos = torch.randn(300, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [2.0, 1.0, 0.5], dtype=torch.float64)
    batch = torch.tensor([0] * 120 + [1] * 180)
    ei = tf.graph.knn_graph(pos, 10, batch)
    assert _regular_degree(ei[1], 300) == 10
    perm = torch.randperm(ei.shape[1], generator=gen)
    assert _regular_degree(ei[1, perm], 300) == 0
    F1, info1 = tf.frames.pca(pos, edge_index=ei, weight=weight, return_info=True)
    F2, info2 = tf.frames.pca(pos, edge_index=ei[:, perm], weight=weight, return_info=True)
    torch.testing.assert_close(F1.matrices, F2.matrices, rtol=0, atol=1e-10)
    torch.testing.assert_close(info1.eigenvalues, info2.eigenvalues, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- issue 17: hardening

F32_MAX = torch.finfo(torch.float32).max


def _base_cloud(n=30, seed=0, dtype=torch.float32):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pca_exact_at_every_finite_magnitude(dtype):
    """Reproducer 1: large/tiny coordinates gave NaN ambiguity (1e13) and NaN frames (1e19+)."""
    base = _base_cloud(dtype=dtype)
    f0, i0 = pca(base, k=8, return_info=True)
    big = F32_MAX if dtype == torch.float32 else torch.finfo(dtype).max
    scales = [1e-30, 1e-20, 1e-13, 1e-6, 1e6, 1e13, 1e19, 1e20, 1e30,
              0.5 * big / float(base.abs().max())]
    if dtype == torch.float64:
        scales += [1e-300, 1e300]
    for s in scales:
        f, info = pca(base * s, k=8, return_info=True)
        assert torch.isfinite(f.matrices).all(), s
        f.validate()
        assert torch.isfinite(info.ambiguity).all() and torch.isfinite(info.rel_skew).all(), s
        torch.testing.assert_close(f.matrices, f0.matrices, atol=1e-4, rtol=0, msg=str(s))
        torch.testing.assert_close(info.ambiguity, i0.ambiguity, atol=1e-3, rtol=0,
                                   msg=str(s))
    # powers of two only change exponents: bit for bit the same frames, eigenvalues * 4**e
    for e in (-100, -60, -20, 20, 60, 120):
        f, info = pca(base * 2.0 ** e, k=8, return_info=True)
        assert torch.equal(f.matrices, f0.matrices), e
        assert torch.equal(info.ambiguity, i0.ambiguity), e
        if abs(e) <= 60:
            assert torch.equal(info.eigenvalues, i0.eigenvalues * 4.0 ** e), e


def test_pca_magnitudes_with_radius_and_weights():
    base = _base_cloud(200, seed=1)
    for kw in (dict(r=0.8), dict(k=8, weight="gaussian"), dict(k=8, center="mean"),
               dict(k=8, weight=lambda d, s: 1.0 / (1.0 + (d / s) ** 2))):
        f0 = pca(base, **kw)
        s = 2.0 ** 70
        kws = dict(kw, r=kw["r"] * s) if "r" in kw else kw
        f = pca(base * s, **kws)
        assert torch.equal(f.matrices, f0.matrices), kw
    # a weight callable sees distances in the units of pos, whatever the internal scaling
    seen = []

    def weight(d, s):
        seen.append(float(d.max()))
        return torch.ones_like(d)

    pca(base, k=8, weight=weight)
    pca(base * 1e25, k=8, weight=weight)
    assert seen[1] / seen[0] == pytest.approx(1e25, rel=1e-5)


def test_pca_tiny_cluster_in_a_huge_cloud():
    """Neighbourhoods far smaller than the cloud (edge_index given) get their own scale."""
    base = _base_cloud()
    ei = graph.knn_graph(base, 6)
    f0, i0 = pca(base, edge_index=ei, return_info=True)
    far = _base_cloud(5, seed=9) * 1e30
    f, info = pca(torch.cat([base * 1e-30, far]), edge_index=ei, return_info=True)
    f.validate()
    torch.testing.assert_close(f.matrices[:30], f0.matrices, atol=1e-4, rtol=0)
    assert torch.isfinite(info.ambiguity).all()
    torch.testing.assert_close(info.ambiguity[:30], i0.ambiguity, atol=1e-2, rtol=0)


def _separated_cloud():
    """float64 cloud whose every neighbourhood has well-separated eigenvalues and skews."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [3.0, 2.0, 1.0], dtype=torch.float64)
    ei = graph.knn_graph(x, 6)
    _, info = pca(x, edge_index=ei, return_info=True)
    assert info.rel_gap.min() > 0.1 and info.rel_skew.min() > 0.01
    return x, ei


@pytest.mark.parametrize("weight", ["uniform", "gaussian"])
@pytest.mark.parametrize("center", ["self", "mean"])
def test_pca_gradcheck(weight, center):
    """Reproducer 2: pca on positions requiring grad crashed (``out=`` buffers)."""
    x, ei = _separated_cloud()

    def fn(q):
        f, info = pca(q, edge_index=ei, weight=weight, center=center, return_info=True)
        return f.matrices, info.eigenvalues

    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),))


def test_pca_gradcheck_weights_and_same_frames_with_and_without_grad():
    x, ei = _separated_cloud()
    w = torch.rand(ei.shape[1], generator=torch.Generator().manual_seed(4),
                   dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(
        lambda q, ww: pca(q, edge_index=ei, weight=ww).matrices,
        (x.clone().requires_grad_(), w.clone().requires_grad_()))
    with torch.no_grad():
        ref = pca(x, edge_index=ei, weight=w).matrices
    assert torch.equal(pca(x.clone().requires_grad_(), edge_index=ei, weight=w).matrices, ref)


def test_pca_gradients_float32_and_degenerate():
    p = _base_cloud().requires_grad_()
    f = pca(p, k=8)  # the reproducer
    (f.matrices * torch.randn(30, 3, 3, generator=torch.Generator().manual_seed(1))).sum(
    ).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(pca(p, k=8).matrices, f.matrices, rtol=0, atol=0)
    # coincident eigenvalues: gradients undefined, documented as finite (rotation term dropped)
    for name in ("duplicates", "coplanar_square", "octahedron", "cube"):
        q = DEGENERATE[name].float().clone().requires_grad_()
        f = pca(q, k=q.shape[0] - 1)
        (f.matrices * torch.randn(f.matrices.shape, generator=torch.Generator().manual_seed(2))
         ).sum().backward()
        assert torch.isfinite(q.grad).all(), name


def test_pca_edge_index_is_checked():
    """Reproducer 3: out-of-range entries gave torch's INDICES error; floats index_select's."""
    x = _base_cloud(10)
    good = torch.tensor([[1, 2, 3, 4], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"edge_index\[0, 2\] = 15 .*0 <= index < 10"):
        pca(x, edge_index=torch.tensor([[1, 2, 15, 4], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match=r"edge_index\[1, 3\] = -1 .*0 <= index < 10"):
        pca(x, edge_index=torch.tensor([[1, 2, 3, 4], [0, 0, 1, -1]]))
    with pytest.raises(TypeError, match="edge_index must have dtype torch.int64.*float32"):
        pca(x, edge_index=good.float())
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        pca(x, edge_index=good[:1])
    torch.testing.assert_close(pca(x, edge_index=good.int()).matrices,
                               pca(x, edge_index=good).matrices, rtol=0, atol=0)


def test_pca_weights_are_checked():
    """Reproducer 4: a NaN weight gave non-finite frames; negative weights were accepted."""
    x = _base_cloud(4)
    ei = torch.tensor([[1, 2, 3], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"weight\[1\] = nan"):
        pca(x, edge_index=ei, weight=torch.tensor([1.0, float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"weight\[2\] = -0.5"):
        pca(x, edge_index=ei, weight=torch.tensor([1.0, 1.0, -0.5]))
    with pytest.raises(ValueError, match=r"weight\[0\] = inf"):
        pca(x, edge_index=ei, weight=torch.tensor([float("inf"), 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"weight\(dist, s\)\[0\]"):
        pca(x, edge_index=ei, weight=lambda d, s: -d)
    f = pca(x, edge_index=ei, weight=torch.tensor([1.0, 0.0, 0.0]))
    f.validate()


def test_eigh3_backward_matches_linalg_eigh_and_is_finite_when_degenerate():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(50, 3, 3, generator=g, dtype=torch.float64)
    A = (a @ a.transpose(1, 2)).requires_grad_()
    gl, gv = (torch.randn(50, 3, generator=g, dtype=torch.float64),
              torch.randn(50, 3, 3, generator=g, dtype=torch.float64))

    def loss(lam, V):
        V = V * torch.sign(V[..., :1]).detach()  # same sign convention for both solvers
        return (lam * gl).sum() + (V * gv).sum()

    loss(*eigh3(A)).backward()
    g1, A.grad = A.grad.clone(), None
    lam, U = torch.linalg.eigh(0.5 * (A + A.transpose(1, 2)))  # symmetric perturbations
    loss(lam.flip(-1), U.flip(-1).transpose(-1, -2)).backward()
    g2 = A.grad
    # eigh3 reads the upper triangle only: compare symmetric parts
    torch.testing.assert_close(g1 + g1.transpose(1, 2), g2 + g2.transpose(1, 2), atol=1e-8,
                               rtol=0)
    D = torch.diag_embed(torch.tensor([[1.0, 1, 0], [2.0, 2, 2], [0.0, 0, 0]],
                                      dtype=torch.float64)).requires_grad_()
    lam, V = eigh3(D)
    (lam.sum() + (V * torch.randn(3, 3, 3, generator=g, dtype=torch.float64)).sum()).backward()
    assert torch.isfinite(D.grad).all()
    torch.testing.assert_close(D.grad.diagonal(dim1=1, dim2=2), torch.ones(3, 3,
                               dtype=torch.float64))  # d(sum of eigenvalues)/d(diagonal) = 1
