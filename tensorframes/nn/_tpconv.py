"""Tensor-product point convolution (NequIP / MACE style), the spherical baseline layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ..o3 import GauntTensorProduct, Linear, TensorProduct, spherical_harmonics
from ..reps import Irreps

__all__ = ["TPConv", "TensorProductFactory"]

#: ``factory(irreps_in1, irreps_in2, irreps_out, instructions) -> module`` building a tensor
#: product with per-edge weights (see :class:`TPConv`, argument ``product``).
TensorProductFactory = Callable[[Irreps, Irreps, Irreps, list], torch.nn.Module]

#: Linear aggregations: the only ones that keep the sum of tensor products equivariant.
_AGGRS = ("add", "sum", "mean")


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
        product: ``"cg"`` (our Clebsch-Gordan :class:`~tensorframes.o3.TensorProduct`, default),
            ``"gaunt"`` (grid Gaunt product, channel gains per edge from the radial MLP; only even
            paths), or a tensor-product factory (see below).
        num_basis: Bessel functions (default 8).
        cutoff: radius of the envelope (default 5.0).
        radial_hidden: hidden width of the radial MLP (default 64).
        avg_num_neighbors: normalization of the sum (default 1.0).
        method: contraction method of the ``"cg"`` product (default ``"dense"``).
        **kwargs: passed to :class:`torch_geometric.nn.MessagePassing`: ``aggr`` (``"add"``,
            default, ``"sum"`` or ``"mean"``; nonlinear aggregations such as ``"max"`` would break
            equivariance and are refused), ``flow``, ``node_dim`` (``0`` or ``-2``), ...;
            ``decomposed_layers`` other than 1 would split irreps and is refused.

    A tensor-product factory is a callable
    ``factory(irreps_in1, irreps_in2, irreps_out, instructions) -> torch.nn.Module``, called with
    ``irreps_in``, ``irreps_sh``, the sorted intermediate irreps (all
    :class:`~tensorframes.Irreps`) and e3nn-style instructions ``(i_in1, i_in2, i_out, "uvu",
    True)``. The module it returns has an ``int`` attribute ``weight_numel`` and is called as
    ``tp(x1, x2, weight)`` with ``x1`` ``(E, irreps_in1.dim)``, ``x2`` ``(E, irreps_in2.dim)``
    and per-edge ``weight`` ``(E, weight_numel)``, returning ``(E, irreps_out.dim)`` in e3nn's
    layout and normalization. e3nn's product, for example (what the benchmarks compare against):
    ``functools.partial(e3nn.o3.TensorProduct, shared_weights=False, internal_weights=False)``.

    :meth:`reset_parameters` runs at the end of construction (PyG's convention), re-drawing the
    linear layers and the radial MLP (and the product, if it has ``reset_parameters``): for a
    fixed seed the initial values differ from versions before this convention, by design.

    Shapes:
        - x: ``(N, irreps_in.dim)``, pos: ``(N, 3)``, edge_index: ``(2, E)``
        - output: ``(N, irreps_out.dim)``
    """

    def __init__(
        self,
        irreps_in: Irreps | str,
        irreps_out: Irreps | str,
        irreps_sh: Irreps | str = "0e+1o+2e",
        *,
        product: str | TensorProductFactory = "cg",
        num_basis: int = 8,
        cutoff: float = 5.0,
        radial_hidden: int = 64,
        avg_num_neighbors: float = 1.0,
        method: str = "dense",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        _check_message_passing_kwargs(kwargs)
        super().__init__(**kwargs)
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.irreps_sh = Irreps(irreps_sh)
        if isinstance(product, str):
            if product not in ("cg", "gaunt"):
                raise ValueError(
                    f"product must be 'cg', 'gaunt' or a tensor-product factory, got {product!r}"
                )
        elif not callable(product):
            raise TypeError(
                "product must be 'cg', 'gaunt' or a tensor-product factory "
                f"(irreps_in1, irreps_in2, irreps_out, instructions) -> module, got "
                f"{type(product).__name__}"
            )
        self.product, self.num_basis, self.cutoff = product, num_basis, float(cutoff)
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.lin1 = Linear(self.irreps_in, self.irreps_in)
        mid, instr = _uvu_paths(self.irreps_in, self.irreps_sh, self.irreps_out)
        if product == "gaunt":
            self.tp = GauntTensorProduct(self.irreps_in, self.irreps_sh, mid, method="grid")
            n_weights = self.tp.channels
        else:
            factory = (partial(TensorProduct, shared_weights=False, internal_weights=False,
                               method=method) if product == "cg" else product)
            self.tp = factory(self.irreps_in, self.irreps_sh, mid, instr)
            n_weights = _check_product_module(self.tp)
        self.irreps_mid = mid
        self.radial = torch.nn.Sequential(
            torch.nn.Linear(num_basis, radial_hidden), torch.nn.SiLU(),
            torch.nn.Linear(radial_hidden, n_weights))
        self.lin2 = Linear(mid, self.irreps_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``lin1``, the product (if it has parameters to reset), the radial MLP and
        ``lin2``, in that order."""
        super().reset_parameters()  # the aggregation module's, if it has any
        self.lin1.reset_parameters()
        reset = getattr(self.tp, "reset_parameters", None)
        if callable(reset):
            reset()
        for m in self.radial:
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, irreps_in.dim)``, ``pos`` ``(N, 3)`` -> ``(N, irreps_out.dim)``."""
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x must be (N, {self.irreps_in.dim}), got {tuple(x.shape)}")
        h = self.lin1(x)
        out = self.propagate(edge_index, h=h, pos=pos, size=(x.shape[0], x.shape[0]))
        return self.lin2(out / math.sqrt(self.avg_num_neighbors))

    def message(self, h_j: torch.Tensor, pos_i: torch.Tensor, pos_j: torch.Tensor) -> torch.Tensor:
        """``Lin_1(x_j) (x)_w Y(r_ij)``, weights ``w`` from the radial MLP, ``(E, mid.dim)``."""
        vec = pos_j - pos_i
        r = vec.norm(dim=-1)
        sh = spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        emb = bessel_basis(r, self.num_basis, self.cutoff)
        w = self.radial(emb) * polynomial_envelope(r, self.cutoff)[:, None]
        return self.tp(h_j, sh, w)

    def aggregate(
        self,
        inputs: torch.Tensor,
        index: torch.Tensor,
        ptr: torch.Tensor | None = None,
        dim_size: int | None = None,
    ) -> torch.Tensor:
        """Sum (one scatter, no device sync) for ``aggr="add"``; PyG's aggregation otherwise."""
        if self.aggr in ("add", "sum"):
            return scatter(inputs, index, dim=0, dim_size=dim_size, reduce="sum")
        return super().aggregate(inputs, index, ptr, dim_size)

    def __repr__(self) -> str:
        product = self.product if isinstance(self.product, str) else _name_of(self.product)
        return (f"{self.__class__.__name__}({self.irreps_in} -> {self.irreps_out}, "
                f"sh={self.irreps_sh}, product={product!r})")


def _uvu_paths(
    irreps_in: Irreps, irreps_sh: Irreps, irreps_out: Irreps
) -> tuple[Irreps, list[tuple[int, int, int, str, bool]]]:
    """The sorted intermediate irreps and the ``uvu`` instructions of :class:`TPConv`."""
    wanted = {ir for _, ir in irreps_out}
    mid, instr = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir in ir_in * ir_sh:
                if ir in wanted:
                    instr.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir))
    mid, p, _ = Irreps(mid).sort()
    return mid, [(i, j, p[k], m, w) for i, j, k, m, w in instr]


