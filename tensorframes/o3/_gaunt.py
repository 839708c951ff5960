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

* ``"grid"``: both signals evaluated on a Gauss-Legendre (``floor(D/2)+1`` nodes in
  ``cos theta``) x uniform (``D+1`` nodes in ``phi``) grid, ``D = L1+L2+Lout``: the smallest
  product grid on which the projection of ``f1 f2`` onto degrees ``<= Lout`` is exact;
  pointwise product; projection with the quadrature weights. Separable: per azimuthal order a
  Legendre GEMM, then one trigonometric GEMM in ``phi``.
* ``"fourier"``: the signals are converted to 2D Fourier coefficients in ``(theta, phi)``
  (``Y_lm`` extended to the torus is a trigonometric polynomial of degree ``<= l`` in each
  angle) by a precomputed matrix; the product is the 2D convolution of the coefficient arrays,
  done by FFT; the result goes back to spherical harmonics by the precomputed exact map
  ``int_0^pi int_0^2pi e^{i(u theta + v phi)} Y_lm sin(theta)``.

**Parity.** Irreps with parity ``(-1)^l`` form a true scalar signal (type ``t = +1``), those
with parity ``-(-1)^l`` a pseudo-scalar signal (``t = -1``). Each input is split by type; the
product of types ``t1, t2`` has type ``t1 t2`` and feeds output irreps of parity
``t1 t2 (-1)^l``.

**Channels.** :class:`GauntTensorProduct` maps each input by an equivariant linear layer to
``channels`` signals per type, multiplies channel by channel (``c``-th signal of input 1 with
the ``c``-th of input 2, for every pair of types), and maps the products by an equivariant linear
layer to ``irreps_out``. With ``channels=1`` and single-copy irreps this is exactly the setting of
the CG product restricted to ``l1+l2+l3`` even, weighted by Gaunt coefficients.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..reps.irreps import Irreps
from ._spherical_harmonics import spherical_harmonics
from ._static import StaticBuffers

__all__ = [
    "GauntTensorProduct",
    "VectorGauntTensorProduct",
    "gaunt_coefficients",
    "gaunt_product",
]


#: Grid (or 2D Fourier) values per batch chunk of the Gaunt products (4 MB in float32).
CHUNK_VALUES = 1 << 20


# -- static data (float64, cached) ------------------------------------------------------------
@functools.cache
def _s2_grid(L: int, n_theta: int | None = None, n_phi: int | None = None):
    """Gauss-Legendre x uniform grid exact for polynomials of degree ``2L`` on the sphere.

    ``n_theta`` Gauss-Legendre nodes in ``cos theta`` integrate degree ``2 n_theta - 1`` exactly,
    ``n_phi`` uniform nodes in ``phi`` every frequency below ``n_phi``; the defaults are
    ``L + 1`` and ``2L + 1``. Returns ``(vec (n, 3), weights (n,))`` in float64 with
    ``sum_k w_k p(vec_k) = int_{S2} p``.
    """
    n_theta = L + 1 if n_theta is None else n_theta
    n_phi = 2 * L + 1 if n_phi is None else n_phi
    z, wz = np.polynomial.legendre.leggauss(n_theta)
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    s = np.sqrt(1 - z**2)
    # polar axis y (e3nn's): every harmonic is Lambda(theta) x cos(m phi) or sin(|m| phi)
    vec = np.stack(
        [np.outer(s, np.sin(phi)), np.outer(z, np.ones(n_phi)), np.outer(s, np.cos(phi))], -1
    ).reshape(-1, 3)
    w = np.outer(wz, np.full(n_phi, 2 * np.pi / n_phi)).reshape(-1)
    return torch.from_numpy(vec), torch.from_numpy(w)


def _sh(L: int, vec: torch.Tensor) -> torch.Tensor:
    return spherical_harmonics(list(range(L + 1)), vec, normalize=False, normalization="integral")


