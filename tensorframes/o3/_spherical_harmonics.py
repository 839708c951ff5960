"""Real spherical harmonics in e3nn's basis, for any degree, by a stable recurrence.

:func:`spherical_harmonics` is e3nn's ``o3.spherical_harmonics``; :class:`SphericalHarmonics`
the module form, e3nn's ``o3.SphericalHarmonics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._math import solid_harmonics
from ..reps.irreps import Irrep, Irreps

__all__ = ["SphericalHarmonics", "spherical_harmonics"]

_NORMALIZATIONS = ("component", "norm", "integral")


def _parse_ls(l: int | Sequence[int] | str | Irreps) -> list[int]:
    if isinstance(l, bool):
        raise TypeError(f"l must be an int, a list of ints or irreps, got {l!r}")
    if isinstance(l, int):
        ls = [l]
    elif isinstance(l, str) or _is_irreps_like(l):
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


def _is_irreps_like(obj: object) -> bool:
    if isinstance(obj, (Irreps, Irrep)):
        return True
    # e3nn's Irreps / Irrep (tuples of (mul, (l, p)) or (l, p)), without importing e3nn.
    return type(obj).__name__ in ("Irreps", "Irrep") and isinstance(obj, tuple)


def spherical_harmonics(
    l: int | Sequence[int] | str | Irreps,
    vec: torch.Tensor,
    normalize: bool,
    normalization: str = "component",
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


class SphericalHarmonics(torch.nn.Module):
    r"""Real spherical harmonics as a module, e3nn's ``o3.SphericalHarmonics``.

    ``forward(x)`` is :func:`spherical_harmonics` of the degrees of ``irreps_out``; the module
    records the irreps of its input and output, so it composes with the tensor products.

    Args:
        irreps_out: the degrees: an int, a list of ints, or irreps of spherical harmonics such
            as ``"1x0e + 1x1o + 1x2e"`` (an odd ``l`` with even parity, ``"1e"``, means a
            pseudovector input, as in e3nn).
        normalize: project the input onto the unit sphere first (zero vectors give zero).
        normalization: ``"integral"`` (default, as e3nn's module; note that the function
            :func:`spherical_harmonics` defaults to ``"component"``), ``"component"`` or
            ``"norm"``.
        irreps_in: ``"1x1o"`` (a vector; the default) or ``"1x1e"`` (a pseudovector; the
            default where ``irreps_out`` asks for it).

    Attributes:
        irreps_in: the input's irreps, ``1x1o`` or ``1x1e``.
        irreps_out: ``1x{l}{p}`` per degree with ``p = p_in^l``, simplified as in e3nn.

    Shapes:
        x: ``(..., 3)`` -> ``(..., irreps_out.dim)``
    """

    def __init__(
        self,
        irreps_out: int | Sequence[int] | str | Irreps,
        normalize: bool,
        normalization: str = "integral",
        irreps_in: Irreps | str | None = None,
    ) -> None:
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        self.normalize, self.normalization = bool(normalize), normalization
        requested = None
        if isinstance(irreps_out, str) or _is_irreps_like(irreps_out):
            requested = Irreps(irreps_out)
            if irreps_in is None and any(ir.l % 2 == 1 and ir.p == 1 for _, ir in requested):
                irreps_in = "1x1e"
        irreps_in = Irreps("1x1o" if irreps_in is None else irreps_in)
        if irreps_in not in (Irreps("1x1o"), Irreps("1x1e")):
            raise ValueError(
                "irreps_in of SphericalHarmonics must be a vector (1x1o) or a pseudovector "
                f"(1x1e), got {irreps_in}"
            )
        p_in = irreps_in[0].ir.p
        if requested is not None:
            ls = []
            for mul, ir in requested:
                if ir.p != p_in**ir.l:
                    raise ValueError(
                        f"irreps_out {requested} asks for l = {ir.l} with parity {ir.p}, "
                        f"inconsistent with the input {irreps_in} (expected {p_in**ir.l})"
                    )
                ls.extend([ir.l] * mul)
            if not ls:
                raise ValueError(f"SphericalHarmonics needs at least one degree, got {requested}")
        else:
            ls = _parse_ls(irreps_out)
        self._ls = ls
        self.irreps_in = irreps_in
        self.irreps_out = Irreps([(1, (l_, p_in**l_)) for l_ in ls]).simplify()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(self._ls, x, self.normalize, self.normalization)

    def extra_repr(self) -> str:
        return (f"{self.irreps_in} -> {self.irreps_out}, normalize={self.normalize}, "
                f"normalization={self.normalization!r}")
