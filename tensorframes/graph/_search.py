"""k-nearest-neighbour and radius search: the public functions and their pure-torch paths.

The pure-torch path loops over batch segments and over chunks of query points (at most
``chunk_size`` pairwise distances at a time, never an ``N x N`` matrix over a whole batch);
segments that qualify (:func:`._grid.use_grid`) go through the exact uniform grid instead.
"""

from __future__ import annotations

import torch

from ._backend import cluster_for
from ._brute import SENTINEL, smallest, sqdist
from ._checks import (
    batch_ptrs,
    check_batch,
    check_chunk_size,
    check_count,
    check_flow,
    check_k,
    check_pair,
    check_points,
    check_radius,
    compact_batches,
)
from ._grid import Grid, grid_frame, grid_select, knn_grid_segment, use_grid

__all__ = ["DEFAULT_CHUNK_SIZE", "knn", "knn_graph", "knn_torch", "radius", "radius_graph",
           "radius_torch"]

#: Default bound on the number of pairwise distances held at once by the pure-torch path.
DEFAULT_CHUNK_SIZE = 1 << 22


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _empty(device: torch.device) -> torch.Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


def knn_torch(x: torch.Tensor, y: torch.Tensor, k: int, batch_x: torch.Tensor,
              batch_y: torch.Tensor, chunk_size: int, grid: bool = True) -> torch.Tensor:
    """Pure-torch :func:`knn` on checked inputs; ``grid=False`` forces brute force."""
    px, py = batch_ptrs(batch_x, batch_y)
    compute = _compute_dtype(x)
    xc, yc = x.to(compute), y.to(compute)
    rows, cols = [], []
    for b in range(len(px) - 1):
        x0, x1, y0, y1 = px[b], px[b + 1], py[b], py[b + 1]
        if x0 == x1 or y0 == y1:
            continue
        xs = xc[x0:x1]
        kk = min(k, x1 - x0)
        if grid and use_grid(xc, x1 - x0):
            idx = knn_grid_segment(xs, yc[y0:y1], kk, chunk_size)
            rows.append(torch.arange(y0, y1, device=x.device).repeat_interleave(kk))
            cols.append(idx.reshape(-1) + x0)
            continue
        step = max(1, chunk_size // (x1 - x0))
        for c0 in range(y0, y1, step):
            c1 = min(c0 + step, y1)
            _, idx = smallest(sqdist(yc[c0:c1], xs), kk)
            rows.append(torch.arange(c0, c1, device=x.device).repeat_interleave(kk))
            cols.append(idx.reshape(-1) + x0)
    if not rows:
        return _empty(x.device)
    return torch.stack([torch.cat(rows), torch.cat(cols)], 0)


def radius_torch(x: torch.Tensor, y: torch.Tensor, r: float, batch_x: torch.Tensor,
                 batch_y: torch.Tensor, max_num_neighbors: int, chunk_size: int,
                 grid: bool = True) -> torch.Tensor:
    """Pure-torch :func:`radius` on checked inputs; ``grid=False`` forces brute force."""
    px, py = batch_ptrs(batch_x, batch_y)
    compute = _compute_dtype(x)
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
        if grid and use_grid(xc, x1 - x0) and r > 0:
            ys = yc[y0:y1]
            h = r * (1 + 1e-5)
            lo, dims = grid_frame(xs, ys, h)
            if float(dims.double().prod()) <= 2.0 ** 60:
                keys, _ = grid_select(xs, ys, Grid(xs, lo, h, dims), kk, chunk_size, thr)
                keep = keys != SENTINEL
                q = torch.arange(y0, y1, device=x.device).unsqueeze(1).expand_as(keys)
                rows.append(q[keep])
                cols.append((keys & 0xFFFFFFFF)[keep] + x0)
                continue
        step = max(1, chunk_size // (x1 - x0))
        for c0 in range(y0, y1, step):
            c1 = min(c0 + step, y1)
            vals, idx = smallest(sqdist(yc[c0:c1], xs), kk)
            keep = vals < thr
            q = torch.arange(c0, c1, device=x.device).unsqueeze(1).expand_as(idx)
            rows.append(q[keep])
            cols.append(idx[keep] + x0)
    if not rows:
        return _empty(x.device)
    return torch.stack([torch.cat(rows), torch.cat(cols)], 0)


def knn(x: torch.Tensor, y: torch.Tensor, k: int, batch_x: torch.Tensor | None = None,
        batch_y: torch.Tensor | None = None, *, backend: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""For each point of ``y``, its ``k`` nearest points of ``x`` (same batch element).

    Args:
        x (Tensor): points ``(N, d)`` searched.
        y (Tensor): query points ``(M, d)``.
        k (int): number of neighbours (fewer when a cloud has fewer points).
        batch_x, batch_y (LongTensor, optional): sorted batch vectors of ``x`` and ``y``.
        backend (str, optional): ``"auto"``, ``"torch"`` or ``"cluster"``; default: the
            innermost :func:`~tensorframes.graph.use_backend`, else ``"auto"``.
        chunk_size (int): pure-torch path: at most this many pairwise distances at once.

    Returns:
        LongTensor ``[2, E]``: row 0 indexes ``y``, row 1 indexes ``x``; grouped by query in
        increasing order, neighbours by increasing distance. Pure torch breaks ties by the
        lower index; torch-cluster keeps KD-tree order, so the two agree up to ties at the
        ``k``-th distance (see :mod:`tensorframes.graph`).
    """
    x, y = check_points(x, "x"), check_points(y, "y")
    check_pair(x, y)
    k = check_k(k)
    chunk_size = check_chunk_size(chunk_size)
    batch_x = check_batch(batch_x, x.shape[0], "batch_x", x.device)
    batch_y = check_batch(batch_y, y.shape[0], "batch_y", x.device)
    tc = cluster_for(backend)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return _empty(x.device)
    if tc is not None:
        return tc.knn(x, y, k, *compact_batches(batch_x, batch_y))
    return knn_torch(x, y, k, batch_x, batch_y, chunk_size)


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


def knn_graph(x: torch.Tensor, k: int, batch: torch.Tensor | None = None, loop: bool = False,
              flow: str = "source_to_target", *, backend: str | None = None,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""Edges from every point to its ``k`` nearest neighbours (torch-cluster semantics).

    ``knn(x, x, k + (not loop))`` with self pairs removed when ``loop=False``; with
    ``flow="source_to_target"`` the result is ``[neighbour j, centre i]``. ``backend`` and
    ``chunk_size`` as in :func:`knn`.
    """
    check_flow(flow)
    k = check_k(k)
    ei = knn(x, x, k if loop else k + 1, batch, batch, backend=backend, chunk_size=chunk_size)
    return _as_graph(ei, flow, loop)


def radius(x: torch.Tensor, y: torch.Tensor, r: float, batch_x: torch.Tensor | None = None,
           batch_y: torch.Tensor | None = None, max_num_neighbors: int = 32, *,
           backend: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""For each point of ``y``, the points of ``x`` at distance ``< r`` (same batch element).

    At most ``max_num_neighbors`` per query; the pure-torch path keeps the nearest ones and
    lists them by increasing ``(distance, index)`` (torch-cluster: an arbitrary subset, in
    KD-tree order). Output layout, ``backend`` and ``chunk_size`` as in :func:`knn`.
    """
    x, y = check_points(x, "x"), check_points(y, "y")
    check_pair(x, y)
    r = check_radius(r)
    max_num_neighbors = check_count(max_num_neighbors, "max_num_neighbors")
    chunk_size = check_chunk_size(chunk_size)
    batch_x = check_batch(batch_x, x.shape[0], "batch_x", x.device)
    batch_y = check_batch(batch_y, y.shape[0], "batch_y", x.device)
    tc = cluster_for(backend)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return _empty(x.device)
    if tc is not None:
        return tc.radius(x, y, r, *compact_batches(batch_x, batch_y), max_num_neighbors)
    return radius_torch(x, y, r, batch_x, batch_y, max_num_neighbors, chunk_size)


def radius_graph(x: torch.Tensor, r: float, batch: torch.Tensor | None = None,
                 loop: bool = False, max_num_neighbors: int = 32,
                 flow: str = "source_to_target", *, backend: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    r"""Edges between all points closer than ``r`` (torch-cluster semantics, see
    :func:`knn_graph` and :func:`radius`)."""
    check_flow(flow)
    max_num_neighbors = check_count(max_num_neighbors, "max_num_neighbors")
    ei = radius(x, x, r, batch, batch, max_num_neighbors if loop else max_num_neighbors + 1,
                backend=backend, chunk_size=chunk_size)
    return _as_graph(ei, flow, loop)