@functools.cache
def _grid_harmonics(L: int, Lgrid: int):
    """``Y (n, (L+1)^2)`` and tangential gradients ``dY (n, 3, (L+1)^2)`` on grid ``Lgrid``."""
    vec, _ = _s2_grid(Lgrid)
    v = vec.clone().requires_grad_(True)
    Y = _sh(L, v)
    grads = []
    for k in range(Y.shape[1]):
        if Y.requires_grad:  # not for L = 0: a constant has no graph (and no gradient)
            (g,) = torch.autograd.grad(Y[:, k].sum(), v, retain_graph=True, allow_unused=True)
        else:
            g = None
        grads.append(torch.zeros_like(vec) if g is None else g)
    dY = torch.stack(grads, dim=-1)  # (n, 3, K): ambient gradient of the solid harmonic
    dY = dY - vec[:, :, None] * (vec[:, :, None] * dY).sum(1, keepdim=True)  # tangential
    return Y.detach(), dY.detach()


def _trig(L: int, n_phi: int) -> torch.Tensor:
    """``T (2L+1, n_phi)``: rows ``sin(|m| phi)`` (m < 0), ``1``, ``cos(m phi)`` (m > 0)."""
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    m = np.arange(-L, L + 1)[:, None]
    T = np.where(m < 0, np.sin(-m * phi), np.cos(m * phi))
    return torch.from_numpy(T)


@functools.cache
def _separable(L: int, n_theta: int):
    """Factorised harmonics: ``Y_k(theta_i, phi) = Lam_k(theta_i) T_{m_k}(phi)``.

    ``theta_i`` are the ``n_theta`` Gauss-Legendre nodes of :func:`_s2_grid`. Returns
    ``slot (2L+1, L+1)``: index of the harmonic ``k`` in azimuthal row ``m`` (``K`` = padding)
    and ``lam (2L+1, L+1, n_theta)`` its Legendre factor (0 for padding).
    """

    def azimuthal(n_theta):  # (K, 2L+1, n_theta): trig coefficients of each harmonic
        n_phi = 2 * L + 1  # resolves every azimuthal order of degree L
        vec, _ = _s2_grid(L, n_theta, n_phi)
        Y = _sh(L, vec).reshape(n_theta, n_phi, -1)
        norm = torch.where(torch.arange(-L, L + 1) == 0, n_phi, n_phi / 2).to(torch.float64)
        return torch.einsum("ijk,mj->kmi", Y, _trig(L, n_phi)) / norm[None, :, None]

    # the order m of each harmonic is read off L + 1 distinct nodes, where no Legendre factor
    # of degree <= L vanishes everywhere (on fewer nodes one can: Y_30 on 3 Gauss nodes)
    detect = azimuthal(L + 1)
    c = detect if n_theta == L + 1 else azimuthal(n_theta)
    K = c.shape[0]
    slot = torch.full((2 * L + 1, L + 1), K, dtype=torch.long)
    lam = torch.zeros(2 * L + 1, L + 1, n_theta, dtype=torch.float64)
    fill = [0] * (2 * L + 1)
    for k in range(K):
        mags = detect[k].abs().amax(-1)
        m = int(mags.argmax())
        if (mags > 1e-9 * mags[m]).sum() != 1:  # pragma: no cover - basis assumption broken
            raise RuntimeError("harmonic without a single azimuthal order on the grid")
        slot[m, fill[m]] = k
        lam[m, fill[m]] = c[k, m]
        fill[m] += 1
    return slot, lam


def _torus_harmonics(L: int, N: int) -> torch.Tensor:
    """``Y_lm(theta_a, phi_b)`` on the uniform ``N x N`` torus grid: ``(N, N, (L+1)^2)``."""
    t = 2 * np.pi * np.arange(N) / N
    th, ph = np.meshgrid(t, t, indexing="ij")
    vec = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
    return _sh(L, torch.from_numpy(vec))


