"""Equivariant linear map between irreps (per-irrep channel mixing, e3nn-style normalization)."""

from __future__ import annotations

import math

import torch

from ..reps.irreps import Irreps

__all__ = ["Linear"]


class Linear(torch.nn.Module):
    r"""Equivariant linear layer ``irreps_in -> irreps_out``: mixes the copies of each irrep.

    .. math::
        y^{(o)}_{w} = \frac{1}{\sqrt{n_o}} \sum_{i:\, ir_i = ir_o} \sum_u W^{(i,o)}_{uw} x^{(i)}_u

    with ``n_o`` the total input multiplicity of ``ir_o`` (unit variance for unit-variance
    inputs). Output irreps absent from the input are zero.

    Shapes:
        x: ``(..., irreps_in.dim)`` -> ``(..., irreps_out.dim)``
    """

    def __init__(self, irreps_in: Irreps | str, irreps_out: Irreps | str) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self._paths = []
        self.weights = torch.nn.ParameterList()
        for o, (mo, iro) in enumerate(self.irreps_out):
            ins = [i for i, (_, iri) in enumerate(self.irreps_in) if iri == iro]
            fan = sum(self.irreps_in[i].mul for i in ins)
            for i in ins:
                self._paths.append((i, o, 1 / math.sqrt(fan)))
                self.weights.append(torch.nn.Parameter(torch.randn(self.irreps_in[i].mul, mo)))

    def reset_parameters(self) -> None:
        for w in self.weights:
            torch.nn.init.normal_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"expected (..., {self.irreps_in.dim}), got {tuple(x.shape)}")
        batch = x.shape[:-1]
        outs = [None] * len(self.irreps_out)
        blocks = x.split([b.dim for b in self.irreps_in], dim=-1)  # backward: one cat
        for (i, o, c), W in zip(self._paths, self.weights):
            mi, ir = self.irreps_in[i]
            y = torch.einsum("...ud,uw->...wd", blocks[i].reshape(*batch, mi, ir.dim), W) * c
            outs[o] = y if outs[o] is None else outs[o] + y
        pieces = [
            (x.new_zeros(*batch, mo * ir.dim) if y is None else y.reshape(*batch, mo * ir.dim))
            for (mo, ir), y in zip(self.irreps_out, outs)
        ]
        return torch.cat(pieces, dim=-1) if pieces else x.new_zeros(*batch, 0)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}"
