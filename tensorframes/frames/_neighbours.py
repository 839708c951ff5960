r"""Frames from the three nearest neighbours: the classical local reference frame."""

from __future__ import annotations

import torch

from .._checks import check_edge_index
from ..graph import check_finite, knn
from ._frames import Frames
from ._gram_schmidt import gram_schmidt
from ._scaling import global_exponent, ldexp

__all__ = ["three_nn"]

#: Candidates per node in the first neighbour search (enlarged fourfold where needed).
FIRST_K = 8


def _sqdist(v: torch.Tensor) -> torch.Tensor:
    """``((dx*dx) + dy*dy) + dz*dz``: the neighbour search's own order of evaluation."""
    return (v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1]) + v[:, 2] * v[:, 2]


def _representatives(pos: torch.Tensor) -> torch.Tensor:
    """For each point, the lowest index of a point at exactly the same position."""
    n = pos.shape[0]
    _, inv = torch.unique(pos, dim=0, return_inverse=True)
    first = torch.full((n,), n, dtype=torch.long, device=pos.device)
    first.scatter_reduce_(0, inv, torch.arange(n, device=pos.device), reduce="amin")
    return first[inv]


def _first_three(pos: torch.Tensor, rep: torch.Tensor, q: torch.Tensor, i: torch.Tensor,
                 j: torch.Tensor, m: int) -> tuple[torch.Tensor, ...]:
    """The three nearest distinct neighbours of ``m`` queries from candidate pairs.

    ``q`` (query number in ``[0, m)``), ``i`` (its node) and ``j`` (a candidate neighbour)
    per pair. Candidates are replaced by the lowest-index copy of their position, those at
    the query's own position dropped, and the rest ordered by ``(squared distance, index)``.
    Returns ``(nbr (m, 3) with -1 where missing, distinct count (m,), third squared distance
    (m,), largest candidate squared distance (m,), candidate count (m,))``.

    The candidates are laid out as an ``(m, L)`` table (``L``: the most candidates of one
    query) and sorted row by row, which is several times faster than sorting all pairs;
    where that table would be mostly padding (a hub in ``edge_index``), all pairs are sorted
    at once (:func:`_first_three_flat`, the same result).
    """
    dev, n, num = pos.device, pos.shape[0], q.numel()
    ncand = torch.bincount(q, minlength=m)
    width = int(ncand.max()) if num else 0
    if m * width > 4 * num + 4096:
        return _first_three_flat(pos, rep, q, i, j, m)
    j = rep[j]
    d2 = _sqdist(pos[j] - pos[i])
    own = rep[i]
    if num and not bool((q[1:] >= q[:-1]).all()):  # knn output and PyG graphs are grouped
        order = torch.argsort(q, stable=True)
        q, j, d2, own = q[order], j[order], d2[order], own[order]
    slot = torch.arange(num, device=dev) - (torch.cumsum(ncand, 0) - ncand)[q]
    table_d = torch.zeros(m, width, dtype=pos.dtype, device=dev)
    table_d[q, slot] = d2
    dmax = table_d.amax(1) if width else torch.zeros(m, dtype=pos.dtype, device=dev)
    keep = j != own  # not at the query's own position
    table_d = torch.full_like(table_d, float("inf"))
    table_j = torch.full((m, width), n, dtype=torch.long, device=dev)  # n: padding
    table_d[q[keep], slot[keep]] = d2[keep]
    table_j[q[keep], slot[keep]] = j[keep]
    # rows ordered by (d2, j): stable sorts by the last key, then the first
    table_j, o = torch.sort(table_j, dim=1, stable=True)
    table_d = table_d.gather(1, o)
    table_d, o = torch.sort(table_d, dim=1, stable=True)
    table_j = table_j.gather(1, o)
    # one entry per representative (duplicates and repeated edges are adjacent)
    new = table_j < n
    new[:, 1:] &= table_j[:, 1:] != table_j[:, :-1]
    rank = torch.cumsum(new, 1) - 1
    count = new.sum(1)
    nbr = torch.full((m, 3), -1, dtype=torch.long, device=dev)
    rows, cols = (new & (rank < 3)).nonzero(as_tuple=True)
    nbr[rows, rank[rows, cols]] = table_j[rows, cols]
    d3 = torch.full((m,), float("inf"), dtype=pos.dtype, device=dev)
    rows, cols = (new & (rank == 2)).nonzero(as_tuple=True)
    d3[rows] = table_d[rows, cols]
    return nbr, count, d3, dmax, ncand


