import asyncio
import threading
import types

import pytest
import torch

from tensorframes import graph
from tensorframes.graph import _backend, _search


def _cloud(n, d=3, seed=0, dtype=torch.float32):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _brute_knn(x, y, k, bx, by):
    """float64 brute force: per query the k nearest (distance, index)-ordered."""
    x, y = x.double(), y.double()
    out = []
    for q in range(y.shape[0]):
        cand = (bx == by[q]).nonzero().flatten()
        d = ((x[cand] - y[q]) ** 2).sum(-1)
        order = sorted(range(len(cand)), key=lambda t: (float(d[t]), int(cand[t])))[:k]
        out.append([int(cand[t]) for t in order])
    return out


def _groups(ei, m):
    return [ei[1][ei[0] == q].tolist() for q in range(m)]


@pytest.fixture(autouse=True)
def _torch_backend():
    with graph.use_backend("torch"):
        yield


def test_knn_matches_bruteforce_with_batches():
    x, y = _cloud(300, seed=1), _cloud(90, seed=2)
    bx = torch.tensor([0] * 100 + [1] * 150 + [2] * 50)
    by = torch.tensor([0] * 30 + [1] * 30 + [3] * 30)  # batch 3 has no x: no edges
    ei = graph.knn(x, y, 7, bx, by)
    ref = _brute_knn(x, y, 7, bx, by)
    assert _groups(ei, 90) == ref
    assert ei.shape[1] == 60 * 7
    # row 0 indexes y, row 1 indexes x
    assert int(ei[0].max()) < 90 and (bx[ei[1]] == by[ei[0]]).all()


def test_knn_chunking_is_exact_and_k_larger_than_cloud():
    x = _cloud(500, seed=3)
    b = torch.tensor([0] * 7 + [1] * 493)
    full = graph.knn(x, x, 10, b, b, chunk_size=10 ** 9)
    for cs in (1, 37, 1000):
        assert torch.equal(graph.knn(x, x, 10, b, b, chunk_size=cs), full)
    assert (full[0] < 7).sum() == 7 * 7  # cloud of 7 points: all 7 neighbours


def test_knn_ties_lower_index_first():
    x = torch.tensor([[1.0, 0, 0], [0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]])
    ei = graph.knn(x, torch.zeros(1, 3), 3)
    assert ei[1].tolist() == [1, 0, 2]
    ei = graph.knn(x, torch.tensor([[1.0, 0, 0]]), 4)
    assert ei[1].tolist() == [0, 2, 4, 1]
    xd = x.double()
    assert graph.knn(xd, torch.zeros(1, 3, dtype=torch.float64), 3)[1].tolist() == [1, 0, 2]


def test_knn_graph_loop_and_flow():
    x = _cloud(120, seed=4)
    b = torch.tensor([0] * 60 + [1] * 60)
    ei = graph.knn_graph(x, 5, b)
    assert ei.shape == (2, 600)
    assert (ei[0] != ei[1]).all()
    ref = _brute_knn(x, x, 6, b, b)
    for i in range(120):
        assert sorted(ei[0][ei[1] == i].tolist()) == sorted(set(ref[i]) - {i})
    t2s = graph.knn_graph(x, 5, b, flow="target_to_source")
    assert torch.equal(t2s, ei.flip(0))
    loop = graph.knn_graph(x, 5, b, loop=True)
    assert loop.shape == (2, 600) and (loop[0] == loop[1]).sum() == 120
    with pytest.raises(ValueError, match="flow"):
        graph.knn_graph(x, 5, flow="sideways")


def test_radius_matches_bruteforce_and_truncation():
    x = _cloud(200, seed=5)
    b = torch.tensor([0] * 120 + [1] * 80)
    ei = graph.radius(x, x, 0.9, b, b, max_num_neighbors=1000)
    d = torch.cdist(x.double(), x.double())
    same = b[:, None] == b[None, :]
    ref = ((d < 0.9) & same).nonzero()
    got = torch.stack([ei[0], ei[1]], 1)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, ref.tolist()))
    # truncation keeps the nearest ones
    tr = graph.radius(x, x, 0.9, b, b, max_num_neighbors=3)
    nn3 = _brute_knn(x, x, 3, b, b)
    for q in range(200):
        inside = [j for j in nn3[q] if d[q, j] < 0.9]
        assert tr[1][tr[0] == q].tolist() == inside
    # chunking
    assert torch.equal(graph.radius(x, x, 0.9, b, b, 16, chunk_size=50),
                       graph.radius(x, x, 0.9, b, b, 16))
    g = graph.radius_graph(x, 0.5, b)
    assert (g[0] != g[1]).all() and (d[g[0], g[1]] < 0.5).all()
    assert torch.equal(graph.radius_graph(x, 0.5, b, flow="target_to_source"), g.flip(0))


