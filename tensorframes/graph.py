r"""Neighbour search: k-nearest neighbours, radius graphs and farthest-point sampling.

The functions follow torch-cluster's (and PyG's) argument conventions and output layouts:

- :func:`knn` / :func:`radius` return ``[2, E]`` with row 0 an index into ``y`` (the query)
  and row 1 an index into ``x``;
- :func:`knn_graph` / :func:`radius_graph` return ``edge_index`` with PyG flow semantics
  (``"source_to_target"``: ``edge_index[0]`` = neighbour j, ``edge_index[1]`` = centre i);
- :func:`fps` returns the sampled indices, cloud by cloud, in sampling order.

Backends: torch-cluster is used whenever it imports (:data:`WITH_TORCH_CLUSTER`); otherwise,
or when ``backend="torch"`` is passed (or set globally with :func:`set_backend`), a pure-torch
implementation runs. The pure-torch path is exact and memory-bounded: it loops over batch
segments and over chunks of query points (at most ``chunk_size`` pairwise distances at a
time; never an ``N x N`` matrix over a whole batch) and has no Python loop over points.
For float32 clouds in d <= 3 with at least :data:`GRID_MIN_POINTS` points per segment it
searches a uniform grid: candidates are the points of the 3^d cells around the query's cell;
a knn result is accepted only when its k-th distance is below the cell size (then no point
outside the block can be closer), otherwise the query is retried with a 1.5x coarser grid and,
finally, by brute force -- so the result is always identical to the brute-force search.
For ``radius`` the cell size is ``r`` itself.

Distances are squared Euclidean distances evaluated exactly like torch-cluster's KD-tree
(nanoflann ``L2_Adaptor``: ``((0 + dx*dx) + dy*dy) + dz*dz`` in the input dtype, groups of four
coordinates first for ``d >= 4``), so both backends see bit-identical distances.

Tie rule (pure torch): among equal distances the point with the **lower index** wins, and the
neighbours of each query are listed by increasing ``(distance, index)``. torch-cluster's CPU
KD-tree keeps the first of equally distant points it *visits* (nanoflann is compiled without
``NANOFLANN_FIRST_MATCH``); that is the lower index for clouds of at most 10 points (one leaf),
and tree order otherwise. Hence the two backends return identical neighbour sets whenever
the ``k``-th and ``(k+1)``-th distances differ, and always the same multiset of distances.
``radius`` keeps the ``max_num_neighbors`` *nearest* points inside the (open) ball of radius
``r`` (torch-cluster keeps an arbitrary subset when a ball holds more); with no truncation the
sets coincide.

Batch vectors must be sorted (as in PyG); this is validated, as are non-finite positions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

try:  # pragma: no cover - depends on the environment
    import torch_cluster as _torch_cluster

    WITH_TORCH_CLUSTER = True
except (ImportError, OSError):  # pragma: no cover
    _torch_cluster = None
    WITH_TORCH_CLUSTER = False

__all__ = [
    "WITH_TORCH_CLUSTER",
    "fps",
    "get_backend",
    "knn",
    "knn_graph",
    "radius",
    "radius_graph",
    "set_backend",
    "use_backend",
]

_BACKENDS = ("auto", "torch", "cluster")
_backend = "auto"

#: Default bound on the number of pairwise distances held at once by the pure-torch path.
DEFAULT_CHUNK_SIZE = 1 << 22


def set_backend(backend: str) -> None:
    """Select the global backend: ``"auto"`` (torch-cluster if it imports), ``"torch"`` or
    ``"cluster"``."""
    global _backend
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    _backend = backend


def get_backend() -> str:
    """The global backend name set by :func:`set_backend` (default ``"auto"``)."""
    return _backend


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Context manager that sets the global backend temporarily."""
    old = _backend
    set_backend(backend)
    try:
        yield
    finally:
        set_backend(old)


def _use_cluster(backend: str | None) -> bool:
    b = _backend if backend is None else backend
    if b not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {b!r}")
    if b == "cluster":
        if not WITH_TORCH_CLUSTER:
            raise RuntimeError("backend='cluster' requested but torch_cluster does not import")
        return True
    return b == "auto" and WITH_TORCH_CLUSTER


# ---------------------------------------------------------------------- validation
def _check_points(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 1:
        x = x.view(-1, 1)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, d), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {x.dtype}")
    check_finite(x, name)
    return x


