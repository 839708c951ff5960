r"""The compiled CPU kernel of the frame change (``_kernels/frame_change.cpp``), and its autograd.

:func:`kernel_frame_change` computes ``rho(rel_e) x[src_e]`` for every edge in one pass over the
edges: each thread reads ``x[src_e]`` and the two frames, forms ``rel_e = R_dst[dst_e]
R_src[src_e]^T`` (or reads a given ``rel_e``, or takes ``rel_e = R_dst[dst_e]`` for world-frame
inputs), and writes the transformed row into the output, allocated once. No ``(E, ...)``
temporary, no dense ``D`` (``D^1`` is ``rel``, ``D^2`` its quadratic polynomial, a TensorReps
order-2 block ``rel X rel^T``). The backward saves nothing but the inputs: it recomputes
``rel_e`` and ``D^2`` per edge, accumulates ``rho(rel_e)^T g_e`` into the sources' rows (one
accumulator per thread, summed at the end: deterministic for a given thread count) and writes
``dL/drel_e``, which is chained to the node frames with two small products.

Scope: :class:`~tensorframes.Irreps` with ``l <= 2`` and :class:`~tensorframes.TensorReps` of
orders ``<= 2`` in ``d = 2, 3``, float32 and float64, CPU tensors (:func:`kernel_supports`).
Double backward (``create_graph=True``) recomputes through the pure-torch reference, so it is
exact too, at the reference's speed.

Build: the source is plain C++17 (no torch headers, ``std::thread`` only) and compiles in a few
seconds with the system compiler (``$CXX``, else ``c++``) on first use, into
``$TENSORFRAMES_KERNEL_DIR`` (default ``~/.cache/tensorframes/kernels``), named by a hash of the
source and flags; it is loaded with :mod:`ctypes`. Without a compiler, or with
``TENSORFRAMES_KERNELS=0``, :func:`kernel_available` is ``False`` and the frame change runs the
pure-torch path (one :class:`RuntimeWarning` says why a build failed).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ._reference import reference_backward
from ._wigner import _d2_coefficients
from .base import Reps
from .irreps import Irreps
from .tensorreps import TensorReps

__all__ = ["KERNEL_DIR_ENV", "KERNELS_ENV", "kernel_available", "kernel_error",
           "kernel_frame_change", "kernel_supports"]

#: Environment variable naming the folder compiled kernels are cached in.
KERNEL_DIR_ENV = "TENSORFRAMES_KERNEL_DIR"
#: ``TENSORFRAMES_KERNELS=0`` disables the compiled kernel (pure-torch frame change).
KERNELS_ENV = "TENSORFRAMES_KERNELS"
_SOURCE = Path(__file__).with_name("_kernels") / "frame_change.cpp"
#: ``-march=native``: the per-edge 3x3 / 5x5 products vectorise (measured 1.5-2x on the
#: transform); the cached library is therefore keyed by the CPU as well (:func:`_cpu_id`).
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")
_ABI_VERSION = 1
#: Edges per thread below which the kernel stays on one thread (a thread start costs ~50 us).
EDGES_PER_THREAD = 4096

_ID, _SIGN, _DET, _D1, _D2, _T1, _T2 = range(7)
_lock = threading.Lock()
_state: dict[str, object] = {}


def _kernel_dir() -> Path:
    env = os.environ.get(KERNEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "tensorframes" / "kernels"


def _cpu_id() -> bytes:
    """The CPU model and feature flags (Linux ``/proc/cpuinfo``; the platform string elsewhere),
    part of the cache key, since the library is compiled for the CPU it is built on."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor().encode()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep))).encode()


def _target() -> Path:
    """The cached library's path: named by a hash of the source, the flags and the CPU."""
    key = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode()
                         + platform.machine().encode() + _cpu_id()).hexdigest()[:16]
    return _kernel_dir() / f"frame_change-{key}.so"