def _brute_fps(x, n):
    x = x.double()
    out = [0]
    dist = ((x - x[0]) ** 2).sum(-1)
    for _ in range(1, n):
        i = int(dist.argmax())
        out.append(i)
        dist = torch.minimum(dist, ((x - x[i]) ** 2).sum(-1))
    return out


def test_fps_deterministic_and_batched():
    x = _cloud(150, seed=6)
    b = torch.tensor([0] * 100 + [1] * 50)
    idx = graph.fps(x, b, ratio=0.25, random_start=False)
    assert idx.tolist() == _brute_fps(x[:100], 25) + [100 + i for i in _brute_fps(x[100:], 13)]
    r1 = graph.fps(x, b, 0.25, True, generator=torch.Generator().manual_seed(0))
    r2 = graph.fps(x, b, 0.25, True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r1, r2) and len(r1) == 38
    assert len(set(r1[:25].tolist())) == 25 and (r1[:25] < 100).all()
    with pytest.raises(ValueError, match="ratio"):
        graph.fps(x, ratio=0.0)


def test_input_validation():
    x = _cloud(10)
    x[4, 2] = float("nan")
    with pytest.raises(ValueError, match="index 4"):
        graph.knn(x, _cloud(3), 2)
    with pytest.raises(ValueError, match="index 4"):
        graph.knn_graph(x, 2)
    y = _cloud(10)
    y[6, 0] = float("-inf")
    with pytest.raises(ValueError, match="index 6"):
        graph.radius(_cloud(10), y, 1.0)
    with pytest.raises(ValueError, match="index 6"):
        graph.fps(y)
    with pytest.raises(ValueError, match="sorted"):
        graph.knn_graph(_cloud(4), 2, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="shape"):
        graph.knn_graph(_cloud(4), 2, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="k must"):
        graph.knn_graph(_cloud(4), 0)
    with pytest.raises(ValueError, match="backend"):
        graph.knn_graph(_cloud(4), 2, backend="nope")
    assert graph.knn(_cloud(0), _cloud(3), 2).shape == (2, 0)


def test_backend_switch():
    assert graph.get_backend() == "torch"
    with graph.use_backend("auto"):
        assert graph.get_backend() == "auto"
    assert graph.get_backend() == "torch"


def test_no_global_backend_setter():
    assert not hasattr(graph, "set_backend")
    assert not hasattr(_backend, "set_backend")


def test_use_backend_nests_and_restores_after_exception():
    assert graph.get_backend() == "torch"
    with graph.use_backend("auto") as name:
        assert name == "auto" and graph.get_backend() == "auto"
        with graph.use_backend("torch"):
            assert graph.get_backend() == "torch"
            with pytest.raises(KeyError):
                with graph.use_backend("auto"):
                    assert graph.get_backend() == "auto"
                    raise KeyError("boom")
            assert graph.get_backend() == "torch"
        assert graph.get_backend() == "auto"
    assert graph.get_backend() == "torch"
    with pytest.raises(ValueError, match="backend"):
        with graph.use_backend("nope"):
            pass
    assert graph.get_backend() == "torch"


def test_use_backend_is_thread_local():
    entered, release = threading.Event(), threading.Event()
    seen = []

    def worker():
        with graph.use_backend("auto"):
            entered.set()
            release.wait(10)
            seen.append(graph.get_backend())

    t = threading.Thread(target=worker)
    t.start()
    assert entered.wait(10)
    assert graph.get_backend() == "torch"  # the worker's block does not leak into this thread
    release.set()
    t.join(10)
    assert seen == ["auto"] and graph.get_backend() == "torch"


