r"""The frame change of message passing: ``rho(R_i R_j^T) x_j`` for every edge, by three paths.

:func:`frame_change` computes, for edges ``e = (j -> i)`` given as source and target index
vectors, ``y[e] = rho(R_dst[dst[e]] R_src[src[e]]^T) x[src[e]]`` (the message carried into the
target's frame, ``docs/design.md``). Its ``path`` argument chooses how:

* ``"kernel"`` (:mod:`._kernel`): the compiled CPU kernel, one pass over the edges; the default
  wherever it applies (CPU, float32/64, Irreps ``l <= 2``, TensorReps orders ``<= 2``).
* ``"chunked"`` (this module, :class:`_FrameChange`): the same scheme in pure torch, chunk by
  chunk, for every degree and device (the path on GPU and for ``l >= 3``).
* ``"reference"`` (:func:`frame_change_reference`): gather ``x[src]``, the relative frames
  ``R_i R_j^T`` as an ``(E, d, d)`` tensor, :meth:`Reps.transform`; what the others are tested
  against.

How the chunked path differs from the reference:

* **One output, written once.** The gather ``x.index_select(0, src)`` writes straight into the
  rows of the ``(E, dim)`` output; every block that is not an identity (``0e``/``0n`` are) is
  then transformed chunk by chunk (:data:`CHUNK_CPU` edges) and copied back into its rows. No
  ``(E, ...)`` temporary exists besides the output.
* **No dense D for all blocks**: ``D^1`` is the relative frame itself, ``D^2`` its closed form on
  the chunk (the backward's recomputation uses one product of ``r r^T`` with a constant
  ``(81, 25)`` matrix, the same polynomial), ``l >= 3`` the coupling recursion on the chunk; a
  TensorReps order-2 block is ``R X R^T``, two contractions with the chunk's ``R``.
* **Backward recomputes.** The autograd function saves only its inputs; its backward recomputes
  each chunk under autograd and scatters the gradients of ``x`` and of the frames back with
  ``index_add_``. Double backward differentiates the reference (``create_graph=True``).

Speed (``python -m tensorframes.bench reps``, second table; ``docs/benchmarks.md``): the kernel
is 3.5-6x the reference in forward and 4-6x in forward + backward, 1.2-1.8x the bare gather; the
chunked path is about as fast as the reference in forward and slower in forward + backward (it
recomputes the forward under autograd), so it is chosen only where the kernel does not apply:
what it buys there is memory (saved activations are the inputs).

Dispatch of the chunked path (:func:`supports_fused`): :class:`~tensorframes.Irreps` of every
degree and :class:`~tensorframes.TensorReps` of orders ``<= 2`` (any ``d``); TensorReps with an
order ``>= 3`` fall back to the reference, whose index-by-index contraction is cheaper there
than a dense ``R^{(x)k}`` per edge. The code is device-agnostic, so it runs on CUDA tensors,
with larger chunks (:data:`CHUNK_CUDA`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from .._checks import compiling
from .._math import det_sign
from ._kernel import (
    kernel_available,
    kernel_error,
    kernel_frame_change,
    kernel_supports,
)
from ._reference import frame_change_reference, reference_backward
from ._wigner import _coupling_step, _d2_coefficients, _wigner_D2
from .base import Reps, check_matrices
from .irreps import Irreps
from .tensorreps import TensorReps

__all__ = ["CHUNK_CPU", "CHUNK_CUDA", "PATHS", "frame_change", "frame_change_reference",
           "supports_fused"]

#: Edges per chunk on CPU: a chunk's temporaries (gathered frames, matrices, one block's
#: product) stay within a few MB and are reused by the allocator; smaller chunks multiply the
#: number of parallel regions, which costs most on a busy machine (measured: 4096 was slower).
CHUNK_CPU = 32768
#: Edges per chunk on other devices (GPU): large enough that kernel launches do not dominate.
CHUNK_CUDA = 1 << 18
#: The ``path`` values of :func:`frame_change`.
PATHS = ("auto", "kernel", "chunked", "reference")
#: Largest TensorReps order the fused path handles (higher orders fall back to the reference).
FUSED_MAX_ORDER = 2


class _Block(NamedTuple):
    """One block of the plan: feature slice ``[start, start + mul * n)``, viewed ``(mul, n)``.

    ``kind``: ``"id"`` (identity, nothing to do), ``"sign"`` (multiply by the sign/det),
    ``"mat"`` (multiply by the chunk's matrix ``key``).
    """

    start: int
    mul: int
    n: int
    kind: str
    key: tuple


@functools.cache
def _plan(reps: Reps) -> tuple[_Block, ...]:
    blocks = []
    start = 0
    if isinstance(reps, Irreps):
        for mul, ir in reps:
            n = ir.dim
            if mul > 0:
                signed = ir._sign_is_det()
                if ir.l == 0:
                    blocks.append(_Block(start, mul, 1, "sign" if signed else "id", ()))
                else:
                    blocks.append(_Block(start, mul, n, "mat", ("D", ir.l, signed)))
            start += mul * n
    else:
        d = reps.spatial_dim
        for b in reps:
            k, n = b.rep.order, d**b.rep.order
            if b.mul > 0:
                pseudo = b.rep.parity == "p"
                if k == 0:
                    blocks.append(_Block(start, b.mul, 1, "sign" if pseudo else "id", ()))
                else:
                    blocks.append(_Block(start, b.mul, n, "mat", ("T", k, pseudo)))
            start += b.mul * n
    return tuple(blocks)


def supports_fused(reps: Reps) -> bool:
    """Whether :func:`frame_change` takes the fused path for ``reps`` (see the module doc)."""
    if isinstance(reps, Irreps):
        return True
    if isinstance(reps, TensorReps):
        return reps.max_order <= FUSED_MAX_ORDER
    return False


# -- the constant form of D^2 --------------------------------------------------------------------
_D2_CACHE: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _d2_cast(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (dtype, device)
    hit = _D2_CACHE.get(key)
    if hit is None:
        hit = _D2_CACHE[key] = _d2_coefficients().to(dtype=dtype, device=device)
    return hit


def _contract(v: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``y[c, u, a] = sum_b M[c, a, b] v[c, u, b]`` for ``v`` ``(c, mul, n)``, ``M`` ``(c, n, n)``.

    One batched ``matmul``. Measured against ``n`` broadcast multiply-adds accumulated in place
    (no ``matmul`` of tiny matrices): those were 1.5-2x slower on CPU (strided views with inner
    axes of 3 or 5 take TensorIterator's slow path), and their backward needs a reduction each.
    """
    return torch.matmul(v, M.transpose(-1, -2))


def _chunk_matrices(reps: Reps, plan: tuple[_Block, ...], rel: torch.Tensor,
                    closed_d2: bool = False
                    ) -> tuple[dict[tuple, torch.Tensor], torch.Tensor | None]:
    """The matrices of one chunk of relative frames ``rel`` ``(c, d, d)``: ``{key: (c, n, n)}``
    (for TensorReps order 2: the factor ``R`` applied on both tensor indices) and the sign
    (Irreps) / determinant (TensorReps) per edge, or ``None`` if no block needs it.
    """
    keys = {b.key for b in plan if b.kind == "mat"}
    need_sign = any(b.kind == "sign" or (b.kind == "mat" and b.key[2]) for b in plan)
    mats: dict[tuple, torch.Tensor] = {}
    c = rel.shape[0]
    if isinstance(reps, Irreps):
        sign = det_sign(rel) if need_sign else None
        lmax = max((k[1] for k in keys), default=0)
        D: dict[int, torch.Tensor] = {1: rel}
        if lmax >= 2 and closed_d2:  # pointwise: fuses into one compiled kernel
            D[2] = _wigner_D2(rel)
        elif lmax >= 2:
            r = rel.reshape(c, 9)
            D[2] = ((r[:, :, None] * r[:, None, :]).reshape(c, 81)
                    @ _d2_cast(rel.dtype, rel.device)).reshape(c, 5, 5)
        for l in range(3, lmax + 1):
            D[l] = _coupling_step(l, rel, D[l - 1])
        for key in keys:
            _, l, signed = key
            mats[key] = D[l] * sign[:, None, None] if signed else D[l]
    else:
        sign = torch.linalg.det(rel) if need_sign else None
        for key in keys:
            mats[key] = rel
    return mats, sign


def _block_view(y: torch.Tensor, b: _Block) -> torch.Tensor:
    return y[:, b.start:b.start + b.mul * b.n].unflatten(-1, (b.mul, b.n))


def _apply_block(reps: Reps, b: _Block, v: torch.Tensor, mats: dict,
                 sign: torch.Tensor | None) -> torch.Tensor:
    """One block ``v`` ``(c, mul, n)`` carried by the chunk's matrices (out of place)."""
    if b.kind == "sign":
        return v * sign[:, None, None]
    M = mats[b.key]
    if isinstance(reps, Irreps) or b.key[1] == 1:
        y = _contract(v, M)
    else:  # TensorReps order 2: R X R^T, one contraction per tensor index
        d = M.shape[-1]
        t = _contract(v.reshape(v.shape[0], b.mul * d, d), M)  # X R^T
        t = t.reshape(v.shape[0], b.mul, d, d).transpose(-1, -2).reshape(-1, b.mul * d, d)
        y = _contract(t, M).reshape(v.shape[0], b.mul, d, d).transpose(-1, -2)
        y = y.reshape(v.shape)
    if b.key[2] and not isinstance(reps, Irreps):  # pseudo-tensor: det(R)
        y = y * sign[:, None, None]
    return y


def _forward_chunk(reps: Reps, plan: tuple[_Block, ...], yc: torch.Tensor,
                   rel: torch.Tensor) -> None:
    """Transform the gathered chunk ``yc`` ``(c, dim)`` in place by ``rho(rel)``."""
    # D^2 in its closed form: ~100 flops per edge in small single-threaded ops, against 2,025
    # multiply-adds per edge of the constant product (measured 1.5 ms against 13.6 ms per chunk)
    mats, sign = _chunk_matrices(reps, plan, rel, closed_d2=True)
    for b in plan:
        if b.kind == "id":
            continue
        v = _block_view(yc, b)
        if b.kind == "sign":
            v.mul_(sign[:, None, None])
        else:
            v.copy_(_apply_block(reps, b, v, mats, sign))


def _chunk_size(device: torch.device) -> int:
    return CHUNK_CPU if device.type == "cpu" else CHUNK_CUDA


def _rel_chunk(R_src, R_dst, rel, src_c, dst_c, c0, c1):
    if rel is not None:
        return rel[c0:c1]
    return torch.matmul(R_dst.index_select(0, dst_c),
                        R_src.index_select(0, src_c).transpose(-1, -2))


class _FrameChange(torch.autograd.Function):
    """``rho(rel_e) x[src_e]`` with ``rel_e`` given or ``R_dst[dst_e] R_src[src_e]^T``;
    saves only its inputs, the backward recomputes chunk by chunk."""

    @staticmethod
    def forward(ctx, x, R_src, R_dst, rel, src, dst, reps, chunk):
        ctx.reps, ctx.chunk = reps, chunk
        ctx.save_for_backward(x, R_src, R_dst, rel, src, dst)
        plan = _plan(reps)
        E = src.shape[0]
        out = torch.empty(E, x.shape[-1], dtype=x.dtype, device=x.device)
        for c0 in range(0, E, chunk):
            c1 = min(E, c0 + chunk)
            src_c = src[c0:c1]
            yc = out[c0:c1]
            torch.index_select(x, 0, src_c, out=yc)
            if plan and any(b.kind != "id" for b in plan):
                dst_c = None if dst is None else dst[c0:c1]
                _forward_chunk(reps, plan, yc, _rel_chunk(R_src, R_dst, rel, src_c, dst_c, c0,
                                                          c1))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference instead
            return reference_backward(ctx, grad_out)
        x, R_src, R_dst, rel, src, dst = ctx.saved_tensors
        reps, chunk = ctx.reps, ctx.chunk
        plan = _plan(reps)
        need_x, need_rs, need_rd, need_rel = ctx.needs_input_grad[:4]
        gx = torch.zeros_like(x) if need_x else None
        g_rs = torch.zeros_like(R_src) if need_rs else None
        g_rd = torch.zeros_like(R_dst) if need_rd else None
        g_rel = torch.zeros_like(rel) if need_rel else None
        grad_out = grad_out.contiguous()
        E = src.shape[0]
        for c0 in range(0, E, chunk):
            c1 = min(E, c0 + chunk)
            src_c = src[c0:c1]
            dst_c = None if dst is None else dst[c0:c1]
            g = grad_out[c0:c1]
            with torch.enable_grad():
                # one leaf per block (views of the gathered chunk): the gradient of a slice of
                # one leaf would zero-fill and accumulate a full (c, dim) buffer per block
                xc = x.index_select(0, src_c)
                vs = [_block_view(xc, b).detach().requires_grad_(need_x and b.kind != "id")
                      for b in plan]
                if rel is not None:
                    leaves = [rel[c0:c1].detach().requires_grad_(need_rel)]
                    rel_c = leaves[0]
                else:
                    Rd_c = R_dst.index_select(0, dst_c).requires_grad_(need_rd)
                    Rs_c = R_src.index_select(0, src_c).requires_grad_(need_rs)
                    leaves = [Rs_c, Rd_c]
                    rel_c = torch.matmul(Rd_c, Rs_c.transpose(-1, -2))
                mats, sign = _chunk_matrices(reps, plan, rel_c)
                live, wanted = [], [t for t in leaves if t.requires_grad]
                for b, v in zip(plan, vs):
                    if b.kind != "id":
                        y = _apply_block(reps, b, v, mats, sign)
                        if y.requires_grad:
                            live.append((y, _block_view(g, b)))
                        if v.requires_grad:
                            wanted.append(v)
                res = torch.autograd.grad([p for p, _ in live], wanted, [q for _, q in live],
                                          allow_unused=True) if live else [None] * len(wanted)
            res = dict(zip(map(id, wanted), res))
            if need_x:
                gx_c = torch.empty_like(xc)
                for b, v in zip(plan, vs):
                    r = _block_view(g, b) if b.kind == "id" else res.get(id(v))
                    view = _block_view(gx_c, b)
                    view.copy_(r) if r is not None else view.zero_()
                gx.index_add_(0, src_c, gx_c)
            if rel is not None:
                if need_rel and res.get(id(leaves[0])) is not None:
                    g_rel[c0:c1] = res[id(leaves[0])]
            else:
                if need_rs and res.get(id(Rs_c)) is not None:
                    g_rs.index_add_(0, src_c, res[id(Rs_c)])
                if need_rd and res.get(id(Rd_c)) is not None:
                    g_rd.index_add_(0, dst_c, res[id(Rd_c)])
        return gx, g_rs, g_rd, g_rel, None, None, None, None


def _check_index(index: torch.Tensor, name: str, n: int, device: torch.device) -> None:
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be a 1-d int64 index vector, got shape "
                         f"{tuple(index.shape)} and dtype {index.dtype}")
    if index.device != device:
        raise ValueError(f"{name} is on {index.device} but x is on {device}")
    if index.numel() and not compiling():  # the kernel reads rows unchecked: check here
        lo, hi = (int(v) for v in torch.aminmax(index))
        if lo < 0 or hi >= n:
            raise IndexError(f"{name} holds indices in [{lo}, {hi}], outside [0, {n})")


