r"""PCA frames from local neighbourhoods, with per-axis sign disambiguation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .._checks import check_edge_index, check_weights
from ..graph import check_finite, knn_graph, radius_graph
from ._frames import Frames
from ._moments import (
    SIGN_RULES,
    SIGN_TOL,
    _pca3,
    _pca_general,
    sign_threshold,
    tie_break,
)
from ._scaling import global_exponent, ldexp, pow2_exponent, scaled_radius

__all__ = ["AMBIGUITY_THRESHOLD", "SIGN_RULES", "SIGN_TOL", "PCAInfo", "pca"]

#: Relative eigen-gap scale of the ambiguity score (see :func:`pca`; internal).
GAP_TOL = 1e-2
#: Relative third-moment scale of the ambiguity score (see :func:`pca`; internal).
SKEW_TOL = 1e-3
#: Frames with ``ambiguity < AMBIGUITY_THRESHOLD`` have ``rel_gap > GAP_TOL`` and
#: ``rel_skew > SKEW_TOL`` for every axis: they are stable (see :func:`pca`).
AMBIGUITY_THRESHOLD = 0.5
#: k-NN neighbourhoods whose k-th and (k+1)-th neighbour distances differ by at most
#: ``KNN_TIE_TOL * eps * (|p| + distance)`` are flagged ``ambiguous`` (see :func:`pca`).
KNN_TIE_TOL = 16


class PCAInfo(NamedTuple):
    """Diagnostics returned by :func:`pca` with ``return_info=True``.

    Attributes:
        eigenvalues: ``(N, d)`` eigenvalues of the weighted covariance, descending.
        ambiguity: ``(N,)`` score in ``(0, 1]``; below :data:`AMBIGUITY_THRESHOLD` the frame
            is stable, 1 for degenerate neighbourhoods.
        rel_gap: ``(N,)`` smallest gap between consecutive eigenvalues over the largest.
        rel_skew: ``(N, d)`` per-axis ``|sum w (e.d)^3| / (sum w (e.d)^2 * rms|d|)``, clipped
            to ``[0, 1]`` (``d`` = offsets from the node).
        sign_rule: ``(N, d)`` int8, per axis the index in :data:`SIGN_RULES` of the rule that
            fixed its sign (0: the neighbourhood's third moment, ..., 6: ``"fallback"``).
        ambiguous: ``(N,)`` bool, the frame is not determined equivariantly: some axis fell
            to the fallback rule, or ``rel_gap < GAP_TOL`` (axes free to turn in a plane).
    """

    eigenvalues: torch.Tensor
    ambiguity: torch.Tensor
    rel_gap: torch.Tensor
    rel_skew: torch.Tensor
    sign_rule: torch.Tensor
    ambiguous: torch.Tensor


def _ambiguity(vals: torch.Tensor, rel_skew: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lead = vals[:, 0]
    gaps = (vals[:, :-1] - vals[:, 1:]).amin(1) if vals.shape[1] > 1 else torch.ones_like(lead)
    pos = lead > torch.finfo(vals.dtype).tiny
    rel_gap = torch.where(pos, gaps / torch.where(pos, lead, torch.ones_like(lead)),
                          torch.zeros_like(lead)).clamp(0.0, 1.0)
    skew = rel_skew.amin(1)
    amb = torch.maximum(GAP_TOL / (GAP_TOL + rel_gap), SKEW_TOL / (SKEW_TOL + skew))
    return amb, rel_gap


def _neighbourhood(pos, k, r, edge_index, batch, max_num_neighbors, backend):
    """``(edge_index, ties)``: ``ties`` ``(N,)`` is the (k+1)-th neighbour's distance where the
    k-th and (k+1)-th neighbours are equally far up to round-off, else 0 (None when not
    checked)."""
    given = sum(a is not None for a in (k, r, edge_index))
    if given > 1:
        raise ValueError("pass only one of k, r and edge_index")
    if edge_index is not None:
        check_edge_index(edge_index, pos.shape[0])
        return edge_index.long(), None
    if r is not None:
        return radius_graph(pos, r, batch, loop=False,
                            max_num_neighbors=max_num_neighbors, backend=backend), None
    k = 16 if k is None else k
    ei = knn_graph(pos, k + 1, batch, loop=False, backend=backend)
    n = pos.shape[0]
    nodes = torch.arange(n, device=pos.device)
    if n == 0 or ei.shape[1] != n * (k + 1) or not torch.equal(
            ei[1].view(n, k + 1), nodes[:, None].expand(n, k + 1)):  # a cloud of <= k + 1
        return knn_graph(pos, k, batch, loop=False, backend=backend), None
    j = ei[0].view(n, k + 1)
    d = (pos.index_select(0, j[:, k - 1:].reshape(-1)).view(n, 2, -1) - pos[:, None]).norm(
        dim=2)
    eps = torch.finfo(pos.dtype).eps
    ties = (d[:, 1] - d[:, 0]) <= KNN_TIE_TOL * eps * (pos.norm(dim=1) + d[:, 1])
    ties = torch.where(ties, d[:, 1], torch.zeros_like(d[:, 1]))  # distance where tied
    i = nodes.repeat_interleave(k)
    return torch.stack([j[:, :k].reshape(-1), i]), ties


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

    **Sign rule**, for each axis ``e`` independently: the first of these quantities that is
    *decisive* fixes the sign (made positive); each is a rotation/reflection-covariant function
    of the cloud (it changes sign with ``e``), so every rule is O(3)-equivariant by
    construction. ``PCAInfo.sign_rule`` says which rule decided (index in ``SIGN_RULES``):

    0. ``third_moment``: :math:`\sum_j w_{ij} (e \cdot d_{ij})^3` over the neighbourhood
       (offsets from the node itself, for both centring options), the rule used alone before;
    1. ``first_moment``: :math:`\sum_j w_{ij} e \cdot d_{ij}` (the direction to the
       neighbourhood's weighted centroid);
    2. ``two_hop_third_moment`` and 3. ``two_hop_first_moment``: the third and first moments
       over the two-hop multiset (every neighbour ``j`` with weight 1 and ``j``'s own
       neighbourhood with ``j``'s weights, offsets from ``i``; about twice as wide, computed
       from the per-node moments of the first pass, no second search; ``d = 3`` only, like
       rule 1);
    4. ``cloud_third_moment`` and 5. ``cloud_first_moment``: over the node's whole cloud
       (its batch element; pass ``batch`` when ``edge_index`` holds several clouds), i.e.
       the skew of the cloud seen from the node and the direction to the cloud's centroid;
    6. ``fallback``: no equivariant choice was found (an exactly symmetric neighbourhood and
       cloud, e.g. the centre of a symmetric grid): the component of ``e`` of largest
       magnitude (lowest index on ties) is made positive -- deterministic, **not**
       equivariant, and the node is flagged ``PCAInfo.ambiguous``.

    A moment of order ``m`` over ``n`` points with rms offset :math:`\rho` from the node is
    decisive when :math:`|M| > \tau n \rho^m` with
    :math:`\tau = \max(\texttt{SIGN_TOL}, \epsilon\, |p_i| / \rho)`, ``SIGN_TOL`` ``=
    1e-5`` and :math:`\epsilon` the dtype's machine epsilon: relative and scale-free.
    ``SIGN_TOL`` sits about 300 times above the largest third moment whose sign a float32
    rotation of the synthetic clouds was seen to flip (``3e-8``) and below the third moments
    of noisy surfaces (on the default ``SyntheticShapes`` with ``noise=0.01``, about 1% of the
    normals' third moments are below it); the second term takes over for points far from the
    origin against their neighbourhood (coordinate round-off :math:`\epsilon |p|`; it can
    make a decision depend on the origin there). The rules after the first run only on the
    nodes that need them. Hence ``pca(g x + t) = pca(x) g^T`` for every ``g`` in O(3)
    (determinants may be ``-1``; no handedness is imposed) wherever ``ambiguous`` is False,
    and frames are invariant to translations and to scaling (for ``k`` / ``edge_index``
    neighbourhoods; a radius ``r`` does not scale).

    **Other sources of broken symmetry.** ``ambiguous`` also flags nodes whose eigenvalues
    nearly coincide (``rel_gap < GAP_TOL``: the axes may turn in their plane) and, for ``k``
    neighbourhoods, nodes whose ``k``-th and ``(k+1)``-th neighbours are equally far up to
    round-off (``KNN_TIE_TOL * eps * (|p| + distance)``: which one is kept depends on
    round-off); a two-hop moment counts as decisive only if it exceeds its threshold by more
    than such a tie at a neighbour could change it. With ``edge_index`` the
    graph is the caller's: its ties (k-NN at equal distances, farthest-point sampling at equal
    distances) are not seen here. The cloud rules use the whole cloud, so a cloud cut into
    tiles can get other signs at nodes decided by rules 4-5.

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

    **Magnitudes**: frames, ``rel_gap``, ``rel_skew`` and the ambiguity score are exact (to
    round-off, never NaN) for every finite input, from subnormal coordinates to the largest
    float. A cloud whose extent (largest coordinate range) lies outside
    ``[2**-16, 2**16]`` is first multiplied by a power of two (exact: only exponents change)
    that brings its extent to ``[0.5, 1)``, so neighbour search and moments see unit-scale
    offsets (a radius ``r`` is rescaled with it, a weight callable still receives distances in
    the units of ``pos``); nodes whose neighbourhood is still tiny against the extent (mean
    squared offset below ``2**-40`` of the squared extent: a cluster far smaller than the
    cloud, with ``edge_index`` given) are recomputed with their own power-of-two scale. For
    ``d != 3`` only the first, global rescaling is done. ``info.eigenvalues`` are reported in
    the units of ``pos`` squared and may over- or underflow the dtype (``inf`` / 0, e.g. above
    ``|d| ~ 1e19`` in float32); the score is computed before that and is unaffected.

    **Gradients**: differentiable with respect to ``pos`` and a ``weight`` tensor (and through
    a weight callable). When neither requires grad (or under ``torch.no_grad``) the fast
    buffered path runs; otherwise the same closed-form forward builds the autograd graph and
    the eigen-decomposition has an analytic backward (same frames in both modes, bit for bit).
    Neighbourhoods (``k`` / ``r``) are chosen without gradient, and the axis signs are
    piecewise constant (zero gradient; the frame jumps where a sign flips, i.e. where the
    ambiguity score is high). Where two eigenvalues coincide the axes of their plane are not
    determined and their gradient is undefined: the rotation term of that pair is dropped (see
    :mod:`tensorframes.frames._eigh3`), so gradients stay finite (no NaN) but are meaningless
    there; near-coincident eigenvalues give gradients of size ``1 / gap``. The ``d != 3`` path
    uses ``torch.linalg.eigh``, whose backward is NaN/inf at coincident eigenvalues.

    **Input checks**: ``edge_index`` must be an integer ``(2, E)`` tensor with entries in
    ``[0, N)`` (``TypeError`` / ``ValueError`` naming the argument, the entry and the range,
    via ``tensorframes._checks.check_edge_index``); a ``weight`` tensor (or a callable's
    output) must be finite and ``>= 0`` (``ValueError`` naming the index and value). These
    checks read the values once (one device sync each) and are skipped under
    ``torch.compile``.

    Args:
        pos (Tensor): ``(N, d)`` positions (finite; ``ValueError`` names a bad index).
        k (int, optional): neighbourhood = ``k`` nearest other points (default 16 when neither
            ``r`` nor ``edge_index`` is given).
        r (float, optional): neighbourhood = points closer than ``r`` (at most
            ``max_num_neighbors``).
        edge_index (LongTensor, optional): ``(2, E)`` integer graph, ``source_to_target``:
            ``edge_index[1]`` is the centre ``i``, ``edge_index[0]`` the neighbour ``j``.
        batch (LongTensor, optional): sorted batch vector (for ``k`` / ``r``).
        weight: ``"uniform"`` (default), ``"gaussian"`` (``exp(-|d|^2 / (2 s_i^2))`` with
            ``s_i^2`` the mean squared neighbour distance of ``i``: scale-invariant), a
            callable ``(dist (E,), s_i (E,)) -> (E,)`` or a tensor of ``E`` weights (finite,
            ``>= 0``).
        center (str): ``"self"`` (default) or ``"mean"``, see above.
        return_info (bool): also return a :class:`PCAInfo`.

    Shapes:
        - input ``pos``: ``(N, d)``
        - output: :class:`Frames` of ``N`` matrices ``(d, d)`` [, :class:`PCAInfo`]
    """
    if not isinstance(pos, torch.Tensor) or not pos.is_floating_point():
        got = pos.dtype if isinstance(pos, torch.Tensor) else type(pos).__name__
        raise TypeError(f"pos must be a floating point tensor of shape (N, d), got {got}")
    if pos.dim() != 2:
        raise ValueError(f"pos must be a floating point tensor of shape (N, d), got shape "
                         f"{tuple(pos.shape)}")
    if center not in ("self", "mean"):
        raise ValueError(f"center must be 'self' or 'mean', got {center!r}")
    check_finite(pos, "pos")
    e0, extent = global_exponent(pos)
    pos_s = ldexp(pos, -e0)
    r_s = None if r is None else scaled_radius(r, e0)
    ei, ties = _neighbourhood(pos_s.detach(), k, r_s, edge_index, batch, max_num_neighbors,
                              backend)
    if isinstance(weight, torch.Tensor):
        check_weights(weight, ei.shape[1])
    grad = torch.is_grad_enabled() and (
        pos.requires_grad or (isinstance(weight, torch.Tensor) and weight.requires_grad))
    if pos.shape[1] == 3:
        R, vals, rel_skew, s3, ms, W, mom = _pca3(pos_s, ei, weight, center, grad=grad,
                                                   unit_exp=e0)
        tau0 = sign_threshold(ms.detach().sqrt(), pos_s.detach().norm(dim=1))
        R, vals, rel_skew, s3, tau0, vals_exp = _rescue_small_neighbourhoods(
            pos, pos_s, ei, weight, center, grad, e0, extent,
            (R, vals, rel_skew, s3, tau0, ms, W))
    else:
        R, vals, rel_skew, s3, ms = _pca_general(pos_s, ei, weight, center, unit_exp=e0)
        mom = None
        tau0 = sign_threshold(ms.detach().sqrt(), pos_s.detach().norm(dim=1))
        vals_exp = None
    flip, rule = tie_break(pos_s, R, s3, tau0, ei, batch, ties, mom)
    ties = None if ties is None else ties > 0
    R = R * flip[:, :, None]
    frames = Frames(R)
    if not return_info:
        return frames
    amb, rel_gap = _ambiguity(vals, rel_skew)  # per node scale-invariant: working units
    if vals_exp is not None:
        vals = ldexp(vals, 2 * vals_exp[:, None], chunks=6)
    else:
        vals = ldexp(vals, 2 * e0)
    ambiguous = (rule == len(SIGN_RULES) - 1).any(1) | (rel_gap < GAP_TOL)
    if ties is not None:
        ambiguous = ambiguous | ties
    return frames, PCAInfo(vals, amb, rel_gap, rel_skew, rule, ambiguous)


#: Nodes whose mean squared offset is below ``2**-SMALL_EXP2`` times the squared extent (in
#: working units) are recomputed with their own power-of-two scale (see :func:`pca`).
SMALL_EXP2 = 40


def _rescue_small_neighbourhoods(pos, pos_s, ei, weight, center, grad, e0, extent, result):
    """Recompute the nodes whose neighbourhood is tiny against the cloud's extent (its third
    moments could underflow in working units) with a per-node power-of-two scale."""
    R, vals, rel_skew, s3, tau0, ms, W = result
    n = pos.shape[0]
    if n == 0 or ei.shape[1] == 0 or extent == 0:
        return R, vals, rel_skew, s3, tau0, None
    flag = (W > 0) & (ms < extent * extent * 2.0 ** -SMALL_EXP2)
    if not bool(flag.any()):
        return R, vals, rel_skew, s3, tau0, None
    emask = flag.index_select(0, ei[1])
    sub = ei[:, emask]
    # offsets from unscaled positions when they cannot overflow, else from the scaled ones
    max_exp = math.frexp(torch.finfo(pos.dtype).max)[1]
    raw_ok = e0 <= 0 or e0 + math.frexp(extent)[1] < max_exp
    base, eb = (pos, 0) if raw_ok else (pos_s, e0)
    d = (base.detach().index_select(0, sub[0]) - base.detach().index_select(0, sub[1]))
    amax = d.new_zeros(n).scatter_reduce(0, sub[1], d.abs().amax(1), "amax")
    en = pow2_exponent(amax)
    flag = flag & (amax > 0)
    if not bool(flag.any()):
        return R, vals, rel_skew, s3, tau0, None
    w_sub = weight[emask] if isinstance(weight, torch.Tensor) else weight
    R2, vals2, skew2, s32, ms2, _, _ = _pca3(base, sub, w_sub, center, grad=grad,
                                          node_exp=-en, unit_exp=eb)
    f = flag[:, None]
    R = torch.where(flag[:, None, None], R2, R)
    vals = torch.where(f, vals2, vals)
    rel_skew = torch.where(f, skew2, rel_skew)
    s3 = torch.where(f, s32, s3)
    size = ldexp(base.detach().norm(dim=1), -en, chunks=6)  # node units, like ms2
    tau0 = torch.where(flag, sign_threshold(ms2.sqrt(), size), tau0)
    vals_exp = torch.where(flag, (eb + en).to(torch.int64), torch.full_like(en, e0,
                                                                             dtype=torch.int64))
    return R, vals, rel_skew, s3, tau0, vals_exp
