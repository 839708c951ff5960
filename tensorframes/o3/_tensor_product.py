r"""Clebsch-Gordan tensor products, e3nn-compatible (instructions, normalization, weight layout).

The torch modules executing a product: :class:`TensorProduct` (grouped CG contractions, dense or
sparse) and its two common instances :class:`FullyConnectedTensorProduct` and
:class:`FullTensorProduct`. What a product computes (paths, normalization constants, weight
layout) is described apart, in :mod:`tensorframes.o3._tp_description`, with the slow reference
path every fast path is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch

from ..reps.irreps import Irrep, Irreps
from ._static import StaticBuffers
from ._tp_description import _weight_of, describe_tensor_product
from ._wigner_3j import wigner_3j

__all__ = [
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "TensorProduct",
]


class _Group(NamedTuple):
    """Instructions sharing ``(i_in1, i_in2, kind)``: one CG contraction for all of them."""

    i_in1: int
    i_in2: int
    uu: bool  # modes uuu / uuw: inputs paired channel by channel
    paths: tuple[int, ...]  # instruction indices
    offsets: tuple[int, ...]  # column offset of each path in the concatenated CG
    folded: bool  # every path's weight is one scalar per path: fold it into the CG columns


class TensorProduct(StaticBuffers):
    r"""Clebsch-Gordan tensor product with e3nn's instructions, normalization and weights.

    Each instruction ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])`` puts
    ``in1[i_in1] (x) in2[i_in2]`` into ``out[i_out]``:

    .. math::
        z^{(o)}_{w k} \mathrel{+}= c_\text{path} \sum_{u v i j} W_{uvw}\,
        C^{l_1 l_2 l_o}_{ijk}\, x^{(1)}_{u i}\, x^{(2)}_{v j} \quad (\text{mode } uvw)

    and likewise for ``uvu`` (``W_{uv}``, output channel ``u``), ``uvv``, ``uuw``, ``uuu``,
    ``uvuv`` (output channel ``(u, v)``). ``C`` is :func:`wigner_3j`, ``c_path`` e3nn's
    normalization (see :func:`describe_tensor_product`). The flat weight vector has e3nn's
    layout, so the same weights give the same numbers as ``e3nn.o3.TensorProduct``.

    Execution (``method``): instructions sharing the two input blocks are grouped, and each group
    does a single CG contraction of the outer product ``x1[u] (x) x2[v]`` with the concatenated,
    pre-normalized CG tensors of all its paths; then a per-path weight contraction.
    Where every path of a group has a single scalar weight (multiplicities 1), the weights are
    folded into the CG columns first (no per-path work left).

    * ``"dense"``: ``(Z*u*v, d1*d2) @ (d1*d2, sum_paths d_out)``, one GEMM per group.
    * ``"sparse"``: only the non-zero CG entries (real basis: ``m3 = +-m1 +- m2``), gathered with
      precomputed index maps ``(i, j) -> k`` and summed with ``index_add``, no Python loop over
      the batch. Fewer flops than dense (``~2-4`` entries per ``(i, j)`` instead of ``2l3+1``),
      but memory-bound on CPU (it materialises ``nnz x batch`` products), so on CPU ``"dense"`` is
      the faster path; ``"sparse"`` is the exact, independently written alternative.

    Args:
        irreps_in1, irreps_in2, irreps_out: the irreps of both inputs and the output.
        instructions: e3nn-style instruction tuples.
        in1_var, in2_var, out_var: per-block variances (default 1).
        irrep_normalization: ``"component"`` (default), ``"norm"`` or ``"none"``.
        path_normalization: ``"element"`` (default), ``"path"`` or ``"none"``.
        internal_weights: hold the weights as a parameter (default: ``shared_weights`` and any
            weighted path).
        shared_weights: one weight vector for all samples (default ``True``); ``False``:
            ``forward`` needs ``weight`` of shape ``(..., weight_numel)``.
        method: ``"dense"`` (default) or ``"sparse"``.

    Shapes:
        - x1: ``(..., irreps_in1.dim)``, x2: ``(..., irreps_in2.dim)`` (broadcast)
        - weight: ``(weight_numel,)`` or ``(..., weight_numel)``
        - output: ``(..., irreps_out.dim)``
    """

    def __init__(
        self,
        irreps_in1: Irreps | str,
        irreps_in2: Irreps | str,
        irreps_out: Irreps | str,
        instructions: Sequence[tuple],
        *,
        in1_var: Sequence[float] | None = None,
        in2_var: Sequence[float] | None = None,
        out_var: Sequence[float] | None = None,
        irrep_normalization: str = "component",
        path_normalization: str = "element",
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
        method: str = "dense",
    ) -> None:
        super().__init__()
        if method not in ("dense", "sparse"):
            raise ValueError(f"method must be 'dense' or 'sparse', got {method!r}")
        desc = describe_tensor_product(
            irreps_in1, irreps_in2, irreps_out, instructions, in1_var=in1_var, in2_var=in2_var,
            out_var=out_var, irrep_normalization=irrep_normalization,
            path_normalization=path_normalization,
        )
        self.description = desc
        self.irreps_in1, self.irreps_in2, self.irreps_out = (
            desc.irreps_in1, desc.irreps_in2, desc.irreps_out)
        self.instructions = list(desc.instructions)
        self.method = method
        if shared_weights is False and internal_weights is None:
            internal_weights = False
        if shared_weights is None:
            shared_weights = True
        if internal_weights is None:
            internal_weights = shared_weights and any(i.has_weight for i in self.instructions)
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True needs shared_weights=True")
        self.shared_weights, self.internal_weights = shared_weights, internal_weights
        self.weight_numel = desc.weight_numel
        if internal_weights and self.weight_numel > 0:
            self.weight = torch.nn.Parameter(torch.randn(self.weight_numel))
        else:
            self.register_parameter("weight", None)
        self._build()

    def reset_parameters(self) -> None:
        """Re-draw the internal weights (if any) from the standard normal, as at construction."""
        if self.weight is not None:
            torch.nn.init.normal_(self.weight)

    # -- static data ---------------------------------------------------------------------------
    def _build(self) -> None:
        desc = self.description
        keys: dict[tuple[int, int, bool], list[int]] = {}
        for k, ins in enumerate(desc.instructions):
            if 0 in (desc.irreps_in1[ins.i_in1].mul, desc.irreps_in2[ins.i_in2].mul,
                     desc.irreps_out[ins.i_out].mul):
                continue
            keys.setdefault((ins.i_in1, ins.i_in2, ins.connection_mode[:2] == "uu"), []).append(k)
        groups = []
        for gi, ((i1, i2, uu), paths) in enumerate(keys.items()):
            ir1, ir2 = desc.irreps_in1[i1].ir, desc.irreps_in2[i2].ir
            blocks, offsets, col_w, off = [], [], [], 0
            folded = True
            for k in paths:
                ins = desc.instructions[k]
                d3 = desc.irreps_out[ins.i_out].ir.dim
                C = wigner_3j(ir1.l, ir2.l, desc.irreps_out[ins.i_out].ir.l, dtype=torch.float64)
                blocks.append(C.reshape(ir1.dim * ir2.dim, d3) * ins.path_weight)
                offsets.append(off)
                off += d3
                if ins.has_weight and math.prod(ins.path_shape) != 1:
                    folded = False
                w_index = desc.weight_slices[k].start if ins.has_weight else -1
                col_w += [w_index] * d3
            Ccat = torch.cat(blocks, dim=1)
            if self.method == "dense":
                self.register_static(f"_cg{gi}", Ccat)
            else:
                ij, kk = Ccat.nonzero(as_tuple=True)
                self.register_static(f"_cgi{gi}", torch.div(ij, ir2.dim, rounding_mode="floor"))
                self.register_static(f"_cgj{gi}", ij % ir2.dim)
                self.register_static(f"_cgk{gi}", kk)
                self.register_static(f"_cgv{gi}", Ccat[ij, kk])
            # column -> flat weight index (folded groups); -1: no weight (factor 1)
            col_w = torch.tensor(col_w, dtype=torch.long)
            self.register_static(f"_colw{gi}", torch.where(col_w < 0, self.weight_numel, col_w))
            groups.append(_Group(i1, i2, uu, tuple(paths), tuple(offsets), folded))
        self._groups = groups

    # -- execution -----------------------------------------------------------------------------
    def _contract(self, gi: int, g: _Group, a: torch.Tensor, b: torch.Tensor,
                  scale: torch.Tensor | None = None) -> torch.Tensor:
        """CG contraction of one group: ``(Z, u[, v], d1), (Z, u|v, d2) -> (Z, u[, v], S)``.

        ``scale`` (``(S,)``): per-column factors (folded shared weights) applied to the CG.
        """
        Z, mu, d1 = a.shape
        mv, d2 = b.shape[1], b.shape[2]
        if self.method == "dense":
            C = getattr(self, f"_cg{gi}")
            if scale is not None:
                C = C * scale
            S = C.shape[1]
            if g.uu:
                xx = (a[..., :, None] * b[..., None, :]).reshape(Z * mu, d1 * d2)
                return (xx @ C).reshape(Z, mu, S)
            if mu > mv:
                # contract the CG with the input of fewer channels first, then one batched
                # matmul: Z (mv d1 d2 S + mu mv d1 S) multiply-adds instead of
                # Z mu mv d1 d2 (S + 1), and no (Z, mu, mv, d1 d2) outer product (for example
                # node features (x) edge harmonics in TPConv, mv = 1)
                Cb = C.reshape(d1, d2, S).transpose(0, 1).reshape(d2, d1 * S)
                M = (b.reshape(Z * mv, d2) @ Cb).reshape(Z, mv, d1, S)  # sum_j C_ijk b_vj
                M = M.transpose(1, 2).reshape(Z, d1, mv * S)
                return torch.bmm(a, M).reshape(Z, mu, mv, S)
            xx = (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(Z * mu * mv, d1 * d2)
            return (xx @ C).reshape(Z, mu, mv, S)
        I, J = getattr(self, f"_cgi{gi}"), getattr(self, f"_cgj{gi}")
        K, V = getattr(self, f"_cgk{gi}"), getattr(self, f"_cgv{gi}")
        S = getattr(self, f"_colw{gi}").shape[0]
        if scale is not None:
            V = V * scale[K]
        # component-major layout: gathers and the scatter-add act on contiguous rows
        aT = a.permute(2, 0, 1).contiguous()  # (d1, Z, u)
        bT = b.permute(2, 0, 1).contiguous()  # (d2, Z, u|v)
        if g.uu:
            prod = aT[I] * bT[J] * V[:, None, None]  # (nnz, Z, u)
            return a.new_zeros(S, Z, mu).index_add_(0, K, prod).permute(1, 2, 0)
        prod = (aT[I] * V[:, None, None])[:, :, :, None] * bT[J][:, :, None, :]
        return a.new_zeros(S, Z, mu, mv).index_add_(0, K, prod).permute(1, 2, 3, 0)

    def _apply_weight(self, k: int, y: torch.Tensor, W: torch.Tensor | None,
                      shared: bool) -> torch.Tensor:
        """Weight contraction of path ``k`` on its CG output ``y``: ``(Z, u[, v], d3)``.

        ``W``: the path's weights, ``path_shape`` (shared) or ``(Z, *path_shape)``.
        """
        ins = self.instructions[k]
        mode, Z = ins.connection_mode, y.shape[0]
        if not ins.has_weight:
            if mode == "uvu":
                return y.sum(2)
            if mode == "uvv":
                return y.sum(1)
            if mode == "uuw":
                return y.sum(1, keepdim=True)
            if mode == "uvuv":
                return y.reshape(Z, y.shape[1] * y.shape[2], y.shape[-1])
            return y  # uuu
        W = W.reshape(ins.path_shape) if shared else W.reshape(-1, *ins.path_shape)
        z = "" if shared else "z"
        spec = {"uvw": f"zuvk,{z}uvw->zwk", "uvu": f"zuvk,{z}uv->zuk", "uvv": f"zuvk,{z}uv->zvk",
                "uuw": f"zuk,{z}uw->zwk", "uuu": f"zuk,{z}u->zuk", "uvuv": f"zuvk,{z}uv->zuvk"}
        y = torch.einsum(spec[mode], y, W)
        return y.reshape(Z, math.prod(y.shape[1:-1]), y.shape[-1])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """``x1 (x) x2`` with ``weight`` (or the internal weights)."""
        if x1.shape[-1] != self.irreps_in1.dim or x2.shape[-1] != self.irreps_in2.dim:
            raise ValueError(f"expected inputs (..., {self.irreps_in1.dim}) and "
                             f"(..., {self.irreps_in2.dim}), got {tuple(x1.shape)} and "
                             f"{tuple(x2.shape)}")
        weight = self._get_weight(weight)
        shared = weight is None or weight.dim() == 1
        batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        if not shared:
            batch = torch.broadcast_shapes(batch, weight.shape[:-1])
        Z = math.prod(batch)
        if not shared:
            weight = weight.expand(*batch, self.weight_numel).reshape(Z, self.weight_numel)
        x1 = x1.expand(*batch, x1.shape[-1]).reshape(Z, x1.shape[-1])
        x2 = x2.expand(*batch, x2.shape[-1]).reshape(Z, x2.shape[-1])
        outs: list[list[torch.Tensor]] = [[] for _ in self.irreps_out]
        if weight is not None:  # index weight_numel -> factor 1 (paths without weight)
            one = weight.new_ones(()).expand(*weight.shape[:-1], 1)
            wext = torch.cat([weight, one], dim=-1)
        else:
            wext = x1.new_ones(1)
        # split, not slices: the backward of a split is one cat, a slice's zero-fills a full
        # gradient per block (per path for the weights)
        blocks1 = x1.split([b.dim for b in self.irreps_in1], dim=1)
        blocks2 = x2.split([b.dim for b in self.irreps_in2], dim=1)
        path_w: dict[int, torch.Tensor] = {}
        if weight is not None and any(not g.folded for g in self._groups):
            spans = [(k, sl.stop - sl.start)
                     for k, sl in enumerate(self.description.weight_slices) if sl is not None]
            chunks = weight.split([n for _, n in spans], dim=-1)  # consecutive, in path order
            path_w = {k: w for (k, _), w in zip(spans, chunks)}
        for gi, g in enumerate(self._groups):
            (m1, ir1), (m2, ir2) = self.irreps_in1[g.i_in1], self.irreps_in2[g.i_in2]
            a = blocks1[g.i_in1].reshape(Z, m1, ir1.dim)
            b = blocks2[g.i_in2].reshape(Z, m2, ir2.dim)
            if g.folded and weight is not None and shared:
                y = self._contract(gi, g, a, b, wext[getattr(self, f"_colw{gi}")])
            else:
                y = self._contract(gi, g, a, b)
            if g.folded and weight is not None and not shared:
                scale = wext[:, getattr(self, f"_colw{gi}")]
                y = y * scale.reshape((Z, 1) + (1,) * (not g.uu) + (scale.shape[-1],))
            d3s = [self.irreps_out[self.instructions[k].i_out].ir.dim for k in g.paths]
            for k, yk in zip(g.paths, y.split(d3s, dim=-1)):  # offsets are consecutive
                ins = self.instructions[k]
                if g.folded:
                    yk = self._apply_weight_folded(k, yk)
                else:
                    yk = self._apply_weight(k, yk, path_w.get(k), shared)
                outs[ins.i_out].append(yk)
        pieces = []
        for (mul, ir), parts in zip(self.irreps_out, outs):
            if mul == 0:
                continue
            if not parts:
                pieces.append(x1.new_zeros(Z, mul * ir.dim))
                continue
            acc = parts[0]
            for p in parts[1:]:
                acc = acc + p
            pieces.append(acc.reshape(Z, mul * ir.dim))
        out = torch.cat(pieces, dim=1) if len(pieces) > 1 else (
            pieces[0] if pieces else x1.new_zeros(Z, 0))
        return out.reshape(*batch, self.irreps_out.dim)

    def _apply_weight_folded(self, k: int, y: torch.Tensor) -> torch.Tensor:
        """Folded paths: weights already applied; only reduce/reshape the channel axes."""
        ins = self.instructions[k]
        mode, Z = ins.connection_mode, y.shape[0]
        if mode in ("uvw", "uvu", "uvv"):  # all multiplicities 1 (or uvu/uvv without weight)
            dim = 1 if mode == "uvv" else 2
            return y.squeeze(dim) if y.shape[dim] == 1 else y.sum(dim)
        if mode == "uuw":
            return y if y.shape[1] == 1 else y.sum(1, keepdim=True)
        if mode == "uvuv":
            return y.reshape(Z, y.shape[1] * y.shape[2], y.shape[-1])
        return y

    def _get_weight(self, weight: torch.Tensor | None) -> torch.Tensor | None:
        if weight is None:
            if self.weight_numel > 0 and not self.internal_weights:
                raise ValueError("this TensorProduct has no internal weights: pass weight of "
                                 f"shape (..., {self.weight_numel})")
            return self.weight
        if self.shared_weights and weight.shape != (self.weight_numel,):
            raise ValueError(f"shared weights must have shape ({self.weight_numel},), "
                             f"got {tuple(weight.shape)}")
        if not self.shared_weights and (weight.dim() < 2 or weight.shape[-1] != self.weight_numel):
            raise ValueError(f"per-sample weights must have shape (..., {self.weight_numel}), "
                             f"got {tuple(weight.shape)}")
        return weight

    def weight_views(self, weight: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        """The weight of every weighted instruction, reshaped to its ``path_shape``."""
        weight = self._get_weight(weight)
        shared = weight.dim() == 1
        for k, ins in enumerate(self.instructions):
            if ins.has_weight:
                yield _weight_of(self.description, k, weight, shared)

    def extra_repr(self) -> str:
        return (f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
                f"{len(self.instructions)} paths | {self.weight_numel} weights | "
                f"method={self.method!r}")


class FullyConnectedTensorProduct(TensorProduct):
    """Fully connected (``uvw``) tensor product over every allowed path, as e3nn's.

    Paths enumerated in e3nn's order: ``for i1 in in1, for i2 in in2, for i_out in out`` where
    ``ir_out`` is in ``ir1 x ir2``.
    """

    def __init__(self, irreps_in1: Irreps | str, irreps_in2: Irreps | str,
                 irreps_out: Irreps | str, **kwargs: Any) -> None:
        irreps_in1, irreps_in2, irreps_out = (Irreps(irreps_in1), Irreps(irreps_in2),
                                              Irreps(irreps_out))
        instr = [
            (i1, i2, io, "uvw", True, 1.0)
            for i1, (_, ir1) in enumerate(irreps_in1)
            for i2, (_, ir2) in enumerate(irreps_in2)
            for io, (_, iro) in enumerate(irreps_out)
            if iro in list(ir1 * ir2)
        ]
        super().__init__(irreps_in1, irreps_in2, irreps_out, instr, **kwargs)


class FullTensorProduct(TensorProduct):
    """All products ``ir1 x ir2 -> ir_out`` without weights (``uvuv``), output sorted, as e3nn's.

    Inputs are simplified first; every ``(i1, i2, ir_out)`` gives an output block of
    multiplicity ``mul1 * mul2``; blocks are then sorted by irrep (e3nn's order).
    """

    def __init__(self, irreps_in1: Irreps | str, irreps_in2: Irreps | str,
                 filter_ir_out: Iterable[Irrep | str] | None = None, **kwargs: Any) -> None:
        irreps_in1, irreps_in2 = Irreps(irreps_in1).simplify(), Irreps(irreps_in2).simplify()
        if filter_ir_out is not None:
            try:
                filter_ir_out = [Irrep(ir) for ir in filter_ir_out]
            except ValueError:
                raise ValueError(f"filter_ir_out must be an iterable of Irrep, got "
                                 f"{filter_ir_out!r}") from None
        out, instr = [], []
        for i1, (m1, ir1) in enumerate(irreps_in1):
            for i2, (m2, ir2) in enumerate(irreps_in2):
                for iro in ir1 * ir2:
                    if filter_ir_out is not None and iro not in filter_ir_out:
                        continue
                    instr.append((i1, i2, len(out), "uvuv", False))
                    out.append((m1 * m2, iro))
        out, p, _ = Irreps(out).sort()
        instr = [(i1, i2, p[io], mode, w) for i1, i2, io, mode, w in instr]
        super().__init__(irreps_in1, irreps_in2, out, instr, **kwargs)
