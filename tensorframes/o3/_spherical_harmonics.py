"""Real spherical harmonics in e3nn's basis, for any degree, by a stable recurrence."""

from __future__ import annotations

import math

import torch

from .._math import solid_harmonics

__all__ = ["spherical_harmonics"]

_NORMALIZATIONS = ("component", "norm", "integral")


def _parse_ls(l) -> list[int]:
    if isinstance(l, bool):
        raise TypeError(f"l must be an int, a list of ints or irreps, got {l!r}")
    if isinstance(l, int):
        ls = [l]
    elif isinstance(l, str) or _is_irreps_like(l):
        from ..reps.irreps import Irreps

        irreps = Irreps(l)
        input_p = -1
        for _, ir in irreps:
            if ir.l % 2 == 1 and ir.p == 1:
                input_p = 1
        ls = []
        for mul, ir in irreps:
            if ir.p != input_p**ir.l:
                raise ValueError(
                    f"irreps {irreps} are not spherical harmonics irreps: l = {ir.l} has parity "
                    f"{ir.p}, inconsistent with the input parity {input_p} (expected "
                    f"{input_p**ir.l})"
                )
            ls.extend([ir.l] * mul)
    else:
        try:
            ls = list(l)
        except TypeError:
            raise TypeError(
                f"l must be an int, a list of ints or irreps, got {type(l).__name__}"
            ) from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ls):
            raise TypeError(f"l must be an int, a list of ints or irreps, got {l!r}")
    if len(ls) == 0:
        raise ValueError(f"spherical_harmonics needs at least one degree l, got {l!r}")
    bad = [v for v in ls if v < 0]
    if bad:
        raise ValueError(f"degrees l must be >= 0, got {bad[0]}")
    return ls


def _is_irreps_like(obj) -> bool:
    from ..reps.irreps import Irrep, Irreps

    if isinstance(obj, (Irreps, Irrep)):
        return True
    # e3nn's Irreps / Irrep (tuples of (mul, (l, p)) or (l, p)), without importing e3nn.
    return type(obj).__name__ in ("Irreps", "Irrep") and isinstance(obj, tuple)


def spherical_harmonics(
    l, vec: torch.Tensor, normalize: bool, normalization: str = "component"
) -> torch.Tensor:
    r"""Real spherical harmonics :math:`Y^l(x)`, identical to e3nn's ``o3.spherical_harmonics``.

    Homogeneous polynomials of ``x = vec`` (degree ``l``), equivariant:
    :math:`Y^l(R x) = D^l(R) Y^l(x)` for every ``R`` in O(3), with ``D^l`` the matrices of
    :meth:`tensorframes.Irreps.D_from_matrix` for the irrep ``l`` with parity :math:`(-1)^l`.
    Computed for any ``l`` by the stable recurrence of the normalised associated Legendre
    functions in Cartesian (solid harmonic) form; e3nn's basis is the standard real basis with
    polar axis ``y``, so no further sign or change of basis is needed.

    Args:
        l: degree: an int, a list of ints, or irreps of spherical harmonics such as
            ``"1x0e + 1x1o + 1x2e"`` (an :class:`~tensorframes.Irreps`, a string, or an e3nn
            ``Irreps``). As in e3nn, an odd ``l`` with even parity (``"1e"``) means a
            pseudovector input; the parities must then be consistent.
        vec: input vectors ``(..., 3)``.
        normalize: project ``vec`` onto the unit sphere first (zero vectors give zero).
        normalization: ``"component"`` (default): :math:`\|Y^l(x)\|^2 = 2l+1` on the sphere;
            ``"norm"``: :math:`\|Y^l(x)\| = 1`; ``"integral"``: :math:`\int_{S^2} (Y^l_m)^2 = 1`.

    Shapes:
        vec: ``(..., 3)`` -> output ``(..., sum(2l + 1))`` in the order of ``l``.
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
        )
    ls = _parse_ls(l)
    if not isinstance(vec, torch.Tensor):
        raise TypeError(f"vec must be a torch.Tensor, got {type(vec).__name__}")
    if vec.dim() == 0 or vec.shape[-1] != 3:
        raise ValueError(f"vec must have shape (..., 3), got {tuple(vec.shape)}")
    if not vec.is_floating_point():
        raise TypeError(f"vec must be a floating point tensor, got {vec.dtype}")
    if normalize:
        vec = torch.nn.functional.normalize(vec, dim=-1)
    lmax = max(ls)
    sh = solid_harmonics(lmax, vec)
    if ls != list(range(lmax + 1)):
        sh = torch.cat([sh[..., l_ * l_ : (l_ + 1) * (l_ + 1)] for l_ in ls], dim=-1)
    if normalization == "integral":
        sh = sh / math.sqrt(4 * math.pi)
    elif normalization == "norm":
        scale = torch.cat(
            [torch.full((2 * l_ + 1,), 1 / math.sqrt(2 * l_ + 1), dtype=torch.float64) for l_ in ls]
        ).to(dtype=sh.dtype, device=sh.device)
        sh = sh * scale
    return sh
