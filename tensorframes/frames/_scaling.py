"""Exact power-of-two rescaling (internal): magnitudes brought near 1 without any rounding.

Multiplying a floating point number by ``2**e`` only changes its exponent, so the frames
computed from rescaled inputs equal those of the original inputs bit for bit (barring the
over/underflow that the rescaling exists to avoid).
"""

from __future__ import annotations

import math

import torch

__all__ = ["global_exponent", "ldexp", "pow2_exponent", "pow2_exponent_of", "scaled_radius"]


def pow2_exponent(amax: torch.Tensor) -> torch.Tensor:
    """Integer ``e`` (int32) with ``amax * 2**-e`` in ``[0.5, 1)``; 0 where ``amax`` is 0 or
    not finite."""
    _, e = torch.frexp(amax)
    return torch.where((amax > 0) & torch.isfinite(amax), e, torch.zeros_like(e))


def pow2_exponent_of(x: float) -> int:
    """:func:`pow2_exponent` of a Python float."""
    return math.frexp(x)[1] if x > 0 and math.isfinite(x) else 0


def _chunk(dtype: torch.dtype) -> int:
    """Largest ``c`` with ``2**c`` and ``2**-c`` both normal numbers of ``dtype``."""
    return math.frexp(torch.finfo(dtype).max)[1] - 2


def ldexp(x: torch.Tensor, e: torch.Tensor | int, chunks: int = 2) -> torch.Tensor:
    """``x * 2**e`` exactly (up to the over/underflow of the result itself), as several factors
    so that no factor over- or underflows. ``e`` is an int (any size) or an integer tensor that
    broadcasts against ``x`` with ``|e| <= chunks * c`` (``c`` = 126 for float32, 1022 for
    float64)."""
    c = _chunk(x.dtype)
    if isinstance(e, int):
        while e:
            step = max(-c, min(c, e))
            x = x * math.ldexp(1.0, step)
            e -= step
        return x
    for _ in range(chunks):
        step = e.clamp(-c, c)
        x = x * torch.exp2(step.to(x.dtype))
        e = e - step
    return x


#: Clouds whose extent lies in ``[2**-EXTENT_EXP, 2**EXTENT_EXP]`` are used as given; others
#: are rescaled by a power of two to extent ``[0.5, 1)`` (exact) before moments are formed.
EXTENT_EXP = 16


def scaled_radius(r: float, e: int) -> float:
    """``r * 2**-e`` as a Python float (saturating at the float range)."""
    try:
        return math.ldexp(float(r), -e)
    except OverflowError:
        return math.inf


def global_exponent(pos: torch.Tensor) -> tuple[int, float]:
    """``(e, extent)``: the power of two that brings the cloud's extent (largest coordinate
    range, in float64) to ``[0.5, 1)`` (0 when it already lies in the safe window), and that
    extent in working units."""
    if pos.shape[0] == 0:
        return 0, 0.0
    lo, hi = torch.aminmax(pos.detach(), dim=0)
    lo, hi = lo.double().tolist(), hi.double().tolist()
    extent = max(h - lo_ for h, lo_ in zip(hi, lo, strict=True))
    if extent == 0:
        return 0, 0.0
    if not math.isfinite(extent):  # float64 range overflow: bound by twice the largest |x|
        e = pow2_exponent_of(max(max(abs(x) for x in hi), max(abs(x) for x in lo))) + 1
        return e, 1.0
    if 2.0 ** -EXTENT_EXP <= extent <= 2.0 ** EXTENT_EXP:
        return 0, extent
    e = pow2_exponent_of(extent)
    return e, math.ldexp(extent, -e)