def test_use_backend_is_task_local():
    async def task(name, log):
        with graph.use_backend(name):
            await asyncio.sleep(0)  # the other task runs inside its own block meanwhile
            await asyncio.sleep(0)
            log.append((name, graph.get_backend()))

    async def main():
        log = []
        await asyncio.gather(task("auto", log), task("torch", log))
        return log

    assert sorted(asyncio.run(main())) == [("auto", "auto"), ("torch", "torch")]


class _FakeCluster(types.SimpleNamespace):
    """Stands in for torch_cluster and records which function was called."""

    def __init__(self):
        super().__init__(calls=[])
        for fn in ("knn", "radius", "fps"):
            setattr(self, fn, self._recorder(fn))

    def _recorder(self, fn):
        def call(*args):
            self.calls.append(fn)
            return torch.tensor([[-7], [-8]]) if fn != "fps" else torch.full((1,), -7)
        return call


def test_backend_dispatch_per_call_and_by_context(monkeypatch):
    fake = _FakeCluster()
    monkeypatch.setattr(_backend, "_torch_cluster", fake)
    monkeypatch.setattr(_backend, "WITH_TORCH_CLUSTER", True)
    x = _cloud(20, seed=13)
    ref = graph.knn(x, x, 3)  # "torch" from the fixture
    assert fake.calls == []
    assert int(graph.knn(x, x, 3, backend="cluster")[0, 0]) == -7
    assert int(graph.knn(x, x, 3, backend="auto")[0, 0]) == -7
    assert fake.calls == ["knn", "knn"]
    with graph.use_backend("cluster"):
        assert int(graph.radius(x, x, 0.5)[0, 0]) == -7
        assert int(graph.fps(x, random_start=False)[0]) == -7
        # a generator-driven random start is always pure torch
        assert int(graph.fps(x, generator=torch.Generator().manual_seed(0))[0]) >= 0
        # the per-call keyword wins over the context
        assert torch.equal(graph.knn(x, x, 3, backend="torch"), ref)
        with graph.use_backend("torch"):
            assert torch.equal(graph.knn(x, x, 3), ref)
        assert graph.knn_graph(x, 2).tolist() == [[-8], [-7]]  # flipped to (j, i)
    assert fake.calls == ["knn", "knn", "radius", "fps", "knn"]
    with graph.use_backend("auto"):
        graph.radius_graph(x, 0.5)
    assert fake.calls[-1] == "radius"
    monkeypatch.setattr(_backend, "WITH_TORCH_CLUSTER", False)
    with graph.use_backend("auto"):  # auto without torch-cluster: pure torch
        assert torch.equal(graph.knn(x, x, 3), ref)
    with pytest.raises(RuntimeError, match="torch_cluster"):
        graph.knn(x, x, 3, backend="cluster")
    with pytest.raises(RuntimeError, match="torch_cluster"):
        with graph.use_backend("cluster"):
            pass
    assert len(fake.calls) == 6 and graph.get_backend() == "torch"


# ---------------------------------------------------------------- torch-cluster comparisons
@pytest.mark.cluster
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_equals_torch_cluster(dtype):
    import torch_cluster

    x, y = _cloud(3000, dtype=dtype, seed=7), _cloud(700, dtype=dtype, seed=8)
    bx, by = torch.arange(3000) // 1000, (torch.arange(700) // 250).clamp_max(2)
    ref = torch_cluster.knn(x, y, 16, bx, by)
    assert torch.equal(graph.knn(x, y, 16, bx, by, backend="torch", chunk_size=5000), ref)
    assert torch.equal(graph.knn(x, y, 16, bx, by, backend="cluster"), ref)
    ref_g = torch_cluster.knn_graph(x, 12, bx, flow="source_to_target")
    assert torch.equal(graph.knn_graph(x, 12, bx, backend="torch"), ref_g)
    with graph.use_backend("cluster"):
        assert torch.equal(graph.knn_graph(x, 12, bx), ref_g)
        assert torch.equal(graph.knn(x, y, 16, bx, by, backend="torch"), ref)
    with graph.use_backend("auto"):  # auto picks torch-cluster when it imports
        assert torch.equal(graph.knn(x, y, 16, bx, by), ref)


