r"""PCA frames from local neighbourhoods, with per-axis sign disambiguation."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..graph import check_finite, knn_graph, radius_graph
from ._eigh3 import eigh3_packed
from ._frames import Frames

__all__ = ["AMBIGUITY_THRESHOLD", "PCAInfo", "pca"]

#: Relative eigen-gap scale of the ambiguity score (see :func:`pca`; internal).
GAP_TOL = 1e-2
#: Relative third-moment scale of the ambiguity score (see :func:`pca`; internal).
SKEW_TOL = 1e-3
#: Frames with ``ambiguity < AMBIGUITY_THRESHOLD`` have ``rel_gap > GAP_TOL`` and
#: ``rel_skew > SKEW_TOL`` for every axis: they are stable (see :func:`pca`).
AMBIGUITY_THRESHOLD = 0.5


class PCAInfo(NamedTuple):
    """Diagnostics returned by :func:`pca` with ``return_info=True``.

    Attributes:
        eigenvalues: ``(N, d)`` eigenvalues of the weighted covariance, descending.
        ambiguity: ``(N,)`` score in ``(0, 1]``; below :data:`AMBIGUITY_THRESHOLD` the frame
            is stable, 1 for degenerate neighbourhoods.
        rel_gap: ``(N,)`` smallest gap between consecutive eigenvalues over the largest.
        rel_skew: ``(N, d)`` per-axis ``|sum w (e.d)^3| / (sum w (e.d)^2 * rms|d|)``, clipped
            to ``[0, 1]`` (``d`` = offsets from the node).
    """

    eigenvalues: torch.Tensor
    ambiguity: torch.Tensor
    rel_gap: torch.Tensor
    rel_skew: torch.Tensor


def _ambiguity(vals: torch.Tensor, rel_skew: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lead = vals[:, 0]
    gaps = (vals[:, :-1] - vals[:, 1:]).amin(1) if vals.shape[1] > 1 else torch.ones_like(lead)
    pos = lead > torch.finfo(vals.dtype).tiny
    rel_gap = torch.where(pos, gaps / torch.where(pos, lead, torch.ones_like(lead)),
                          torch.zeros_like(lead)).clamp(0.0, 1.0)
    skew = rel_skew.amin(1)
    amb = torch.maximum(GAP_TOL / (GAP_TOL + rel_gap), SKEW_TOL / (SKEW_TOL + skew))
    return amb, rel_gap


def _edge_weights(weight, d2: torch.Tensor, s2: torch.Tensor) -> torch.Tensor | None:
    """Per-edge weights from squared edge lengths ``d2`` and the centre's mean ``s2``."""
    if isinstance(weight, str):
        if weight == "uniform":
            return None
        if weight == "gaussian":
            return torch.exp(-0.5 * d2 / s2.clamp_min(torch.finfo(d2.dtype).tiny))
        raise ValueError(f"weight must be 'uniform', 'gaussian', a callable or a tensor, "
                         f"got {weight!r}")
    if isinstance(weight, torch.Tensor):
        if weight.shape != d2.shape:
            raise ValueError(f"weight tensor must have shape ({d2.numel()},) (one per edge), "
                             f"got {tuple(weight.shape)}")
        return weight.to(d2.dtype)
    if callable(weight):
        w = weight(d2.sqrt(), s2.sqrt())
        if not isinstance(w, torch.Tensor) or w.shape != d2.shape:
            raise ValueError("a weight callable must return a tensor of shape (E,)")
        return w.to(d2.dtype)
    raise TypeError(f"weight must be a str, callable or tensor, got {type(weight).__name__}")


def _neighbourhood(pos, k, r, edge_index, batch, max_num_neighbors, backend):
    given = sum(a is not None for a in (k, r, edge_index))
    if given > 1:
        raise ValueError("pass only one of k, r and edge_index")
    if edge_index is not None:
        if (not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2
                or edge_index.shape[0] != 2):
            raise ValueError("edge_index must be a LongTensor of shape (2, E)")
        if edge_index.dtype != torch.long:
            raise TypeError(f"edge_index must be torch.long, got {edge_index.dtype}")
        return edge_index
    if r is not None:
        return radius_graph(pos, r, batch, loop=False,
                            max_num_neighbors=max_num_neighbors, backend=backend)
    return knn_graph(pos, 16 if k is None else k, batch, loop=False, backend=backend)


