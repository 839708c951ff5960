r"""Static tables of the Gaunt products on the sphere (float64, cached).

The Gauss-Legendre x uniform grid on S2 (:func:`tensorframes._math.sphere_quadrature`), e3nn's
real harmonics sampled on it with their tangential gradients, the trigonometric rows in ``phi``
and the separable factorisation ``Y_k(theta, phi) = Lam_k(theta) T_{m_k}(phi)`` that the grid
method of :mod:`tensorframes.o3._gaunt_grid` is built on. Also the batch chunk size both Gaunt
methods use.

Every harmonic here is "integral"-normalised (orthonormal on the sphere) and uses e3nn's polar
axis ``y``, so each one is a Legendre factor in ``theta`` times ``cos(m phi)`` or
``sin(|m| phi)``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._math import sphere_quadrature
from ._spherical_harmonics import spherical_harmonics

__all__: list[str] = []


#: Grid (or 2D Fourier) values per batch chunk of the Gaunt products (4 MB in float32).
CHUNK_VALUES = 1 << 20


@functools.cache
def _s2_grid(L: int, n_theta: int | None = None, n_phi: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre x uniform grid exact for polynomials of degree ``2L`` on the sphere.

    ``n_theta`` Gauss-Legendre nodes in ``cos theta`` integrate degree ``2 n_theta - 1`` exactly,
    ``n_phi`` uniform nodes in ``phi`` every frequency below ``n_phi``; the defaults are
    ``L + 1`` and ``2L + 1``. Returns ``(vec (n, 3), weights (n,))`` in float64 with
    ``sum_k w_k p(vec_k) = int_{S2} p``.
    """
    n_theta = L + 1 if n_theta is None else n_theta
    n_phi = 2 * L + 1 if n_phi is None else n_phi
    vec, w, _ = sphere_quadrature(n_theta, n_phi)
    return torch.from_numpy(vec), torch.from_numpy(w)


def _sh(L: int, vec: torch.Tensor) -> torch.Tensor:
    """All harmonics of degree ``<= L`` at ``vec``, "integral" normalisation: ``(n, (L+1)^2)``."""
    return spherical_harmonics(list(range(L + 1)), vec, normalize=False, normalization="integral")


@functools.cache
def _grid_harmonics(L: int, Lgrid: int) -> tuple[torch.Tensor, torch.Tensor]:
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
def _separable(L: int, n_theta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factorised harmonics: ``Y_k(theta_i, phi) = Lam_k(theta_i) T_{m_k}(phi)``.

    ``theta_i`` are the ``n_theta`` Gauss-Legendre nodes of :func:`_s2_grid`. Returns
    ``slot (2L+1, L+1)``: index of the harmonic ``k`` in azimuthal row ``m`` (``K`` = padding)
    and ``lam (2L+1, L+1, n_theta)`` its Legendre factor (0 for padding).
    """

    def azimuthal(n_theta: int) -> torch.Tensor:  # (K, 2L+1, n_theta): trig coefficients
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