def frame_change(reps: Reps, x: torch.Tensor, src: torch.Tensor, *,
                 R_src: torch.Tensor | None = None, R_dst: torch.Tensor | None = None,
                 dst: torch.Tensor | None = None, rel: torch.Tensor | None = None,
                 path: str = "auto", chunk: int | None = None) -> torch.Tensor:
    r"""Messages carried into their targets' frames: ``rho(R_dst[dst] R_src[src]^T) x[src]``.

    Give either the node frames ``R_src`` (``(N_src, d, d)``), ``R_dst`` (``(N_dst, d, d)``,
    default ``R_src``) and the targets ``dst``, or the per-edge relative frames ``rel``
    (``(E, d, d)``, then ``y[e] = rho(rel[e]) x[src[e]]``), or only ``R_dst`` and ``dst`` for
    world-frame inputs (``y[e] = rho(R_dst[dst[e]]) x[src[e]]``).

    Args:
        reps: the reps of ``x``.
        x: ``(N_src, reps.dim)`` features in the sources' frames.
        src: ``(E,)`` source row of every edge.
        R_src, R_dst, dst: node frames and targets (see above).
        rel: per-edge relative frames instead of ``R_src``, ``R_dst``, ``dst``.
        path: ``"auto"`` (default): the compiled kernel (:mod:`._kernel`) for CPU tensors it
            supports (Irreps ``l <= 2``, TensorReps orders ``<= 2``, float32/64) when it is
            available and ``torch.compile`` is not tracing, else the chunked pure-torch path
            where :func:`supports_fused` says so, else the reference. ``"kernel"`` and
            ``"chunked"`` require their path (``ValueError`` where unsupported); ``"reference"`` is
            :func:`frame_change_reference`. Every path supports double backward (the kernel's
            and the chunked path's recompute through the reference for it).
        chunk: edges per chunk of the chunked path (default :data:`CHUNK_CPU` on CPU,
            :data:`CHUNK_CUDA` elsewhere).

    Returns:
        ``(E, reps.dim)``, differentiable in ``x`` and the frames (``rel``). Frames are assumed
        orthogonal (not checked here; :func:`~tensorframes.reps.base.check_orthogonal`).
    """
    if not isinstance(reps, Reps):
        raise TypeError(f"reps must be a Reps (Irreps or TensorReps), got {type(reps).__name__}")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != reps.dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (N, {reps.dim}) for {reps!r}, got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating point tensor, got {x.dtype}")
    d = reps.spatial_dim
    _check_index(src, "src", x.shape[0], x.device)
    if rel is not None:
        if R_src is not None or R_dst is not None or dst is not None:
            raise ValueError("give either rel or R_src/R_dst/dst, not both")
        check_matrices(rel, d, name="rel")
        if rel.dim() != 3 or rel.shape[0] != src.shape[0]:
            raise ValueError(f"rel must have shape (E, {d}, {d}) with E = {src.shape[0]} "
                             f"edges, got {tuple(rel.shape)}")
        mats = [rel]
    else:
        if (R_src is None and R_dst is None) or dst is None:
            raise ValueError("frame_change needs R_src and dst (and optionally R_dst), R_dst "
                             "and dst (world-frame input), or rel")
        if R_src is not None:
            R_dst = R_src if R_dst is None else R_dst
        mats = [R for R in (R_src, R_dst) if R is not None]
        for name, R in (("R_src", R_src), ("R_dst", R_dst)):
            if R is None:
                continue
            check_matrices(R, d, name=name)
            if R.dim() != 3:
                raise ValueError(f"{name} must have shape (N, {d}, {d}), got {tuple(R.shape)}")
        if R_src is not None and R_src.shape[0] != x.shape[0]:
            raise ValueError(f"R_src has {R_src.shape[0]} frames but x has {x.shape[0]} rows")
        _check_index(dst, "dst", R_dst.shape[0], x.device)
        if dst.shape != src.shape:
            raise ValueError(f"src and dst must have the same length, got {src.shape[0]} and "
                             f"{dst.shape[0]}")
    for R in mats:
        if R.dtype != x.dtype:
            raise TypeError(f"x and the frames must share a dtype, got x: {x.dtype} and "
                            f"frames: {R.dtype}")
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    kernel_ok = kernel_supports(reps, x.device, x.dtype)
    chunked_ok = supports_fused(reps) and not (R_src is None and rel is None)
    if path == "auto":
        # under torch.compile the pure-torch paths trace into the graph; a ctypes call would not
        path = ("kernel" if kernel_ok and not compiling() and kernel_available() else
                "chunked" if chunked_ok else "reference")
    if path == "kernel":
        if not kernel_ok:
            raise ValueError(f"the compiled kernel does not support {reps!r} in {x.dtype} on "
                             f"{x.device} (CPU, float32/64, Irreps l <= 2, TensorReps orders "
                             "<= 2 in d = 2, 3); use path='auto'")
        if not kernel_available():
            raise RuntimeError(f"the compiled frame-change kernel is unavailable: "
                               f"{kernel_error()}; use path='auto'")
        return kernel_frame_change(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst, rel=rel)
    if path == "reference":
        return frame_change_reference(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst, rel=rel)
    if not chunked_ok:
        raise ValueError(f"the chunked frame change does not support {reps!r} (TensorReps "
                         f"orders <= {FUSED_MAX_ORDER} and Irreps, node frames or rel); use "
                         "path='auto'")
    if chunk is None:
        chunk = _chunk_size(x.device)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    return _FrameChange.apply(x, R_src, R_dst, rel, src, dst, reps, chunk)
