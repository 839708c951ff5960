r"""Expressivity of bilinear equivariant operations (as in "The Price of Freedom", Xie et al.).

For an operation ``T(x1, x2)`` (a module with ``irreps_in1``, ``irreps_in2``, ``irreps_out``),
sandwiched between equivariant linear layers ``A1, A2`` (inputs) and ``A3`` (output), the
realisable bilinear maps form the image of the parameters ``theta = (A1, A2, A3, T's own)``
under ``theta -> B(theta)``, ``B[i, j, k] = d^2 out_k / dx1_i dx2_j``. :func:`expressivity` is
the dimension of that image near a generic point: the rank of the Jacobian
``d vec(B) / d theta`` at random parameters, in float64. :func:`interactions` lists the
``(ir1, ir2, ir3)`` whose restricted map ``B[in1 block, in2 block, out block]`` is non-zero.

``B`` is affine in every single scalar parameter (each parameter enters one linear factor), so
the difference quotient with step 1 is the exact derivative; no autograd support is needed
(FFT-based products work as well).

Expected: the CG product realises every triangle- and parity-allowed path, one dimension each;
the Gaunt product only ``l1+l2+l3`` even, and with single-copy inputs its rank is bounded by the
number of linear-layer parameters (``O(L)``); the vector Gaunt product recovers the odd paths.

**Tensor frames.** A message ``rho_out(R)^T MLP(rho_1(R) x1, rho_2(R) x2)`` computed in a local
frame ``R`` is not bilinear in general (the MLP is nonlinear). Its bilinear part (an MLP whose
first layer is bilinear, :class:`LocalFrameBilinear`) is, for a fixed frame, *any* bilinear map
of the components: all ``dim1 * dim2 * dim_out`` dimensions, every ``(ir1, ir2, ir3)``
interaction (including those forbidden for fixed equivariant layers, e.g. ``0e x 0e -> 1o``);
equivariance then comes from the frame transforming with the input, not from the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from ..reps.irreps import Irrep, Irreps

__all__ = ["expressivity", "interactions"]


class LocalFrameBilinear(torch.nn.Module):
    r"""Bilinear message in a local frame: ``rho_out(R)^T W(rho_1(R) x1, rho_2(R) x2)``.

    ``W`` is an unconstrained bilinear map (``dim1 x dim2 -> dim_out``); ``R`` the frame
    (``(..., 3, 3)``, default identity). The bilinear part of a tensor-frames message.
    Internal (the expressivity tests): not exported by :mod:`tensorframes.o3`.
    """

    def __init__(self, irreps_in1: Irreps | str, irreps_in2: Irreps | str,
                 irreps_out: Irreps | str) -> None:
        super().__init__()
        self.irreps_in1, self.irreps_in2 = Irreps(irreps_in1), Irreps(irreps_in2)
        self.irreps_out = Irreps(irreps_out)
        d1, d2, do = self.irreps_in1.dim, self.irreps_in2.dim, self.irreps_out.dim
        self.weight = torch.nn.Parameter(torch.randn(d1, d2, do) / (d1 * d2) ** 0.5)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is not None:
            x1 = self.irreps_in1.transform(x1, frames)
            x2 = self.irreps_in2.transform(x2, frames)
        y = torch.einsum("...i,...j,ijk->...k", x1, x2, self.weight)
        if frames is not None:
            y = self.irreps_out.transform(y, frames.transpose(-1, -2))
        return y


def _linear_blocks(irreps: Irreps) -> list[tuple[Irrep, list[int]]]:
    """Index groups of the equivariant linear map ``irreps -> irreps``: one matrix per irrep."""
    groups: dict = {}
    for b, (_, ir) in enumerate(irreps):
        groups.setdefault(ir, []).append(b)
    return list(groups.items())


def _linear_apply(x: torch.Tensor, irreps: Irreps, mats: dict[Irrep, torch.Tensor]
                  ) -> torch.Tensor:
    """Equivariant linear ``irreps -> irreps`` with one ``(n_ir, n_ir)`` matrix per irrep."""
    out = torch.zeros_like(x)
    slices = irreps.slices()
    for ir, blocks in _linear_blocks(irreps):
        xs = torch.cat([x[..., slices[b]].reshape(*x.shape[:-1], -1, ir.dim) for b in blocks], -2)
        ys = torch.einsum("...ud,uv->...vd", xs, mats[ir])
        start = 0
        for b in blocks:
            mul = irreps[b].mul
            out[..., slices[b]] = ys[..., start:start + mul, :].reshape(*x.shape[:-1], -1)
            start += mul
    return out


def _bilinear_fn(op: torch.nn.Module
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``theta -> B(theta)`` and the initial random ``theta`` (float64)."""
    irr = (Irreps(op.irreps_in1), Irreps(op.irreps_in2), Irreps(op.irreps_out))
    gen = torch.Generator().manual_seed(0)
    shapes = []
    for k, irreps in enumerate(irr):
        for ir, blocks in _linear_blocks(irreps):
            n = sum(irreps[b].mul for b in blocks)
            shapes.append((k, ir, (n, n)))
    names = [n for n, p in op.named_parameters() if p.requires_grad]
    params = dict(op.named_parameters())
    sizes = [s[2][0] * s[2][1] for s in shapes] + [params[n].numel() for n in names]
    theta0 = torch.randn(sum(sizes), generator=gen, dtype=torch.float64)
    d1, d2 = irr[0].dim, irr[1].dim
    eye1, eye2 = torch.eye(d1, dtype=torch.float64), torch.eye(d2, dtype=torch.float64)
    x1 = eye1[:, None, :].expand(d1, d2, d1).reshape(-1, d1)
    x2 = eye2[None, :, :].expand(d1, d2, d2).reshape(-1, d2)

    def B(theta: torch.Tensor) -> torch.Tensor:
        chunks = list(torch.split(theta, sizes))
        mats = [{}, {}, {}]
        for (k, ir, shape), c in zip(shapes, chunks):
            mats[k][ir] = c.reshape(shape)
        own = {n: c.reshape(params[n].shape) for n, c in zip(names, chunks[len(shapes):])}
        a = _linear_apply(x1, irr[0], mats[0])
        b = _linear_apply(x2, irr[1], mats[1])
        y = torch.func.functional_call(op, own, (a, b))
        return _linear_apply(y, irr[2], mats[2]).reshape(d1, d2, -1)

    return B, theta0


