"""Per-cloud position normalisation: every model's first step (``check_batch``)."""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Data
from torch_geometric.utils import scatter

import tensorframes as tf


def _pow2_exponent(amax: torch.Tensor) -> torch.Tensor:
    """``e`` with ``amax * 2**-e`` in ``[0.5, 1)`` (0 where ``amax`` is 0)."""
    _, e = torch.frexp(amax)
    return torch.where(amax > 0, e, torch.zeros_like(e))


def _ldexp(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``x * 2**e`` exactly, in factors that neither over- nor underflow."""
    c = math.frexp(torch.finfo(x.dtype).max)[1] - 2
    for _ in range(3):
        step = e.clamp(-c, c)
        x = x * torch.exp2(step.to(x.dtype))
        e = e - step
    return x


def normalize_positions(pos: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Each cloud centred at its centroid and scaled to unit maximum radius (as
    :class:`tensorframes.data.CenterScale`), robustly for every finite input.

    The cloud is rescaled by a power of two (exact) before its centroid is taken and again
    before its radius is, so coordinates from subnormal to the largest float neither overflow
    nor underflow; a power-of-two factor cancels exactly in the result, so the output does not
    depend on it (and stays O(3)-equivariant bit for bit). A cloud whose points coincide is
    only centred.
    """
    if pos.shape[0] == 0:
        return pos
    size = int(batch.max()) + 1

    def cloud_exponent(x: torch.Tensor) -> torch.Tensor:
        amax = scatter(x.detach().abs().amax(-1), batch, 0, dim_size=size, reduce="max")
        return _pow2_exponent(amax).index_select(0, batch)[:, None]

    p = _ldexp(pos, -cloud_exponent(pos))
    rel = p - scatter(p, batch, 0, dim_size=size, reduce="mean").index_select(0, batch)
    rel = _ldexp(rel, -cloud_exponent(rel))
    radius = scatter(rel.norm(dim=-1), batch, 0, dim_size=size, reduce="max")
    radius = torch.where(radius > 0, radius, torch.ones_like(radius))
    return rel / radius.index_select(0, batch)[:, None]


def check_batch(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pos, batch)`` of a PyG Data/Batch, with a clear error for bad positions.

    ``pos`` comes back normalised per cloud by :func:`normalize_positions` (centroid 0, maximum
    radius 1), so the models' outputs do not depend on where a cloud sits or how large it is:
    large or tiny coordinates give the outputs of unit-scale ones (data already passed through
    ``CenterScale`` is unchanged up to round-off).
    """
    pos = getattr(data, "pos", None)
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(
            f"model input must hold pos of shape (N, 3), got "
            f"{None if pos is None else tuple(getattr(pos, 'shape', ()))}"
        )
    if not pos.is_floating_point():
        raise TypeError(f"model input pos must be a floating point tensor, got {pos.dtype}")
    tf.graph.check_finite(pos, "pos")
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    return normalize_positions(pos, batch), batch
