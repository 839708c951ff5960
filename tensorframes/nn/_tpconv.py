"""Tensor-product point convolution (NequIP / MACE style), the spherical baseline layer."""

from __future__ import annotations

import math

import torch
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ..o3._gaunt import GauntTensorProduct
from ..o3._linear import Linear
from ..o3._spherical_harmonics import spherical_harmonics
from ..o3._tensor_product import TensorProduct
from ..reps.irreps import Irreps

__all__ = ["TPConv"]


def bessel_basis(r: torch.Tensor, num_basis: int, cutoff: float) -> torch.Tensor:
    """``sqrt(2/c) sin(n pi r / c) / r``, ``n = 1..num_basis`` (NequIP's radial basis)."""
    n = torch.arange(1, num_basis + 1, dtype=r.dtype, device=r.device)
    r = r[..., None]
    return math.sqrt(2 / cutoff) * torch.sin(n * math.pi * r / cutoff) / r.clamp_min(1e-9)


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """NequIP's smooth cutoff ``1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)``."""
    d = r / cutoff
    env = (1 - (p + 1) * (p + 2) / 2 * d**p + p * (p + 2) * d ** (p + 1)
           - p * (p + 1) / 2 * d ** (p + 2))
    return torch.where(d < 1, env, torch.zeros_like(env))


class TPConv(MessagePassing):
    r"""Tensor-product point convolution (Batzner et al., NequIP, 2022; Batatia et al., MACE).

    .. math::
        x'_i = \mathrm{Lin}_2\Big(\frac{1}{\sqrt{\bar n}} \sum_{j \in \mathcal N(i)}
        \mathrm{Lin}_1(x_j) \otimes_{R(|r_{ij}|)} Y(\hat r_{ij})\Big),
        \qquad r_{ij} = p_j - p_i

    The product is channel-wise (``uvu``: each channel of the neighbour feature with the edge's
    spherical harmonics, every allowed ``ir_in x ir_sh -> ir_out`` path whose ``ir_out`` is in
    ``irreps_out``), its path weights per edge from a radial MLP on a Bessel embedding times
    NequIP's polynomial envelope; sum over neighbours divided by
    :math:`\sqrt{\bar n}` (``avg_num_neighbors``); ``Lin`` are equivariant linear layers.

    Args:
        irreps_in, irreps_out: node feature irreps.
        irreps_sh: irreps of the edge spherical harmonics (default ``"0e+1o+2e"``).
        product: ``"cg"`` (our :class:`~tensorframes.o3.TensorProduct`, default), ``"gaunt"``
            (grid Gaunt product, channel gains per edge from the radial MLP; only even paths),
            or ``"e3nn"`` (e3nn's ``TensorProduct``, for benchmarks; needs e3nn).
        num_basis: Bessel functions (default 8).
        cutoff: radius of the envelope (default 5.0).
        radial_hidden: hidden width of the radial MLP (default 64).
        avg_num_neighbors: normalization of the sum (default 1.0).

    Shapes:
        - x: ``(N, irreps_in.dim)``, pos: ``(N, 3)``, edge_index: ``(2, E)``
        - output: ``(N, irreps_out.dim)``
    """

    def __init__(self, irreps_in, irreps_out, irreps_sh="0e+1o+2e", *, product: str = "cg",
                 num_basis: int = 8, cutoff: float = 5.0, radial_hidden: int = 64,
                 avg_num_neighbors: float = 1.0, method: str = "dense") -> None:
        super().__init__(aggr="add")
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.irreps_sh = Irreps(irreps_sh)
        if product not in ("cg", "gaunt", "e3nn"):
            raise ValueError(f"product must be 'cg', 'gaunt' or 'e3nn', got {product!r}")
        self.product, self.num_basis, self.cutoff = product, num_basis, float(cutoff)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.lin1 = Linear(self.irreps_in, self.irreps_in)
        wanted = {ir for _, ir in self.irreps_out}
        mid, instr = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir in ir_in * ir_sh:
                    if ir in wanted:
                        instr.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir))
        mid, p, _ = Irreps(mid).sort()
        instr = [(i, j, p[k], m, w) for i, j, k, m, w in instr]
        if product == "gaunt":
            self.tp = GauntTensorProduct(self.irreps_in, self.irreps_sh, mid, method="grid")
            self.irreps_mid = mid
            n_weights = self.tp.channels
        elif product == "e3nn":
            from e3nn import o3

            self.tp = o3.TensorProduct(str(self.irreps_in), str(self.irreps_sh), str(mid), instr,
                                       shared_weights=False, internal_weights=False)
            n_weights = self.tp.weight_numel
        else:
            self.tp = TensorProduct(self.irreps_in, self.irreps_sh, mid, instr,
                                    shared_weights=False, internal_weights=False, method=method)
            n_weights = self.tp.weight_numel
        self.irreps_mid = mid
        self.radial = torch.nn.Sequential(
            torch.nn.Linear(num_basis, radial_hidden), torch.nn.SiLU(),
            torch.nn.Linear(radial_hidden, n_weights))
        self.lin2 = Linear(mid, self.irreps_out)

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        for m in self.radial:
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor):
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x must be (N, {self.irreps_in.dim}), got {tuple(x.shape)}")
        h = self.lin1(x)
        out = self.propagate(edge_index, h=h, pos=pos, size=(x.shape[0], x.shape[0]))
        return self.lin2(out / math.sqrt(self.avg_num_neighbors))

    def message(self, h_j, pos_i, pos_j):
        vec = pos_j - pos_i
        r = vec.norm(dim=-1)
        sh = spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        emb = bessel_basis(r, self.num_basis, self.cutoff)
        w = self.radial(emb) * polynomial_envelope(r, self.cutoff)[:, None]
        return self.tp(h_j, sh, w)

    def aggregate(self, inputs, index, ptr=None, dim_size=None):
        return scatter(inputs, index, dim=0, dim_size=dim_size, reduce="sum")

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.irreps_in} -> {self.irreps_out}, "
                f"sh={self.irreps_sh}, product={self.product!r})")