@pytest.mark.cluster
@pytest.mark.parametrize("k", [4, 7, 13])
def test_knn_sets_equal_torch_cluster_unless_tie_at_kth(k):
    """The documented agreement: same distance sequence per query; same neighbour set wherever
    the k-th and (k+1)-th distances differ (a lattice has ties at every shell)."""
    import torch_cluster

    g = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    g = torch.cat([g, g[::7] + 0.25])  # some points off the lattice, some queries tie-free
    n = g.shape[0]
    a = torch_cluster.knn(g, g, k)
    c = graph.knn(g, g, k, backend="torch")
    assert torch.equal(a[0], c[0])
    dist = lambda e: ((g[e[0]] - g[e[1]]) ** 2).sum(-1).view(n, k)  # noqa: E731
    assert torch.equal(dist(a), dist(c))
    c1 = graph.knn(g, g, k + 1, backend="torch")
    d1 = ((g[c1[0]] - g[c1[1]]) ** 2).sum(-1).view(n, k + 1)
    no_tie = d1[:, k - 1] < d1[:, k]
    assert bool(no_tie.any()) and not bool(no_tie.all())
    sa, sc = a[1].view(n, k).sort(1).values, c[1].view(n, k).sort(1).values
    assert torch.equal(sa[no_tie], sc[no_tie])