def check_finite(x: torch.Tensor, name: str = "pos") -> None:
    """Raise :class:`ValueError` naming the first row of ``x`` with a NaN or inf entry."""
    if x.numel() == 0:
        return
    ok = torch.isfinite(x)
    if not bool(ok.all()):
        bad = ~ok.reshape(x.shape[0], -1).all(1)
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} has a non-finite entry at index {i}: {x[i].tolist()}")


def _check_batch(batch: torch.Tensor | None, n: int, name: str,
                 device: torch.device) -> torch.Tensor:
    if batch is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
    if batch.dim() != 1 or batch.numel() != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(batch.shape)}")
    if batch.dtype not in (torch.long, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got {batch.dtype}")
    batch = batch.long()
    if n > 0:
        if bool((batch[1:] < batch[:-1]).any()):
            i = int((batch[1:] < batch[:-1]).nonzero()[0, 0]) + 1
            raise ValueError(f"{name} must be sorted (non-decreasing, as in PyG), but "
                             f"{name}[{i}] = {int(batch[i])} < {name}[{i - 1}] = "
                             f"{int(batch[i - 1])}")
        if int(batch[0]) < 0:
            raise ValueError(f"{name} must be non-negative, got {int(batch[0])}")
    return batch


def _ptrs(batch_x: torch.Tensor, batch_y: torch.Tensor) -> tuple[list[int], list[int]]:
    nb = 0
    if batch_x.numel():
        nb = int(batch_x[-1]) + 1
    if batch_y.numel():
        nb = max(nb, int(batch_y[-1]) + 1)
    ar = torch.arange(nb + 1, device=batch_x.device)
    px = torch.bucketize(ar, batch_x).tolist()
    py = torch.bucketize(ar, batch_y).tolist()
    return px, py


def _check_flow(flow: str) -> None:
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")


# ---------------------------------------------------------------------- kernels
def _sqdist(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(C, M)`` squared distances, in nanoflann's exact evaluation order (see module doc)."""
    d = x.shape[1]
    out = None
    a = 0
    while a + 4 <= d:  # nanoflann: result += d0^2 + d1^2 + d2^2 + d3^2 while a < d - 3
        s = None
        for c in range(a, a + 4):
            diff = y[:, c, None] - x[None, :, c]
            sq = diff * diff
            s = sq if s is None else s + sq
        out = s if out is None else out + s
        a += 4
    for c in range(a, d):
        diff = y[:, c, None] - x[None, :, c]
        sq = diff * diff
        out = sq if out is None else out + sq
    return out


def _smallest(dist: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``k`` smallest entries ordered by ``(value, column)``: (values, columns)."""
    if dist.dtype == torch.float32:
        # Non-negative float32 bit patterns are monotonic: pack (value, column) in one int64.
        col = torch.arange(dist.shape[1], device=dist.device, dtype=torch.int64)
        key = (dist.view(torch.int32).to(torch.int64) << 32) | col
        key = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        idx = key & 0xFFFFFFFF
        vals = (key >> 32).to(torch.int32).view(torch.float32)
        return vals, idx
    vals, idx = torch.sort(dist, dim=1, stable=True)
    return vals[:, :k], idx[:, :k]


_SENTINEL = torch.iinfo(torch.int64).max
#: Segments with at least this many points use the grid search (float32/half, d <= 3).
GRID_MIN_POINTS = 512


def _pack(dist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered like ``(dist, index)`` for non-negative float32 ``dist``."""
    return (dist.view(torch.int32).to(torch.int64) << 32) | index


def _sqdist_rows(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared distances of matching rows, in nanoflann's evaluation order."""
    d = x.shape[1]
    out = None
    a = 0
    while a + 4 <= d:
        s = None
        for c in range(a, a + 4):
            diff = y[:, c] - x[:, c]
            sq = diff * diff
            s = sq if s is None else s + sq
        out = s if out is None else out + s
        a += 4
    for c in range(a, d):
        diff = y[:, c] - x[:, c]
        sq = diff * diff
        out = sq if out is None else out + sq
    return out


class _Grid:
    """Uniform grid (cell size ``h``) over the points ``xs`` of one segment.

    Cell coordinates are computed in float64 from a common origin, so the 3^d cells around a
    query's cell contain every point closer than ``h`` to it.
    """

    def __init__(self, xs: torch.Tensor, lo: torch.Tensor, h: float, dims: torch.Tensor):
        self.lo, self.h, self.dims = lo, h, dims
        key = self.keys(self.cells(xs))
        self.order = torch.argsort(key, stable=True)
        self.sorted_x = xs.index_select(0, self.order)
        skey = key[self.order]
        self.ukeys, self.counts = torch.unique_consecutive(skey, return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        d = xs.shape[1]
        offs = torch.cartesian_prod(*[torch.tensor([-1, 0, 1], device=xs.device)] * d)
        self.offsets = offs.view(-1, d)

    def cells(self, p: torch.Tensor) -> torch.Tensor:
        return torch.floor((p.double() - self.lo) / self.h).long()

    def keys(self, c: torch.Tensor) -> torch.Tensor:
        key = torch.zeros(c.shape[:-1], dtype=torch.long, device=c.device)
        for a in range(c.shape[-1]):
            key = key * self.dims[a] + c[..., a]
        return key

    def candidates(self, q: torch.Tensor):
        """Per query: the (start, count) runs of the surrounding cells in ``order``."""
        c = self.cells(q).unsqueeze(1) + self.offsets  # (Q, 3^d, d)
        inside = ((c >= 0) & (c < self.dims)).all(-1)
        key = self.keys(c.clamp_min(0))
        ncells = int(self.dims.prod())
        if ncells <= max(16 * self.order.numel(), 1 << 16):
            # dense cell table: one gather per lookup
            run = torch.full((ncells + 1,), -1, dtype=torch.long, device=q.device)
            run[self.ukeys] = torch.arange(self.ukeys.numel(), device=q.device)
            pos = run.index_select(0, torch.where(inside, key, ncells).view(-1)).view(key.shape)
            found = pos >= 0
            pos = pos.clamp_min(0)
        else:
            pos = torch.searchsorted(self.ukeys, key).clamp_max(self.ukeys.numel() - 1)
            found = inside & (self.ukeys[pos] == key)
        cnt = torch.where(found, self.counts[pos], torch.zeros_like(pos))
        return self.starts[pos], cnt


def _grid_select(xs, ys, grid, kk, chunk_size, thr=None):
    """Grid search of one segment. Returns ``(keys (Q, kk), ok (Q,))``: the packed
    ``(dist, local index)`` keys of the ``kk`` nearest candidates (``_SENTINEL`` where fewer)
    and, when ``thr`` is None, whether the result is provably exact (k-th distance below the
    guaranteed search radius ``h``)."""
    Q = ys.shape[0]
    st, cnt = grid.candidates(ys)
    L = cnt.sum(1)
    out = torch.full((Q, kk), _SENTINEL, dtype=torch.long, device=xs.device)
    if Q == 0:
        return out, torch.ones(0, dtype=torch.bool, device=xs.device)
    ncell = cnt.shape[1]
    # Queries sorted by candidate count, in chunks of similar counts (little padding) and of
    # bounded size (queries x max candidates <= chunk_size).
    qord = torch.argsort(L)
    L, st, cnt = L[qord], st[qord], cnt[qord]
    ys = ys.index_select(0, qord)
    res = torch.full((Q, kk), _SENTINEL, dtype=torch.long, device=xs.device)
    Lcpu = L.tolist()
    q0 = 0
    while q0 < Q:
        q1 = min(Q, q0 + 1024)
        while q1 - q0 > 1 and (q1 - q0) * max(Lcpu[q1 - 1], 1) > chunk_size:
            q1 = q0 + (q1 - q0) // 2
        Lmax = Lcpu[q1 - 1]
        if Lmax > 0:
            c = cnt[q0:q1].reshape(-1)
            pair = torch.repeat_interleave(torch.arange(c.numel(), device=xs.device), c)
            T = pair.numel()
            ar = torch.arange(T, device=xs.device)
            first = torch.cumsum(c, 0) - c
            # position in the cell-sorted point list: contiguous runs, cache friendly
            spos = st[q0:q1].reshape(-1).index_select(0, pair) + ar - first.index_select(0, pair)
            qi = torch.div(pair, ncell, rounding_mode="floor")
            Lq = L[q0:q1]
            flat = qi * Lmax + ar - (torch.cumsum(Lq, 0) - Lq).index_select(0, qi)
            dist = _sqdist_rows(ys[q0:q1].index_select(0, qi), grid.sorted_x.index_select(0, spos))
            cand = grid.order.index_select(0, spos)
            if thr is not None:
                keep = dist < thr
                dist, cand, flat = dist[keep], cand[keep], flat[keep]
            keys = torch.full(((q1 - q0) * Lmax,), _SENTINEL, dtype=torch.long,
                              device=xs.device)
            keys[flat] = _pack(dist, cand)
            keys = keys.view(q1 - q0, Lmax)
            m = min(kk, Lmax)
            res[q0:q1, :m] = torch.topk(keys, m, dim=1, largest=False, sorted=True).values
        q0 = q1
    out[qord] = res
    if thr is not None:
        return out, torch.ones(Q, dtype=torch.bool, device=xs.device)
    # exact iff the k-th distance is below the radius the 3^d block surely covers
    hb = torch.tensor((grid.h * (1 - 1e-4)) ** 2, dtype=torch.float32).view(torch.int32)
    ok = (out[:, -1] != _SENTINEL) & ((out[:, -1] >> 32) < int(hb))
    return out, ok


def _grid_frame(xs, ys, h):
    lo = torch.minimum(xs.double().amin(0), ys.double().amin(0)) - h
    hi = torch.maximum(xs.double().amax(0), ys.double().amax(0)) + h
    dims = torch.floor((hi - lo) / h).long() + 2
    return lo, dims


def _knn_grid_segment(xs, ys, kk, chunk_size):
    """Exact knn of one segment through a uniform grid; ``None`` where it cannot help."""
    n = xs.shape[0]
    extent = float((torch.maximum(xs.amax(0), ys.amax(0))
                    - torch.minimum(xs.amin(0), ys.amin(0))).double().max())
    # cell size: ~90th percentile of the k-th neighbour distance of a strided sample
    ns = max(8, min(64, chunk_size // n))
    samp = ys[:: max(1, ys.shape[0] // ns)][:ns]
    dk = _smallest(_sqdist(samp, xs), kk)[0][:, -1].double().sqrt()
    h = float(torch.quantile(dk, 0.9)) * 1.05
    h = max(h, extent * 1e-4, 1e-30)
    keys = torch.full((ys.shape[0], kk), _SENTINEL, dtype=torch.long, device=xs.device)
    todo = torch.arange(ys.shape[0], device=xs.device)
    while todo.numel() and h < extent and n > kk:
        lo, dims = _grid_frame(xs, ys[todo], h)
        if float(dims.double().prod()) > 2.0 ** 60:
            h *= 1.5
            continue
        grid = _Grid(xs, lo, h, dims)
        got, ok = _grid_select(xs, ys[todo], grid, kk, chunk_size)
        keys[todo[ok]] = got[ok]
        todo = todo[~ok]
        h *= 1.5
    if todo.numel():  # remaining queries: exact brute force
        for c0 in range(0, todo.numel(), max(1, chunk_size // n)):
            t = todo[c0:c0 + max(1, chunk_size // n)]
            v, idx = _smallest(_sqdist(ys[t], xs), kk)
            keys[t] = _pack(v, idx)
    return keys & 0xFFFFFFFF


def _use_grid(x: torch.Tensor, n: int) -> bool:
    return x.dtype == torch.float32 and x.shape[1] <= 3 and n >= GRID_MIN_POINTS


def _knn_torch(x, y, k, batch_x, batch_y, chunk_size, grid=True):
    px, py = _ptrs(batch_x, batch_y)
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xc, yc = x.to(compute), y.to(compute)
    rows, cols = [], []
    for b in range(len(px) - 1):
        x0, x1, y0, y1 = px[b], px[b + 1], py[b], py[b + 1]
        if x0 == x1 or y0 == y1:
            continue
        xs = xc[x0:x1]
        kk = min(k, x1 - x0)
        if grid and _use_grid(xc, x1 - x0):
            idx = _knn_grid_segment(xs, yc[y0:y1], kk, chunk_size)
            rows.append(torch.arange(y0, y1, device=x.device).repeat_interleave(kk))
            cols.append(idx.reshape(-1) + x0)
            continue
        step = max(1, chunk_size // (x1 - x0))
        for c0 in range(y0, y1, step):
            c1 = min(c0 + step, y1)
            _, idx = _smallest(_sqdist(yc[c0:c1], xs), kk)
            rows.append(torch.arange(c0, c1, device=x.device).repeat_interleave(kk))
            cols.append(idx.reshape(-1) + x0)
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return torch.stack([torch.cat(rows), torch.cat(cols)], 0)


def _radius_torch(x, y, r, batch_x, batch_y, max_num_neighbors, chunk_size, grid=True):
    px, py = _ptrs(batch_x, batch_y)
    compute = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    xc, yc = x.to(compute), y.to(compute)
    # nanoflann compares with (double r * r) converted to the scalar type, strictly.
    thr = torch.tensor(float(r) * float(r), dtype=compute).item()
    rows, cols = [], []
    for b in range(len(px) - 1):
        x0, x1, y0, y1 = px[b], px[b + 1], py[b], py[b + 1]
        if x0 == x1 or y0 == y1:
            continue
        xs = xc[x0:x1]
        kk = min(max_num_neighbors, x1 - x0)
        if kk <= 0:
            continue
        if grid and _use_grid(xc, x1 - x0) and r > 0:
            ys = yc[y0:y1]
            h = r * (1 + 1e-5)
            lo, dims = _grid_frame(xs, ys, h)
            if float(dims.double().prod()) <= 2.0 ** 60:
                keys, _ = _grid_select(xs, ys, _Grid(xs, lo, h, dims), kk, chunk_size, thr)
                keep = keys != _SENTINEL
                q = torch.arange(y0, y1, device=x.device).unsqueeze(1).expand_as(keys)
                rows.append(q[keep])
                cols.append((keys & 0xFFFFFFFF)[keep] + x0)
                continue
        step = max(1, chunk_size // (x1 - x0))
        for c0 in range(y0, y1, step):
            c1 = min(c0 + step, y1)
            vals, idx = _smallest(_sqdist(yc[c0:c1], xs), kk)
            keep = vals < thr
            q = torch.arange(c0, c1, device=x.device).unsqueeze(1).expand_as(idx)
            rows.append(q[keep])
            cols.append(idx[keep] + x0)
    if not rows:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return torch.stack([torch.cat(rows), torch.cat(cols)], 0)


# ---------------------------------------------------------------------- public API
def knn(x: torch.Tensor, y: torch.Tensor, k: int, batch_x: torch.Tensor | None = None,
        batch_y: torch.Tensor | None = None, *, backend: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""For each point of ``y``, its ``k`` nearest points of ``x`` (same batch element).

    Args:
        x (Tensor): points ``(N, d)`` searched.
        y (Tensor): query points ``(M, d)``.
        k (int): number of neighbours (fewer when a cloud has fewer points).
        batch_x, batch_y (LongTensor, optional): sorted batch vectors of ``x`` and ``y``.
        backend (str, optional): ``"auto"``, ``"torch"`` or ``"cluster"``; default: the global
            setting (:func:`set_backend`).
        chunk_size (int): pure-torch path: at most this many pairwise distances at once.

    Returns:
        LongTensor ``[2, E]``: row 0 indexes ``y``, row 1 indexes ``x``; grouped by query in
        increasing order, neighbours by increasing ``(distance, index)`` (see module doc).
    """
    x, y = _check_points(x, "x"), _check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and "
                         f"{y.shape[1]}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    batch_x = _check_batch(batch_x, x.shape[0], "batch_x", x.device)
    batch_y = _check_batch(batch_y, y.shape[0], "batch_y", y.device)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    if _use_cluster(backend):
        return _torch_cluster.knn(x, y, k, batch_x, batch_y)
    return _knn_torch(x, y, k, batch_x, batch_y, chunk_size)


def knn_graph(x: torch.Tensor, k: int, batch: torch.Tensor | None = None, loop: bool = False,
              flow: str = "source_to_target", *, backend: str | None = None,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""Edges from every point to its ``k`` nearest neighbours (torch-cluster semantics).

    ``knn(x, x, k + (not loop))`` with self pairs removed when ``loop=False``; with
    ``flow="source_to_target"`` the result is ``[neighbour j, centre i]``.
    """
    _check_flow(flow)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    ei = knn(x, x, k if loop else k + 1, batch, batch, backend=backend, chunk_size=chunk_size)
    return _as_graph(ei, flow, loop)


def _as_graph(ei: torch.Tensor, flow: str, loop: bool) -> torch.Tensor:
    """A ``[query, neighbour]`` result of :func:`knn` / :func:`radius` on ``(x, x)`` as
    ``edge_index`` under ``flow``, self pairs dropped unless ``loop``."""
    if flow == "source_to_target":
        row, col = ei[1], ei[0]
    else:
        row, col = ei[0], ei[1]
    if not loop:
        mask = row != col
        row, col = row[mask], col[mask]
    return torch.stack([row, col], 0)


def radius(x: torch.Tensor, y: torch.Tensor, r: float, batch_x: torch.Tensor | None = None,
           batch_y: torch.Tensor | None = None, max_num_neighbors: int = 32, *,
           backend: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""For each point of ``y``, the points of ``x`` at distance ``< r`` (same batch element).

    At most ``max_num_neighbors`` per query; the pure-torch path keeps the nearest ones and
    lists them by increasing ``(distance, index)``. Output layout as :func:`knn`.
    """
    x, y = _check_points(x, "x"), _check_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and "
                         f"{y.shape[1]}")
    r = float(r)
    if not r >= 0 or r == float("inf"):
        raise ValueError(f"r must be a finite non-negative number, got {r}")
    if max_num_neighbors < 0:
        raise ValueError(f"max_num_neighbors must be >= 0, got {max_num_neighbors}")
    batch_x = _check_batch(batch_x, x.shape[0], "batch_x", x.device)
    batch_y = _check_batch(batch_y, y.shape[0], "batch_y", y.device)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    if _use_cluster(backend):
        return _torch_cluster.radius(x, y, r, batch_x, batch_y, max_num_neighbors)
    return _radius_torch(x, y, r, batch_x, batch_y, max_num_neighbors, chunk_size)


def radius_graph(x: torch.Tensor, r: float, batch: torch.Tensor | None = None,
                 loop: bool = False, max_num_neighbors: int = 32,
                 flow: str = "source_to_target", *, backend: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""Edges between all points closer than ``r`` (torch-cluster semantics, see
    :func:`knn_graph`)."""
    _check_flow(flow)
    ei = radius(x, x, r, batch, batch, max_num_neighbors if loop else max_num_neighbors + 1,
                backend=backend, chunk_size=chunk_size)
    return _as_graph(ei, flow, loop)


def fps(src: torch.Tensor, batch: torch.Tensor | None = None, ratio: float = 0.5,
        random_start: bool = True, *, generator: torch.Generator | None = None,
        backend: str | None = None) -> torch.Tensor:
    r"""Farthest-point sampling (PointNet++), cloud by cloud.

    Each cloud of ``n`` points yields ``ceil(n * ratio)`` indices, in sampling order, starting
    at its first point when ``random_start=False`` (deterministic, identical to torch-cluster)
    or at a random point drawn from ``generator`` (pure torch) otherwise. Ties of the
    farthest distance go to the lower index.
    """
    src = _check_points(src, "src")
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    batch = _check_batch(batch, src.shape[0], "batch", src.device)
    if src.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=src.device)
    if _use_cluster(backend) and not (random_start and generator is not None):
        return _torch_cluster.fps(src, batch, ratio, random_start)

    nb = int(batch[-1]) + 1
    deg = torch.bincount(batch, minlength=nb)
    ptr = torch.zeros(nb + 1, dtype=torch.long, device=src.device)
    ptr[1:] = deg.cumsum(0)
    # torch-cluster: ceil(float(deg) * ratio) with ratio in src's dtype, computed in float32.
    num = torch.ceil(deg.to(torch.float) * torch.tensor(ratio, dtype=src.dtype,
                                                        device=src.device)).long()
    maxn, maxs = int(deg.max()), int(num.max())
    # Padded (B, maxn, d) layout; padded slots have distance -1 and are never chosen.
    local = torch.arange(src.shape[0], device=src.device) - ptr[batch]
    pts = src.new_zeros(nb, maxn, src.shape[1])
    pts[batch, local] = src
    valid = torch.zeros(nb, maxn, dtype=torch.bool, device=src.device)
    valid[batch, local] = True
    if random_start:
        u = torch.rand(nb, generator=generator, device=src.device if generator is None
                       else generator.device).to(src.device)
        start = (u * deg).long().clamp_max(deg - 1).clamp_min(0)
    else:
        start = torch.zeros(nb, dtype=torch.long, device=src.device)
    ar = torch.arange(nb, device=src.device)
    out = torch.empty(nb, maxs, dtype=torch.long, device=src.device)
    cur = start
    out[:, 0] = cur
    neg = torch.tensor(-1.0, dtype=src.dtype, device=src.device)
    dist = torch.where(valid, (pts - pts[ar, cur].unsqueeze(1)).pow(2).sum(-1), neg)
    for i in range(1, maxs):  # sequential by nature; vectorised over clouds
        cur = dist.argmax(1)
        out[:, i] = cur
        dist = torch.minimum(dist, (pts - pts[ar, cur].unsqueeze(1)).pow(2).sum(-1))
    keep = torch.arange(maxs, device=src.device).unsqueeze(0) < num.unsqueeze(1)
    return (out + ptr[:-1].unsqueeze(1))[keep]
