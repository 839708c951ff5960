r"""The grid method of the Gaunt product, planned and executed with a hand-written backward.

Both signals are evaluated on a Gauss-Legendre (``floor(D/2)+1`` nodes in ``cos theta``) x
uniform (``D+1`` nodes in ``phi``) grid, ``D = L1 + L2 + Lout``: the smallest product grid on
which the projection of ``f1 f2`` onto degrees ``<= Lout`` is exact; they are multiplied
pointwise and projected back with the quadrature weights. :class:`_GridProduct` plans the
separable stages (per azimuthal order a Legendre GEMM, then one trigonometric GEMM in ``phi``)
with the equivariant linear maps of :mod:`tensorframes.o3._signals` folded in;
:class:`_GridFunction` runs them chunk by chunk with a hand-written backward.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .._math import sphere_quadrature
from ..reps.irreps import Irreps
from ._s2grid import CHUNK_VALUES, _separable, _trig
from ._signals import _FromSignals, _ToSignals, _type
from ._static import StaticBuffers

__all__: list[str] = []


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
    no signal tensor, no padding copy and one GEMM fewer per side; at large multiplicities it
    does more flops than separate channel mixes (docs/benchmarks.md has the measurements).
    """

    #: Grid values per batch chunk (see :meth:`_chunks`); tests lower it.
    chunk_values: int = CHUNK_VALUES

    def __init__(self, lin1: _ToSignals, lin2: _ToSignals, combos: list[tuple[int, int]],
                 lin_out: _FromSignals, Lout: int) -> None:
        super().__init__()
        L1, L2 = lin1.L, lin2.L
        # the projection integrand f1 f2 Y_out has degree D = L1 + L2 + Lout, integrated
        # exactly by floor(D / 2) + 1 Gauss-Legendre nodes in cos(theta) and D + 1 in phi
        D = L1 + L2 + Lout
        self.n_theta, self.n_phi = D // 2 + 1, D + 1
        self.channels, self.combos = lin1.channels, combos
        self.T1, self.T2, self.P = len(lin1.types), len(lin2.types), len(combos)
        self.checkpoint = False  # backward recomputes the grid values (set by the owner)
        self.dense: dict[str, bool] = {}
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
    def _components(irreps: Irreps, L: int, slot: torch.Tensor
                    ) -> Iterator[tuple[int, int, int, int, int]]:
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

    def _in_plan(self, lin: _ToSignals) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def _out_plan(self, lin_out: _FromSignals, Lout: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row ``r``: output components, their weighted Legendre factors and weight columns."""
        slot, lam = _separable(Lout, self.n_theta)
        _, _, wz = sphere_quadrature(self.n_theta, self.n_phi)  # Gauss-Legendre weights
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

    def _grid_values(self, x: torch.Tensor, name: str, A: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
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

    def _gathered(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The staged path's input rows per azimuthal row: ``(2L+1, n, B)``."""
        rows = getattr(self, f"rows{name}")
        return x.index_select(0, rows.reshape(-1)).reshape(*rows.shape, x.shape[1])

    def _grid_values_backward(self, g_v: torch.Tensor, x: torch.Tensor, xp: torch.Tensor | None,
                              name: str, A: torch.Tensor, need_x: bool, need_A: bool
                              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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

    def _products(self, x1: torch.Tensor, x2: torch.Tensor, wT: torch.Tensor | None,
                  A1: torch.Tensor, A2: torch.Tensor, A_out: torch.Tensor,
                  in_place: bool = False) -> tuple[torch.Tensor, ...]:
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
        """Equal batch chunks of at most about ``chunk_values`` grid values each."""
        per = max(32, self.chunk_values // (self.n_phi * self.n_theta * self.P * self.channels))
        n_chunks = max(1, -(-B // per))
        size = max(1, -(-B // n_chunks))
        return [(s, min(s + size, B)) for s in range(0, B, size)]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None,
                w1: torch.Tensor, w2: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
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
    def forward(ctx: Any, core: _GridProduct, x1: torch.Tensor, x2: torch.Tensor,
                weight: torch.Tensor | None, A1: torch.Tensor, A2: torch.Tensor,
                A_out: torch.Tensor) -> torch.Tensor:
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
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
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


