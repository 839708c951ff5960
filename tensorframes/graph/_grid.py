"""Uniform-grid neighbour search for float32 clouds in ``d <= 3`` (exact, see :mod:`..graph`).

Candidates of a query are the points of the 3^d cells around its cell. A knn result is accepted
only when its k-th distance is below the cell size ``h`` (then no point outside the block can
be closer); other queries are retried with a 1.5x coarser grid and, finally, by brute force.
For ``radius`` the cell size is ``r`` itself. Results are identical to the brute-force search.
"""

from __future__ import annotations

import torch

from ._brute import SENTINEL, pack, smallest, sqdist, sqdist_rows

__all__ = ["GRID_MIN_POINTS", "Grid", "grid_frame", "grid_select", "knn_grid_segment",
           "use_grid"]

#: Segments with at least this many points use the grid search (float32, d <= 3).
GRID_MIN_POINTS = 512


class Grid:
    """Uniform grid (cell size ``h``) over the points ``xs`` of one segment.

    Cell coordinates are computed in float64 from a common origin, so the 3^d cells around a
    query's cell contain every point closer than ``h`` to it.
    """

    def __init__(self, xs: torch.Tensor, lo: torch.Tensor, h: float, dims: torch.Tensor) -> None:
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
        """Integer cell coordinates ``(..., d)`` of the points ``p``."""
        return torch.floor((p.double() - self.lo) / self.h).long()

    def keys(self, c: torch.Tensor) -> torch.Tensor:
        """Row-major linear keys of the cell coordinates ``c`` ``(..., d)``."""
        key = torch.zeros(c.shape[:-1], dtype=torch.long, device=c.device)
        for a in range(c.shape[-1]):
            key = key * self.dims[a] + c[..., a]
        return key

    def candidates(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def grid_select(xs: torch.Tensor, ys: torch.Tensor, grid: Grid, kk: int, chunk_size: int,
                thr: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid search of one segment. Returns ``(keys (Q, kk), ok (Q,))``: the packed
    ``(dist, local index)`` keys of the ``kk`` nearest candidates (``SENTINEL`` where fewer)
    and, when ``thr`` is None, whether the result is provably exact (k-th distance below the
    guaranteed search radius ``h``). With ``thr``, only candidates closer than ``thr``
    (squared) are kept."""
    Q = ys.shape[0]
    st, cnt = grid.candidates(ys)
    L = cnt.sum(1)
    out = torch.full((Q, kk), SENTINEL, dtype=torch.long, device=xs.device)
    if Q == 0:
        return out, torch.ones(0, dtype=torch.bool, device=xs.device)
    ncell = cnt.shape[1]
    # Queries sorted by candidate count, in chunks of similar counts (little padding) and of
    # bounded size (queries x max candidates <= chunk_size).
    qord = torch.argsort(L)
    L, st, cnt = L[qord], st[qord], cnt[qord]
    ys = ys.index_select(0, qord)
    res = torch.full((Q, kk), SENTINEL, dtype=torch.long, device=xs.device)
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
            dist = sqdist_rows(ys[q0:q1].index_select(0, qi), grid.sorted_x.index_select(0, spos))
            cand = grid.order.index_select(0, spos)
            if thr is not None:
                keep = dist < thr
                dist, cand, flat = dist[keep], cand[keep], flat[keep]
            keys = torch.full(((q1 - q0) * Lmax,), SENTINEL, dtype=torch.long,
                              device=xs.device)
            keys[flat] = pack(dist, cand)
            keys = keys.view(q1 - q0, Lmax)
            m = min(kk, Lmax)
            res[q0:q1, :m] = torch.topk(keys, m, dim=1, largest=False, sorted=True).values
        q0 = q1
    out[qord] = res
    if thr is not None:
        return out, torch.ones(Q, dtype=torch.bool, device=xs.device)
    # exact iff the k-th distance is below the radius the 3^d block surely covers
    hb = torch.tensor((grid.h * (1 - 1e-4)) ** 2, dtype=torch.float32).view(torch.int32)
    ok = (out[:, -1] != SENTINEL) & ((out[:, -1] >> 32) < int(hb))
    return out, ok


def grid_frame(xs: torch.Tensor, ys: torch.Tensor, h: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Origin ``lo`` (float64) and cell counts ``dims`` of a grid of cell size ``h`` covering
    ``xs`` and ``ys`` with a margin of one cell."""
    lo = torch.minimum(xs.double().amin(0), ys.double().amin(0)) - h
    hi = torch.maximum(xs.double().amax(0), ys.double().amax(0)) + h
    dims = torch.floor((hi - lo) / h).long() + 2
    return lo, dims


def knn_grid_segment(xs: torch.Tensor, ys: torch.Tensor, kk: int, chunk_size: int
                     ) -> torch.Tensor:
    """Exact knn of one segment through a uniform grid: ``(Q, kk)`` local indices into ``xs``,
    per query by increasing ``(distance, index)``."""
    n = xs.shape[0]
    extent = float((torch.maximum(xs.amax(0), ys.amax(0))
                    - torch.minimum(xs.amin(0), ys.amin(0))).double().max())
    # cell size: ~90th percentile of the k-th neighbour distance of a strided sample
    ns = max(8, min(64, chunk_size // n))
    samp = ys[:: max(1, ys.shape[0] // ns)][:ns]
    dk = smallest(sqdist(samp, xs), kk)[0][:, -1].double().sqrt()
    h = float(torch.quantile(dk, 0.9)) * 1.05
    h = max(h, extent * 1e-4, 1e-30)
    keys = torch.full((ys.shape[0], kk), SENTINEL, dtype=torch.long, device=xs.device)
    todo = torch.arange(ys.shape[0], device=xs.device)
    while todo.numel() and h < extent and n > kk:
        lo, dims = grid_frame(xs, ys[todo], h)
        if float(dims.double().prod()) > 2.0 ** 60:
            h *= 1.5
            continue
        grid = Grid(xs, lo, h, dims)
        got, ok = grid_select(xs, ys[todo], grid, kk, chunk_size)
        keys[todo[ok]] = got[ok]
        todo = todo[~ok]
        h *= 1.5
    if todo.numel():  # remaining queries: exact brute force
        for c0 in range(0, todo.numel(), max(1, chunk_size // n)):
            t = todo[c0:c0 + max(1, chunk_size // n)]
            v, idx = smallest(sqdist(ys[t], xs), kk)
            keys[t] = pack(v, idx)
    return keys & 0xFFFFFFFF


def use_grid(x: torch.Tensor, n: int) -> bool:
    """Whether a segment of ``n`` points of ``x``'s dtype and dimension uses the grid."""
    return x.dtype == torch.float32 and x.shape[1] <= 3 and n >= GRID_MIN_POINTS
