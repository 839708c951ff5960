r"""Closed-form batched eigen-decomposition of symmetric 3x3 matrices.

Algorithm (robust at repeated eigenvalues, no iteration, no LAPACK call):

1. Scale ``A`` by its largest absolute entry (avoids over/underflow; a zero matrix stays zero).
2. Eigenvalues by the trigonometric (Smith 1961) formula: with ``q = tr(A)/3``,
   ``p = sqrt(tr((A - qI)^2)/6)``, ``B = (A - qI)/p``, ``phi = acos(det(B)/2)/3``:
   ``l1 = q + 2p cos(phi) >= l2 >= l3 = q + 2p cos(phi + 2 pi/3)``.
3. The *isolated* eigenvalue (``l1`` if ``l1 - l2 >= l2 - l3``, else ``l3``) gets its
   eigenvector from the largest cross product of two rows of ``A - l I`` (accurate because its
   gap is the larger one).
4. The other two eigenvectors come from the exact 2x2 symmetric problem in the plane
   orthogonal to it (a Jacobi rotation by ``theta = atan2(2b, a - c)/2``), which is
   well-defined even when the two eigenvalues coincide. The eigenvalues are the Rayleigh
   quotients; the triple is returned in descending order.

Degenerate inputs (``A = 0``, ``A = cI``) take deterministic fallbacks and stay finite; the
result is always an orthonormal set of eigenvectors.

Gradients: :func:`eigh3_packed_differentiable` runs the same closed form forward and the
analytic backward of a symmetric eigen-decomposition, ``dA = V^T (diag(dl) + F o (V dV^T)) V``
with ``F_ab = 1 / (l_b - l_a)``. Eigenvalue gradients are exact everywhere. Eigenvector
gradients are undefined where two eigenvalues coincide (the eigenvectors may rotate freely in
their plane): there the term ``F_ab`` of that pair (gap below ``32 eps`` of the dtype times the
largest ``|l|``) is set to 0, so gradients stay finite (no NaN, no inf) and carry no rotation
within the degenerate plane; near (not at) a degeneracy they are large, as ``1 / gap``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["eigh3", "eigh3_packed", "eigh3_packed_differentiable"]


def _cross(a, b):
    """Cross product of 3-tuples of tensors."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _where(c, a, b):
    return tuple(torch.where(c, x, y) for x, y in zip(a, b, strict=True))


def _perp_basis(v):
    """Orthonormal ``(u, w)`` spanning the plane orthogonal to unit ``v``: ``u`` is the
    normalised projection of the world axis least aligned with ``v`` (lowest index on ties),
    ``w = v x u``."""
    ax, ay, az = v[0].abs(), v[1].abs(), v[2].abs()
    kx = (ax <= ay) & (ax <= az)
    ky = ~kx & (ay <= az)
    kz = ~kx & ~ky
    vk = torch.where(kx, v[0], torch.where(ky, v[1], v[2]))
    inv = torch.rsqrt((1 - vk * vk).clamp_min(0.5))  # |v_k| <= 1/sqrt(3)
    u = ((kx.to(vk.dtype) - vk * v[0]) * inv, (ky.to(vk.dtype) - vk * v[1]) * inv,
         (kz.to(vk.dtype) - vk * v[2]) * inv)
    return u, _cross(v, u)


_Vec3 = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def eigh3_packed(a00: torch.Tensor, a01: torch.Tensor, a02: torch.Tensor, a11: torch.Tensor,
                 a12: torch.Tensor, a22: torch.Tensor) -> tuple[_Vec3, tuple[_Vec3, _Vec3, _Vec3]]:
    """:func:`eigh3` on the six unique entries (each a tensor of the same shape).

    Returns ``(values, vectors)``: ``values`` a 3-tuple (descending) and ``vectors`` a 3-tuple
    of 3-tuples (``vectors[r]`` = components of the ``r``-th eigenvector).
    """
    dtype = a00.dtype
    scale = torch.maximum(torch.maximum(torch.maximum(a00.abs(), a11.abs()),
                                        torch.maximum(a22.abs(), a01.abs())),
                          torch.maximum(a02.abs(), a12.abs()))
    s = torch.where(scale > 0, scale, torch.ones_like(scale))
    inv_s = 1.0 / s
    a00, a01, a02, a11, a12, a22 = (a * inv_s for a in (a00, a01, a02, a11, a12, a22))

    q = (a00 + a11 + a22) / 3
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    off = a01 * a01 + a02 * a02 + a12 * a12
    p2 = (b00 * b00 + b11 * b11 + b22 * b22 + 2 * off) / 6
    p = p2.sqrt()
    tiny = torch.finfo(dtype).tiny ** 0.5
    ps = torch.where(p > tiny, p, torch.ones_like(p))
    detb = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02)
            + a02 * (a01 * a12 - b11 * a02)) / (ps * ps * ps)
    phi = torch.acos((detb / 2).clamp(-1.0, 1.0)) / 3
    l1 = q + 2 * p * torch.cos(phi)
    l3 = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
    l2 = 3 * q - l1 - l3

    top = (l1 - l2) >= (l2 - l3)
    lam = torch.where(top, l1, l3)
    m00, m11, m22 = a00 - lam, a11 - lam, a22 - lam
    r0, r1, r2 = (m00, a01, a02), (a01, m11, a12), (a02, a12, m22)
    c01, c02, c12 = _cross(r0, r1), _cross(r0, r2), _cross(r1, r2)
    n01, n02, n12 = _dot(c01, c01), _dot(c02, c02), _dot(c12, c12)
    p01 = (n01 >= n02) & (n01 >= n12)
    p02 = ~p01 & (n02 >= n12)
    v = _where(p01, c01, _where(p02, c02, c12))
    vn2 = torch.where(p01, n01, torch.where(p02, n02, n12))
    ok = vn2 > torch.finfo(dtype).tiny
    rn = torch.rsqrt(torch.where(ok, vn2, torch.ones_like(vn2)))
    one, zero = torch.ones_like(vn2), torch.zeros_like(vn2)
    v = _where(ok, (v[0] * rn, v[1] * rn, v[2] * rn), (one, zero, zero))

    u, w = _perp_basis(v)

    def Ax(x):
        return (a00 * x[0] + a01 * x[1] + a02 * x[2], a01 * x[0] + a11 * x[1] + a12 * x[2],
                a02 * x[0] + a12 * x[1] + a22 * x[2])

    Au, Aw, Av = Ax(u), Ax(w), Ax(v)
    a, b, c = _dot(u, Au), _dot(u, Aw), _dot(w, Aw)
    theta = 0.5 * torch.atan2(2 * b, a - c)
    ct, st = torch.cos(theta), torch.sin(theta)
    e_hi = tuple(ct * x + st * y for x, y in zip(u, w, strict=True))
    e_lo = tuple(ct * y - st * x for x, y in zip(u, w, strict=True))
    mid, rad = (a + c) / 2, torch.sqrt(((a - c) / 2) ** 2 + b * b)
    mu_hi, mu_lo = mid + rad, mid - rad
    lam_v = _dot(v, Av)

    # Order: (v, hi, lo) if v is the top eigenvector, else (hi, lo, v). Rounding can put the
    # Rayleigh quotient of v on the wrong side of its near-degenerate neighbour; both such
    # cases become (hi, v, lo).
    sw = torch.where(top, lam_v < mu_hi, mu_lo < lam_v)
    first = top & ~sw
    last = ~top & ~sw
    mid_hi = top & ~sw
    vals = [torch.where(first, lam_v, mu_hi),
            torch.where(sw, lam_v, torch.where(mid_hi, mu_hi, mu_lo)),
            torch.where(last, lam_v, mu_lo)]
    vecs = [_where(first, v, e_hi), _where(sw, v, _where(mid_hi, e_hi, e_lo)),
            _where(last, v, e_lo)]
    return tuple(x * s for x in vals), tuple(vecs)