@pytest.mark.cluster
def test_knn_ties_same_distance_multiset_as_torch_cluster():
    import torch_cluster

    g = torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    a, c = torch_cluster.knn(g, g, 9), graph.knn(g, g, 9, backend="torch")
    assert torch.equal(a[0], c[0])
    da = ((g[a[0]] - g[a[1]]) ** 2).sum(-1)
    dc = ((g[c[0]] - g[c[1]]) ** 2).sum(-1)
    assert torch.equal(da, dc)  # same distances in the same order; tied members may differ
    small = torch.tensor([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    # one KD-tree leaf (<= 10 points): torch-cluster also keeps the lower index
    assert torch.equal(torch_cluster.knn(small, small[:1], 3),
                       graph.knn(small, small[:1], 3, backend="torch"))


@pytest.mark.cluster
def test_radius_and_fps_equal_torch_cluster():
    import torch_cluster

    x = _cloud(2000, seed=9)
    b = torch.arange(2000) // 700
    ref = torch_cluster.radius(x, x, 0.6, b, b, max_num_neighbors=10 ** 6)
    got = graph.radius(x, x, 0.6, b, b, max_num_neighbors=10 ** 6, backend="torch")
    key = lambda e: (e[0] * 10 ** 6 + e[1]).sort().values  # noqa: E731
    assert torch.equal(key(ref), key(got))
    assert torch.equal(torch_cluster.fps(x, b, 0.3, random_start=False),
                       graph.fps(x, b, 0.3, random_start=False, backend="torch"))
    xd = torch.randint(0, 3, (300, 3)).float()  # many exact ties
    assert torch.equal(torch_cluster.fps(xd, None, 0.5, False),
                       graph.fps(xd, None, 0.5, False, backend="torch"))


def _grid_clouds():
    g = torch.Generator().manual_seed(11)
    blob = torch.randn(1200, 3, generator=g)
    flat = torch.randn(1000, 3, generator=g) * torch.tensor([1.0, 1.0, 1e-3])
    lattice = torch.stack(torch.meshgrid(*[torch.arange(9.0)] * 3, indexing="ij"),
                          -1).reshape(-1, 3)  # massive exact ties
    dup = torch.randn(200, 3, generator=g).repeat(3, 1)  # exact duplicates
    x = torch.cat([blob, flat, lattice, dup])
    b = torch.repeat_interleave(torch.arange(4), torch.tensor([1200, 1000, 729, 600]))
    return x, b


@pytest.mark.parametrize("k", [1, 8, 17])
def test_grid_knn_equals_bruteforce_path(k):
    x, b = _grid_clouds()
    g = torch.Generator().manual_seed(12)
    y = torch.randn(400, 3, generator=g) * 2.5  # many queries outside the clouds' boxes
    by = torch.arange(400) // 100
    for xx, yy, bx_, by_ in ((x, x, b, b), (x, y, b, by)):
        fast = _search.knn_torch(xx, yy, k, bx_, by_, 1 << 16, grid=True)
        slow = _search.knn_torch(xx, yy, k, bx_, by_, 1 << 22, grid=False)
        assert torch.equal(fast, slow)


def test_grid_radius_equals_bruteforce_path():
    x, b = _grid_clouds()
    for r, m in ((0.3, 1000), (1.0, 7)):
        fast = _search.radius_torch(x, x, r, b, b, m, 1 << 16, grid=True)
        slow = _search.radius_torch(x, x, r, b, b, m, 1 << 22, grid=False)
        assert torch.equal(fast, slow)


# ---------------------------------------------------------------- issue 17: hardening
HUGE_IDS = [10 ** 7, 10 ** 9, 2 ** 40, 2 ** 62]


@pytest.mark.parametrize("big", HUGE_IDS)
def test_huge_batch_ids_cost_what_the_points_cost(big):
    """Reproducer 7: ids only name segments; results equal those of the ids 0, 1, 2.

    Before the fix the ids were expanded with ``arange(largest id + 1)`` (7 s and 630 MB for
    10**7, 8 GB for 10**9, a failed allocation beyond)."""
    x, y = _cloud(30, seed=21), _cloud(12, seed=22)
    bx = torch.tensor([0] * 10 + [big] * 10 + [big + 5] * 10)
    by = torch.tensor([0] * 4 + [7] * 4 + [big + 5] * 4)  # id 7 has no x, id big no y
    cx = torch.tensor([0] * 10 + [2] * 10 + [3] * 10)
    cy = torch.tensor([0] * 4 + [1] * 4 + [3] * 4)
    assert torch.equal(graph.knn_graph(x, 3, bx), graph.knn_graph(x, 3, cx))
    assert torch.equal(graph.knn(x, y, 3, bx, by), graph.knn(x, y, 3, cx, cy))
    assert graph.knn(x, y, 3, bx, by).shape == (2, 8 * 3)
    assert torch.equal(graph.radius(x, y, 1.5, bx, by), graph.radius(x, y, 1.5, cx, cy))
    assert torch.equal(graph.radius_graph(x, 1.5, bx), graph.radius_graph(x, 1.5, cx))
    for rs in (False, True):
        gen = torch.Generator().manual_seed(3) if rs else None
        got = graph.fps(x, bx, 0.5, rs, generator=gen)
        gen = torch.Generator().manual_seed(3) if rs else None
        assert torch.equal(got, graph.fps(x, torch.tensor([0] * 10 + [1] * 10 + [2] * 10),
                                          0.5, rs, generator=gen))
    single = torch.full((30,), big)  # one cloud with a large id
    assert torch.equal(graph.knn_graph(x, 4, single), graph.knn_graph(x, 4))
    assert torch.equal(graph.fps(x, single, 0.3, False), graph.fps(x, None, 0.3, False))


def test_batch_compaction_keeps_ordinary_batches_and_segments():
    from tensorframes.graph import _checks

    b = torch.tensor([0, 0, 1, 2, 2])
    assert _checks.compact_batch(b) is b
    assert _checks.compact_batch(torch.tensor([4, 4, 9, 2 ** 50])).tolist() == [0, 0, 1, 2]
    bx, by = torch.tensor([3, 3, 10]), torch.tensor([0, 10, 10])
    cx, cy = _checks.compact_batches(bx, by)
    assert cx.tolist() == [1, 1, 2] and cy.tolist() == [0, 2, 2]
    px, py = _checks.batch_ptrs(bx, by)
    assert px == [0, 0, 2, 3] and py == [0, 1, 1, 3]


_X = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))
_B = torch.tensor([0] * 4 + [1] * 4)
_ENTRY_POINTS = {
    "knn": lambda **kw: graph.knn(kw.pop("x", _X), kw.pop("y", _X), kw.pop("k", 2),
                                  kw.pop("batch", None), kw.pop("batch", None), **kw),
    "knn_graph": lambda **kw: graph.knn_graph(kw.pop("x", _X), kw.pop("k", 2),
                                              kw.pop("batch", None), **kw),
    "radius": lambda **kw: graph.radius(kw.pop("x", _X), kw.pop("y", _X), kw.pop("r", 1.0),
                                        kw.pop("batch", None), kw.pop("batch", None),
                                        kw.pop("max_num_neighbors", 32), **kw),
    "radius_graph": lambda **kw: graph.radius_graph(
        kw.pop("x", _X), kw.pop("r", 1.0), kw.pop("batch", None),
        max_num_neighbors=kw.pop("max_num_neighbors", 32), **kw),
    "fps": lambda **kw: graph.fps(kw.pop("x", _X), kw.pop("batch", None),
                                  kw.pop("ratio", 0.5), False, **kw),
}
_NAN_X = _X.clone()
_NAN_X[3, 1] = float("nan")
_BAD_COMMON = [
    (dict(x=_NAN_X), ValueError, "index 3"),
    (dict(x=_X.clone().index_fill_(0, torch.tensor([6]), float("inf"))), ValueError, "index 6"),
    (dict(x=_X.long()), TypeError, "floating"),
    (dict(batch=torch.tensor([0] * 7)), ValueError, r"shape \(8,\)"),
    (dict(batch=_B.float()), TypeError, "integer"),
    (dict(batch=_B.flip(0)), ValueError, "sorted"),
    (dict(batch=_B - 1), ValueError, "non-negative"),
    (dict(backend="nope"), ValueError, "backend"),
]
_BAD_SPECIFIC = {
    "k": [(dict(k=v), ValueError, "k must") for v in (0, -1, 2.5, True, "3")],
    "r": [(dict(r=v), ValueError, "r must") for v in (0.0, -1.0, float("nan"), float("inf"),
                                                      "1")],
    "m": [(dict(max_num_neighbors=v), ValueError, "max_num_neighbors must")
          for v in (-1, 0, 1.5, False)],
    "ratio": [(dict(ratio=v), ValueError, "ratio must") for v in (0.0, -0.5, 1.5,
                                                                 float("nan"), True)],
}
_SPECIFIC = {"knn": ["k"], "knn_graph": ["k"], "radius": ["r", "m"], "radius_graph": ["r", "m"],
             "fps": ["ratio"]}
