r"""Batched real Wigner-D matrices of O(3) from 3x3 matrices, in e3nn's basis.

``wigner_D_polynomial(l, R)`` is the unique homogeneous polynomial of degree ``l`` in the
entries of ``R`` with :math:`Y^l(R x) = D^l(R) Y^l(x)` (``Y`` the spherical harmonics of
:mod:`tensorframes.o3`). On SO(3) it is e3nn's :math:`D^l`; on O(3) it is the representation of
parity :math:`(-1)^l`. No Euler angles are involved, so it is exact everywhere (identity,
rotations about one axis, rotations by pi ...):

- ``l = 0``: 1; ``l = 1``: ``R`` itself (e3nn's l=1 basis is (x, y, z));
- ``l = 2``: closed form, quadratic in ``R`` (columns of ``D^2`` are the polarised quadratic
  harmonics of pairs of columns of ``R``);
- ``l >= 3``: the coupling recursion :math:`D^l = C_l^T (R \otimes D^{l-1}) C_l` with ``C_l``
  the orthonormal (1, l-1 -> l) coupling in e3nn's basis, computed once in float64 by an exact
  quadrature of :math:`x_i Y^{l-1}_m Y^l_a` over the sphere, cached per (l, dtype, device).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable

import torch

from .._math import det_sign, solid_harmonics, sphere_quadrature
from .base import check_matrices, check_orthogonal

__all__ = ["wigner_D_from_matrix"]

#: Matrices per batch chunk of the l >= 3 recursion.
RECURSION_CHUNK = 8192

# Per (l, dtype, device) casts of the float64 coupling tensors. Entries are only ever added.
_COUPLING_CACHE: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


@functools.cache
def coupling(l: int) -> torch.Tensor:
    """Orthonormal coupling ``C`` of shape ``(3, 2l-1, 2l+1)`` (float64, CPU), ``l >= 2``.

    ``C[i, m, a]`` is proportional to the integral of ``x_i Y^{l-1}_m(x) Y^l_a(x)`` over the
    sphere (exact quadrature), scaled so that ``sum_{i,m} C[i,m,a] C[i,m,b] = delta_ab``.
    ``C^T`` is then the (unique up to sign) equivariant isometry ``V_1 (x) V_{l-1} -> V_l``.
    Do not modify the returned tensor (it is cached).
    """
    if l < 2:
        raise ValueError(f"coupling is defined for l >= 2, got {l}")
    # the integrand has degree 2l: l + 1 Gauss-Legendre nodes and 2l + 1 phi nodes are exact
    vec, w, _ = sphere_quadrature(l + 1, 2 * l + 1)
    pts = torch.from_numpy(vec)
    w = torch.from_numpy(w / (4 * math.pi))  # the mean over the sphere
    Y = solid_harmonics(l, pts)
    y_prev = Y[:, (l - 1) ** 2 : l * l]
    y_l = Y[:, l * l : (l + 1) ** 2]
    C = torch.einsum("k,ki,km,ka->ima", w, pts, y_prev, y_l)
    gram = torch.einsum("ima,imb->ab", C, C)
    C = C / gram.diagonal().mean().sqrt()
    return C.contiguous()


def _coupling_cast(l: int, dtype: torch.dtype, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``C[j, n, b]`` as ``(3, p*q)`` and ``C[i, m, a]`` as ``(q, (m, i))`` for the recursion,
    cast and cached."""
    key = (l, dtype, device)
    hit = _COUPLING_CACHE.get(key)
    if hit is None:
        C = coupling(l)
        p, q = 2 * l - 1, 2 * l + 1
        hit = (
            C.reshape(3, p * q).to(dtype=dtype, device=device),
            C.permute(2, 1, 0).reshape(q, p * 3).contiguous().to(dtype=dtype, device=device),
        )
        _COUPLING_CACHE[key] = hit
    return hit


