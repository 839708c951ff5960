"""Input checks of the neighbour search: point sets, batch vectors, counts, radii, ``flow``.

Every public entry point (:func:`~tensorframes.graph.knn`, ``knn_graph``, ``radius``,
``radius_graph``, ``fps``) validates its arguments through these functions, before any search
and whatever the backend, so the same bad input gives the same error everywhere.

Batch vectors. Ids are arbitrary sorted non-negative integers; only the *segments* (runs of
equal ids) matter. :func:`batch_ptrs` and :func:`compact_batches` work on the distinct ids
present, so time and memory depend on the number of points, never on the size of the ids
(a batch ``[0] * 10 + [10**9] * 10`` is two segments, not a billion). Unsorted batch vectors are
refused with a :class:`ValueError`: PyG and torch-cluster require them sorted, and torch-cluster
does not check (it silently pairs the wrong points).
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["batch_ptrs", "check_batch", "check_chunk_size", "check_count", "check_finite",
           "check_flow", "check_k", "check_pair", "check_points", "check_radius", "check_ratio",
           "check_same_dim", "compact_batch", "compact_batches"]

_INT_DTYPES = (torch.long, torch.int32, torch.int16, torch.int8, torch.uint8)


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


def check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    """``x`` and ``y`` (checked point sets) share their dimension, dtype and device."""
    check_same_dim(x, y)
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got x: {x.dtype} and y: {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got x: {x.device} and "
                         f"y: {y.device}")


def check_count(value: object, name: str) -> int:
    """``value`` as an ``int >= 1`` (``bool`` and non-integers refused with ValueError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def check_k(k: object) -> int:
    """``k`` as a positive ``int`` (``bool`` excluded), else :class:`ValueError`."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive int (k >= 1), got {k!r}")
    return int(k)


def _real(value: object, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_radius(r: object) -> float:
    """``r`` as a finite ``float > 0``, else :class:`ValueError`."""
    v = _real(r, "r")
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"r must be a finite number > 0, got {r!r}")
    return v


def check_ratio(ratio: object) -> float:
    """``ratio`` as a ``float`` in ``(0, 1]``, else :class:`ValueError`."""
    v = _real(ratio, "ratio")
    if not 0.0 < v <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    return v


def check_chunk_size(chunk_size: object) -> int:
    """``chunk_size`` as an ``int >= 1``, else :class:`ValueError`."""
    return check_count(chunk_size, "chunk_size")


def check_batch(batch: torch.Tensor | None, n: int, name: str,
                device: torch.device) -> torch.Tensor:
    """``batch`` as a sorted non-negative ``long`` ``(n,)`` vector (zeros when ``None``).

    Raises:
        TypeError: not a tensor, or not of an integer dtype.
        ValueError: wrong shape or device, unsorted (PyG's requirement), or negative ids.
    """
    if batch is None:
        return torch.zeros(n, dtype=torch.long, device=device)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
    if batch.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got {batch.dtype}")
    if batch.dim() != 1 or batch.numel() != n:
        raise ValueError(f"{name} must have shape ({n},) (one id per point), got "
                         f"{tuple(batch.shape)}")
    if batch.device != device:
        raise ValueError(f"{name} must be on the points' device {device}, got {batch.device}")
    batch = batch.long().contiguous()
    if n > 0:
        down = batch[1:] < batch[:-1]
        if bool(down.any()):
            i = int(down.nonzero()[0, 0]) + 1
            raise ValueError(f"{name} must be sorted (non-decreasing, as in PyG), but "
                             f"{name}[{i}] = {int(batch[i])} < {name}[{i - 1}] = "
                             f"{int(batch[i - 1])}")
        if int(batch[0]) < 0:
            raise ValueError(f"{name} must be non-negative, got {name}[0] = {int(batch[0])}")
    return batch


def check_flow(flow: str) -> None:
    """Raise :class:`ValueError` unless ``flow`` is one of PyG's two flows."""
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"flow must be 'source_to_target' or 'target_to_source', got {flow!r}")


def _segment_ids(batch_x: torch.Tensor, batch_y: torch.Tensor) -> torch.Tensor:
    """The sorted distinct ids of two sorted batch vectors (``O(N + M)`` memory)."""
    ux = torch.unique_consecutive(batch_x)
    uy = torch.unique_consecutive(batch_y)
    return torch.unique(torch.cat([ux, uy]))


def batch_ptrs(batch_x: torch.Tensor, batch_y: torch.Tensor) -> tuple[list[int], list[int]]:
    """Segment boundaries of two sorted batch vectors over the ids present in either.

    Segment ``s`` of ``x`` is ``batch_x[px[s]:px[s + 1]]`` (possibly empty when the id occurs
    only in ``batch_y``). The number of segments is at most ``N + M``, whatever the ids.
    """
    ids = _segment_ids(batch_x, batch_y)
    px = torch.searchsorted(batch_x, ids).tolist() + [batch_x.numel()]
    py = torch.searchsorted(batch_y, ids).tolist() + [batch_y.numel()]
    return px, py


def compact_batch(batch: torch.Tensor) -> torch.Tensor:
    """A sorted batch vector renumbered ``0, 1, ...`` over its distinct ids (same segments).

    Returned unchanged when its ids are already ``0 .. B-1`` (every ordinary PyG batch).
    """
    if batch.numel() == 0:
        return batch
    ids, inv = torch.unique_consecutive(batch, return_inverse=True)
    if int(ids[-1]) == ids.numel() - 1:
        return batch
    return inv


def compact_batches(batch_x: torch.Tensor, batch_y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sorted batch vectors renumbered jointly ``0, 1, ...`` over the ids present in either.

    Equal ids stay equal and order is kept, so every search result is unchanged; torch-cluster
    then allocates ``O(number of segments)`` instead of ``O(largest id)``. Returned unchanged when
    the ids present are already ``0 .. B-1``.
    """
    if batch_x.numel() == 0 or batch_y.numel() == 0:
        return batch_x, batch_y
    ids = _segment_ids(batch_x, batch_y)
    if int(ids[-1]) == ids.numel() - 1:
        return batch_x, batch_y
    return torch.searchsorted(ids, batch_x), torch.searchsorted(ids, batch_y)