def pca(
    pos: torch.Tensor,
    *,
    k: int | None = None,
    r: float | None = None,
    edge_index: torch.Tensor | None = None,
    batch: torch.Tensor | None = None,
    weight: str | Callable | torch.Tensor = "uniform",
    center: str = "self",
    max_num_neighbors: int = 32,
    return_info: bool = False,
    backend: str | None = None,
) -> Frames | tuple[Frames, PCAInfo]:
    r"""Local PCA frames: eigenvectors of each node's weighted neighbourhood covariance.

    For node ``i`` with neighbours ``j`` (offsets :math:`d_{ij} = p_j - p_i`, weights
    :math:`w_{ij}`):

    .. math::
        C_i = \frac{\sum_j w_{ij} d_{ij} d_{ij}^\top}{\sum_j w_{ij}}
        \;(\texttt{center="self"}),\qquad
        C_i - m_i m_i^\top,\; m_i = \frac{\sum_j w_{ij} d_{ij}}{\sum_j w_{ij}}
        \;(\texttt{center="mean"}).

    **Rows** of the frame are the unit eigenvectors sorted by **descending** eigenvalue, so for
    a surface the last row is the normal direction.

    **Sign rule**, for each axis ``e`` independently: the sign of the third moment
    :math:`\sum_j w_{ij} (e \cdot d_{ij})^3` (offsets from the node itself, for both centring
    options) is made positive; if it is exactly zero, the first moment
    :math:`\sum_j w_{ij} e \cdot d_{ij}`; if that is zero too, the component of ``e`` of
    largest magnitude (lowest index on ties) is made positive (deterministic, not equivariant:
    such neighbourhoods are symmetric and get ambiguity 1). Hence
    ``pca(g x + t) = pca(x) g^T`` for every ``g`` in O(3) (determinants may be ``-1``), and
    frames are invariant to translations and to scaling (for ``k`` / ``edge_index``
    neighbourhoods; a radius ``r`` does not scale).

    **Ambiguity score** (``return_info=True``):

    .. math::
        a_i = \max\Big(\frac{\tau_g}{\tau_g + g_i}, \frac{\tau_s}{\tau_s + s_i}\Big),\quad
        g_i = \min_a \frac{\lambda_a - \lambda_{a+1}}{\lambda_1},\quad
        s_i = \min_a \min\Big(1, \frac{|\sum_j w (e_a\cdot d)^3|}
              {\sum_j w (e_a\cdot d)^2 \; \rho_i}\Big),\quad
        \rho_i^2 = \frac{\sum_j w |d|^2}{\sum_j w}

    with ``GAP_TOL`` :math:`=\tau_g = 10^{-2}` and ``SKEW_TOL``
    :math:`=\tau_s = 10^{-3}`. ``a < AMBIGUITY_THRESHOLD = 0.5`` iff every relative gap exceeds
    ``GAP_TOL`` and every relative skew exceeds ``SKEW_TOL``: then a relative perturbation
    ``delta`` of the neighbourhood moves the axes by ``O(delta / GAP_TOL)`` and cannot flip a
    sign unless ``delta`` is ``O(SKEW_TOL)`` -- in float32 (``delta ~ 1e-6``) the frame is
    reproducible to ``1e-4``. Degenerate neighbourhoods (no neighbours, duplicates, collinear,
    coplanar, isotropic) have score 1 and still get finite orthogonal frames.

    Eigen-solver: closed form for ``d = 3`` (:mod:`tensorframes.frames._eigh3`: trigonometric
    eigenvalues, cross-product eigenvector for the isolated eigenvalue, exact 2x2 rotation for
    the other two), ``torch.linalg.eigh`` otherwise. Moments are accumulated in one scatter
    pass (``index_add_``) over the edges: 2nd moments (covariance), 3rd moments (a symmetric
    tensor, contracted with the axes afterwards) and 1st moments.

    Args:
        pos (Tensor): ``(N, d)`` positions (finite; ``ValueError`` names a bad index).
        k (int, optional): neighbourhood = ``k`` nearest other points (default 16 when neither
            ``r`` nor ``edge_index`` is given).
        r (float, optional): neighbourhood = points closer than ``r`` (at most
            ``max_num_neighbors``).
        edge_index (LongTensor, optional): ``(2, E)`` graph, ``source_to_target``:
            ``edge_index[1]`` is the centre ``i``, ``edge_index[0]`` the neighbour ``j``.
        batch (LongTensor, optional): sorted batch vector (for ``k`` / ``r``).
        weight: ``"uniform"`` (default), ``"gaussian"`` (``exp(-|d|^2 / (2 s_i^2))`` with
            ``s_i^2`` the mean squared neighbour distance of ``i``: scale-invariant), a
            callable ``(dist (E,), s_i (E,)) -> (E,)`` or a tensor of ``E`` weights.
        center (str): ``"self"`` (default) or ``"mean"``, see above.
        return_info (bool): also return a :class:`PCAInfo`.

    Shapes:
        - input ``pos``: ``(N, d)``
        - output: :class:`Frames` of ``N`` matrices ``(d, d)`` [, :class:`PCAInfo`]
    """
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or not pos.is_floating_point():
        raise ValueError("pos must be a floating point tensor of shape (N, d), got "
                         f"{getattr(pos, 'shape', type(pos).__name__)}")
    if center not in ("self", "mean"):
        raise ValueError(f"center must be 'self' or 'mean', got {center!r}")
    check_finite(pos, "pos")
    ei = _neighbourhood(pos, k, r, edge_index, batch, max_num_neighbors, backend)
    if pos.shape[1] == 3:
        R, vals, rel_skew = _pca3(pos, ei, weight, center)
    else:
        R, vals, rel_skew = _pca_general(pos, ei, weight, center)
    frames = Frames(R)
    if not return_info:
        return frames
    amb, rel_gap = _ambiguity(vals, rel_skew)
    return frames, PCAInfo(vals, amb, rel_gap, rel_skew)


