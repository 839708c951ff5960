r"""Gaunt tensor products (Luo et al., ICLR 2024) and a vector-signal variant.

**Signal model.** A *spherical signal* of degree ``L`` is ``f(n) = sum_{l<=L} x_l . Y_l(n)`` with
``Y`` e3nn's real spherical harmonics, orthonormal on the sphere ("integral" normalization);
its coefficients are stored as ``(..., (L+1)^2)`` in e3nn's order. The Gaunt product of two
signals is the pointwise product ``f1 f2``, projected back onto the harmonics:

.. math::
    z_{l_3 m_3} = \int_{S^2} f_1 f_2\, Y_{l_3 m_3}
    = \sum G^{l_1 l_2 l_3}_{m_1 m_2 m_3} x_{l_1 m_1} y_{l_2 m_2},\qquad
    G = \int Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3} = g_{l_1 l_2 l_3}\, C^{l_1 l_2 l_3}

(Gaunt coefficients; zero unless ``l1+l2+l3`` is even). Both methods compute exactly this
(documented constant: 1, the two methods are equal):

* ``"grid"`` (:mod:`tensorframes.o3._gaunt_grid`): both signals evaluated on a
  Gauss-Legendre (``floor(D/2)+1`` nodes in ``cos theta``) x uniform (``D+1`` nodes in ``phi``)
  grid, ``D = L1+L2+Lout``: the smallest product grid on which the projection of ``f1 f2`` onto
  degrees ``<= Lout`` is exact; pointwise product; projection with the quadrature weights.
  Separable: per azimuthal order a Legendre GEMM, then one trigonometric GEMM in ``phi``.
* ``"fourier"`` (:mod:`tensorframes.o3._gaunt_fourier`): the signals are converted to 2D
  Fourier coefficients in ``(theta, phi)`` (``Y_lm`` extended to the torus is a trigonometric
  polynomial of degree ``<= l`` in each angle) by a precomputed matrix; the product is the 2D
  convolution of the coefficient arrays, done by FFT; the result goes back to spherical
  harmonics by the precomputed exact map ``int_0^pi int_0^2pi e^{i(u theta + v phi)} Y_lm
  sin(theta)``.

**Parity.** Irreps with parity ``(-1)^l`` form a true scalar signal (type ``t = +1``), those
with parity ``-(-1)^l`` a pseudo-scalar signal (``t = -1``). Each input is split by type; the
product of types ``t1, t2`` has type ``t1 t2`` and feeds output irreps of parity
``t1 t2 (-1)^l``.

**Channels.** :class:`GauntTensorProduct` maps each input by an equivariant linear layer to
``channels`` signals per type, multiplies channel by channel (``c``-th signal of input 1 with
the ``c``-th of input 2, for every pair of types), and maps the products by an equivariant linear
layer to ``irreps_out``. With ``channels=1`` and single-copy irreps this is exactly the setting of
the CG product restricted to ``l1+l2+l3`` even, weighted by Gaunt coefficients.

This module holds the user-facing modules and :func:`gaunt_coefficients`; the S2 tables are in
:mod:`tensorframes.o3._s2grid`, the linear maps between irreps and signals in
:mod:`tensorframes.o3._signals`.
"""

from __future__ import annotations

import functools

import torch

from ..reps.irreps import Irreps
from ._gaunt_fourier import _FourierCore
from ._gaunt_grid import _GridProduct
from ._s2grid import _grid_harmonics, _s2_grid, _sh
from ._signals import _FromSignals, _ToSignals
from ._spherical_harmonics import spherical_harmonics
from ._static import StaticBuffers

__all__ = [
    "GauntTensorProduct",
    "VectorGauntTensorProduct",
    "gaunt_coefficients",
]


