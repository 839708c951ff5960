"""Input checks of the neighbour search: point sets, batch vectors, ``k``, ``flow``."""

from __future__ import annotations

import torch

__all__ = ["batch_ptrs", "check_batch", "check_finite", "check_flow", "check_k", "check_points",
           "check_same_dim"]


def check_finite(x: torch.Tensor, name: str = "pos") -> None:
    """Raise :class:`ValueError` naming the first row of ``x`` with a NaN or inf entry."""
    if x.numel() == 0:
        return
    ok = torch.isfinite(x)
    if not bool(ok.all()):
        bad = ~ok.reshape(x.shape[0], -1).all(1)
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} has a non-finite entry at index {i}: {x[i].tolist()}")


def check_points(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` as a finite floating ``(N, d)`` tensor (a 1-d ``x`` is read as ``(N, 1)``)."""
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


def check_same_dim(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise :class:`ValueError` unless ``x`` and ``y`` have the same number of columns."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and "
                         f"{y.shape[1]}")


def check_k(k: int) -> None:
    """Raise :class:`ValueError` unless ``k`` is a positive ``int`` (``bool`` excluded)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


def check_batch(batch: torch.Tensor | None, n: int, name: str,
                device: torch.device) -> torch.Tensor:
    """``batch`` as a sorted non-negative ``long`` ``(n,)`` vector (zeros when ``None``)."""
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


def check_flow(flow: str) -> None:
    """Raise :class:`ValueError` unless ``flow`` is one of PyG's two flows."""
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")


def batch_ptrs(batch_x: torch.Tensor, batch_y: torch.Tensor) -> tuple[list[int], list[int]]:
    """Segment boundaries of two sorted batch vectors over their common number of segments."""
    nb = 0
    if batch_x.numel():
        nb = int(batch_x[-1]) + 1
    if batch_y.numel():
        nb = max(nb, int(batch_y[-1]) + 1)
    ar = torch.arange(nb + 1, device=batch_x.device)
    px = torch.bucketize(ar, batch_x).tolist()
    py = torch.bucketize(ar, batch_y).tolist()
    return px, py