def _build(target: Path) -> None:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *_FLAGS, str(_SOURCE), "-o", tmp], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: concurrent builders each publish a complete library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL | None:
    """The compiled library (built on first use), or ``None`` if it cannot be had."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        if os.environ.get(KERNELS_ENV, "1") != "0":
            try:
                target = _target()
                if not target.exists():
                    _build(target)
                try:
                    lib = _open(target)
                except OSError:  # a cached file that does not load (truncated copy): rebuild
                    _build(target)
                    lib = _open(target)
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                _state["error"] = str(err)
                warnings.warn(f"tensorframes: the compiled frame-change kernel is unavailable "
                              f"({err}); using the pure-torch path", RuntimeWarning, stacklevel=3)
                lib = None
        _state["lib"] = lib
        return lib


def _open(target: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(target))
    if lib.tf_kernel_version() != _ABI_VERSION:
        raise RuntimeError(f"{target} reports another ABI version")
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    common = [i32, i32, p, i64, i64, p, p, i64, p, p, p, i64, p, i64, p, p, i64, i64, i64]
    lib.tf_frame_change_forward.argtypes = [*common, p, i32]
    lib.tf_frame_change_forward.restype = i32
    lib.tf_frame_change_backward.argtypes = [*common, p, p, p, i32]
    lib.tf_frame_change_backward.restype = i32
    lib.tf_advise_huge_pages.argtypes = [p, i64]
    lib.tf_advise_huge_pages.restype = i32


#: Fresh outputs at least this large are given transparent huge pages before the first write.
HUGE_PAGE_MIN_BYTES = 8 << 20


def _fresh(*shape: int, dtype: torch.dtype, zero: bool = False) -> torch.Tensor:
    """A new CPU tensor; large ones are advised to use huge pages before they are first touched
    (one page fault per 2 MiB instead of per 4 KiB), then zeroed if asked."""
    t = torch.empty(*shape, dtype=dtype)
    nbytes = t.numel() * t.element_size()
    if nbytes >= HUGE_PAGE_MIN_BYTES:
        _load().tf_advise_huge_pages(t.data_ptr(), nbytes)
    return t.zero_() if zero else t


def kernel_error() -> str | None:
    """Why the kernel is unavailable (``None`` if it loaded or was not tried yet)."""
    if os.environ.get(KERNELS_ENV, "1") == "0":
        return f"disabled by {KERNELS_ENV}=0"
    return _state.get("error")  # type: ignore[return-value]


def kernel_available() -> bool:
    """Whether the compiled CPU kernel is built and loaded (builds it on the first call);
    ``False`` while ``TENSORFRAMES_KERNELS=0`` is set, also after it loaded."""
    return os.environ.get(KERNELS_ENV, "1") != "0" and _load() is not None


def kernel_supports(reps: Reps, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> bool:
    """Whether :func:`kernel_frame_change` handles ``reps`` on ``device`` in ``dtype`` (the
    kernel itself may still be unavailable: :func:`kernel_available`)."""
    if torch.device(device).type != "cpu" or dtype not in (torch.float32, torch.float64):
        return False
    if isinstance(reps, Irreps):
        return reps.lmax <= 2
    if isinstance(reps, TensorReps):
        return reps.max_order <= 2 and reps.spatial_dim in (2, 3)
    return False


class _Plan:
    """The block table of ``reps`` for the kernel: ``(start, mul, n, kind, flag)`` rows."""

    def __init__(self, reps: Reps) -> None:
        rows, start = [], 0
        need_det = need_d2 = False
        if isinstance(reps, Irreps):
            for mul, ir in reps:
                signed = ir._sign_is_det()
                kind = {0: _SIGN if signed else _ID, 1: _D1, 2: _D2}[ir.l]
                if mul > 0:
                    rows.append((start, mul, ir.dim, kind, int(signed)))
                need_det |= mul > 0 and signed
                need_d2 |= mul > 0 and ir.l == 2
                start += mul * ir.dim
        else:
            d = reps.spatial_dim
            for b in reps:
                k, n, pseudo = b.rep.order, d ** b.rep.order, b.rep.parity == "p"
                kind = {0: _DET if pseudo else _ID, 1: _T1, 2: _T2}[k]
                if b.mul > 0:
                    rows.append((start, b.mul, n, kind, int(pseudo)))
                need_det |= b.mul > 0 and pseudo
                start += b.mul * n
        self.blocks = torch.tensor(rows, dtype=torch.int64).reshape(-1, 5).contiguous()
        self.need_det, self.need_d2 = need_det, need_d2
        self.d = reps.spatial_dim


@functools.cache
def _plan(reps: Reps) -> _Plan:
    return _Plan(reps)


@functools.cache
def _d2_terms() -> tuple[torch.Tensor, torch.Tensor]:
    """``D^2(R)`` as terms ``D2[k] += c R_p R_q`` (``p <= q``; flattened indices), float64."""
    C = _d2_coefficients().reshape(9, 9, 25)
    terms, coef = [], []
    for p in range(9):
        for q in range(p, 9):
            for k in range(25):
                c = float(C[p, q, k]) * (1.0 if p == q else 2.0)
                if abs(c) > 1e-14:
                    terms.append((p, q, k))
                    coef.append(c)
    return (torch.tensor(terms, dtype=torch.int32).contiguous(),
            torch.tensor(coef, dtype=torch.float64))


_COEF_CACHE: dict[torch.dtype, torch.Tensor] = {}


def _coef(dtype: torch.dtype) -> torch.Tensor:
    hit = _COEF_CACHE.get(dtype)
    if hit is None:
        hit = _COEF_CACHE[dtype] = _d2_terms()[1].to(dtype).contiguous()
    return hit


def _threads(edges: int) -> int:
    return max(1, min(torch.get_num_threads(), edges // EDGES_PER_THREAD))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _call(fn: str, plan: _Plan, x, src, dst, R_src, R_dst, rel, mode, *extra) -> None:
    lib = _load()
    assert lib is not None
    terms, coef = _d2_terms()[0], _coef(x.dtype)
    dtype = 0 if x.dtype == torch.float32 else 1
    code = getattr(lib, fn)(
        dtype, plan.d, _ptr(x), x.shape[1], x.shape[0], _ptr(src), _ptr(dst), src.shape[0],
        _ptr(R_src), _ptr(R_dst), _ptr(rel), mode, _ptr(plan.blocks), plan.blocks.shape[0],
        _ptr(terms), _ptr(coef), terms.shape[0], int(plan.need_det), int(plan.need_d2), *extra)
    if code != 0:
        raise RuntimeError(f"frame-change kernel {fn} refused d={plan.d}, dtype={x.dtype}")


class _KernelFrameChange(torch.autograd.Function):
    """``rho(rel_e) x[src_e]`` by the compiled kernel; saves only its inputs."""

    @staticmethod
    def forward(ctx, x, R_src, R_dst, rel, src, dst, reps, mode):
        ctx.reps, ctx.mode = reps, mode
        ctx.save_for_backward(x, R_src, R_dst, rel, src, dst)
        out = _fresh(src.shape[0], x.shape[1], dtype=x.dtype)
        _call("tf_frame_change_forward", _plan(reps), x, src, dst, R_src, R_dst, rel, mode,
              out.data_ptr(), _threads(src.shape[0]))
        return out

    @staticmethod
    def backward(ctx, g):
        x, R_src, R_dst, rel, src, dst = ctx.saved_tensors
        reps, mode = ctx.reps, ctx.mode
        need_x, need_rs, need_rd, need_rel = ctx.needs_input_grad[:4]
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference instead
            return reference_backward(ctx, g)
        g = g.contiguous()
        E = src.shape[0]
        threads = _threads(E)
        acc = _fresh(threads, *x.shape, dtype=x.dtype, zero=True) if need_x else None
        d = reps.spatial_dim
        grel = torch.empty(E, d, d, dtype=x.dtype) if need_rs or need_rd or need_rel else None
        _call("tf_frame_change_backward", _plan(reps), x, src, dst, R_src, R_dst, rel, mode,
              g.data_ptr(), _ptr(acc), _ptr(grel), threads)
        gx = None if acc is None else (acc[0] if threads == 1 else acc.sum(0))
        g_rs = g_rd = g_rel = None
        if mode == 0:
            g_rel = grel if need_rel else None
        elif mode == 2:
            if need_rd:
                g_rd = torch.zeros_like(R_dst).index_add_(0, dst, grel)
        else:  # rel = R_dst[dst] R_src[src]^T
            if need_rd:
                g_rd = torch.zeros_like(R_dst).index_add_(
                    0, dst, grel @ R_src.index_select(0, src))
            if need_rs:
                g_rs = torch.zeros_like(R_src).index_add_(
                    0, src, grel.transpose(-1, -2) @ R_dst.index_select(0, dst))
        return gx, g_rs, g_rd, g_rel, None, None, None, None


def kernel_frame_change(reps: Reps, x: torch.Tensor, src: torch.Tensor, *,
                        R_src: torch.Tensor | None = None, R_dst: torch.Tensor | None = None,
                        dst: torch.Tensor | None = None,
                        rel: torch.Tensor | None = None) -> torch.Tensor:
    """``rho(rel_e) x[src_e]`` by the compiled kernel (arguments checked by the caller,
    :func:`tensorframes.reps._fused.frame_change`).

    ``rel_e`` is ``rel[e]`` if given, else ``R_dst[dst_e] R_src[src_e]^T``, or ``R_dst[dst_e]``
    when ``R_src`` is ``None`` (a world-frame input carried into the targets' frames);
    ``R_dst`` defaults to ``R_src``.
    """
    src = src.to(torch.int64).contiguous()
    dst = None if dst is None else dst.to(torch.int64).contiguous()
    if rel is not None:
        mode = 0
    elif R_src is None:
        mode = 2
    else:
        mode = 1
        R_dst = R_src if R_dst is None else R_dst
    x = x.contiguous()
    R_src = None if R_src is None else R_src.contiguous()
    R_dst = None if R_dst is None else R_dst.contiguous()
    rel = None if rel is None else rel.contiguous()
    return _KernelFrameChange.apply(x, R_src, R_dst, rel, src, dst, reps, mode)