def _first_three_flat(pos: torch.Tensor, rep: torch.Tensor, q: torch.Tensor, i: torch.Tensor,
                      j: torch.Tensor, m: int) -> tuple[torch.Tensor, ...]:
    """:func:`_first_three` by sorting all pairs at once (for very uneven candidate counts)."""
    dev = pos.device
    j = rep[j]
    d2_all = _sqdist(pos[j] - pos[i])
    ncand = torch.bincount(q, minlength=m)
    dmax = torch.zeros(m, dtype=pos.dtype, device=dev).scatter_reduce_(
        0, q, d2_all, reduce="amax", include_self=True)
    keep = j != rep[i]
    q, j, d2 = q[keep], j[keep], d2_all[keep]
    # lexicographic (q, d2, j) by stable sorts from the last key to the first
    order = torch.argsort(j, stable=True)
    order = order[torch.argsort(d2[order], stable=True)]
    order = order[torch.argsort(q[order], stable=True)]
    q, j, d2 = q[order], j[order], d2[order]
    if q.numel():  # the same representative twice (duplicates, repeated edges): keep one
        new = torch.ones_like(q, dtype=torch.bool)
        new[1:] = (q[1:] != q[:-1]) | (j[1:] != j[:-1])
        q, j, d2 = q[new], j[new], d2[new]
    count = torch.bincount(q, minlength=m)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(q.numel(), device=dev) - start[q]
    sel = rank < 3
    nbr = torch.full((m, 3), -1, dtype=torch.long, device=dev)
    nbr[q[sel], rank[sel]] = j[sel]
    d3 = torch.full((m,), float("inf"), dtype=pos.dtype, device=dev)
    third = rank == 2
    d3[q[third]] = d2[third]
    return nbr, count, d3, dmax, ncand


def _select(pos: torch.Tensor, batch: torch.Tensor | None,
            edge_index: torch.Tensor | None) -> torch.Tensor:
    """``(N, 3)`` indices of the three nearest distinct neighbours (``-1``: none)."""
    n, dev = pos.shape[0], pos.device
    rep = _representatives(pos)
    if edge_index is not None:
        j, i = edge_index[0].long(), edge_index[1].long()
        return _first_three(pos, rep, i, i, j, n)[0]
    nbr = torch.full((n, 3), -1, dtype=torch.long, device=dev)
    todo = torch.arange(n, device=dev)
    k = FIRST_K
    while todo.numel():
        pairs = knn(pos, pos[todo], k, batch, None if batch is None else batch[todo])
        q = pairs[0]
        found, count, d3, dmax, ncand = _first_three(pos, rep, q, todo[q], pairs[1],
                                                     todo.numel())
        # settled: the whole cloud was searched, or a candidate lies strictly beyond the third
        # distance (every point not searched is at least that far: no tie is missed)
        done = (ncand < k) | ((count >= 3) & (dmax > d3))
        nbr[todo[done]] = found[done]
        todo = todo[~done]
        k *= 4
    return nbr


