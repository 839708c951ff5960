r"""Moments of local neighbourhoods and their eigen-decomposition (internal to :func:`pca`).

:func:`_pca3` is the fast ``d = 3`` path (one blocked pass of moments, closed-form
eigen-solver, sign disambiguation), :func:`_pca_general` the reference-style path for any ``d``.
"""

from __future__ import annotations

import torch

from .._checks import check_weights
from ._eigh3 import eigh3_packed, eigh3_packed_differentiable
from ._scaling import ldexp


def _edge_weights(weight, d2: torch.Tensor, s2: torch.Tensor, unscale=None) -> torch.Tensor | None:
    """Per-edge weights from squared edge lengths ``d2`` and the centre's mean ``s2`` (in
    working units; ``unscale`` maps a working-unit length back to the units of ``pos``)."""
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
        dist, s = d2.sqrt(), s2.sqrt()
        if unscale is not None:
            dist, s = unscale(dist), unscale(s)
        w = weight(dist, s)
        if not isinstance(w, torch.Tensor) or w.shape != d2.shape:
            raise ValueError("a weight callable must return a tensor of shape (E,)")
        check_weights(w.to(d2.dtype), w.shape[0], name="weight(dist, s)")
        return w.to(d2.dtype)
    raise TypeError(f"weight must be a str, callable or tensor, got {type(weight).__name__}")


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


def _edge_weights_block(weight, d2, s2_e, lo, hi, unscale):
    if isinstance(weight, torch.Tensor):
        return _edge_weights(weight[lo:hi], d2, s2_e)
    return _edge_weights(weight, d2, s2_e, unscale)


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