def _coupling_step(l: int, R: torch.Tensor, D_prev: torch.Tensor) -> torch.Tensor:
    """``D^l = C^T (R (x) D^{l-1}) C`` as three contractions (no Kronecker product): one GEMM
    with ``R``, one ``(p x p) @ (p x 3q)`` product per matrix, one with ``C``."""
    p, q = 2 * l - 1, 2 * l + 1
    C_jnb, C_a_mi = _coupling_cast(l, R.dtype, R.device)
    batch = torch.broadcast_shapes(R.shape[:-2], D_prev.shape[:-2])
    # V[i, n, b] = sum_j R[i, j] C[j, n, b]
    V = torch.matmul(R, C_jnb).reshape(*R.shape[:-2], 3, p, q)
    # T[m, i, b] = sum_n D[m, n] V[i, n, b]: one (p x p) @ (p x 3q) product per matrix
    Vt = V.transpose(-3, -2).reshape(*V.shape[:-3], p, 3 * q)
    T = torch.matmul(D_prev, Vt).reshape(*batch, 3 * p, q)
    # D[a, b] = sum_{m, i} C[i, m, a] T[m, i, b]
    return torch.matmul(C_a_mi, T)


_S5_15 = math.sqrt(5.0 / 15.0)


def _wigner_D2(R: torch.Tensor) -> torch.Tensor:
    """Closed form of ``D^2(R)``, quadratic in ``R`` (e3nn's l=2 basis).

    With ``B(u, v)`` the polarised e3nn quadratic harmonic scaled so that ``B(e_i, e_j)`` is a
    unit basis vector for ``(i, j) in {(0,2), (0,1), (1,2)}``, and ``c_k = R e_k`` the columns:
    ``D[:, 0] = B(c_0, c_2)``, ``D[:, 1] = B(c_0, c_1)``, ``D[:, 3] = B(c_1, c_2)``,
    ``D[:, 2] = Y^2(c_1) / sqrt(5)``, ``D[:, 4] = (Y^2(c_2) - Y^2(c_0)) / sqrt(15)``.
    """
    c0x, c1x, c2x = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    c0y, c1y, c2y = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    c0z, c1z, c2z = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    s = _S5_15

    def pair(ux, uy, uz, vx, vy, vz):
        return (
            ux * vz + uz * vx,
            ux * vy + uy * vx,
            s * (2 * uy * vy - ux * vx - uz * vz),
            uy * vz + uz * vy,
            uz * vz - ux * vx,
        )

    col0 = pair(c0x, c0y, c0z, c2x, c2y, c2z)
    col1 = pair(c0x, c0y, c0z, c1x, c1y, c1z)
    col3 = pair(c1x, c1y, c1z, c2x, c2y, c2z)
    col2 = (
        (1 / s) * c1x * c1z,
        (1 / s) * c1x * c1y,
        c1y * c1y - 0.5 * (c1x * c1x + c1z * c1z),
        (1 / s) * c1y * c1z,
        (0.5 / s) * (c1z * c1z - c1x * c1x),
    )
    col4 = (
        c2x * c2z - c0x * c0z,
        c2x * c2y - c0x * c0y,
        s * ((c2y * c2y - c0y * c0y) - 0.5 * (c2x * c2x + c2z * c2z - c0x * c0x - c0z * c0z)),
        c2y * c2z - c0y * c0z,
        0.5 * ((c2z * c2z - c2x * c2x) - (c0z * c0z - c0x * c0x)),
    )
    cols = (col0, col1, col2, col3, col4)
    return torch.stack([cols[b][a] for a in range(5) for b in range(5)], dim=-1).reshape(
        *R.shape[:-2], 5, 5
    )


def wigner_D_polynomials(ls: Iterable[int], R: torch.Tensor) -> dict[int, torch.Tensor]:
    """``{l: wigner_D_polynomial(l, R)}`` for every ``l`` in ``ls``, sharing the recursion.

    ``R``: ``(..., 3, 3)`` (not validated here). ``D^1`` is ``R`` itself (not a copy).
    """
    ls = sorted(set(ls))
    out: dict[int, torch.Tensor] = {}
    if not ls:
        return out
    lmax = ls[-1]
    if 0 in ls:
        out[0] = torch.ones(*R.shape[:-2], 1, 1, dtype=R.dtype, device=R.device)
    if lmax >= 1 and 1 in ls:
        out[1] = R
    if lmax >= 2:
        D2 = _wigner_D2(R)
        if 2 in ls:
            out[2] = D2
    if lmax >= 3:
        # the recursion runs in batch chunks: its intermediates (R (x) D per matrix) stay in
        # cache instead of being page-faulted in as fresh buffers of hundreds of MB (3-4x
        # faster at 320,000 matrices); split, not slices: a slice's backward zero-fills
        batch = R.shape[:-2]
        pieces: dict[int, list[torch.Tensor]] = {l: [] for l in ls if l >= 3}
        for Rc, D in zip(R.reshape(-1, 3, 3).split(RECURSION_CHUNK),
                         D2.reshape(-1, 5, 5).split(RECURSION_CHUNK)):
            for l in range(3, lmax + 1):
                D = _coupling_step(l, Rc, D)
                if l in pieces:
                    pieces[l].append(D)
        for l, ps in pieces.items():
            D = torch.cat(ps) if len(ps) > 1 else ps[0]
            out[l] = D.reshape(*batch, 2 * l + 1, 2 * l + 1)
    return out