def three_nn(pos: torch.Tensor, batch: torch.Tensor | None = None, *,
             edge_index: torch.Tensor | None = None, eps: float = 1e-6) -> Frames:
    r"""Frames from each node's three nearest neighbours (the classical local reference frame).

    With :math:`n_1, n_2, n_3` the nearest, second and third nearest distinct neighbours of
    node ``i`` and :math:`v_a = (p_{n_a} - p_i) / |p_{n_3} - p_i|`:

    .. math::
        R_i = \texttt{gram\_schmidt}(v_1, v_2, v_3),

    so the first axis points to the nearest neighbour, the second toward the second nearest
    (orthogonalised), and the third neighbour sets the handedness (``det R_i = -1`` possible).
    ``three_nn(g pos + t) = three_nn(pos) g^T`` for every ``g`` in O(3) and translation ``t``,
    and frames do not change when the cloud is scaled (offsets are divided by the third
    distance, so ``eps`` is relative to it).

    Decisions (deterministic for a given input; which of them stay equivariant):

    - **Order and ties**: neighbours are ordered by ``(squared distance, index)``. Distances
      are invariant, so the order is equivariant wherever the first four distinct distances
      differ; exactly equal distances are broken by the lower index (deterministic), but a
      transformed copy of the cloud has distances that differ in the last bits, so near-ties
      (equal up to round-off: lattices, symmetric shapes) may swap under a rotation and give
      a different frame. The candidates are complete: the search is enlarged until a
      candidate lies strictly beyond the third distance, so no tied point is missed, and the
      result does not depend on the search backend.
    - **Coincident points**: neighbours at exactly the node's own position are skipped, and
      several points at one position count once (the lowest index stands for them; gradients
      reach that copy); so the three neighbours are the three nearest *distinct positions*.
    - **Collinear and coplanar neighbours**: handled by :func:`gram_schmidt`'s fallback. If
      ``v_2`` is parallel to ``v_1`` (within ``eps`` relative to the third distance, e.g. the
      two nearest neighbours on opposite sides along a line), the second axis is the world
      axis least aligned with ``v_1``: deterministic but **not equivariant**. If ``v_3`` lies
      exactly in the plane of ``v_1, v_2`` (a flat neighbourhood) the handedness is ``+1``;
      the first two axes stay equivariant, but in a transformed copy the triple product
      ``v_3 . (e_1 x e_2)`` is round-off with an arbitrary sign, so the third axis may flip:
      exactly flat neighbourhoods are deterministic, not equivariant. Nearly flat ones get
      their handedness from the sign of a small triple product (equivariant as long as it
      exceeds round-off, but decided by noise).
    - **Fewer than three distinct neighbours** (clouds of fewer than four distinct points,
      or ``edge_index`` giving fewer): missing vectors are zero, so two neighbours give
      ``(e_1, e_2, e_1 x e_2)`` (rotation-equivariant, handedness ``+1``), one neighbour gives
      ``e_1`` toward it and the fallback ``e_2`` (not equivariant), none the identity.

    Neighbours come from :func:`tensorframes.graph.knn` within each cloud of ``batch`` (``k``
    enlarged from 8 fourfold for nodes with duplicates or ties at the boundary), or from
    ``edge_index`` (candidates ``edge_index[0]`` of each target ``edge_index[1]``; self loops
    and repeated edges are ignored; with ``batch`` given, edges must stay inside one cloud).
    Clouds of any magnitude are brought to unit extent by an exact power of two first.
    Differentiable with respect to ``pos`` (the neighbours are chosen without gradient).

    Args:
        pos (Tensor): ``(N, 3)`` finite positions.
        batch (LongTensor, optional): ``(N,)`` sorted cloud ids.
        edge_index (LongTensor, optional): ``(2, E)`` candidate neighbours instead of a search.
        eps (float): :func:`gram_schmidt`'s degeneracy scale, relative to the third neighbour's
            distance (default ``1e-6``).

    Returns:
        :class:`Frames` ``(N, 3, 3)`` in the dtype of ``pos``.
    """
    if not isinstance(pos, torch.Tensor):
        raise TypeError(f"pos must be a torch.Tensor of shape (N, 3), got {type(pos).__name__}")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (N, 3), got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"pos must be a floating point tensor, got {pos.dtype}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    check_finite(pos, "pos")
    n = pos.shape[0]
    if edge_index is not None:
        check_edge_index(edge_index, n)
        if batch is not None:
            if not isinstance(batch, torch.Tensor) or batch.shape != (n,):
                raise ValueError(f"batch must be a tensor of shape ({n},), got "
                                 f"{getattr(batch, 'shape', type(batch).__name__)}")
            cross = batch[edge_index[0]] != batch[edge_index[1]]
            if bool(cross.any()):
                e = int(cross.nonzero()[0, 0])
                raise ValueError(f"edge {e} ({int(edge_index[0, e])} -> "
                                 f"{int(edge_index[1, e])}) joins two clouds of batch")
    dtype = pos.dtype
    work = pos.float() if dtype in (torch.float16, torch.bfloat16) else pos
    e, _ = global_exponent(work)
    if e:
        work = ldexp(work, -e)
    if n == 0:
        return Frames(torch.zeros(0, 3, 3, dtype=dtype, device=pos.device))
    with torch.no_grad():
        nbr = _select(work.detach(), batch, edge_index)
    has = nbr >= 0
    v = torch.where(has[..., None], work[nbr.clamp_min(0)] - work[:, None], 0.0)
    # divide by the farthest chosen neighbour's distance (1 where there is none)
    last = (has.sum(1) - 1).clamp_min(0)
    far = v[torch.arange(n, device=pos.device), last]
    sq = (far * far).sum(-1, keepdim=True)
    scale = torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt()
    v = v / scale[:, None]
    w = v[:, 2]
    return Frames(gram_schmidt(v[:, 0], v[:, 1], w, eps=eps).matrices.to(dtype))