_VALIDATION_CASES = [
    pytest.param(name, kw, err, msg, id=f"{name}-{i}")
    for name in _ENTRY_POINTS
    for i, (kw, err, msg) in enumerate(
        _BAD_COMMON + [c for key in _SPECIFIC[name] for c in _BAD_SPECIFIC[key]]
        + ([] if name == "fps" else [(dict(chunk_size=0), ValueError, "chunk_size must")]))
]


@pytest.mark.parametrize("name, kw, err, msg", _VALIDATION_CASES)
def test_every_entry_point_validates_the_same_way(name, kw, err, msg):
    """Reproducer 8: ``radius_graph(x, 1.0, max_num_neighbors=-1)`` used to return an empty
    graph; every public entry point now refuses every bad argument with the same error."""
    with pytest.raises(err, match=msg):
        _ENTRY_POINTS[name](**kw)
    with pytest.raises(err, match=msg):  # before the backend is consulted, on both backends
        with graph.use_backend("auto"):
            _ENTRY_POINTS[name](**kw)


def test_radius_graph_negative_max_num_neighbors_reproducer():
    x = _cloud(20, seed=30)
    with pytest.raises(ValueError, match=r"max_num_neighbors must be an int >= 1, got -1"):
        graph.radius_graph(x, 1.0, max_num_neighbors=-1)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        graph.radius_graph(x, 1.0, max_num_neighbors=0)
    assert graph.radius_graph(x, 1.0, max_num_neighbors=1).shape[1] > 0


def test_mixed_point_dtypes_refused():
    with pytest.raises(TypeError, match="same dtype"):
        graph.knn(_X, _X.double(), 2)
    with pytest.raises(TypeError, match="same dtype"):
        graph.radius(_X.double(), _X, 1.0)


def _brute_fps_from(x, n, start):
    x = x.double()
    out = [start]
    dist = ((x - x[start]) ** 2).sum(-1)
    for _ in range(1, n):
        i = int(dist.argmax())  # first maximum: lowest index
        out.append(i)
        dist = torch.minimum(dist, ((x - x[i]) ** 2).sum(-1))
    return out


def test_fps_duplicates_documented_behaviour():
    """Reproducer 9: indices repeat once the distinct positions are exhausted; the repeats are
    the cloud's first point (torch-cluster's behaviour, compared below)."""
    assert graph.fps(torch.ones(10, 3), ratio=1.0, random_start=False).tolist() == [0] * 10
    idx = graph.fps(torch.ones(10, 3), ratio=1.0, generator=torch.Generator().manual_seed(1))
    assert idx[1:].tolist() == [0] * 9 and 0 <= int(idx[0]) < 10
    x = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [3, 0, 0]])
    assert graph.fps(x, ratio=1.0, random_start=False).tolist() == [0, 5, 1, 0, 0, 0]
    b = torch.tensor([0, 0, 0, 5, 5, 5])
    assert graph.fps(x, b, 1.0, False).tolist() == [0, 1, 0, 3, 5, 4]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        cloud = torch.randint(0, 3, (int(torch.randint(1, 30, (1,), generator=g)), 2),
                              generator=g).float()
        n = int(torch.randint(1, cloud.shape[0] + 1, (1,), generator=g))
        ratio = n / cloud.shape[0]
        got = graph.fps(cloud, None, ratio, False)
        assert got.tolist() == _brute_fps_from(cloud, got.numel(), 0)


