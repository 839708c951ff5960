"""Change of basis between Cartesian tensors (:class:`TensorReps`) and e3nn irreps (d = 3).

An order-k Cartesian tensor of O(3) decomposes into irreps ``l <= k`` (order 2: ``0 + 1 + 2``,
the trace, the antisymmetric part and the symmetric traceless part). For each order we compute
once, in float64, an orthogonal ``Q_k`` of shape ``(3^k, 3^k)`` whose row blocks are intertwiners
into e3nn's basis of each ``D_l``: ``Q_k R^{(x)k} = (+) D_l(R) Q_k`` for every rotation ``R``.

The intertwiners are the null space of the stacked linear equations
``Q rho(R_t) - D_l(R_t) Q = 0`` for a few generic rotations ``R_t`` (their group is dense, so the
solutions are exactly the intertwiners). Within an ``l`` that occurs several times the null space
is canonicalised by Gram-Schmidt over the columns of its projector, so the basis does not depend
on the SVD's arbitrary choice; by Schur's lemma the copies are then mutually orthogonal, and
scaling by ``sqrt(2l+1)`` makes every row block orthonormal.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch

from .._math import haar_orthogonal
from ._tensor_power import tensor_power_matrix
from .irreps import Irrep, Irreps

__all__ = ["cartesian_to_irreps", "order_decomposition"]

#: eigenvalues of A^T A below this (relative) are null: squared singular values, so 1e-8
#: separates round-off (1e-30) from the smallest genuine ones (O(0.1) for generic rotations)
_NULL_TOL = 1e-8


def _generic_rotations() -> torch.Tensor:
    """Three fixed generic rotations (float64), the same on every machine."""
    return haar_orthogonal(3, 3, det=1, generator=torch.Generator().manual_seed(1234))


def _canonical_basis(null: torch.Tensor) -> torch.Tensor:
    """Deterministic orthonormal basis (rows) of the row space of ``null`` (rows orthonormal)."""
    P = null.T @ null  # projector onto the space: unique, whatever basis the SVD returned
    basis: list[torch.Tensor] = []
    for col in P.T:
        v = col.clone()
        for b in basis:
            v = v - (b @ v) * b
        norm = v.norm()
        if norm > 1e-6:
            basis.append(v / norm)
        if len(basis) == null.shape[0]:
            break
    return torch.stack(basis)


@functools.cache
def order_decomposition(k: int) -> tuple[tuple[int, ...], torch.Tensor]:
    """Irreps of order-``k`` Cartesian tensors in d = 3 and the orthogonal change of basis.

    Returns ``(ls, Q)``: ``ls`` lists, ascending, the degree of each irrep copy (with repetition;
    order 2 gives ``(0, 1, 2)``), and ``Q`` (float64, ``(3^k, 3^k)``) stacks their intertwiners
    as row blocks in that order. Computed once per order and cached (do not modify ``Q``).
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"tensor order must be an int >= 0, got {k!r}")
    n = 3**k
    Rs = _generic_rotations()
    rho = tensor_power_matrix(Rs, k)  # (3, n, n)
    ls: list[int] = []
    rows: list[torch.Tensor] = []
    for l in range(k + 1):
        D = Irrep(l, 1).D_from_matrix(Rs)  # (3, 2l+1, 2l+1)
        m = 2 * l + 1
        eye_m = torch.eye(m, dtype=torch.float64)
        eye_n = torch.eye(n, dtype=torch.float64)
        # row-major vec: vec(Q rho) = (I_m (x) rho^T) vec(Q); vec(D Q) = (D (x) I_n) vec(Q)
        A = torch.cat(
            [
                torch.kron(eye_m, rho[t].T.contiguous()) - torch.kron(D[t].contiguous(), eye_n)
                for t in range(len(Rs))
            ]
        )
        # null space from the Gram matrix: eigh is robust where LAPACK's SVD may not converge
        w, V = torch.linalg.eigh(A.T @ A)
        null = V[:, w < _NULL_TOL * max(w.max().item(), 1.0)].T  # entries are O(1): orthogonal
        if null.shape[0] == 0:
            continue
        for b in _canonical_basis(null):
            ls.append(l)
            rows.append(b.reshape(m, n) * (2 * l + 1) ** 0.5)
    Q = torch.cat(rows)
    if Q.shape != (n, n):
        raise RuntimeError(f"order {k}: found {Q.shape[0]} of {n} irrep components")
    return tuple(ls), Q


def cartesian_to_irreps(blocks: Iterable[tuple[int, int, str]]) -> tuple[Irreps, torch.Tensor]:
    """``(irreps, Q)`` for :meth:`TensorReps.to_irreps` (see there for the layout).

    ``blocks``: the ``(mul, order, parity)`` of each Cartesian block in order, parity ``"n"`` or
    ``"p"`` (the blocks of a :class:`~tensorframes.TensorReps` in ``d = 3``).
    """
    out = []  # (mul, (l, parity)) of the output irreps
    q_blocks = []  # one square change of basis per Cartesian block
    for mul, k, letter in blocks:
        parity = (-1) ** k * (1 if letter == "n" else -1)
        ls, Qk = order_decomposition(k)
        n = 3**k
        eye = torch.eye(mul, dtype=torch.float64)
        rows, start = [], 0
        for l in sorted(set(ls)):
            copies, m = ls.count(l), 2 * l + 1
            Ql = Qk[start : start + copies * m].reshape(copies, m, n)
            start += copies * m
            # rows (u, c, m) -- each tensor's copies adjacent -- against columns (u, j)
            rows.append(torch.einsum("uv,cmj->ucmvj", eye, Ql).reshape(mul * copies * m, mul * n))
            out.append((mul * copies, (l, parity)))
        q_blocks.append(torch.cat(rows) if rows else torch.zeros(0, 0, dtype=torch.float64))
    Q = torch.block_diag(*q_blocks) if q_blocks else torch.zeros(0, 0, dtype=torch.float64)
    return Irreps(out), Q