def wigner_D_polynomial(l: int, R: torch.Tensor) -> torch.Tensor:
    """The degree-``l`` polynomial ``D^l(R)`` of shape ``(..., 2l+1, 2l+1)`` (see module doc)."""
    return wigner_D_polynomials([l], R)[l]


def wigner_D_recursive(l: int, R: torch.Tensor) -> torch.Tensor:
    """Slow reference: the coupling recursion from ``D^1 = R`` for every ``l >= 2`` (tests)."""
    if l == 0:
        return torch.ones(*R.shape[:-2], 1, 1, dtype=R.dtype, device=R.device)
    D = R
    for k in range(2, l + 1):
        D = _coupling_step(k, R, D)
    return D


def wigner_D_from_matrix(l: int, R: torch.Tensor, p: int | None = None, *,
                         validate: bool = False) -> torch.Tensor:
    """The matrix of the irrep ``(l, p)`` of O(3) at ``R``: ``(..., 2l+1, 2l+1)``.

    ``p^k D^l(det(R) R)`` with ``k = (1 - det R)/2``, identical to e3nn's
    ``Irrep(l, p).D_from_matrix(R)`` for orthogonal ``R`` (any det) and exact everywhere (no
    Euler angles). ``p`` defaults to ``(-1)^l`` (the parity of the spherical harmonics, for which
    ``Y^l(R x) = D(R) Y^l(x)`` on all of O(3)); on SO(3) the parity does not matter and this is
    e3nn's ``wigner_D`` of the same rotation. :meth:`tensorframes.Irrep.D_from_matrix` calls it.

    Args:
        l: the degree, an int ``>= 0``.
        R: ``(..., 3, 3)`` orthogonal matrices (floating point).
        p: the parity, ``1`` or ``-1`` (default ``(-1)^l``).
        validate: check that ``R`` is orthogonal (:func:`~tensorframes.reps.base.check_orthogonal`:
            :class:`ValueError` naming the deviation ``max |R R^T - I|`` and the tolerance of the
            dtype); skipped while compiling. Off by default: for one small ``l`` the check costs
            more than 2% of this call (``l = 1`` is a copy of ``R``). A non-orthogonal ``R``
            gives a matrix that is no representation (the zero matrix zeroes every ``l > 0``).
    """
    if isinstance(l, bool) or not hasattr(l, "__index__") or operator.index(l) < 0:
        raise ValueError(f"the degree l must be an int >= 0, got {l!r}")
    l = operator.index(l)
    if p is None:
        p = (-1) ** l
    if isinstance(p, bool) or p not in (-1, 1):
        raise ValueError(f"the parity p must be 1 or -1, got {p!r}")
    check_matrices(R, 3, name="R")
    if validate:
        check_orthogonal(R)
    D = wigner_D_polynomials([l], R)[l]
    if p != (-1) ** l:
        return D * det_sign(R)[..., None, None]
    return D.clone() if D is R else D


@functools.cache
def _d2_coefficients() -> torch.Tensor:
    """``C`` ``(81, 25)``: ``D^2(R).flatten() = (r r^T).flatten() @ C``, ``r = R.flatten()``.

    Read off the closed form :func:`._wigner._wigner_D2` (a quadratic polynomial in the entries
    of ``R``) by polarisation: ``C[p p] = D(e_p)`` and, for ``p != q``, half of
    ``D(e_p + e_q) - D(e_p) - D(e_q)`` on both ``(p, q)`` and ``(q, p)``; exact in float64.
    """
    eye = torch.eye(9, dtype=torch.float64)
    single = _wigner_D2(eye.reshape(9, 3, 3)).reshape(9, 25)
    pair = _wigner_D2((eye[:, None] + eye[None, :]).reshape(81, 3, 3)).reshape(9, 9, 25)
    C = (pair - single[:, None] - single[None, :]) / 2
    C[torch.arange(9), torch.arange(9)] = single
    return C.reshape(81, 25)
