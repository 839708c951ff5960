r"""Frames from equivariant vectors by Gram-Schmidt orthogonalisation."""

from __future__ import annotations

import math

import torch

from .._checks import compiling
from ._frames import Frames

__all__ = ["gram_schmidt"]


#: Rows whose largest entry lies in ``[2**-SAFE_EXP, 2**SAFE_EXP]`` are used as given (no
#: square over- or underflows there in any float dtype >= float32); others are rescaled.
SAFE_EXP = 40


def _row_scale(amax: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Per-row power of two ``p`` with ``max(amax, floor) / p`` in ``[0.5, 2)``; 1 for zero
    rows. Dividing by ``p`` is exact (only exponents change)."""
    if floor > 0:
        amax = amax.clamp_min(floor)
    _, e = torch.frexp(amax)
    top = math.frexp(torch.finfo(amax.dtype).max)[1] - 1  # 2**top: the largest power of two
    e = torch.where(amax > 0, e, torch.zeros_like(e)).clamp(max=top)
    return torch.exp2(e.to(amax.dtype))


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` along the last axis with a finite gradient everywhere (zero at ``x = 0``)."""
    sq = (x * x).sum(-1, keepdim=True)
    tiny = torch.finfo(x.dtype).tiny
    return torch.where(sq > tiny, sq, torch.full_like(sq, tiny)).sqrt()


def _bump(t: torch.Tensor) -> torch.Tensor:
    """Smooth blend weight: ``(1 - t)^2`` for ``t < 1``, else 0 (C^1)."""
    return (1 - t).clamp_min(0) ** 2


def _least_aligned_axis(e: torch.Tensor) -> torch.Tensor:
    """Unit vector orthogonal to unit ``e``: the world axis with the smallest ``|e_k|``
    (lowest ``k`` on ties), projected orthogonally to ``e`` and normalised."""
    k = e.detach().abs().argmin(-1, keepdim=True)
    c = torch.zeros_like(e).scatter_(-1, k, 1.0)
    b = c - (c * e).sum(-1, keepdim=True) * e
    return b / _safe_norm(b)


def _needs_rescaling(named: list[tuple[str, torch.Tensor, torch.Tensor]]) -> bool:
    """One device sync for all arguments (``(name, tensor, row maxima of |tensor|)``): raise
    naming the first non-finite argument and row; True when some row's largest entry lies
    outside the safe range. Always True under ``torch.compile`` (no data-dependent branch)."""
    if compiling():
        return True
    named = [x for x in named if x[1].numel()]
    if not named:
        return False
    stats = torch.stack([f(r) for _, _, r in named for f in (torch.max, torch.min)]).tolist()
    if not all(math.isfinite(x) for x in stats):  # a row maximum is NaN or inf
        for name, t, _ in named:
            rows = torch.isfinite(t).all(-1)
            if not bool(rows.all()):
                row = int((~rows).nonzero()[0, 0])
                raise ValueError(f"{name}[{row}] = {t[row].tolist()} is not finite: "
                                 f"gram_schmidt needs finite vectors")
    lo, hi = 2.0 ** -SAFE_EXP, 2.0 ** SAFE_EXP
    return any(x > hi or 0 < x < lo for x in stats)


def gram_schmidt(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor | None = None, *,
                 eps: float = 1e-6) -> Frames:
    r"""Frames from two (or three) equivariant vectors per node.

    Rows of the frame:

    .. math::
        e_1 = \frac{u}{|u|},\quad e_2 = \frac{v - (v\cdot e_1) e_1}{|\cdot|},\quad
        e_3 = \sigma\, e_1 \times e_2,\quad
        \sigma = \begin{cases} 1 & w = \text{None}\ (\mathrm{SO}(3))\\
        \operatorname{sign}(w\cdot(e_1\times e_2))\ (+1 \text{ at } 0) & \text{else (O(3))}
        \end{cases}

    so ``gram_schmidt(g u, g v, g w) = gram_schmidt(u, v, w) g^T`` for ``g`` in SO(3) without
    ``w`` and for all of O(3) with ``w`` (a pseudo-vector-free handedness from a third vector).

    **Magnitudes**: when some row's largest entry lies outside ``[2**-40, 2**40]``, each row
    of ``u``, ``v`` and ``w`` is rescaled by a power of two (exact, no rounding) to a largest
    entry near 1 before any product is formed, so the frame is orthogonal to round-off for
    every finite input, from
    subnormal to the largest float (``u = (1e20, 0, 0)``, ``v = (0, 1e20, 1e20)`` in float32
    included). ``eps`` stays an absolute length in the units of ``u`` and ``v``. NaN or
    infinite entries raise :class:`ValueError` naming the argument and the row (the check
    synchronises the device once per argument; it is skipped under ``torch.compile``).

    Degenerate inputs (deterministic, NaN-free values and gradients; ``eps`` is absolute, in the
    units of ``u`` and ``v``):

    - ``|u| < eps``: ``u`` is blended with ``eps * (1, 0, 0)``:
      ``u' = u + eps (1 - |u|/eps)^2 (1, 0, 0)``, so ``u = 0`` gives ``e_1 = (1, 0, 0)``;
    - ``|v_perp| < eps`` (``v`` near-parallel to ``u`` or near zero): ``v_perp`` is blended
      with ``eps * b`` where ``b`` is the world axis least aligned with ``e_1`` (smallest
      ``|e_1[k]|``, lowest ``k`` on ties) projected orthogonally to ``e_1``:
      ``v' = v_perp + eps (1 - |v_perp|/eps)^2 b``; so ``u = (1, 0, 0)`` with ``v = 0`` or
      ``v`` parallel to ``u`` gives the identity frame, and ``u = v = 0`` gives the identity;
      whatever ``eps`` (``eps = 0`` included), ``b`` itself is used when ``|v'|`` is below 4 ulp
      of ``v``'s largest entry (the perpendicular part is then round-off);
    - ``w`` orthogonal to ``e_1 x e_2`` (``w = 0`` included): ``sigma = +1``.

    (No continuous fallback exists on all of R^3 -- hairy-ball theorem -- so each blend has an
    isolated cancellation point; there the fallback direction itself is used.)

    Args:
        u, v (Tensor): ``(N, 3)`` vectors.
        w (Tensor, optional): ``(N, 3)`` vectors fixing the handedness (O(3) frames).
        eps (float): blending scale (default ``1e-6``).

    Returns:
        :class:`Frames` ``(N, 3, 3)`` in the dtype of ``u`` (float16 / bfloat16 inputs are
        computed in float32 and the result cast back).
    """
    for name, t in (("u", u), ("v", v), ("w", w)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor of shape (N, 3), got {type(t).__name__}")
        if t.dim() != 2 or t.shape[-1] != 3:
            raise ValueError(f"{name} must be a tensor of shape (N, 3), got {tuple(t.shape)}")
        if t.shape != u.shape:
            raise ValueError(f"u and {name} must have the same shape, got {tuple(u.shape)} "
                             f"and {tuple(t.shape)}")
    if not u.is_floating_point():
        raise TypeError(f"u must be floating point, got {u.dtype}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    dtype = u.dtype
    if dtype in (torch.float16, torch.bfloat16):
        u, v = u.float(), v.float()
        w = None if w is None else w.float()
    else:
        v = v.to(dtype)
        w = None if w is None else w.to(dtype)

    ru = u.detach().abs().amax(-1, keepdim=True)  # row maxima
    rv = v.detach().abs().amax(-1, keepdim=True)
    rw = None if w is None else w.detach().abs().amax(-1, keepdim=True)
    named = [("u", u, ru), ("v", v, rv)] + ([] if w is None else [("w", w, rw)])
    tiny = torch.finfo(u.dtype).tiny
    if _needs_rescaling(named):
        # each row in units of a power of two (largest entry, or eps, in [0.5, 2)): exact, and
        # no square over- or underflows where it matters
        pu, pv = _row_scale(ru, eps), _row_scale(rv, eps)
        us, eps_u, vs, eps_v, rv = u / pu, eps / pu, v / pv, eps / pv, rv / pv
        eps_u_c, eps_v_c = eps_u.clamp_min(tiny), eps_v.clamp_min(tiny)
        ws = None if w is None else w / _row_scale(rw)
    else:
        us, eps_u, vs, eps_v, ws = u, eps, v, eps, w
        eps_u_c = eps_v_c = max(eps, tiny)

    ex = torch.zeros_like(u)
    ex[:, 0] = 1.0
    nu = _safe_norm(us)
    u2 = us + eps_u * _bump(nu / eps_u_c) * ex
    n2 = _safe_norm(u2)
    ok = (n2 > eps_u * 1e-3) & (u2 != 0).any(-1, keepdim=True)
    e1 = torch.where(ok, u2 / torch.where(ok, n2, torch.ones_like(n2)), ex)

    vp = vs - (vs * e1).sum(-1, keepdim=True) * e1
    b = _least_aligned_axis(e1)
    nv = _safe_norm(vp)
    v2 = vp + eps_v * _bump(nv / eps_v_c) * b
    v2 = v2 - (v2 * e1).sum(-1, keepdim=True) * e1
    m2 = _safe_norm(v2)
    # below 4 ulp of v's largest entry the perpendicular part is round-off of the projection
    # and its direction noise: take the fallback b (keeps e2 orthogonal)
    ok = (m2 > eps_v * 1e-3) & (m2 > 4 * torch.finfo(v2.dtype).eps * rv)
    e2 = torch.where(ok, v2 / torch.where(ok, m2, torch.ones_like(m2)), b)

    e3 = torch.linalg.cross(e1, e2, dim=-1)
    if w is not None:
        s = (ws * e3).sum(-1, keepdim=True)
        e3 = torch.where(s < 0, -e3, e3)
    return Frames(torch.stack([e1, e2, e3], 1).to(dtype))
