r"""The Fourier method of the Gaunt product (Luo et al., ICLR 2024) on spherical signals.

A signal of degree ``L`` (coefficients of e3nn's "integral" harmonics) extended to the torus
``(theta, phi)`` is a trigonometric polynomial of degree ``<= L`` in each angle. A precomputed
matrix gives its 2D Fourier coefficients; the pointwise product of two signals is the 2D
convolution of their coefficient arrays, done by FFT on an ``N x N`` array with
``N = 2 (L1 + L2) + 1`` (no aliasing); the precomputed exact map
``int_0^pi int_0^2pi e^{i(u theta + v phi)} Y_lm sin(theta)`` takes the result back to
spherical harmonics. Same numbers as the grid method (:mod:`tensorframes.o3._gaunt_grid`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ._s2grid import CHUNK_VALUES, _sh
from ._static import StaticBuffers

__all__: list[str] = []


def _torus_harmonics(L: int, N: int) -> torch.Tensor:
    """``Y_lm(theta_a, phi_b)`` on the uniform ``N x N`` torus grid: ``(N, N, (L+1)^2)``."""
    t = 2 * np.pi * np.arange(N) / N
    th, ph = np.meshgrid(t, t, indexing="ij")
    vec = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1)
    return _sh(L, torch.from_numpy(vec))


@functools.cache
def _fourier_maps(L1: int, L2: int, Lout: int) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Precomputed maps of the Fourier method (float64), ``Lt = L1 + L2``, ``N = 2 Lt + 1``.

    ``A1 (K1, M1)`` / ``A2``: complex 2D Fourier coefficients (``|u|, |v| <= L``, real and
    imaginary parts stacked as ``(2, K, M)``) of each harmonic; ``idx1`` / ``idx2``: flat
    positions of those coefficients in the wrapped ``N x N`` FFT array; ``B (2, N*N, Kout)``:
    projection of a coefficient array back to harmonics (real part of ``F @ B``).
    """
    Lt = L1 + L2
    N = 2 * Lt + 1

    def forward_map(L: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def _complex(dtype: torch.dtype) -> torch.dtype:
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]


class _FourierCore(StaticBuffers):
    """Fourier method on signals: ``(..., (L1+1)^2) x (..., (L2+1)^2) -> (..., (Lout+1)^2)``."""

    #: Fourier values per batch chunk (the grid method's policy); tests lower it.
    chunk_values: int = CHUNK_VALUES

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

    def _to_fourier(self, x: torch.Tensor, A: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
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
        # batch chunks of about chunk_values Fourier values (the grid method's policy), so the
        # intermediates stay in cache; same result as one chunk. split, not slices: a slice's
        # backward zero-fills the whole input gradient per chunk.
        chunk = max(32, self.chunk_values // (self.N * self.N))
        if x1.shape[0] == 0:  # MKL's FFT rejects empty batches
            return x1.new_zeros(*batch, self.B.shape[-1])
        if x1.shape[0] <= chunk:
            out = self._product(x1, x2)
        else:
            out = torch.cat([self._product(a, b) for a, b in
                             zip(x1.split(chunk), x2.split(chunk))], dim=0)
        return out.reshape(*batch, out.shape[-1])
