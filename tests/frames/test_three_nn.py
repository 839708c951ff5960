"""three_nn: equivariance with reflections, a brute-force reference, ties, duplicates,
collinear / coplanar neighbourhoods, small clouds, batches and input checks."""

import pytest
import torch

from tensorframes import graph
from tensorframes.frames import Frames, gram_schmidt, three_nn

from ._clouds import cloud, transform

BACKENDS = ["torch"] + (["cluster"] if graph.WITH_TORCH_CLUSTER else [])


def _reference(pos, batch=None):
    """Written as the docstring reads: per node, all other points of its cloud, one per
    distinct position (the lowest index), the own position skipped, sorted by
    (squared distance, index); the first three offsets over the third distance."""
    n = pos.shape[0]
    batch = torch.zeros(n, dtype=torch.long) if batch is None else batch
    rows = []
    for i in range(n):
        seen, cands = set(), []
        for j in range(n):
            key = tuple(pos[j].tolist())
            if batch[j] != batch[i] or key in seen:
                continue
            seen.add(key)
            if key == tuple(pos[i].tolist()):
                continue
            d = pos[j] - pos[i]
            cands.append(((float(d[0] * d[0] + d[1] * d[1]) + float(d[2] * d[2])), j))
        cands.sort()
        v = torch.zeros(3, 3, dtype=pos.dtype)
        for a, (_, j) in enumerate(cands[:3]):
            v[a] = pos[j] - pos[i]
        if cands:
            v = v / v[min(len(cands), 3) - 1].norm()
        rows.append(gram_schmidt(v[0:1], v[1:2], v[2:3]).matrices[0])
    return torch.stack(rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference(backend):
    pos = cloud(2, 120)
    with graph.use_backend(backend):
        f = three_nn(pos)
    torch.testing.assert_close(f.matrices, _reference(pos), rtol=0, atol=1e-14)


@pytest.mark.parametrize("idx", range(4))
def test_o3_equivariant_translation_and_scale_invariant(idx):
    pos = cloud(idx, 400)
    q, t, s = transform(idx)  # odd idx: a reflection
    f = three_nn(pos)
    f.validate()
    f2 = three_nn(s * pos @ q.T + t)
    torch.testing.assert_close(f2.matrices, f.matrices @ q.T, rtol=0, atol=1e-10)
    dets = f.det
    assert (dets > 0).any() and (dets < 0).any()
    # a power-of-two scale and a huge magnitude: the same frames bit for bit
    assert torch.equal(three_nn(pos * 2.0**-60).matrices, f.matrices)
    f32 = three_nn(pos.float())
    torch.testing.assert_close(three_nn(pos.float() * 2.0**100).matrices, f32.matrices,
                               rtol=0, atol=0)


def test_ties_broken_by_index_and_search_complete():
    """14 points at exactly the same distance from the origin (more than the first search
    holds): the lowest three indices win, whatever the backend, in any index order."""
    pts = [(3, 4, 0), (-3, 4, 0), (3, -4, 0), (-3, -4, 0), (4, 3, 0), (-4, 3, 0), (4, -3, 0),
           (-4, -3, 0), (5, 0, 0), (-5, 0, 0), (0, 5, 0), (0, -5, 0), (0, 0, 5), (0, 0, -5)]
    for perm_seed in range(3):
        perm = torch.randperm(len(pts), generator=torch.Generator().manual_seed(perm_seed))
        shell = torch.tensor(pts, dtype=torch.float64)[perm]
        far = torch.tensor([[40.0, 1.0, 2.0], [41.0, -3.0, 7.0]], dtype=torch.float64)
        pos = torch.cat([shell[:5], torch.zeros(1, 3, dtype=torch.float64), shell[5:], far])
        centre = 5
        for backend in BACKENDS:
            with graph.use_backend(backend):
                f = three_nn(pos)
            others = [j for j in range(pos.shape[0]) if j != centre][:3]
            v = (pos[others] - pos[centre]) / 5.0
            expect = gram_schmidt(v[0:1], v[1:2], v[2:3]).matrices[0]
            torch.testing.assert_close(f.matrices[centre], expect, rtol=0, atol=0)
            torch.testing.assert_close(f.matrices, _reference(pos), rtol=0, atol=1e-14)


def test_coincident_points_count_once():
    """Duplicated points: every copy gets the frame of the cloud without duplicates, also
    when one position is repeated more often than the first search holds."""
    pos = cloud(1, 60)
    f = three_nn(pos)
    doubled = three_nn(torch.cat([pos, pos]))
    torch.testing.assert_close(doubled.matrices, torch.cat([f.matrices, f.matrices]),
                               rtol=0, atol=0)
    many = torch.cat([pos, pos[3:4].expand(25, 3), pos[:2].repeat(10, 1)])
    fm = three_nn(many)
    torch.testing.assert_close(fm.matrices[:60], f.matrices, rtol=0, atol=0)
    torch.testing.assert_close(fm.matrices[60:85], f.matrices[3].expand(25, 3, 3), rtol=0,
                               atol=0)
    torch.testing.assert_close(fm.matrices, _reference(many), rtol=0, atol=1e-14)


def test_collinear_and_coplanar_fallbacks():
    # points on a line: the nearest two lie on opposite sides (parallel offsets): the second
    # axis is gram_schmidt's fallback (world axis least aligned with the line), handedness +1
    t = torch.tensor([0.0, 1.0, -1.5, 2.5, -4.0, 6.0], dtype=torch.float64)
    d = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64) / 3.0
    line = t[:, None] * d
    f = three_nn(line)
    f.validate()
    assert torch.allclose(f.matrices[:, 0].abs() @ d, torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(f.matrices[:, 1], torch.tensor([1.0, 0.0, 0.0],
                                                              dtype=torch.float64)
                               .sub(d[0] * d).div((1 - d[0] ** 2) ** 0.5).expand(6, 3),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(f.matrices, _reference(line), rtol=0, atol=1e-14)
    # a flat cloud (z = 0): the third neighbour is in the plane, handedness +1 everywhere
    g = torch.Generator().manual_seed(3)
    flat = torch.cat([torch.randn(50, 2, generator=g, dtype=torch.float64),
                      torch.zeros(50, 1, dtype=torch.float64)], 1)
    f = three_nn(flat)
    f.validate()
    assert (f.det > 0).all()
    torch.testing.assert_close(f.matrices[:, 2].abs(), torch.tensor([0.0, 0.0, 1.0],
                               dtype=torch.float64).expand(50, 3), rtol=0, atol=1e-15)


def test_small_clouds():
    dt = torch.float64
    assert three_nn(torch.zeros(0, 3, dtype=dt)).matrices.shape == (0, 3, 3)
    eye = torch.eye(3, dtype=dt)
    # one point, or one position repeated: the identity
    assert torch.equal(three_nn(torch.tensor([[1.0, 2.0, 3.0]], dtype=dt)).matrices[0], eye)
    assert torch.equal(three_nn(torch.ones(4, 3, dtype=dt)).matrices, eye.expand(4, 3, 3))
    # two points: the first axis toward the other, the rest from the fallback
    two = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0]], dtype=dt)
    f = three_nn(two)
    torch.testing.assert_close(f.matrices[:, 0], torch.tensor([[0.0, 0.6, 0.8],
                                                               [0.0, -0.6, -0.8]], dtype=dt))
    torch.testing.assert_close(f.matrices[:, 1], torch.tensor([[1.0, 0.0, 0.0]] * 2,
                                                              dtype=dt))
    # three points: (e1, e2, e1 x e2), rotation-equivariant, det +1
    g = torch.Generator().manual_seed(4)
    three = torch.randn(3, 3, generator=g, dtype=dt)
    q, t, s = transform(0)  # det +1
    f = three_nn(three)
    assert (f.det > 0).all()
    torch.testing.assert_close(three_nn(s * three @ q.T + t).matrices, f.matrices @ q.T,
                               rtol=0, atol=1e-12)
    # four points: three neighbours, reflections included
    four = torch.randn(4, 3, generator=g, dtype=dt)
    q, t, s = transform(1)  # det -1
    torch.testing.assert_close(three_nn(s * four @ q.T + t).matrices,
                               three_nn(four).matrices @ q.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(three_nn(four).matrices, _reference(four), rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_separation(backend):
    """Two overlapping clouds and a 3-point one in a batch: each gets its frames alone."""
    a, b = cloud(0, 80), cloud(2, 70)
    c = torch.tensor([[0.0, 0.1, 0.0], [0.2, 0.0, 0.0], [0.0, 0.0, 0.3]], dtype=torch.float64)
    batch = torch.tensor([0] * 80 + [1] * 70 + [2] * 3)
    with graph.use_backend(backend):
        f = three_nn(torch.cat([a, b, c]), batch)
        alone = torch.cat([three_nn(a).matrices, three_nn(b).matrices, three_nn(c).matrices])
    torch.testing.assert_close(f.matrices, alone, rtol=0, atol=0)
    # a batched cloud moved by one element of O(3) per cloud
    qa, ta, sa = transform(1)
    qb, tb, sb = transform(3)
    moved = torch.cat([sa * a @ qa.T + ta, sb * b @ qb.T + tb])
    fm = three_nn(moved, batch[:150])
    torch.testing.assert_close(fm.matrices[:80], f.matrices[:80] @ qa.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(fm.matrices[80:150], f.matrices[80:150] @ qb.T, rtol=0,
                               atol=1e-10)


def test_edge_index_candidates():
    pos = cloud(3, 100)
    ei = graph.knn_graph(pos, 6)
    f = three_nn(pos, edge_index=ei)
    torch.testing.assert_close(f.matrices, three_nn(pos).matrices, rtol=0, atol=0)
    # self loops and repeated edges are ignored
    loops = torch.arange(100).expand(2, 100)
    ei2 = torch.cat([ei, loops, ei.flip(1)], 1)
    torch.testing.assert_close(three_nn(pos, edge_index=ei2).matrices, f.matrices, rtol=0,
                               atol=0)
    # a node with two candidates only: handedness +1 (w = 0)
    few = ei[:, ei[1] != 0]
    few = torch.cat([few, torch.tensor([[5, 9], [0, 0]])], 1)
    f3 = three_nn(pos, edge_index=few)
    v = torch.stack([pos[5] - pos[0], pos[9] - pos[0]])
    v = v[v.norm(dim=1).argsort()]  # nearest first
    v = v / v[1].norm()
    torch.testing.assert_close(f3.matrices[0], gram_schmidt(v[0:1], v[1:2]).matrices[0],
                               rtol=0, atol=1e-15)
    batch = torch.tensor([0] * 50 + [1] * 50)
    cross = torch.tensor([[3], [70]])
    with pytest.raises(ValueError, match="joins two clouds"):
        three_nn(pos, batch, edge_index=torch.cat([ei[:, :10], cross], 1))
    with pytest.raises(ValueError, match="edge_index"):
        three_nn(pos, edge_index=torch.tensor([[0, 100], [1, 2]]))


def test_gradients_and_input_checks():
    pos = cloud(0, 30).requires_grad_(True)
    f = three_nn(pos)
    (f.matrices * torch.arange(9.0, dtype=torch.float64).view(3, 3)).sum().backward()
    assert torch.isfinite(pos.grad).all() and pos.grad.abs().sum() > 0
    small = cloud(1, 12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: three_nn(p).matrices, (small,))
    assert three_nn(cloud(0, 20).half()).matrices.dtype == torch.float16
    assert isinstance(three_nn(cloud(0, 20)), Frames)
    with pytest.raises(TypeError, match="floating point"):
        three_nn(torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        three_nn([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        three_nn(torch.zeros(5, 2))
    bad = torch.zeros(5, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="index 2"):
        three_nn(bad)
    with pytest.raises(ValueError, match="eps"):
        three_nn(torch.zeros(5, 3), eps=-1.0)
    with pytest.raises(ValueError, match="sorted"):
        three_nn(torch.randn(4, 3), torch.tensor([1, 0, 0, 0]))


def test_hub_in_edge_index_uses_the_flat_path_with_the_same_result():
    """A star graph (one node with every other as candidate) is sorted pair by pair, not as a
    padded table; both layouts give the same neighbours."""
    from tensorframes.frames import _neighbours as nb

    pos = cloud(0, 300)
    pos[7] = pos[3]  # a duplicate among the hub's candidates
    others = torch.arange(1, 300)
    star = torch.stack([others, torch.zeros_like(others)])
    f = three_nn(pos, edge_index=star)
    torch.testing.assert_close(f.matrices[0], three_nn(pos).matrices[0], rtol=0, atol=0)
    g = torch.Generator().manual_seed(5)
    ei = torch.randint(0, 300, (2, 2000), generator=g)
    ei = torch.cat([ei, ei[:, :100], star], 1)  # repeated edges, self loops, a hub
    rep = nb._representatives(pos)
    args = (pos, rep, ei[1], ei[1], ei[0], 300)
    flat = nb._first_three_flat(*args)
    width = int(torch.bincount(ei[1]).max())
    assert 300 * width > 4 * ei.shape[1] + 4096  # three_nn takes the flat path here
    # the padded table on the same pairs, hub removed (so that it is chosen)
    keep = ei[1] != 0
    assert 300 * int(torch.bincount(ei[1][keep]).max()) <= 4 * int(keep.sum()) + 4096
    sub = (pos, rep, ei[1][keep], ei[1][keep], ei[0][keep], 300)
    for a, b in zip(nb._first_three(*sub), nb._first_three_flat(*sub), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(flat[0][1:], nb._first_three(*sub)[0][1:], rtol=0, atol=0)