class _Eigh3(torch.autograd.Function):
    """Closed-form forward, analytic backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, *a):  # noqa: ANN001, ANN205 (autograd.Function protocol)
        vals, vecs = eigh3_packed(*a)
        ctx.save_for_backward(torch.stack(vals, -1),
                              torch.stack([torch.stack(v, -1) for v in vecs], -2))
        return (*vals, *(c for v in vecs for c in v))

    @staticmethod
    def backward(ctx, *grads):  # noqa: ANN001, ANN205
        lam, V = ctx.saved_tensors  # (..., 3), (..., 3, 3) rows = eigenvectors
        zero = torch.zeros_like(lam[..., 0])
        g = [zero if x is None else x for x in grads]
        gl = torch.stack(g[:3], -1)
        gV = torch.stack([torch.stack(g[3 + 3 * r: 6 + 3 * r], -1) for r in range(3)], -2)
        K = V @ gV.transpose(-1, -2)  # K_ab = v_a . g_b
        gap = lam[..., None, :] - lam[..., :, None]  # gap_ab = l_b - l_a
        tol = 32 * torch.finfo(lam.dtype).eps * lam.abs().amax(-1)[..., None, None]
        ok = gap.abs() > tol
        F = torch.where(ok, 1.0 / torch.where(ok, gap, torch.ones_like(gap)),
                        torch.zeros_like(gap))
        inner = torch.diag_embed(gl) + F * K
        gA = V.transpose(-1, -2) @ inner @ V
        gA = 0.5 * (gA + gA.transpose(-1, -2))
        return (gA[..., 0, 0], 2 * gA[..., 0, 1], 2 * gA[..., 0, 2], gA[..., 1, 1],
                2 * gA[..., 1, 2], gA[..., 2, 2])


def eigh3_packed_differentiable(
    a00: torch.Tensor, a01: torch.Tensor, a02: torch.Tensor, a11: torch.Tensor,
    a12: torch.Tensor, a22: torch.Tensor,
) -> tuple[_Vec3, tuple[_Vec3, _Vec3, _Vec3]]:
    """:func:`eigh3_packed` with gradients (same values; backward as in the module docstring)."""
    out = _Eigh3.apply(a00, a01, a02, a11, a12, a22)
    return tuple(out[:3]), (tuple(out[3:6]), tuple(out[6:9]), tuple(out[9:12]))


def eigh3(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of symmetric ``(..., 3, 3)`` matrices.

    Returns:
        ``(eigenvalues, vectors)``: eigenvalues ``(..., 3)`` in **descending** order and
        ``vectors`` ``(..., 3, 3)`` whose **rows** are the matching unit eigenvectors (signs
        arbitrary but deterministic). Differentiable (see the module docstring for degenerate
        eigenvalues).
    """
    if A.shape[-2:] != (3, 3):
        raise ValueError(f"eigh3 expects (..., 3, 3) matrices, got {tuple(A.shape)}")
    comps = [A[..., 0, 0], A[..., 0, 1], A[..., 0, 2], A[..., 1, 1], A[..., 1, 2],
             A[..., 2, 2]]
    grad = torch.is_grad_enabled() and A.requires_grad
    fn = eigh3_packed_differentiable if grad else eigh3_packed
    vals, vecs = fn(*(c.contiguous() for c in comps))
    return torch.stack(vals, -1), torch.stack([torch.stack(v, -1) for v in vecs], -2)
