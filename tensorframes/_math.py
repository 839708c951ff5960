"""Shared mathematics at the bottom of the dependency order: imports only torch, numpy and math.

Every other part of the library may import from here; this module imports nothing from
``tensorframes``. It holds what more than one package needs:

- :func:`haar_orthogonal` (torch) and :func:`haar_orthogonal_np` (numpy): Haar-random elements of
  O(d), one algorithm (QR of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``);
- :func:`det3` and :func:`det_sign` for batched 3x3 matrices;
- :func:`solid_harmonics`: e3nn's real solid harmonics of any degree (used by the Wigner-D
  recursion of :mod:`tensorframes.reps` and by :func:`tensorframes.o3.spherical_harmonics`);
- :func:`sphere_quadrature`: the Gauss-Legendre x uniform-phi rule on S2 (Wigner couplings and
  the Gaunt S2 grid).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "det3",
    "det_sign",
    "haar_orthogonal",
    "haar_orthogonal_np",
    "solid_harmonics",
    "sphere_quadrature",
]


# -- Haar sampling ---------------------------------------------------------------------------
def haar_orthogonal(
    n: int,
    d: int = 3,
    *,
    det: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` Haar-random elements of O(d) as a float64 ``(n, d, d)`` tensor.

    Drawn on the generator's device (CPU without one) as the QR decomposition of a Gaussian
    matrix with the signs of ``diag(R)`` moved into ``Q``. ``det=None`` keeps both components
    of O(d) (each with probability 1/2); ``det=+1`` / ``det=-1`` flips the first row where the
    determinant has the other sign, which maps the Haar measure of one component onto the
    other's.
    """
    if det not in (None, 1, -1):
        raise ValueError(f"det must be None, 1 or -1, got {det!r}")
    dev = generator.device if generator is not None else "cpu"
    a = torch.randn(n, d, d, generator=generator, dtype=torch.float64, device=dev)
    q, r = torch.linalg.qr(a)
    sgn = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sgn = torch.where(sgn == 0, torch.ones_like(sgn), sgn)
    q = q * sgn.unsqueeze(-2)
    if det is not None:
        flip = torch.ones(d, 1, dtype=q.dtype, device=q.device)
        flip[0] = -1.0
        wrong = torch.linalg.det(q).sign() != det
        q = torch.where(wrong[:, None, None], q * flip, q)
    return q


def haar_orthogonal_np(rng: np.random.Generator, d: int = 3, *, det: int | None = None
                       ) -> np.ndarray:
    """One Haar-random element of O(d) (float64 ``(d, d)``) from a numpy generator.

    The algorithm of :func:`haar_orthogonal`, for code that draws its randomness with numpy.
    With ``det`` set, the first *column* is flipped where the sign is wrong.
    """
    if det not in (None, 1, -1):
        raise ValueError(f"det must be None, 1 or -1, got {det!r}")
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))[None, :]
    if det is not None and np.sign(np.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q


# -- determinants ----------------------------------------------------------------------------
def det3(R: torch.Tensor) -> torch.Tensor:
    """Determinant of ``(..., 3, 3)`` matrices by the triple product (differentiable, batched)."""
    r0, r1, r2 = R[..., 0, :], R[..., 1, :], R[..., 2, :]
    return (r0 * torch.linalg.cross(r1, r2, dim=-1)).sum(-1)


def det_sign(R: torch.Tensor) -> torch.Tensor:
    """``+1`` / ``-1`` per ``(..., 3, 3)`` matrix (``-1`` where ``det(R) < 0``), in R's dtype."""
    d = det3(R).detach()
    return torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))


# -- solid harmonics -------------------------------------------------------------------------
# Per (l, dtype, device): the recurrence coefficients cast once from float64. Entries are only
# ever added, never changed, so a cached tensor always has the dtype/device of its key.
_COEFF_CACHE: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _recurrence_coefficients(l: int, dtype: torch.dtype, device: torch.device
                             ) -> tuple[torch.Tensor, torch.Tensor]:
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


# -- quadrature on the sphere ----------------------------------------------------------------
def sphere_quadrature(n_theta: int, n_phi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes in ``cos theta`` times uniform nodes in ``phi``, polar axis ``y``.

    Integrates exactly every polynomial on S2 of degree up to ``2 n_theta - 1`` in
    ``cos theta`` whose azimuthal frequencies lie below ``n_phi``. Polar axis ``y`` is e3nn's,
    so every real spherical harmonic is a Legendre factor in theta times ``cos(m phi)`` or
    ``sin(|m| phi)``.

    Returns (float64 numpy arrays):
        ``vec`` ``(n_theta * n_phi, 3)``: the nodes, theta-major;
        ``w`` ``(n_theta * n_phi,)``: weights with ``sum_k w_k p(vec_k) = int_{S2} p`` (sum 4 pi);
        ``wz`` ``(n_theta,)``: the Gauss-Legendre weights alone (sum 2).
    """
    z, wz = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    s = np.sqrt(1 - z**2)
    vec = np.stack(
        [np.outer(s, np.sin(phi)), np.outer(z, np.ones(n_phi)), np.outer(s, np.cos(phi))], -1
    ).reshape(-1, 3)
    w = np.outer(wz, np.full(n_phi, 2 * np.pi / n_phi)).reshape(-1)
    return vec, w, wz
