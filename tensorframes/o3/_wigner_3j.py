"""Real Wigner 3j symbols (Clebsch-Gordan coefficients) in e3nn's basis and sign convention."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

__all__ = ["wigner_3j"]


def _check_degrees(l1: object, l2: object, l3: object) -> tuple[int, int, int]:
    out = []
    for name, l in (("l1", l1), ("l2", l2), ("l3", l3)):
        if isinstance(l, bool) or not isinstance(l, int) or l < 0:
            raise ValueError(f"{name} must be an int >= 0, got {l!r}")
        out.append(int(l))
    l1, l2, l3 = out
    if not abs(l2 - l3) <= l1 <= l2 + l3:
        raise ValueError(
            f"(l1, l2, l3) = ({l1}, {l2}, {l3}) violates the triangle condition "
            "|l2 - l3| <= l1 <= l2 + l3"
        )
    return l1, l2, l3


def _complex_cg(j1: int, m1: int, j2: int, m2: int, J: int) -> float:
    """Condon-Shortley Clebsch-Gordan coefficient ``<j1 m1 j2 m2 | J m1+m2>`` (Racah's formula).

    Evaluated with exact integer arithmetic, rounded once to float.
    """
    M = m1 + m2
    if abs(M) > J:
        return 0.0
    f = math.factorial
    pre = Fraction(
        (2 * J + 1) * f(J + j1 - j2) * f(J - j1 + j2) * f(j1 + j2 - J),
        f(j1 + j2 + J + 1),
    ) * (f(J + M) * f(J - M) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
    kmin = max(0, j2 - J - m1, j1 - J + m2)
    kmax = min(j1 + j2 - J, j1 - m1, j2 + m2)
    s = Fraction(0)
    for k in range(kmin, kmax + 1):
        s += Fraction(
            (-1) ** k,
            f(k) * f(j1 + j2 - J - k) * f(j1 - m1 - k) * f(j2 + m2 - k)
            * f(J - j2 + m1 + k) * f(J - j1 - m2 + k),
        )
    if s == 0:
        return 0.0
    return math.copysign(math.sqrt(pre * s * s), s)


def _real_to_complex(l: int) -> torch.Tensor:
    """Unitary ``Q`` with ``v_complex = Q v_real`` (rows: complex ``m``, columns: real index).

    The real basis is e3nn's (standard real harmonics, ``m = -l..l``), with the extra global
    phase ``(-i)^l`` that makes the real coupling coefficients real.
    """
    q = torch.zeros(2 * l + 1, 2 * l + 1, dtype=torch.complex128)
    r = 1 / math.sqrt(2)
    for m in range(1, l + 1):
        q[l - m, l + m] = r
        q[l - m, l - m] = -1j * r
        q[l + m, l + m] = (-1) ** m * r
        q[l + m, l - m] = 1j * (-1) ** m * r
    q[l, l] = 1
    return q * (-1j) ** l


@functools.cache
def _wigner_3j_float64(l1: int, l2: int, l3: int) -> torch.Tensor:
    """The cached float64 tensor (never handed out; :func:`wigner_3j` returns copies)."""
    values = [
        [
            _complex_cg(l1, m1, l2, m2, l3) if abs(m1 + m2) <= l3 else 0.0
            for m2 in range(-l2, l2 + 1)
        ]
        for m1 in range(-l1, l1 + 1)
    ]
    cg = torch.tensor(values, dtype=torch.float64)  # (m1, m2); m3 = m1 + m2
    C = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.complex128)
    i1, i2 = torch.meshgrid(torch.arange(2 * l1 + 1), torch.arange(2 * l2 + 1), indexing="ij")
    i3 = i1 + i2 - l1 - l2 + l3
    ok = (i3 >= 0) & (i3 <= 2 * l3)
    C[i1[ok], i2[ok], i3[ok]] = cg[ok].to(torch.complex128)
    Q1, Q2, Q3 = _real_to_complex(l1), _real_to_complex(l2), _real_to_complex(l3)
    # C_real[a, b, c] = sum_{ijk} Q1[i, a] Q2[j, b] conj(Q3[k, c]) C[i, j, k], one factor at a time
    Cr = torch.einsum("ia,ijk->ajk", Q1, C)
    Cr = torch.einsum("jb,ajk->abk", Q2, Cr)
    Cr = torch.einsum("kc,abk->abc", Q3.conj(), Cr)
    if Cr.imag.abs().max() > 1e-10:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"wigner_3j({l1}, {l2}, {l3}) is not real")
    Cr = Cr.real
    Cr = Cr / Cr.norm()
    Cr[Cr.abs() < 1e-15] = 0.0
    Cr.requires_grad_(False)
    return Cr


def wigner_3j(
    l1: int,
    l2: int,
    l3: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Real Wigner 3j symbol :math:`C_{ijk}` of shape ``(2l1+1, 2l2+1, 2l3+1)``, as e3nn's.

    The unique (up to sign) invariant of :math:`D^{l_1} \otimes D^{l_2} \otimes D^{l_3}`:

    .. math::
        C_{ijk} = \sum_{abc} C_{abc} D^{l_1}_{ai}(g) D^{l_2}_{bj}(g) D^{l_3}_{ck}(g),
        \qquad \sum_{ijk} C_{ijk}^2 = 1.

    Built from the Condon-Shortley Clebsch-Gordan coefficients (Racah's formula, exact integer
    arithmetic) changed to e3nn's real basis, so sign and basis equal ``e3nn.o3.wigner_3j``.
    Computed once per ``(l1, l2, l3)`` in float64 and cached; every call returns a fresh copy
    cast to ``dtype`` / ``device`` (the cache is never mutated).

    Args:
        l1, l2, l3: degrees with ``|l2 - l3| <= l1 <= l2 + l3``.
        dtype: defaults to ``torch.get_default_dtype()``.
        device: defaults to CPU.
    """
    l1, l2, l3 = _check_degrees(l1, l2, l3)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return _wigner_3j_float64(l1, l2, l3).to(dtype=dtype, device=device, copy=True)