def test_fps_mixed_cloud_sizes_equal_per_cloud_runs():
    """Clouds of very different sizes (grouped by size, not padded to the largest)."""
    sizes = [1, 700, 1, 2, 3, 40, 1, 5]
    x = _cloud(sum(sizes), seed=31)
    b = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    got = graph.fps(x, b, 0.1, False)
    ref, off = [], 0
    for n in sizes:
        ref += [off + i for i in graph.fps(x[off:off + n], None, 0.1, False).tolist()]
        off += n
    assert got.tolist() == ref
    r1 = graph.fps(x, b, 0.1, True, generator=torch.Generator().manual_seed(4))
    r2 = graph.fps(x, b, 0.1, True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(r1, r2) and r1.numel() == got.numel()
    assert ((b[r1][1:] - b[r1][:-1]) >= 0).all()  # cloud by cloud


def _duplicate_heavy_clouds():
    g = torch.Generator().manual_seed(41)
    out = [torch.ones(10, 3), torch.zeros(1, 3), torch.ones(7, 2),
           torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [2, 0, 0]])]
    for t in range(40):
        n, d = int(torch.randint(1, 60, (1,), generator=g)), 1 + t % 4
        levels = 1 + t % 3
        out.append(torch.randint(0, levels, (n, d), generator=g).float() * 0.5 + 1e3 * (t % 2))
    return out


@pytest.mark.cluster
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_duplicates_equal_torch_cluster(dtype):
    import torch_cluster

    for cloud in _duplicate_heavy_clouds():
        cloud = cloud.to(dtype)
        for ratio in (1.0, 0.999, 0.5, 0.3, 0.01):
            ref = torch_cluster.fps(cloud, None, ratio, False)
            assert torch.equal(graph.fps(cloud, None, ratio, False, backend="torch"), ref)
            assert torch.equal(graph.fps(cloud, None, ratio, False, backend="cluster"), ref)
    # batched duplicate-heavy clouds, ordinary ids
    clouds = [c for c in _duplicate_heavy_clouds() if c.shape[1] == 3]
    x = torch.cat(clouds).to(dtype)
    b = torch.repeat_interleave(torch.arange(len(clouds)),
                                torch.tensor([c.shape[0] for c in clouds]))
    ref = torch_cluster.fps(x, b, 0.7, False)
    assert torch.equal(graph.fps(x, b, 0.7, False, backend="torch"), ref)
    # gaps and huge ids: torch-cluster itself fails there (empty clouds, O(id) memory);
    # through the library both backends give the result of the ids 0, 1, 2, ...
    big = b * 10 ** 9 + 3
    assert torch.equal(graph.fps(x, big, 0.7, False, backend="cluster"), ref)
    assert torch.equal(graph.fps(x, big, 0.7, False, backend="torch"), ref)


@pytest.mark.cluster
def test_huge_batch_ids_equal_torch_cluster():
    import torch_cluster

    x = _cloud(400, seed=42)
    cb = torch.arange(400) // 100
    hb = cb * 2 ** 40 + 1
    ref = torch_cluster.knn_graph(x, 6, cb)
    assert torch.equal(graph.knn_graph(x, 6, hb, backend="cluster"), ref)
    assert torch.equal(graph.knn_graph(x, 6, hb, backend="torch"), ref)
    ref = torch_cluster.radius(x, x[::3], 0.8, cb, cb[::3].contiguous(), 1000)
    key = lambda e: (e[0] * 10 ** 6 + e[1]).sort().values  # noqa: E731
    for be in ("cluster", "torch"):
        assert torch.equal(key(graph.radius(x, x[::3], 0.8, hb, hb[::3], 1000, backend=be)),
                           key(ref))
