"""Baseline frames: identity, random per node, random per graph (data augmentation)."""

from __future__ import annotations

import torch

from .._math import haar_orthogonal
from ._frames import Frames

__all__ = ["identity", "random", "random_global"]


def identity(n: int, d: int = 3, *, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None) -> Frames:
    """``n`` identity frames (no canonicalisation: the plain, non-equivariant baseline)."""
    if n < 0 or d < 1:
        raise ValueError(f"need n >= 0 and d >= 1, got n={n}, d={d}")
    eye = torch.eye(d, dtype=dtype or torch.get_default_dtype(), device=device)
    return Frames(eye.expand(n, d, d).clone())


def random(n: int, d: int = 3, *, generator: torch.Generator | None = None,
           dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Frames:
    """``n`` independent Haar-random frames in O(d) (reflections included).

    Seeded by ``generator`` (or the global RNG); drawn in float64, then cast.
    """
    if n < 0 or d < 1:
        raise ValueError(f"need n >= 0 and d >= 1, got n={n}, d={d}")
    m = haar_orthogonal(n, d, generator=generator)
    return Frames(m.to(dtype=dtype or torch.get_default_dtype(), device=device))


def random_global(batch: torch.Tensor, d: int = 3, *, generator: torch.Generator | None = None,
                  dtype: torch.dtype | None = None, num_graphs: int | None = None) -> Frames:
    """One Haar-random O(d) frame per graph, shared by all its nodes (data augmentation).

    Args:
        batch (LongTensor): ``(N,)`` graph index of every node.
        num_graphs (int, optional): number of graphs (default ``batch.max() + 1``).
    """
    if not isinstance(batch, torch.Tensor) or batch.dim() != 1:
        raise ValueError("batch must be a 1-d LongTensor")
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    m = haar_orthogonal(num_graphs, d, generator=generator)
    m = m.to(dtype=dtype or torch.get_default_dtype(), device=batch.device)
    return Frames(m.index_select(0, batch.long()))
