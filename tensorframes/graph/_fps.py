"""Farthest-point sampling (PointNet++), vectorised over the clouds of a batch.

Duplicates (the same as torch-cluster's ``fps``, on both backends). Each step takes a point of
largest squared distance to the points chosen so far, the lowest index among equal distances.
So a cloud with ``u`` distinct positions yields ``u`` distinct positions first (for each, the
lowest index holding it, except the start point itself); once every distance is 0 (``u`` smaller
than the number requested), every further sample is the cloud's first point (its lowest index):
``fps(torch.ones(10, 3), ratio=1.0, random_start=False)`` is ``[0, 0, ..., 0]``. Indices then
repeat; deduplicate with ``torch.unique`` if a set is wanted.
"""

from __future__ import annotations

import torch

from ._backend import cluster_for
from ._checks import check_batch, check_points, check_ratio, compact_batch

__all__ = ["fps"]


def fps(src: torch.Tensor, batch: torch.Tensor | None = None, ratio: float = 0.5,
        random_start: bool = True, *, generator: torch.Generator | None = None,
        backend: str | None = None) -> torch.Tensor:
    r"""Farthest-point sampling (PointNet++), cloud by cloud.

    Each cloud of ``n`` points yields ``ceil(n * ratio)`` indices, in sampling order, starting
    at its first point when ``random_start=False`` (deterministic, identical to torch-cluster)
    or at a random point drawn from ``generator`` (always pure torch when a generator is
    given; one uniform draw per non-empty cloud) otherwise. Ties of the farthest distance go
    to the lower index. ``backend`` as in :func:`~tensorframes.graph.knn`.

    Duplicate points: indices repeat once a cloud's distinct positions are exhausted, exactly
    as in torch-cluster (see :mod:`tensorframes.graph._fps`): ``fps(torch.ones(10, 3),
    ratio=1.0, random_start=False)`` is ten zeros.

    Batch ids may be any sorted non-negative integers (time and memory depend on the number
    of points, not on the ids; clouds are the runs of equal ids).

    Returns:
        LongTensor ``(S,)``: indices into ``src``, cloud by cloud, each in sampling order.

    Raises:
        ValueError: ``ratio`` outside ``(0, 1]``, non-finite ``src``, a ``batch`` of the wrong
            length, unsorted or negative. TypeError: non-floating ``src``, non-integer ``batch``.
    """
    src = check_points(src, "src")
    ratio = check_ratio(ratio)
    batch = check_batch(batch, src.shape[0], "batch", src.device)
    tc = cluster_for(backend)
    if src.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=src.device)
    # torch-cluster allocates O(largest id) and fails on empty clouds: renumber the clouds
    batch = compact_batch(batch)
    if tc is not None and not (random_start and generator is not None):
        return tc.fps(src, batch, ratio, random_start)
    return _fps_torch(src, batch, ratio, random_start, generator)


def _fps_torch(src: torch.Tensor, batch: torch.Tensor, ratio: float, random_start: bool,
               generator: torch.Generator | None) -> torch.Tensor:
    """Pure-torch :func:`fps` on checked inputs (``batch`` sorted, ids ``0 .. B-1``).

    Clouds are grouped by size (powers of two) and each group runs in a padded
    ``(clouds, largest, d)`` layout, so padding at most doubles the memory of the points
    (one large cloud among many small ones is not padded to ``B x largest``).
    """
    dev = src.device
    nb = int(batch[-1]) + 1
    deg = torch.bincount(batch, minlength=nb)
    ptr = torch.zeros(nb + 1, dtype=torch.long, device=dev)
    ptr[1:] = deg.cumsum(0)
    # torch-cluster: ceil(float(deg) * ratio) with ratio in src's dtype, computed in float32.
    num = torch.ceil(deg.to(torch.float) * torch.tensor(ratio, dtype=src.dtype,
                                                        device=dev)).long()
    if random_start:
        u = torch.rand(nb, generator=generator, device=dev if generator is None
                       else generator.device).to(dev)
        start = (u * deg).long().clamp_max(deg - 1).clamp_min(0)
    else:
        start = torch.zeros(nb, dtype=torch.long, device=dev)
    out_ptr = num.cumsum(0) - num
    out = torch.empty(int(num.sum()), dtype=torch.long, device=dev)
    group = torch.ceil(torch.log2(deg.clamp_min(1).double())).long()
    for g in torch.unique(group).tolist():
        clouds = (group == g).nonzero().flatten()
        idx, keep = _fps_padded(src, ptr, deg, num, start, clouds)
        pos = out_ptr[clouds].unsqueeze(1) + torch.arange(idx.shape[1], device=dev)
        out[pos[keep]] = idx[keep]
    return out


def _fps_padded(src: torch.Tensor, ptr: torch.Tensor, deg: torch.Tensor, num: torch.Tensor,
                start: torch.Tensor, clouds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FPS of the given clouds in one padded layout: (global indices, valid mask) per cloud."""
    dev = src.device
    deg_c, num_c, ptr_c = deg[clouds], num[clouds], ptr[clouds]
    nc = clouds.numel()
    maxn, maxs = int(deg_c.max()), int(num_c.max())
    # Padded (C, maxn, d) layout; padded slots have distance -1 and are never chosen.
    cloud_of = torch.repeat_interleave(torch.arange(nc, device=dev), deg_c)
    local = torch.arange(cloud_of.numel(), device=dev) - (deg_c.cumsum(0) - deg_c)[cloud_of]
    rows = ptr_c[cloud_of] + local
    pts = src.new_zeros(nc, maxn, src.shape[1])
    pts[cloud_of, local] = src[rows]
    valid = torch.zeros(nc, maxn, dtype=torch.bool, device=dev)
    valid[cloud_of, local] = True
    ar = torch.arange(nc, device=dev)
    out = torch.empty(nc, maxs, dtype=torch.long, device=dev)
    cur = start[clouds]
    out[:, 0] = cur
    neg = torch.tensor(-1.0, dtype=src.dtype, device=dev)
    dist = torch.where(valid, (pts - pts[ar, cur].unsqueeze(1)).pow(2).sum(-1), neg)
    for i in range(1, maxs):  # sequential by nature; vectorised over clouds
        cur = dist.argmax(1)
        out[:, i] = cur
        dist = torch.minimum(dist, (pts - pts[ar, cur].unsqueeze(1)).pow(2).sum(-1))
    keep = torch.arange(maxs, device=dev).unsqueeze(0) < num_c.unsqueeze(1)
    return out + ptr_c.unsqueeze(1), keep
