"""Equivariant linear maps between irreps and typed spherical signals (the Gaunt products' ends).

A *signal* of degree ``L`` holds the coefficients ``(..., (L+1)^2)`` of a function on the
sphere in e3nn's harmonics. An irrep ``l p`` is a true scalar signal component (type ``+1``)
when ``p = (-1)^l`` and a pseudo-scalar one (type ``-1``) otherwise. :class:`_ToSignals` maps
irreps to ``channels`` signals per type; :class:`_FromSignals` maps typed product signals back
to irreps. Both keep their weights flat, laid out so that the grid method
(:mod:`tensorframes.o3._gaunt_grid`) can fold them into its Legendre stages.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..reps.irreps import Irrep, Irreps
from ._static import StaticBuffers

__all__: list[str] = []


def _type(ir: Irrep) -> int:
    """Signal type of an irrep: ``+1`` if ``p = (-1)^l`` (scalar), ``-1`` (pseudo-scalar)."""
    return ir.p * (-1) ** ir.l


class _ToSignals(StaticBuffers):
    """Irreps -> ``(..., types, channels, (L+1)^2)`` signals, one linear map per ``(l, type)``."""

    def __init__(self, irreps: Irreps, channels: int) -> None:
        super().__init__()
        self.irreps, self.channels = irreps, channels
        self.L = irreps.lmax if len(irreps) else 0
        self.types = sorted({_type(ir) for mul, ir in irreps if mul > 0}, reverse=True)
        fan = {}
        for mul, ir in irreps:
            fan[ir] = fan.get(ir, 0) + mul
        # one parameter, the blocks' (mul, channels) weights stacked (one copy per row)
        self.weight = torch.nn.Parameter(torch.randn(irreps.num_irreps, channels))
        scale = [1 / math.sqrt(fan[ir]) for mul, ir in irreps for _ in range(mul)]
        self.register_static("row_scale", torch.tensor(scale, dtype=torch.float64)[:, None])

    def reset_parameters(self) -> None:
        """Re-draw the weights from the standard normal (as at construction)."""
        torch.nn.init.normal_(self.weight)

    def weight_rows(self) -> torch.Tensor:
        """All blocks' normalised weights stacked: ``(sum of multiplicities, channels)``."""
        return self.weight * self.row_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        K = (self.L + 1) ** 2
        parts = {t: [x.new_zeros(*batch, self.channels, 2 * l + 1) for l in range(self.L + 1)]
                 for t in self.types}
        blocks = x.split([b.dim for b in self.irreps], dim=-1)  # backward: one cat
        weights = self.weight_rows().split([mul for mul, _ in self.irreps])
        for (mul, ir), xb, W in zip(self.irreps, blocks, weights):
            if mul == 0:
                continue
            xb = xb.reshape(*batch, mul, ir.dim)
            y = torch.einsum("...ud,uc->...cd", xb, W)
            parts[_type(ir)][ir.l] = parts[_type(ir)][ir.l] + y
        out = [torch.cat(parts[t], dim=-1) for t in self.types]
        return torch.stack(out, dim=-3) if out else x.new_zeros(*batch, 0, self.channels, K)