@functools.cache
def _fourier_maps(L1: int, L2: int, Lout: int):
    """Precomputed maps of the Fourier method (float64), ``Lt = L1 + L2``, ``N = 2 Lt + 1``.

    ``A1 (K1, M1)`` / ``A2``: complex 2D Fourier coefficients (``|u|, |v| <= L``, real and
    imaginary parts stacked as ``(2, K, M)``) of each harmonic; ``idx1`` / ``idx2``: flat
    positions of those coefficients in the wrapped ``N x N`` FFT array; ``B (2, N*N, Kout)``:
    projection of a coefficient array back to harmonics (real part of ``F @ B``).
    """
    Lt = L1 + L2
    N = 2 * Lt + 1

    def forward_map(L):
        n = 2 * L + 1
        vals = _torus_harmonics(L, n)  # exact sampling: degree <= L in each angle
        coef = torch.fft.fft2(vals.permute(2, 0, 1), norm="forward")  # (K, n, n), wrapped
        u = torch.arange(-L, L + 1)
        uu, vv = torch.meshgrid(u, u, indexing="ij")
        c = coef[:, uu % n, vv % n].reshape(coef.shape[0], -1)  # (K, n*n), u, v = -L..L
        idx = ((uu % N) * N + (vv % N)).reshape(-1)
        return torch.stack([c.real, c.imag]), idx

    A1, idx1 = forward_map(L1)
    A2, idx2 = forward_map(L2)
    # back map: x_lm = sum_{uv} F_uv int_0^pi int_0^2pi e^{i(u th + v ph)} Y_lm sin(th)
    M = 2 * (Lout + 1) + 1
    vals = _torus_harmonics(Lout, M)
    t = 2 * np.pi * np.arange(M) / M
    vals = vals * torch.from_numpy(np.sin(t))[:, None, None]
    g = torch.fft.fft2(vals.permute(2, 0, 1), norm="forward")  # (Ko, M, M): coeffs g[j, k]
    j = torch.arange(-(Lout + 1), Lout + 2)
    u = torch.arange(-Lt, Lt + 1)
    n = (u[:, None] + j[None, :]).to(torch.complex128)  # int_0^pi e^{i n th} dth
    odd = (u[:, None] + j[None, :]) % 2 != 0
    Imat = torch.where(n == 0, torch.full_like(n, math.pi),
                       torch.where(odd, 2j / torch.where(n == 0, 1, n), torch.zeros_like(n)))
    gj = g[:, j % M, :]  # (Ko, J, M)
    # phi integral: 2 pi delta(v + k), k the phi frequency of g
    gv = gj[:, :, (-u) % M] if Lout + 1 >= Lt else None
    if gv is None:  # frequencies |v| > Lout have no overlap with Y_lm: zero
        k = -u
        ok = k.abs() <= Lout
        gv = torch.zeros(gj.shape[0], gj.shape[1], u.numel(), dtype=gj.dtype)
        gv[:, :, ok] = gj[:, :, k[ok] % M]
    Bm = 2 * math.pi * torch.einsum("uj,ojv->uvo", Imat, gv)  # (U, V, Ko)
    uu, vv = torch.meshgrid(u, u, indexing="ij")
    B = torch.zeros(N * N, Bm.shape[-1], dtype=torch.complex128)
    B[((uu % N) * N + (vv % N)).reshape(-1)] = Bm.reshape(-1, Bm.shape[-1])
    return A1, idx1, A2, idx2, torch.stack([B.real, B.imag]), N


@functools.cache
def _gaunt_float64(l1: int, l2: int, l3: int) -> torch.Tensor:
    L = l1 + l2 + l3
    vec, w = _s2_grid((L + 1) // 2 + 1)
    Y = [spherical_harmonics(l, vec, normalize=False, normalization="integral")
         for l in (l1, l2, l3)]
    G = torch.einsum("n,na,nb,nc->abc", w, *Y)
    G[G.abs() < 1e-14] = 0.0
    return G


def gaunt_coefficients(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    r"""Real Gaunt coefficients :math:`\int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}`.

    e3nn's real harmonics, orthonormal ("integral"); shape ``(2l1+1, 2l2+1, 2l3+1)``; zero
    unless ``l1 + l2 + l3`` is even; proportional to :func:`wigner_3j` otherwise. Exact
    quadrature in float64, cached; returns a copy.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return _gaunt_float64(int(l1), int(l2), int(l3)).to(dtype=dtype, device=device, copy=True)


# -- the Fourier method on signals -------------------------------------------------------------
class _FourierCore(StaticBuffers):
    """Fourier method on signals: ``(..., (L1+1)^2) x (..., (L2+1)^2) -> (..., (Lout+1)^2)``."""

    def __init__(self, L1: int, L2: int, Lout: int) -> None:
        super().__init__()
        self.L1, self.L2, self.Lout = L1, L2, Lout
        A1, idx1, A2, idx2, B, N = _fourier_maps(L1, L2, Lout)
        self.N = N
        self.register_static("A1", A1)
        self.register_static("A2", A2)
        self.register_static("idx1", idx1)
        self.register_static("idx2", idx2)
        self.register_static("B", B)

    def _to_fourier(self, x, A, idx):
        Fr, Fi = x @ A[0], x @ A[1]
        F = x.new_zeros(*x.shape[:-1], self.N * self.N, dtype=_complex(x.dtype))
        F[..., idx] = torch.complex(Fr, Fi)
        return F.reshape(*x.shape[:-1], self.N, self.N)

    def _product(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``(B, K1) x (B, K2) -> (B, Ko)`` through 2D Fourier coefficients."""
        F1 = self._to_fourier(x1, self.A1, self.idx1)
        F2 = self._to_fourier(x2, self.A2, self.idx2)
        # 2D convolution of the coefficient arrays via FFT (no aliasing: N = 2(L1+L2)+1)
        v = torch.fft.ifft2(F1, norm="forward") * torch.fft.ifft2(F2, norm="forward")
        F = torch.fft.fft2(v, norm="forward").reshape(*v.shape[:-2], -1)
        return F.real @ self.B[0] - F.imag @ self.B[1]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        batch = x1.shape[:-1]
        x1, x2 = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1])
        # batch chunks of about CHUNK_VALUES Fourier values (the grid method's policy), so the
        # intermediates stay in cache; same result as one chunk. split, not slices: a slice's
        # backward zero-fills the whole input gradient per chunk.
        chunk = max(32, CHUNK_VALUES // (self.N * self.N))
        if x1.shape[0] == 0:  # MKL's FFT rejects empty batches
            return x1.new_zeros(*batch, self.B.shape[-1])
        if x1.shape[0] <= chunk:
            out = self._product(x1, x2)
        else:
            out = torch.cat([self._product(a, b) for a, b in
                             zip(x1.split(chunk), x2.split(chunk))], dim=0)
        return out.reshape(*batch, out.shape[-1])


def _complex(dtype):
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]


