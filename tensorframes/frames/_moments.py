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
    buffers). Returns ``(R, eigenvalues, rel_skew, mean squared offset, total weight)``, the
    eigenvalues and mean squared offsets in working units."""
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
    rows, skews = [], []
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
    R = torch.stack(rows, 1)
    rel_skew = torch.stack(skews, 1)
    return R, torch.stack(vals, 1), rel_skew, ms.detach(), W.detach()


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
    return R, vals, rel_skew