def _rel_skew(m3: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    ok = denom > 0
    return torch.where(ok, m3.abs() / torch.where(ok, denom, torch.ones_like(denom)),
                       torch.zeros_like(m3)).clamp(0.0, 1.0)


def _signs(m3, m1, axis_comps):
    """Per-axis sign (+-1): third moment, then first moment, then largest component."""
    one = torch.ones_like(m3)
    s3, s1 = torch.sign(m3), torch.sign(m1)
    # fallback: the largest-|.| component of the axis (lowest index on ties) made positive
    ax = [c.abs() for c in axis_comps]
    big = axis_comps[0]
    best = ax[0]
    for c, a in zip(axis_comps[1:], ax[1:], strict=True):
        take = a > best
        big = torch.where(take, c, big)
        best = torch.where(take, a, best)
    sf = torch.where(big < 0, -one, one)
    return torch.where(s3 != 0, s3, torch.where(s1 != 0, s1, sf))


#: Edges processed per block in the moment pass (keeps the per-edge features in cache).
EDGE_BLOCK = 1 << 15


def _edge_weights_block(weight, d2, s2_e, lo, hi):
    if isinstance(weight, torch.Tensor):
        return _edge_weights(weight[lo:hi], d2, s2_e)
    return _edge_weights(weight, d2, s2_e)


def _regular_degree(i: torch.Tensor, n: int) -> int:
    """``k`` if the targets are ``0,..,0, 1,..,1, ...`` with exactly ``k`` edges each (the layout
    of :func:`~tensorframes.graph.knn_graph` on clouds larger than ``k``), else 0. Such graphs
    take the dense path: per-node sums of contiguous blocks instead of a scatter."""
    E = i.numel()
    if n == 0 or E == 0 or E % n:
        return 0
    k = E // n
    nodes = torch.arange(n, device=i.device, dtype=i.dtype)
    return k if torch.equal(i.view(n, k), nodes[:, None].expand(n, k)) else 0


def _pca3(pos, ei, weight, center):
    n = pos.shape[0]
    j, i = ei[0], ei[1]
    E = j.numel()
    if isinstance(weight, torch.Tensor) and weight.shape != (E,):
        raise ValueError(f"weight tensor must have shape ({E},) (one per edge), "
                         f"got {tuple(weight.shape)}")
    pT = pos.t().contiguous()
    cnt = torch.bincount(i, minlength=n).to(pos.dtype)
    weighted = not (isinstance(weight, str) and weight == "uniform")
    needs_scale = weighted and not isinstance(weight, torch.Tensor)
    k = _regular_degree(i, n)
    step = max(1, EDGE_BLOCK // k) * k if k else EDGE_BLOCK  # regular: whole nodes per block
    blocks = [(lo, min(lo + step, E)) for lo in range(0, E, step)]

    def offsets(lo, hi, out=None):
        jj, ii = j[lo:hi], i[lo:hi]
        if k:  # the centres are a contiguous run of nodes: broadcast instead of gathering
            nb = (hi - lo) // k
            centre = pT[:, lo // k : lo // k + nb, None]
            neigh = pT.index_select(1, jj).view(3, nb, k)
            out3 = None if out is None else out.view(3, nb, k)
            return torch.sub(neigh, centre, out=out3).view(3, hi - lo), ii
        return torch.sub(pT.index_select(1, jj), pT.index_select(1, ii), out=out), ii

    def accumulate(acc, lo, hi, values, ii):
        """``acc[..., i] += values[..., e]`` over the block's edges."""
        if k:
            nb = (hi - lo) // k
            acc[..., lo // k : lo // k + nb] += values.unflatten(-1, (nb, k)).sum(-1)
        else:
            acc.index_add_(acc.dim() - 1, ii, values)

    s2 = None
    if needs_scale:  # mean squared neighbour distance per node (first, cheap pass)
        acc = pos.new_zeros(n)
        for lo, hi in blocks:
            d, ii = offsets(lo, hi)
            accumulate(acc, lo, hi, (d * d).sum(0), ii)
        s2 = acc / cnt.clamp_min(1)

    # One pass of moments, block by block (the block's features stay in cache); rows:
    # 2nd moments (6), 3rd moments (10), 1st moments (3) [, weight].
    nf = 20 if weighted else 19
    M = pos.new_zeros(nf, n)
    F = pos.new_empty(nf, min(step, max(E, 1)))
    for lo, hi in blocks:
        Fc = F[:, : hi - lo]
        d, ii = offsets(lo, hi, out=Fc[16:19])
        x, y, z = d[0], d[1], d[2]
        torch.mul(x, x, out=Fc[0])
        torch.mul(x, y, out=Fc[1])
        torch.mul(x, z, out=Fc[2])
        torch.mul(y, y, out=Fc[3])
        torch.mul(y, z, out=Fc[4])
        torch.mul(z, z, out=Fc[5])
        xx, xy, yy, zz = Fc[0], Fc[1], Fc[3], Fc[5]
        # T000 T001 T002 T011 T012 T022 T111 T112 T122 T222
        for c, (a, b) in enumerate(((xx, x), (xx, y), (xx, z), (yy, x), (xy, z), (zz, x),
                                    (yy, y), (yy, z), (zz, y), (zz, z))):
            torch.mul(a, b, out=Fc[6 + c])
        if weighted:
            d2 = xx + yy + zz
            s2_e = s2.index_select(0, ii) if s2 is not None else None
            w = _edge_weights_block(weight, d2, s2_e, lo, hi)
            Fc[:19] *= w
            Fc[19] = w
        accumulate(M, lo, hi, Fc, ii)
    W = M[19] if weighted else cnt
    Wc = torch.where(W > 0, W, torch.ones_like(W))
    cov = [M[c] / Wc for c in range(6)]
    if center == "mean":
        mx, my, mz = M[16] / Wc, M[17] / Wc, M[18] / Wc
        cov = [cov[0] - mx * mx, cov[1] - mx * my, cov[2] - mx * mz, cov[3] - my * my,
               cov[4] - my * mz, cov[5] - mz * mz]
    vals, vecs = eigh3_packed(*cov)
    T = [M[c] for c in range(6, 16)]
    c00, c01, c02, c11, c12, c22 = (M[c] / Wc for c in range(6))  # about the node itself
    rms = (c00 + c11 + c22).clamp_min(0).sqrt()
    rows, skews = [], []
    for e in vecs:
        ex, ey, ez = e
        m3 = (T[0] * ex * ex * ex + T[6] * ey * ey * ey + T[9] * ez * ez * ez
              + 3 * (T[1] * ex * ex * ey + T[2] * ex * ex * ez + T[3] * ex * ey * ey
                     + T[5] * ex * ez * ez + T[7] * ey * ey * ez + T[8] * ey * ez * ez)
              + 6 * T[4] * ex * ey * ez)
        m1 = M[16] * ex + M[17] * ey + M[18] * ez
        sg = _signs(m3, m1, e)
        rows.append(torch.stack([ex * sg, ey * sg, ez * sg], -1))
        q = (c00 * ex * ex + c11 * ey * ey + c22 * ez * ez
             + 2 * (c01 * ex * ey + c02 * ex * ez + c12 * ey * ez))
        skews.append(_rel_skew(m3, W * q.clamp_min(0) * rms))
    R = torch.stack(rows, 1)
    rel_skew = torch.stack(skews, 1)
    return R, torch.stack(vals, 1), rel_skew


def _pca_general(pos, ei, weight, center):
    """Reference-style path for any d (uses ``torch.linalg.eigh``)."""
    n, dim = pos.shape
    j, i = ei[0], ei[1]
    d = pos.index_select(0, j) - pos.index_select(0, i)
    d2 = (d * d).sum(1)
    zeros = pos.new_zeros(n)
    cnt = zeros.index_add(0, i, torch.ones_like(d2))
    s2 = zeros.index_add(0, i, d2) / cnt.clamp_min(1)
    w = _edge_weights(weight, d2, s2.index_select(0, i))
    w = torch.ones_like(d2) if w is None else w
    W = zeros.index_add(0, i, w)
    Wc = torch.where(W > 0, W, torch.ones_like(W))
    outer = (w[:, None, None] * d[:, :, None] * d[:, None, :]).reshape(-1, dim * dim)
    cov = pos.new_zeros(n, dim * dim).index_add_(0, i, outer).view(n, dim, dim) / Wc[:, None,
                                                                                    None]
    m1v = pos.new_zeros(n, dim).index_add_(0, i, w[:, None] * d)
    if center == "mean":
        mu = m1v / Wc[:, None]
        cov = cov - mu[:, :, None] * mu[:, None, :]
    vals, vecs = torch.linalg.eigh(cov)
    vals, R = vals.flip(-1), vecs.flip(-1).transpose(-1, -2)
    proj = (R.index_select(0, i) * d[:, None, :]).sum(-1)  # (E, dim)
    m3 = pos.new_zeros(n, dim).index_add_(0, i, w[:, None] * proj ** 3)
    m1 = (R * m1v[:, None, :]).sum(-1)
    sg = torch.stack([_signs(m3[:, a], m1[:, a], list(R[:, a].unbind(-1)))
                      for a in range(dim)], 1)
    R = R * sg[:, :, None]
    m2 = pos.new_zeros(n, dim).index_add_(0, i, w[:, None] * proj ** 2)
    rms = (zeros.index_add(0, i, w * d2) / Wc).clamp_min(0).sqrt()
    rel_skew = _rel_skew(m3, m2 * rms[:, None])
    return R, vals, rel_skew
