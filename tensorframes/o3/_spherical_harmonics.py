"""Real spherical harmonics in e3nn's basis, for any degree, by a stable recurrence."""

from __future__ import annotations

import math

import torch

__all__ = ["spherical_harmonics"]

_NORMALIZATIONS = ("component", "norm", "integral")

# Per (l, dtype, device): the recurrence coefficients cast once from float64. Entries are only
# ever added, never changed, so a cached tensor always has the dtype/device of its key.
_COEFF_CACHE: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _recurrence_coefficients(l: int, dtype: torch.dtype, device: torch.device):
    """``(a, b)`` of the fully normalised associated-Legendre recurrence at degree ``l >= 1``.

    With ``Q_l^m`` the normalised Legendre part of the solid harmonic of degree ``l`` and order
    ``m`` (a polynomial in ``Z`` and ``r^2``):
    ``Q_l^m = a_m Z Q_{l-1}^m - b_m r^2 Q_{l-2}^m`` for ``m < l`` (``b`` has ``l - 1`` entries,
    ``b_{l-1} = 0``) and ``Q_l^l = sqrt((2l+1)/(2l)) Q_{l-1}^{l-1}``.
    """
    key = (l, dtype, device)
    hit = _COEFF_CACHE.get(key)
    if hit is not None:
        return hit
    a = [math.sqrt((2 * l + 1) * (2 * l - 1) / ((l - m) * (l + m))) for m in range(l)]
    b = [
        math.sqrt((2 * l + 1) / (2 * l - 3) * (l + m - 1) * (l - m - 1) / ((l - m) * (l + m)))
        for m in range(l - 1)
    ]
    out = (
        torch.tensor(a, dtype=torch.float64).to(dtype=dtype, device=device),
        torch.tensor(b, dtype=torch.float64).to(dtype=dtype, device=device),
    )
    _COEFF_CACHE[key] = out
    return out


def solid_harmonics(lmax: int, vec: torch.Tensor) -> torch.Tensor:
    """Real solid harmonics ``Y^0 .. Y^lmax`` of ``vec`` in e3nn's basis, "component" normalised.

    Homogeneous polynomials of degree ``l`` in ``vec`` (no normalisation of the input), so that
    ``|Y^l(x)|^2 = (2l+1) |x|^(2l)``. e3nn's basis is the standard real basis (no Condon-Shortley
    phase, order ``m = -l..l``) with polar axis ``y``: its ``(x, y, z)`` are the standard
    ``(Y, Z, X)``. Output: ``(..., (lmax+1)**2)``. Python loops run over ``l`` and ``m`` only.
    """
    x, y, z = vec.unbind(-1)
    X, Y, Z = z, x, y
    one = torch.ones_like(X)
    out = [one[..., None]]
    if lmax == 0:
        return out[0]
    r2 = X * X + Y * Y + Z * Z
    # (X + iY)^m = C_m + i S_m
    cos, sin = [one], [torch.zeros_like(X)]
    for _ in range(lmax):
        c, s = cos[-1], sin[-1]
        cos.append(X * c - Y * s)
        sin.append(X * s + Y * c)
    sqrt2 = math.sqrt(2.0)
    cos_m = torch.stack(cos[1:], dim=-1) * sqrt2  # (..., lmax): m = 1..lmax
    sin_m = torch.stack(sin[1:], dim=-1) * sqrt2
    Z_, r2_ = Z[..., None], r2[..., None]
    q_prev2, q_prev = None, one[..., None]  # Q_{l-2}, Q_{l-1}: (..., l-1), (..., l)
    for l in range(1, lmax + 1):
        a, b = _recurrence_coefficients(l, vec.dtype, vec.device)
        lower = a * Z_ * q_prev  # m = 0 .. l-1
        if l >= 2:
            lower = torch.cat([lower[..., : l - 1] - b * r2_ * q_prev2, lower[..., l - 1 :]], -1)
        top = q_prev[..., l - 1 :] * math.sqrt((2 * l + 1) / (2 * l))  # m = l
        q = torch.cat([lower, top], dim=-1)  # (..., l+1)
        qm = q[..., 1:]
        out.append((qm * sin_m[..., :l]).flip(-1))
        out.append(q[..., :1])
        out.append(qm * cos_m[..., :l])
        q_prev2, q_prev = q_prev, q
    return torch.cat(out, dim=-1)


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