def _pca3(pos, ei, weight, center, *, grad=False, node_exp=None, unit_exp=0):
    """Frames of 3-d neighbourhoods. ``pos`` is in working units (``2**unit_exp`` of the
    caller's units); ``node_exp`` (``(N,)`` ints, optional) further scales the offsets of node
    ``i``'s edges by ``2**node_exp[i]``. ``grad``: build the autograd graph (no ``out=``
    buffers). Returns ``(R, eigenvalues, rel_skew, s3, mean squared offset, total weight,
    moments)``, the eigenvalues and mean squared offsets in working units, ``moments``
    ``(20, N)`` the weighted sums of 2nd (6), 3rd (10) and 1st (3) powers of the offsets and
    the total weight; ``s3`` ``(N, 3)`` is
    ``|sum w (e.d)^3| / (W rms^3)``, the third moment's strength that :func:`tie_break` tests."""
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
            if node_exp is not None:
                e = node_exp[lo // k : lo // k + nb, None]
                return ldexp(neigh - centre, e).view(3, hi - lo), ii
            out3 = None if out is None else out.view(3, nb, k)
            return torch.sub(neigh, centre, out=out3).view(3, hi - lo), ii
        if node_exp is not None:
            d = pT.index_select(1, jj) - pT.index_select(1, ii)
            return ldexp(d, node_exp.index_select(0, ii)), ii
        return torch.sub(pT.index_select(1, jj), pT.index_select(1, ii), out=out), ii

    def unscale_for(ii):
        """Working-unit lengths of the block's edges back to the caller's units."""
        if node_exp is None:
            return (lambda x: ldexp(x, unit_exp)) if unit_exp else None
        e = unit_exp - node_exp.index_select(0, ii)
        return lambda x: ldexp(x, e)

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
    F = None if grad or node_exp is not None else pos.new_empty(nf, min(step, max(E, 1)))
    for lo, hi in blocks:
        if F is None:  # autograd-friendly: fresh tensors, no out= buffers
            d, ii = offsets(lo, hi)
            x, y, z = d[0], d[1], d[2]
            xx, xy, xz, yy, yz, zz = x * x, x * y, x * z, y * y, y * z, z * z
            feats = [xx, xy, xz, yy, yz, zz] + [
                a * b for a, b in ((xx, x), (xx, y), (xx, z), (yy, x), (xy, z), (zz, x),
                                   (yy, y), (yy, z), (zz, y), (zz, z))] + [x, y, z]
            if weighted:
                s2_e = s2.index_select(0, ii) if s2 is not None else None
                w = _edge_weights_block(weight, xx + yy + zz, s2_e, lo, hi, unscale_for(ii))
                feats = [f * w for f in feats] + [w]
            accumulate(M, lo, hi, torch.stack(feats), ii)
            continue
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
            w = _edge_weights_block(weight, d2, s2_e, lo, hi, unscale_for(ii))
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
    vals, vecs = (eigh3_packed_differentiable if grad else eigh3_packed)(*cov)
    T = [M[c] for c in range(6, 16)]
    c00, c01, c02, c11, c12, c22 = (M[c] / Wc for c in range(6))  # about the node itself
    ms = (c00 + c11 + c22).clamp_min(0)
    rms = ms.sqrt()
    rows, skews, s3s = [], [], []
    okr = (W > 0) & (ms > 0)
    cube = torch.where(okr, W * ms * rms, torch.ones_like(ms)).detach()
    for e in vecs:
        ex, ey, ez = e
        m3 = (T[0] * ex * ex * ex + T[6] * ey * ey * ey + T[9] * ez * ez * ez
              + 3 * (T[1] * ex * ex * ey + T[2] * ex * ex * ez + T[3] * ex * ey * ey
                     + T[5] * ex * ez * ez + T[7] * ey * ey * ez + T[8] * ey * ez * ez)
              + 6 * T[4] * ex * ey * ez)
        m1 = M[16] * ex + M[17] * ey + M[18] * ez
        sg = _signs(m3.detach(), m1.detach(), [c.detach() for c in e])
        rows.append(torch.stack([ex * sg, ey * sg, ez * sg], -1))
        q = (c00 * ex * ex + c11 * ey * ey + c22 * ez * ez
             + 2 * (c01 * ex * ey + c02 * ex * ez + c12 * ey * ez))
        skews.append(_rel_skew(m3, W * q.clamp_min(0) * rms))
        s3s.append(torch.where(okr, m3.detach().abs() / cube, torch.zeros_like(cube)))
    R = torch.stack(rows, 1)
    rel_skew = torch.stack(skews, 1)
    s3 = torch.stack(s3s, 1)
    mom = torch.cat([M[:19], W[None]]).detach()  # for the two-hop tie-break rules
    return R, torch.stack(vals, 1), rel_skew, s3, ms.detach(), W.detach(), mom


def _pca_general(pos, ei, weight, center, unit_exp=0):
    """Reference-style path for any d (uses ``torch.linalg.eigh``); ``pos`` in working units
    (``2**unit_exp`` of the caller's)."""
    n, dim = pos.shape
    j, i = ei[0], ei[1]
    d = pos.index_select(0, j) - pos.index_select(0, i)
    d2 = (d * d).sum(1)
    zeros = pos.new_zeros(n)
    cnt = zeros.index_add(0, i, torch.ones_like(d2))
    s2 = zeros.index_add(0, i, d2) / cnt.clamp_min(1)
    w = _edge_weights(weight, d2, s2.index_select(0, i),
                      (lambda x: ldexp(x, unit_exp)) if unit_exp else None)
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
    cube = (W * rms ** 3)[:, None]
    s3 = torch.where(cube > 0, m3.abs() / torch.where(cube > 0, cube, torch.ones_like(cube)),
                     torch.zeros_like(m3))
    return R, vals, rel_skew, s3, rms * rms


# ---------------------------------------------------------------------------- sign tie-break
#: Relative floor of every sign test of :func:`tie_break` (see :func:`~tensorframes.frames.pca`).
SIGN_TOL = 1e-5
#: Names of the sign rules, indexed by ``PCAInfo.sign_rule``.
SIGN_RULES = ("third_moment", "first_moment", "two_hop_third_moment", "two_hop_first_moment",
              "cloud_third_moment", "cloud_first_moment", "fallback")
#: Points per chunk when accumulating the clouds' moment tensors.
_CLOUD_CHUNK = 1 << 16


def sign_threshold(rho: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Relative threshold of a moment test at rms offset ``rho`` about a point at distance
    ``size`` from the origin: ``max(SIGN_TOL, eps * size / rho)`` (``inf`` where ``rho`` is 0:
    the rounding of the coordinates, ``eps * size``, against the offsets)."""
    eps = torch.finfo(rho.dtype).eps
    pos = rho > 0
    t = eps * size / torch.where(pos, rho, torch.ones_like(rho))
    return torch.where(pos, t.clamp_min(SIGN_TOL), torch.full_like(rho, float("inf")))


def _cloud_stats(pos: torch.Tensor, batch: torch.Tensor | None):
    """Per node: its cloud's id, and per cloud: count, centroid and radius (max distance of a
    point from the centroid)."""
    n = pos.shape[0]
    if batch is None:
        cid = torch.zeros(n, dtype=torch.long, device=pos.device)
    else:
        cid = torch.unique_consecutive(batch, return_inverse=True)[1]
    nb = int(cid[-1]) + 1 if n else 0
    cnt = torch.zeros(nb, dtype=pos.dtype, device=pos.device).index_add_(
        0, cid, torch.ones_like(pos[:, 0]))
    cen = pos.new_zeros(nb, pos.shape[1]).index_add_(0, cid, pos) / cnt.clamp_min(1)[:, None]
    u = pos - cen.index_select(0, cid)
    rad = pos.new_zeros(nb).scatter_reduce(0, cid, u.norm(dim=1), "amax", include_self=True)
    return cid, cnt, cen, rad


def _sums(values: torch.Tensor, index: torch.Tensor, m: int) -> torch.Tensor:
    return values.new_zeros((m,) + values.shape[1:]).index_add_(0, index, values)


def _decide(sign, rule, und, x, cnt, rho, order, tau_rad, code, slack=None):
    """Where ``und`` and ``|x| > tau * cnt * rho**order (+ slack)``: take ``sign(x)``, rule
    ``code``."""
    tau = sign_threshold(rho, tau_rad)[:, None]
    bound = tau * (cnt * rho ** order)[:, None]
    if slack is not None:
        bound = bound + slack[:, None]
    ok = und & (x.abs() > bound)
    sign = torch.where(ok, torch.sign(x), sign)
    rule = torch.where(ok, torch.full_like(rule, code), rule)
    return sign, rule, und & ~ok


def tie_break(pos: torch.Tensor, R: torch.Tensor, s3: torch.Tensor, tau0: torch.Tensor,
              ei: torch.Tensor, batch: torch.Tensor | None,
              tie_dist: torch.Tensor | None = None, mom: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Equivariant sign tie-break of :func:`~tensorframes.frames.pca` (no gradient).

    ``pos`` ``(N, d)`` (working units), ``R`` ``(N, d, d)`` the frames after the third-moment
    rule, ``s3`` ``(N, d)`` its strengths, ``tau0`` ``(N,)`` their thresholds, ``ei`` the
    neighbourhood graph, ``tie_dist`` ``(N,)`` the k-th neighbour's distance where the
    neighbourhood has a k-NN tie, else 0 (or None): a two-hop moment must exceed its
    threshold by the most that swapping the tied points can change it. Returns
    ``(flip, rule)``: ``(N, d)`` factors +-1 for the rows of ``R`` and the index in
    :data:`SIGN_RULES` of the rule that decided each axis. ``mom``: the per-node moments of
    :func:`_pca3` (``d = 3``); without them (``d != 3``) rules 1-3 are skipped."""
    pos = pos.detach()
    R = R.detach()
    n, dim = pos.shape
    flip = torch.ones(n, dim, dtype=pos.dtype, device=pos.device)
    rule = torch.zeros(n, dim, dtype=torch.int8, device=pos.device)
    if n == 0:
        return flip, rule
    need_ax = ~(s3 > tau0[:, None])
    nodes = need_ax.any(1).nonzero().flatten()
    if nodes.numel() == 0:
        return flip, rule
    m = nodes.numel()
    Rn, und = R.index_select(0, nodes), need_ax[nodes]
    radn = pos.index_select(0, nodes).norm(dim=1)
    sign = torch.ones(m, dim, dtype=pos.dtype, device=pos.device)
    rl = torch.zeros(m, dim, dtype=torch.int8, device=pos.device)
    # rules 1-3: first moment of the neighbourhood (direction to its weighted centroid),
    # then third and first moments of the two-hop multiset, from the per-node moments
    if mom is not None:
        sub = und.any(1).nonzero().flatten()
        m3, m1, cnt, rho, c1, rho1, slack3, slack1 = _two_hop(
            pos, ei, nodes.index_select(0, sub), Rn.index_select(0, sub), mom, tie_dist)
        s_, r_, u_ = sign[sub], rl[sub], und[sub]
        s_, r_, u_ = _decide(s_, r_, u_, c1, mom[19].index_select(0, nodes[sub]), rho1, 1,
                             radn[sub], 1)
        s_, r_, u_ = _decide(s_, r_, u_, m3, cnt, rho, 3, radn[sub], 2, slack3)
        s_, r_, u_ = _decide(s_, r_, u_, m1, cnt, rho, 1, radn[sub], 3, slack1)
        sign[sub], rl[sub], und[sub] = s_, r_, u_
    # rules 4-5: third, then first moment of the whole cloud about the node
    if bool(und.any()):
        cid, ccnt, cen, crad = _cloud_stats(pos, batch)
        sub = und.any(1).nonzero().flatten()
        q = nodes.index_select(0, sub)
        e = Rn.index_select(0, sub)  # (s, d, d), rows = axes
        c = cid.index_select(0, q)
        S1, S2, S3 = _cloud_tensors(pos, cid, cen, c)
        a = torch.einsum("sab,sb->sa", e, cen.index_select(0, c) - pos.index_select(0, q))
        e1 = torch.einsum("sab,sb->sa", e, S1)
        e2, e3 = _contract(e, S2, S3)
        N = ccnt.index_select(0, c)[:, None]
        m3 = e3 + 3 * a * e2 + 3 * a * a * e1 + N * a ** 3
        m1 = e1 + N * a
        w = cen.index_select(0, c) - pos.index_select(0, q)
        size = radn[sub] + crad.index_select(0, c)
        rho = ((torch.einsum("sbb->s", S2) + 2 * (w * S1).sum(1)) / N[:, 0]
               + (w * w).sum(1)).clamp_min(0).sqrt()
        s_, r_, u_ = sign[sub], rl[sub], und[sub]
        s_, r_, u_ = _decide(s_, r_, u_, m3, N[:, 0], rho, 3, size, 4)
        s_, r_, u_ = _decide(s_, r_, u_, m1, N[:, 0], rho, 1, size, 5)
        sign[sub], rl[sub], und[sub] = s_, r_, u_
    # rule 6: no equivariant choice; the largest component made positive (lowest index on ties)
    if bool(und.any()):
        big = Rn.abs().argmax(-1, keepdim=True)  # first maximum
        comp = Rn.gather(-1, big)[..., 0]
        fb = torch.where(comp < 0, -torch.ones_like(comp), torch.ones_like(comp))
        sign = torch.where(und, fb, sign)
        rl = torch.where(und, torch.full_like(rl, 6), rl)
    flip[nodes] = torch.where(need_ax[nodes], sign, torch.ones_like(sign))
    rule[nodes] = torch.where(need_ax[nodes], rl, torch.zeros_like(rl))
    return flip, rule


def _contract(E: torch.Tensor, S2: torch.Tensor, S3: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``S2[e, e]`` and ``S3[e, e, e]`` for every row ``e`` of ``E`` ``(s, d, d)`` (``S2``,
    ``S3`` flattened or not: ``(s, d*d)``, ``(s, d**3)``)."""
    s, dim = E.shape[0], E.shape[-1]
    Et = E.transpose(1, 2)  # (s, d, axes)
    y2 = torch.bmm(S2.reshape(s, dim, dim), Et)  # (s, d, axes)
    e2 = (y2 * Et).sum(1)
    y3 = torch.bmm(S3.reshape(s, dim * dim, dim), Et).view(s, dim, dim, dim)  # (s, b, c, a)
    y3 = (y3 * Et[:, None, :, :]).sum(2)  # (s, b, a)
    return e2, (y3 * Et).sum(1)


def _axis_moments(e: torch.Tensor, mom: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(e.S1, S2[e, e], S3[e, e, e])`` for axes ``e`` ``(..., 3)`` and packed moments
    ``mom`` ``(..., 19+)`` (2nd: xx xy xz yy yz zz, 3rd: as in :func:`_pca3`, 1st: x y z)."""
    ex, ey, ez = e[..., 0], e[..., 1], e[..., 2]
    T = [mom[..., c] for c in range(19)]
    s2 = (T[0] * ex * ex + T[3] * ey * ey + T[5] * ez * ez
          + 2 * (T[1] * ex * ey + T[2] * ex * ez + T[4] * ey * ez))
    t = T[6:16]
    s3 = (t[0] * ex * ex * ex + t[6] * ey * ey * ey + t[9] * ez * ez * ez
          + 3 * (t[1] * ex * ex * ey + t[2] * ex * ex * ez + t[3] * ex * ey * ey
                 + t[5] * ex * ez * ez + t[7] * ey * ey * ez + t[8] * ey * ez * ez)
          + 6 * t[4] * ex * ey * ez)
    s1 = T[16] * ex + T[17] * ey + T[18] * ez
    return s1, s2, s3


def _two_hop(pos, ei, q, e, mom, tie_dist):
    """Moments along the axes ``e`` ``(s, 3, 3)`` of the nodes ``q``: over their two-hop
    multisets (each neighbour ``j`` itself, weight 1, and ``j``'s neighbourhood with ``j``'s
    weights, offsets from the node), from the per-node moments ``mom`` ``(20, N)`` of
    :func:`_pca3` (no second search), and the nodes' own first moments. Returns
    ``(m3, m1, count, rms, own m1, own rms, slack3, slack1)``, the slacks bounding how much
    the k-NN ties of the neighbours can change ``m3`` / ``m1`` (two points of reach
    ``|b| + tie_dist``; None without ``tie_dist``)."""
    n = pos.shape[0]
    s = q.numel()
    mq = mom.index_select(1, q).t()  # (s, 20)
    c1 = _axis_moments(e, mq[:, None, :])[0]  # own first moment per axis (s, 3)
    wq = mq[:, 19]
    rho1 = ((mq[:, 0] + mq[:, 3] + mq[:, 5]) / torch.where(wq > 0, wq, torch.ones_like(wq))
            ).clamp_min(0).sqrt()
    loc = torch.full((n,), -1, dtype=torch.long, device=pos.device)
    loc[q] = torch.arange(s, device=pos.device)
    li = loc.index_select(0, ei[1])
    keep = (li >= 0).nonzero().flatten()
    li, jj = li.index_select(0, keep), ei[0].index_select(0, keep)  # node q[li] <- jj
    m3 = pos.new_zeros(s, 3)
    m1 = pos.new_zeros(s, 3)
    tot = pos.new_zeros(s)
    sq = pos.new_zeros(s)
    slack3 = slack1 = None
    if tie_dist is not None:
        slack3, slack1 = pos.new_zeros(s), pos.new_zeros(s)
    for lo in range(0, li.numel(), _CLOUD_CHUNK):
        a, j = li[lo: lo + _CLOUD_CHUNK], jj[lo: lo + _CLOUD_CHUNK]
        b = pos.index_select(0, j) - pos.index_select(0, q.index_select(0, a))
        mj = mom.index_select(1, j).t()  # (E, 20)
        E = e.index_select(0, a)  # (E, 3 axes, 3)
        s1, s2, s3 = _axis_moments(E, mj[:, None, :])
        eb = (E * b[:, None, :]).sum(-1)
        c = mj[:, 19:20]
        m3.index_add_(0, a, (1 + c) * eb ** 3 + s3 + 3 * eb * s2 + 3 * eb * eb * s1)
        m1.index_add_(0, a, (1 + c) * eb + s1)
        tot.index_add_(0, a, 1 + c[:, 0])
        bb = (b * b).sum(1)
        sq.index_add_(0, a, (1 + c[:, 0]) * bb + mj[:, 0] + mj[:, 3] + mj[:, 5]
                      + 2 * (b * mj[:, 16:19]).sum(1))
        if tie_dist is not None:
            td = tie_dist.index_select(0, j)
            reach = torch.where(td > 0, bb.sqrt() + td, torch.zeros_like(td))
            slack3.index_add_(0, a, 2 * reach ** 3)
            slack1.index_add_(0, a, 2 * reach)
    rho = (sq / tot.clamp_min(1)).clamp_min(0).sqrt()
    return m3, m1, tot, rho, c1, rho1, slack3, slack1


def _cloud_tensors(pos, cid, cen, c):
    """Moment tensors ``sum u``, ``sum u u``, ``sum u u u`` (``u`` = offsets from the
    centroid) of the clouds ``c`` ``(s,)``, accumulated in chunks of points."""
    n, dim = pos.shape
    want = torch.zeros(cen.shape[0], dtype=torch.bool, device=pos.device)
    want[c] = True
    pts = want.index_select(0, cid).nonzero().flatten()
    nb = cen.shape[0]
    S1 = pos.new_zeros(nb, dim)
    S2 = pos.new_zeros(nb, dim * dim)
    S3 = pos.new_zeros(nb, dim ** 3)
    for lo in range(0, pts.numel(), _CLOUD_CHUNK):
        p = pts[lo: lo + _CLOUD_CHUNK]
        ci = cid.index_select(0, p)
        u = pos.index_select(0, p) - cen.index_select(0, ci)
        uu = u[:, :, None] * u[:, None, :]
        S1.index_add_(0, ci, u)
        S2.index_add_(0, ci, uu.reshape(-1, dim * dim))
        S3.index_add_(0, ci, (uu[:, :, :, None] * u[:, None, None, :]).reshape(-1, dim ** 3))
    return (S1.index_select(0, c), S2.index_select(0, c).view(-1, dim, dim),
            S3.index_select(0, c).view(-1, dim, dim, dim))
