"""Farthest-point sampling (PointNet++), vectorised over the clouds of a batch."""

from __future__ import annotations

import torch

from ._backend import cluster_for
from ._checks import check_batch, check_points

__all__ = ["fps"]


def fps(src: torch.Tensor, batch: torch.Tensor | None = None, ratio: float = 0.5,
        random_start: bool = True, *, generator: torch.Generator | None = None,
        backend: str | None = None) -> torch.Tensor:
    r"""Farthest-point sampling (PointNet++), cloud by cloud.

    Each cloud of ``n`` points yields ``ceil(n * ratio)`` indices, in sampling order, starting
    at its first point when ``random_start=False`` (deterministic, identical to torch-cluster)
    or at a random point drawn from ``generator`` (always pure torch when a generator is
    given) otherwise. Ties of the farthest distance go to the lower index. ``backend`` as in
    :func:`~tensorframes.graph.knn`.

    Returns:
        LongTensor ``(S,)``: indices into ``src``, cloud by cloud, each in sampling order.
    """
    src = check_points(src, "src")
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    batch = check_batch(batch, src.shape[0], "batch", src.device)
    if src.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=src.device)
    tc = cluster_for(backend)
    if tc is not None and not (random_start and generator is not None):
        return tc.fps(src, batch, ratio, random_start)
    return _fps_torch(src, batch, ratio, random_start, generator)


def _fps_torch(src: torch.Tensor, batch: torch.Tensor, ratio: float, random_start: bool,
               generator: torch.Generator | None) -> torch.Tensor:
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
