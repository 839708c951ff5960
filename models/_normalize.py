"""Per-cloud position normalisation: every model's first step (``check_batch``).

By default each cloud is centred at its centroid and scaled to unit maximum radius. A caller
that feeds a *part* of a cloud (a tile of :func:`models._predict.predict_normals`) passes the
whole cloud's centre and scale as ``data.norm_center`` ``(B, 3)`` and ``data.norm_scale``
``(B,)`` (one row per cloud of the batch, from :func:`cloud_normalization`), so the part is
normalised exactly as the whole cloud would be.
"""

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


def _check_given(
    center: torch.Tensor | None, scale: torch.Tensor | None, size: int, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caller-given ``(center (B, 3), scale (B,))``, checked: finite, scale > 0."""
    if (center is None) != (scale is None):
        raise ValueError("norm_center and norm_scale must be given together (or neither)")
    for name, x, shape in (("norm_center", center, (size, 3)), ("norm_scale", scale, (size,))):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {type(x).__name__}"
                            f"{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (one row per cloud), "
                             f"got {tuple(x.shape)}")
        tf.graph.check_finite(x, name)
    if not bool((scale > 0).all()):
        raise ValueError(f"norm_scale must be > 0, got min {float(scale.min())}")
    return center.to(pos.dtype), scale.to(pos.dtype)


def cloud_normalization(
    pos: torch.Tensor, batch: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(center (B, 3), scale (B,))`` with ``normalize_positions(pos, batch)`` equal (to
    round-off) to ``(pos - center[batch]) / scale[batch]``: each cloud's centroid and maximum
    distance from it (1 for a cloud whose points coincide). For coordinates beyond about
    ``1e150`` or below ``1e-150`` (float64; ``1e19`` / ``1e-19`` in float32) the scale itself
    may overflow or underflow; :func:`normalize_positions` without given values does not."""
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    size = int(batch.max()) + 1 if pos.shape[0] else 0
    center = scatter(pos, batch, 0, dim_size=size, reduce="mean")
    radius = scatter((pos - center.index_select(0, batch)).norm(dim=-1), batch, 0,
                     dim_size=size, reduce="max")
    return center, torch.where(radius > 0, radius, torch.ones_like(radius))


def normalize_positions(
    pos: torch.Tensor,
    batch: torch.Tensor,
    center: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each cloud centred at its centroid and scaled to unit maximum radius (as
    :class:`tensorframes.data.CenterScale`), robustly for every finite input.

    The cloud is rescaled by a power of two (exact) before its centroid is taken and again
    before its radius is, so coordinates from subnormal to the largest float neither overflow
    nor underflow; a power-of-two factor cancels exactly in the result, so the output does not
    depend on it (and stays O(3)-equivariant bit for bit). A cloud whose points coincide is
    only centred.

    ``center`` ``(B, 3)`` and ``scale`` ``(B,)`` (both or neither), when given, replace the
    cloud's own: the result is ``(pos - center[batch]) / scale[batch]`` (for a part of a cloud
    whose whole has these values, see :func:`cloud_normalization`).
    """
    if pos.shape[0] == 0:
        return pos
    size = int(batch.max()) + 1
    if center is not None or scale is not None:
        center, scale = _check_given(center, scale, size, pos)
        return (pos - center.index_select(0, batch)) / scale.index_select(0, batch)[:, None]

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
    ``CenterScale`` is unchanged up to round-off). ``data.norm_center`` ``(B, 3)`` and
    ``data.norm_scale`` ``(B,)``, when present, give each cloud's centre and scale instead of
    its centroid and radius (a tile of a larger cloud is then normalised as the whole cloud).
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
    center = getattr(data, "norm_center", None)
    scale = getattr(data, "norm_scale", None)
    return normalize_positions(pos, batch, center, scale), batch