def _prepare(op: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(op).to(torch.float64)


def expressivity(op: torch.nn.Module, *, rtol: float = 1e-9) -> int:
    """Dimension of the space of bilinear maps ``op`` realises with equivariant linear layers
    before and after (generic Jacobian rank, float64). See the module docstring."""
    op = _prepare(op)
    B, theta0 = _bilinear_fn(op)
    cols = []
    with torch.no_grad():
        base = B(theta0)
        for k in range(theta0.numel()):
            e = torch.zeros_like(theta0)
            e[k] = 1.0
            cols.append((B(theta0 + e) - base).reshape(-1))  # exact: B is affine in theta_k
    J = torch.stack(cols, dim=1)
    s = torch.linalg.svdvals(J)
    if s.numel() == 0 or s[0] == 0:
        return 0
    return int((s > rtol * s[0]).sum())


def interactions(op: torch.nn.Module, *, rtol: float = 1e-9) -> set[tuple[Irrep, Irrep, Irrep]]:
    """The ``(ir1, ir2, ir3)`` (ordered, e3nn ``Irrep``-like tuples of ours) that ``op`` couples:
    blocks of the bilinear tensor that are non-zero at random parameters."""
    op = _prepare(op)
    B, theta0 = _bilinear_fn(op)
    with torch.no_grad():
        T = B(theta0)
    scale = T.abs().max().item()
    out = set()
    i1, i2, io = Irreps(op.irreps_in1), Irreps(op.irreps_in2), Irreps(op.irreps_out)
    for s1, (_, r1) in zip(i1.slices(), i1):
        for s2, (_, r2) in zip(i2.slices(), i2):
            for s3, (_, r3) in zip(io.slices(), io):
                if scale > 0 and T[s1, s2, s3].abs().max().item() > rtol * scale:
                    out.add((r1, r2, r3))
    return out