def gaunt_product(x1: torch.Tensor, x2: torch.Tensor, L1: int, L2: int, Lout: int | None = None,
                  method: str = "grid") -> torch.Tensor:
    """Gaunt product of signals: ``(..., (L1+1)^2) x (..., (L2+1)^2) -> (..., (Lout+1)^2)``.

    See the module docstring. It is :class:`GauntTensorProduct` on the harmonics' irreps with
    one channel and unit weights (identity linear maps); it builds the maps on each call.
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


# -- equivariant linear maps between irreps and typed signals ------------------------------------
def _type(ir) -> int:
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

    def __init__(self, term_types: list[int], channels: int, Lout: int, irreps_out: Irreps):
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

    def weight_columns(self) -> torch.Tensor:
        """All blocks' weights side by side: ``(T, channels, sum of multiplicities)``, 0 where a
        block's type does not match the term (one scatter of all weights, not one per block)."""
        flat = self.weight * self.column_scale
        T, C = len(self.term_types), self.channels
        out = flat.new_zeros(T * C * self.irreps_out.num_irreps)
        return out.index_copy(0, self.column_index, flat).reshape(T, C, -1)

    def forward(self, z: torch.Tensor, batch) -> torch.Tensor:
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


class _GridProduct(StaticBuffers):
    r"""The grid method with the linear maps in and out folded into its Legendre stages.

    Batch-last throughout (inputs ``(dim, B)``, output ``(dim_out, B)``), so every gather copies
    whole rows and every GEMM runs along the batch. Per azimuthal row ``r`` of the grid
    (``sin(|m| phi)``, ``1``, ``cos(m phi)``):

    1. ``c_r = A_r x[rows_r]``: the input components of that azimuthal order go straight to
       Legendre factors ``(type, theta_i, channel)``; ``A_r`` folds the input linear map with
       ``Lam_lm(theta_i)`` (one batched GEMM over ``r``);
    2. ``v = T^T c``: the trigonometric sum to the ``phi x theta`` grid (one GEMM);
    3. the pointwise product for every ``(type1, type2)`` combination and channel;
    4. ``d = T_out v``: the quadrature in ``phi`` (one GEMM), times the per-sample weights;
    5. ``y_r = A_out_r d_r``: the quadrature in ``theta`` folded with the output linear map
       (one batched GEMM);
    6. one row gather puts ``y`` in irreps order (unreachable outputs read a zero row).

    Folding costs ``n_theta / (L + 1)`` times the flops of a separate channel mix, in exchange for
    no signal tensor, no padding copy and one GEMM fewer per side. It wins at small
    multiplicities (the tensor-product benchmark: 2-4x, no gradients). At 32 channels it does
    more flops than separate channel mixes; the product of a degree-2 ``TPConv`` (32 channels)
    still measured 2.1-2.4 s forward + backward on 100,000 edges against 2.6-2.8 s for the
    unfolded grid path it replaced.
    """

    def __init__(self, lin1: _ToSignals, lin2: _ToSignals, combos, lin_out: _FromSignals,
                 Lout: int) -> None:
        super().__init__()
        L1, L2 = lin1.L, lin2.L
        # the projection integrand f1 f2 Y_out has degree D = L1 + L2 + Lout, integrated
        # exactly by floor(D / 2) + 1 Gauss-Legendre nodes in cos(theta) and D + 1 in phi
        D = L1 + L2 + Lout
        self.n_theta, self.n_phi = D // 2 + 1, D + 1
        self.channels, self.combos = lin1.channels, combos
        self.T1, self.T2, self.P = len(lin1.types), len(lin2.types), len(combos)
        self.checkpoint = False  # backward recomputes the grid values (set by the owner)
        self.dense = {}
        for name, lin in (("1", lin1), ("2", lin2)):
            rows, lam, wrow = self._in_plan(lin)
            self.register_static(f"rows{name}", rows)
            self.register_static(f"lam{name}", lam)
            self.register_static(f"wrow{name}", wrow)
            self.register_static(f"trig{name}", _trig(lin.L, self.n_phi).T.contiguous())
            # fold stage 1 and 2 into one (n_phi * K, dim) matrix when that is fewer flops:
            # inputs with few components per azimuthal order (single irreps)
            (R, n), K = rows.shape, len(lin.types) * self.n_theta * self.channels
            self.dense[name] = self.n_phi * K * lin.irreps.dim <= R * K * n + self.n_phi * R * K
        self.register_static("combo1", torch.tensor([a for a, _ in combos], dtype=torch.long))
        self.register_static("combo2", torch.tensor([b for _, b in combos], dtype=torch.long))
        self.register_static("trig_out", _trig(Lout, self.n_phi))  # (2Lo+1, n_phi)
        lam, wcol, gather = self._out_plan(lin_out, Lout)
        self.register_static("lam_out", lam)
        self.register_static("wcol_out", wcol)
        self.register_static("gather", gather)

    @staticmethod
    def _components(irreps: Irreps, L: int, slot: torch.Tensor):
        """Every component of ``irreps`` up to degree ``L`` by its place on the separable grid:
        yields ``(r, j, b, position, copy)``, azimuthal row ``r`` and slot ``j`` (Legendre factor
        ``lam[r, j]`` of :func:`_separable`), block ``b``, position in the irreps vector and the
        copy's index among all blocks' copies (its weight row or column)."""
        starts = [sl.start for sl in irreps.slices()]
        first_copy = np.cumsum([0] + [mul for mul, _ in irreps])
        for r in range(2 * L + 1):
            for j, k in enumerate(slot[r].tolist()):
                if k >= (L + 1) ** 2:
                    continue
                l = math.isqrt(k)
                for b, (mul, ir) in enumerate(irreps):
                    if ir.l == l:
                        for u in range(mul):
                            yield (r, j, b, starts[b] + u * (2 * l + 1) + k - l * l,
                                   int(first_copy[b]) + u)

    def _in_plan(self, lin: _ToSignals):
        """Per row ``r``: input rows ``(2L+1, n)`` (padded), their Legendre factors placed at
        their type, ``(2L+1, T, n_theta, n)``, and their weight rows ``(2L+1, n)``."""
        L, irreps = lin.L, lin.irreps
        slot, lam = _separable(L, self.n_theta)
        entries = [[] for _ in range(2 * L + 1)]
        for r, j, b, row, w in self._components(irreps, L, slot):
            entries[r].append((row, lam[r, j], w, lin.types.index(_type(irreps[b].ir))))
        n = max(1, max(len(e) for e in entries))
        rows = torch.zeros(2 * L + 1, n, dtype=torch.long)  # padding reads row 0 ...
        lams = torch.zeros(2 * L + 1, len(lin.types), self.n_theta, n,
                           dtype=torch.float64)  # ... times 0
        wrow = torch.zeros(2 * L + 1, n, dtype=torch.long)
        for r, es in enumerate(entries):
            for j, (row, lv, w, t) in enumerate(es):
                rows[r, j], lams[r, t, :, j], wrow[r, j] = row, lv, w
        return rows, lams, wrow

    def _out_plan(self, lin_out: _FromSignals, Lout: int):
        """Per row ``r``: output components, their weighted Legendre factors and weight columns."""
        slot, lam = _separable(Lout, self.n_theta)
        _, wz = np.polynomial.legendre.leggauss(self.n_theta)
        # projection: x_k = sum_i w_i Lam_k(theta_i) (2 pi / n_phi) sum_j V_ij T_mk(phi_j)
        lam = lam * torch.from_numpy(wz)[None, None, :] * (2 * math.pi / self.n_phi)
        irreps = lin_out.irreps_out
        entries = [[] for _ in range(2 * Lout + 1)]
        for r, j, b, out, w in self._components(irreps, Lout, slot):
            if lin_out._terms[b]:  # blocks of a type no product term has stay zero
                entries[r].append((out, lam[r, j], w))
        n = max(len(e) for e in entries) + 1  # >= 1 padding slot per row: a zero output row
        lams = torch.zeros(2 * Lout + 1, n, self.n_theta, dtype=torch.float64)
        wcol = torch.zeros(2 * Lout + 1, n, dtype=torch.long)
        gather = torch.full((irreps.dim,), n - 1, dtype=torch.long)  # row 0's last: zero
        for r, es in enumerate(entries):
            for j, (out, lv, w) in enumerate(es):
                lams[r, j], wcol[r, j], gather[out] = lv, w, r * n + j
        return lams, wcol, gather

    def _input_map(self, name: str, w: torch.Tensor, dim: int) -> torch.Tensor:
        """Stage 1 with the input weights ``w``: ``A (2L+1, K, n)``, ``K = T * n_theta * C``;
        or, folded with stage 2 into one matrix, ``(n_phi * K, dim)``."""
        rows, lam = getattr(self, f"rows{name}"), getattr(self, f"lam{name}")
        R, n = rows.shape
        wr = w[getattr(self, f"wrow{name}")].transpose(1, 2)  # (R, C, n)
        A = (lam[:, :, :, None, :] * wr[:, None, None]).reshape(R, -1, n)  # K: (t, i, c)
        if not self.dense[name]:
            return A
        G = A.new_zeros(R, A.shape[1], dim).scatter_add(2, rows[:, None].expand_as(A), A)
        trig = getattr(self, f"trig{name}")
        return (trig @ G.reshape(R, -1)).reshape(self.n_phi * A.shape[1], dim)

    def _grid_values(self, x, name, A):
        """Stages 1-2 of a batch-last chunk: ``x (dim, B)`` (any strides) -> grid values
        ``(n_phi, T, n_theta * C * B)``, and the gathered input rows (None when folded)."""
        B, T = x.shape[1], getattr(self, f"T{name}")
        if self.dense[name]:
            v, xp = A @ x, None
        else:
            R, K = A.shape[0], A.shape[1]
            xp = self._gathered(x, name)
            v = getattr(self, f"trig{name}") @ torch.bmm(A, xp).reshape(R, K * B)
        return v.reshape(self.n_phi, T, v.numel() // (self.n_phi * T)), xp

    def _gathered(self, x, name):
        """The staged path's input rows per azimuthal row: ``(2L+1, n, B)``."""
        rows = getattr(self, f"rows{name}")
        return x.index_select(0, rows.reshape(-1)).reshape(*rows.shape, x.shape[1])

    def _grid_values_backward(self, g_v, x, xp, name, A, need_x: bool, need_A: bool):
        """Gradients of :meth:`_grid_values`: ``(g_x (dim, B) | None, g_A | None)``; ``xp``
        the gathered rows of forward, or None to gather them again."""
        B = x.shape[1]
        if self.dense[name]:
            g_v = g_v.reshape(-1, B)
            return (A.T @ g_v if need_x else None), (g_v @ x.T if need_A else None)
        rows = getattr(self, f"rows{name}")
        (R, n), K = rows.shape, A.shape[1]
        g_c = (getattr(self, f"trig{name}").T @ g_v.reshape(self.n_phi, -1)).reshape(R, K, B)
        g_x = None
        if need_x:
            g_xp = torch.bmm(A.transpose(1, 2), g_c).reshape(R * n, B)
            g_x = g_c.new_zeros(x.shape[0], B).index_add_(0, rows.reshape(-1), g_xp)
        if not need_A:
            return g_x, None
        xp = self._gathered(x, name) if xp is None else xp
        return g_x, torch.bmm(g_c, xp.transpose(1, 2))

    def _products(self, x1, x2, wT, A1, A2, A_out, in_place: bool = False):
        """Stages 1-4 of a batch-last chunk ``(d1, B), (d2, B), (C, B) | None``: returns the
        grid values of both inputs per combination, their gathered rows, and the phi quadrature
        ``d`` before and after the per-sample weights, ``(2Lo+1, K * B)``. ``in_place`` (no
        autograd) multiplies into the first grid values."""
        v1, xp1 = self._grid_values(x1, "1", A1)
        v2, xp2 = self._grid_values(x2, "2", A2)
        v1 = v1.index_select(1, self.combo1) if self.T1 > 1 else v1
        v2 = v2.index_select(1, self.combo2) if self.T2 > 1 else v2
        v = v1.mul_(v2) if in_place and v1.shape == v2.shape else v1 * v2
        K, B = A_out.shape[2], x1.shape[1]
        d = self.trig_out @ v.reshape(self.n_phi, K * B)  # (2Lo+1, P * n_theta * C * B)
        return v1, v2, xp1, xp2, d, self._weighted(d, wT)

    def _weighted(self, d: torch.Tensor, wT: torch.Tensor | None) -> torch.Tensor:
        """The phi quadrature ``d (2Lo+1, K * B)`` times the per-sample weights ``(C, B)``."""
        if wT is None:
            return d
        return (d.reshape(-1, self.channels, wT.shape[-1]) * wT).reshape(d.shape)

    def _to_types(self, g: torch.Tensor, name: str) -> torch.Tensor:
        """Gradient on the combinations ``(n_phi, P, X)`` -> on input ``name``'s types."""
        T = getattr(self, f"T{name}")
        if T > 1:
            return g.new_zeros(self.n_phi, T, g.shape[-1]).index_add_(
                1, getattr(self, f"combo{name}"), g)
        return g.sum(1, keepdim=True) if g.shape[1] > 1 else g

    def _chunks(self, B: int) -> list[tuple[int, int]]:
        """Equal batch chunks of at most about CHUNK_VALUES grid values each."""
        per = max(32, CHUNK_VALUES // (self.n_phi * self.n_theta * self.P * self.channels))
        n_chunks = max(1, -(-B // per))
        size = max(1, -(-B // n_chunks))
        return [(s, min(s + size, B)) for s in range(0, B, size)]

    def forward(self, x1, x2, weight, w1, w2, w_out):
        """``x1 (B, d1), x2 (B, d2), weight (B, C) | None`` -> ``(B, d_out)``; ``w*``: the linear
        maps' weights (:meth:`_ToSignals.weight_rows`, :meth:`_FromSignals.weight_columns`)."""
        A1, A2 = self._input_map("1", w1, x1.shape[1]), self._input_map("2", w2, x2.shape[1])
        A_out = torch.einsum("rji,pcrj->rjpic", self.lam_out, w_out[:, :, self.wcol_out])
        A_out = A_out.reshape(*self.wcol_out.shape, self.P * self.n_theta * self.channels)
        return _GridFunction.apply(self, x1, x2, weight, A1, A2, A_out).T


_KEPT = (0, 1, 4)  # of _GridProduct._products per chunk, kept for backward: v1, v2, d


class _GridFunction(torch.autograd.Function):
    """The chunked grid product with a hand-written backward.

    Forward runs stages 1-5 chunk by chunk in cache and writes each chunk's rows straight into
    the one ``(d_out, B)`` output (no concatenation pass). Backward walks the stages back (every
    step a GEMM, a product or an ``index_add``) from the chunks' grid values, kept by forward
    when a gradient is wanted. Under ``create_graph`` (double backward, e.g. forces in a loss)
    it recomputes them from the saved inputs instead, so the backward itself is differentiable.
    """

    @staticmethod
    def forward(ctx, core, x1, x2, weight, A1, A2, A_out):
        ctx.core = core
        keep = any(ctx.needs_input_grad[1:]) and not core.checkpoint
        (Ro, n, K), B = A_out.shape, x1.shape[0]
        out = x1.new_empty(core.gather.numel(), B)
        kept = []  # per chunk: the intermediates backward reads
        for s, e in core._chunks(B):
            wT = None if weight is None else weight[s:e].T
            inter = core._products(x1[s:e].T, x2[s:e].T, wT, A1, A2, A_out, in_place=not keep)
            y = torch.bmm(A_out, inter[-1].reshape(Ro, K, e - s)).reshape(Ro * n, e - s)
            torch.index_select(y, 0, core.gather, out=out[:, s:e])
            if keep:  # the gathered rows and the weighted d are cheap to redo
                kept.extend(inter[k] for k in _KEPT)
        # saved through autograd (not as attributes), so memory probes and the in-place
        # modification checks see them
        ctx.save_for_backward(x1, x2, weight, A1, A2, A_out, *kept)
        ctx.kept = keep
        return out

    @staticmethod
    def backward(ctx, g_out):
        core = ctx.core
        x1, x2, weight, A1, A2, A_out, *kept = ctx.saved_tensors
        _, n1, n2, nw, nA1, nA2, nAo = ctx.needs_input_grad
        (Ro, n, K), C = A_out.shape, core.channels
        g_x1, g_x2, g_w, g_A1, g_A2, g_Ao = [], [], [], 0, 0, 0
        recompute = not ctx.kept or torch.is_grad_enabled()  # create_graph: from inputs
        for i, (s, e) in enumerate(core._chunks(x1.shape[0])):
            B = e - s
            xa, xb = x1[s:e].T, x2[s:e].T
            wT = None if weight is None else weight[s:e].T
            if recompute:
                v1, v2, xp1, xp2, d, dw = core._products(xa, xb, wT, A1, A2, A_out)
            else:
                (v1, v2, d), xp1, xp2 = kept[len(_KEPT) * i:len(_KEPT) * (i + 1)], None, None
                dw = core._weighted(d, wT)
            g_y = g_out.new_zeros(Ro * n, B).index_add_(0, core.gather, g_out[:, s:e])
            g_y = g_y.reshape(Ro, n, B)
            if nAo:
                g_Ao = g_Ao + torch.bmm(g_y, dw.reshape(Ro, K, B).transpose(1, 2))
            g_d = torch.bmm(A_out.transpose(1, 2), g_y)  # (2Lo+1, K, B)
            if wT is not None:
                g_d = g_d.reshape(-1, C, B)
                if nw:
                    g_w.append((g_d * d.reshape(-1, C, B)).sum(0).T)
                g_d = g_d * wT
            g_v = (core.trig_out.T @ g_d.reshape(Ro, K * B)).reshape(core.n_phi, core.P, -1)
            if n1 or nA1:
                gx, gA = core._grid_values_backward(core._to_types(g_v * v2, "1"), xa, xp1, "1",
                                                    A1, n1, nA1)
                g_x1 += [gx.T] if n1 else []
                g_A1 = g_A1 + gA if nA1 else g_A1
            if n2 or nA2:
                gx, gA = core._grid_values_backward(core._to_types(g_v * v1, "2"), xb, xp2, "2",
                                                    A2, n2, nA2)
                g_x2 += [gx.T] if n2 else []
                g_A2 = g_A2 + gA if nA2 else g_A2
        cat = lambda parts: torch.cat(parts) if parts else None  # noqa: E731
        return (None, cat(g_x1), cat(g_x2), cat(g_w), g_A1 if nA1 else None,
                g_A2 if nA2 else None, g_Ao if nAo else None)


class _SignalProductBase(StaticBuffers):
    def __init__(self, irreps_in1, irreps_in2, irreps_out, channels):
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

    def _check(self, x1, x2):
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
            (about 14 KB fewer per sample at 32 channels and degree 2), at the price of a
            second forward pass in backward.

    Shapes:
        - x1: ``(..., irreps_in1.dim)``, x2: ``(..., irreps_in2.dim)``
        - weight (optional): ``(..., channels)`` per-sample channel gains of the product
        - output: ``(..., irreps_out.dim)``
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, *, method: str = "grid",
                 channels: int | None = None, checkpoint: bool = False) -> None:
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

    def forward(self, x1, x2, weight: torch.Tensor | None = None) -> torch.Tensor:
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

    def __init__(self, irreps_in1, irreps_in2, irreps_out, *, channels: int | None = None):
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

    def forward(self, x1, x2, weight: torch.Tensor | None = None) -> torch.Tensor:
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