def _check_message_passing_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse ``MessagePassing`` options that make no sense for :class:`TPConv`."""
    aggr = kwargs["aggr"]
    if not (isinstance(aggr, str) and aggr in _AGGRS):
        raise ValueError(
            f"TPConv supports aggr in {_AGGRS} (a nonlinear or multi-aggregation would break "
            f"equivariance or the output irreps), got {aggr!r}"
        )
    if kwargs.get("node_dim", -2) not in (0, -2):
        raise ValueError(f"TPConv's messages are (E, C): node_dim must be 0 or -2, got "
                         f"{kwargs['node_dim']!r}")
    if kwargs.get("decomposed_layers", 1) != 1:
        raise ValueError("TPConv does not support decomposed_layers != 1 (it would split the "
                         "irreps of the features)")


def _check_product_module(tp: Any) -> int:
    """``tp.weight_numel`` of a module built by a tensor-product factory (checked)."""
    if not isinstance(tp, torch.nn.Module):
        raise TypeError(f"the tensor-product factory must return a torch.nn.Module, got "
                        f"{type(tp).__name__}")
    n = getattr(tp, "weight_numel", None)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TypeError(f"the tensor-product module {type(tp).__name__} must have an int "
                        f"attribute weight_numel (its per-edge weights), got {n!r}")
    return n


def _name_of(factory: Callable) -> str:
    inner = getattr(factory, "func", factory)  # functools.partial
    return getattr(inner, "__qualname__", type(inner).__name__)