@functools.cache
def _gaunt_float64(l1: int, l2: int, l3: int) -> torch.Tensor:
    L = l1 + l2 + l3
    vec, w = _s2_grid((L + 1) // 2 + 1)
    Y = [spherical_harmonics(l, vec, normalize=False, normalization="integral")
         for l in (l1, l2, l3)]
    G = torch.einsum("n,na,nb,nc->abc", w, *Y)
    G[G.abs() < 1e-14] = 0.0
    return G


def gaunt_coefficients(l1: int, l2: int, l3: int, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    r"""Real Gaunt coefficients :math:`\int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}`.

    e3nn's real harmonics, orthonormal ("integral"); shape ``(2l1+1, 2l2+1, 2l3+1)``; zero
    unless ``l1 + l2 + l3`` is even; proportional to :func:`wigner_3j` otherwise. Exact
    quadrature in float64, cached; returns a copy.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return _gaunt_float64(int(l1), int(l2), int(l3)).to(dtype=dtype, device=device, copy=True)


def gaunt_product(x1: torch.Tensor, x2: torch.Tensor, L1: int, L2: int, Lout: int | None = None,
                  method: str = "grid") -> torch.Tensor:
    """Gaunt product of signals: ``(..., (L1+1)^2) x (..., (L2+1)^2) -> (..., (Lout+1)^2)``.

    See the module docstring. It is :class:`GauntTensorProduct` on the harmonics' irreps with
    one channel and unit weights (identity linear maps); it builds the maps on each call.
    Internal (tests and checks): not exported by :mod:`tensorframes.o3`.
    """
    Lout = L1 + L2 if Lout is None else Lout
    irreps = [Irreps("+".join(f"1x{l}{'eo'[l % 2]}" for l in range(L + 1)))
              for L in (L1, L2, Lout)]
    tp = GauntTensorProduct(*irreps, method=method, channels=1)
    with torch.no_grad():
        for w in tp.parameters():
            w.fill_(1.0)
    tp = tp.to(dtype=x1.dtype, device=x1.device)
    return tp(x1, x2)


class _SignalProductBase(StaticBuffers):
    """Shared set-up of the Gaunt modules: irreps, channels, linear maps into signals."""

    def __init__(self, irreps_in1: Irreps | str, irreps_in2: Irreps | str,
                 irreps_out: Irreps | str, channels: int | None) -> None:
        super().__init__()
        self.irreps_in1, self.irreps_in2 = Irreps(irreps_in1), Irreps(irreps_in2)
        self.irreps_out = Irreps(irreps_out)
        if channels is None:
            channels = max([m for m, _ in self.irreps_in1] + [m for m, _ in self.irreps_in2]
                           + [1])
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.lin1 = _ToSignals(self.irreps_in1, channels)
        self.lin2 = _ToSignals(self.irreps_in2, channels)
        self.L1, self.L2 = self.lin1.L, self.lin2.L
        lmax_out = self.irreps_out.lmax if len(self.irreps_out) else 0
        self.Lout = min(lmax_out, self.L1 + self.L2)
        self.combos = [(a, b) for a in range(len(self.lin1.types))
                       for b in range(len(self.lin2.types))]

    def reset_parameters(self) -> None:
        """Re-draw every weight (input maps, then output map) from the standard normal."""
        for lin in (self.lin1, self.lin2, getattr(self, "lin_out", None)):
            if lin is not None:
                lin.reset_parameters()

    def _check(self, x1: torch.Tensor, x2: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        if x1.shape[-1] != self.irreps_in1.dim or x2.shape[-1] != self.irreps_in2.dim:
            raise ValueError(f"expected inputs (..., {self.irreps_in1.dim}) and "
                             f"(..., {self.irreps_in2.dim}), got {tuple(x1.shape)} and "
                             f"{tuple(x2.shape)}")
        batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        return x1.expand(*batch, x1.shape[-1]), x2.expand(*batch, x2.shape[-1]), batch

    def extra_repr(self) -> str:
        return (f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
                f"channels={self.channels}")


class GauntTensorProduct(_SignalProductBase):
    r"""Gaunt tensor product (Luo et al., "Enabling Efficient Equivariant Operations in the Fourier
    Basis via Gaunt Tensor Products", ICLR 2024), channel-wise on spherical signals.

    .. math::
        z = \mathrm{Lin}_\text{out}\Big(\big[\mathrm{Lin}_1(x_1)_{c,t_1} \cdot
        \mathrm{Lin}_2(x_2)_{c,t_2}\big]_{c,\,t_1,\,t_2}\Big)

    where :math:`\cdot` is the Gaunt product of spherical signals (module docstring of
    :mod:`tensorframes.o3._gaunt`), ``c`` runs over ``channels`` and ``t1, t2`` over the parity
    types present in each input. Realises only paths with ``l1 + l2 + l3`` even.

    Args:
        irreps_in1, irreps_in2, irreps_out: irreps of inputs and output.
        method: ``"grid"`` (Gauss-Legendre x uniform S2 grid; default) or ``"fourier"`` (2D
            Fourier basis with FFT convolution); identical results.
        channels: signals per parity type (default: the largest input multiplicity).
        checkpoint: grid method only: backward recomputes the grid values from the inputs
            instead of keeping them from forward. Saved activations are then the inputs alone
            (no per-chunk grid values), at the price of a second forward pass in backward.

    Shapes:
        - x1: ``(..., irreps_in1.dim)``, x2: ``(..., irreps_in2.dim)``
        - weight (optional): ``(..., channels)`` per-sample channel gains of the product
        - output: ``(..., irreps_out.dim)``
    """

    def __init__(self, irreps_in1: Irreps | str, irreps_in2: Irreps | str,
                 irreps_out: Irreps | str, *, method: str = "grid", channels: int | None = None,
                 checkpoint: bool = False) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, channels)
        if method not in ("grid", "fourier"):
            raise ValueError(f"method must be 'grid' or 'fourier', got {method!r}")
        if checkpoint and method != "grid":
            raise ValueError("checkpoint=True needs method='grid' (the Fourier path uses plain "
                             "autograd)")
        self.method, self.checkpoint = method, bool(checkpoint)
        types = [self.lin1.types[a] * self.lin2.types[b] for a, b in self.combos]
        self.lin_out = _FromSignals(types, self.channels, self.Lout, self.irreps_out)
        if method == "grid":
            self.core = _GridProduct(self.lin1, self.lin2, self.combos, self.lin_out, self.Lout)
            self.core.checkpoint = self.checkpoint
        else:
            self.core = _FourierCore(self.L1, self.L2, self.Lout)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        x1, x2, batch = self._check(x1, x2)
        if self.method == "grid":
            if weight is not None:
                weight = weight.expand(*batch, self.channels).reshape(-1, self.channels)
            out = self.core(x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1]), weight,
                            self.lin1.weight_rows(), self.lin2.weight_rows(),
                            self.lin_out.weight_columns())
            return out.reshape(*batch, out.shape[-1])
        s1, s2 = self.lin1(x1), self.lin2(x2)  # (..., T, C, K)
        u1, u2 = s1.unbind(-3), s2.unbind(-3)  # unbind: its backward is one stack
        a = torch.stack([u1[i] for i, _ in self.combos], dim=-3)
        b = torch.stack([u2[j] for _, j in self.combos], dim=-3)
        z = self.core(a, b)  # (..., combos, C, Ko)
        if weight is not None:
            z = z * weight[..., None, :, None]
        return self.lin_out(z, batch)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}" + (
            ", checkpoint=True" if self.checkpoint else "")


class VectorGauntTensorProduct(_SignalProductBase):
    r"""Vector-signal Gaunt product: pointwise products of scalar *and gradient* fields on S2.

    Each input signal ``f`` also gives the tangent vector field :math:`\nabla_{S^2} f`; on the
    Gauss-Legendre x uniform grid the product keeps three pointwise terms,

    .. math::
        f_1 f_2,\qquad \nabla f_1 \cdot \nabla f_2,\qquad
        \hat n \cdot (\nabla f_1 \times \nabla f_2),

    projected back onto harmonics. The first two have type ``t1 t2`` and realise the even paths
    (``l1+l2+l3`` even) like the Gaunt product; the last is a pseudo-scalar field (type
    ``-t1 t2``) and realises the *odd* paths the Gaunt product misses, e.g. ``1o x 1o -> 1e``
    (proportional to the cross product).

    Shapes:
        - x1: ``(..., irreps_in1.dim)``, x2: ``(..., irreps_in2.dim)``
        - weight (optional): ``(..., channels)`` per-sample channel gains
        - output: ``(..., irreps_out.dim)``
    """

    def __init__(self, irreps_in1: Irreps | str, irreps_in2: Irreps | str,
                 irreps_out: Irreps | str, *, channels: int | None = None) -> None:
        super().__init__(irreps_in1, irreps_in2, irreps_out, channels)
        Lg = max(self.L1 + self.L2, (self.L1 + self.L2 + self.Lout + 1) // 2)
        vec, w = _s2_grid(Lg)
        Y1, dY1 = _grid_harmonics(self.L1, Lg)
        Y2, dY2 = _grid_harmonics(self.L2, Lg)
        self.register_static("Y1", Y1.T.contiguous())
        self.register_static("Y2", Y2.T.contiguous())
        self.register_static("dY1", dY1.permute(1, 2, 0).contiguous())  # (3, K1, n)
        self.register_static("dY2", dY2.permute(1, 2, 0).contiguous())
        self.register_static("nhat", vec.T.contiguous())  # (3, n)
        self.register_static("Yout", (_sh(self.Lout, vec) * w[:, None]).contiguous())
        types = []
        for a, b in self.combos:
            t = self.lin1.types[a] * self.lin2.types[b]
            types += [t, t, -t]
        self.lin_out = _FromSignals(types, self.channels, self.Lout, self.irreps_out)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        x1, x2, batch = self._check(x1, x2)
        s1, s2 = self.lin1(x1), self.lin2(x2)  # (..., T, C, K)
        f1, f2 = s1 @ self.Y1, s2 @ self.Y2  # (..., T, C, n)
        g1 = torch.stack([s1 @ self.dY1[a] for a in range(3)], dim=-2)  # (..., T, C, 3, n)
        g2 = torch.stack([s2 @ self.dY2[a] for a in range(3)], dim=-2)
        # per type by unbind (its backward is one stack; an index's zero-fills per use)
        uf1, uf2 = f1.unbind(-3), f2.unbind(-3)
        ug1, ug2 = g1.unbind(-4), g2.unbind(-4)
        terms = []
        for a, b in self.combos:
            fa, fb = uf1[a], uf2[b]
            ga, gb = ug1[a], ug2[b]
            dot = (ga * gb).sum(-2)
            cross = (torch.linalg.cross(ga, gb, dim=-2) * self.nhat).sum(-2)
            terms += [fa * fb, dot, cross]
        z = torch.stack(terms, dim=-3) @ self.Yout  # (..., 3 combos, C, Ko)
        if weight is not None:
            z = z * weight[..., None, :, None]
        return self.lin_out(z, batch)
