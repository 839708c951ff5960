"""Brute-force kernels: squared distances in nanoflann's order and exact ``(distance, index)``
selection. The reference the grid search (:mod:`._grid`) must reproduce exactly."""

from __future__ import annotations

import torch

__all__ = ["SENTINEL", "pack", "smallest", "sqdist", "sqdist_rows"]

#: Key of an empty slot in packed ``(distance, index)`` results (larger than every real key).
SENTINEL = torch.iinfo(torch.int64).max


def sqdist(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(C, M)`` squared distances between the rows of ``y`` ``(C, d)`` and ``x`` ``(M, d)``.

    Evaluated like nanoflann's ``L2_Adaptor`` (torch-cluster's KD-tree): in the input dtype,
    ``((0 + dx*dx) + dy*dy) + dz*dz``, groups of four coordinates summed first for ``d >= 4``.
    """
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


def sqdist_rows(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared distances of matching rows of ``y`` and ``x``, in :func:`sqdist`'s order."""
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


def smallest(dist: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def pack(dist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered like ``(dist, index)`` for non-negative float32 ``dist``."""
    return (dist.view(torch.int32).to(torch.int64) << 32) | index