class _FromSignals(StaticBuffers):
    """Typed product signals ``(..., T, C, Ko)`` -> irreps_out, one linear map per block.

    Block ``(mul, l p)`` mixes the ``(term, channel)`` pairs of matching parity type. All blocks
    of the same ``l`` run as one GEMM on the ``(batch * (2l+1), T*C)`` slice; one column gather
    puts the results in irreps order (blocks with nothing to read get zeros).
    """

    def __init__(self, term_types: list[int], channels: int, Lout: int,
                 irreps_out: Irreps) -> None:
        super().__init__()
        self.irreps_out, self.Lout = irreps_out, Lout
        self.term_types = term_types
        self.channels = channels
        self._terms = []
        for _, ir in irreps_out:
            terms = [i for i, t in enumerate(term_types) if t == _type(ir)] if ir.l <= Lout else []
            self._terms.append(terms)
        # one flat parameter: block by block, each block's (terms, channels, mul) weights
        numel = sum(len(terms) * channels * mul for (mul, _), terms in zip(irreps_out, self._terms))
        self.weight = torch.nn.Parameter(torch.randn(numel))
        # per l: the blocks computed by one GEMM; result column (i, m) <-> block row m, comp i
        self._groups: dict[int, list[int]] = {}
        for b, ((mul, ir), terms) in enumerate(zip(irreps_out, self._terms)):
            if mul > 0 and terms:
                self._groups.setdefault(ir.l, []).append(b)
        src = torch.full((irreps_out.dim,), -1, dtype=torch.long)
        starts = [sl.start for sl in irreps_out.slices()]
        col = 0
        for l, blocks in self._groups.items():
            M = sum(irreps_out[b].mul for b in blocks)
            m0 = 0
            for b in blocks:
                mul = irreps_out[b].mul
                for w in range(mul):
                    for i in range(2 * l + 1):
                        # output position (block b, copy w, component i) <- flat column
                        src[starts[b] + w * (2 * l + 1) + i] = col + i * M + m0 + w
                m0 += mul
            col += (2 * l + 1) * M
        src[src < 0] = col  # the zero column appended in forward
        self.register_static("gather", src)
        # column of block b's first copy in weight_columns() (copies of all blocks side by side)
        first_copy = [int(f) for f in np.cumsum([0] + [mul for mul, _ in irreps_out])]
        for l, blocks in self._groups.items():  # columns of weight_columns() per degree
            cols = [first_copy[b] + w for b in blocks for w in range(irreps_out[b].mul)]
            self.register_static(f"cols{l}", torch.tensor(cols, dtype=torch.long))
        # weight_columns: flat weight element (block b, term ti, channel c, copy w) -> position
        # (term, c, column) in (T, C, sum of multiplicities), and its normalisation
        M = irreps_out.num_irreps
        index, scale = [], []
        for b, ((mul, _), terms) in enumerate(zip(irreps_out, self._terms)):
            for t in terms:
                for c in range(channels):
                    index += [(t * channels + c) * M + first_copy[b] + w for w in range(mul)]
                    scale += [1 / math.sqrt(len(terms) * channels)] * mul
        self.register_static("column_index", torch.tensor(index, dtype=torch.long))
        self.register_static("column_scale", torch.tensor(scale, dtype=torch.float64))

    def reset_parameters(self) -> None:
        """Re-draw the weights from the standard normal (as at construction)."""
        torch.nn.init.normal_(self.weight)

    def weight_columns(self) -> torch.Tensor:
        """All blocks' weights side by side: ``(T, channels, sum of multiplicities)``, 0 where a
        block's type does not match the term (one scatter of all weights, not one per block)."""
        flat = self.weight * self.column_scale
        T, C = len(self.term_types), self.channels
        out = flat.new_zeros(T * C * self.irreps_out.num_irreps)
        return out.index_copy(0, self.column_index, flat).reshape(T, C, -1)

    def forward(self, z: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
        T, Ko = z.shape[-3], z.shape[-1]
        TC = T * self.channels
        zt = z.reshape(-1, TC, Ko).transpose(1, 2)  # (B, Ko, T*C), a view
        B = zt.shape[0]
        # per degree by split (its backward is one cat; a slice's zero-fills all of z per l)
        by_l = zt.split([2 * l + 1 for l in range(math.isqrt(Ko))], dim=1)
        pieces = []
        W = self.weight_columns().reshape(TC, -1)
        for l in self._groups:
            Wl = W.index_select(1, getattr(self, f"cols{l}"))
            zl = by_l[l].reshape(B * (2 * l + 1), TC)
            pieces.append((zl @ Wl).reshape(B, (2 * l + 1) * Wl.shape[1]))  # cols (i, m)
        pieces.append(z.new_zeros(B, 1))
        out = torch.cat(pieces, dim=1).index_select(1, self.gather)
        return out.reshape(*batch, self.irreps_out.dim)

