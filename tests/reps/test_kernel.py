"""The compiled CPU frame-change kernel (``tensorframes.reps._kernel``) against the reference.

Everything here compares with :func:`frame_change_reference` (gather, relative frames,
``Reps.transform``) in float64 with reflections in the frames: values and gradients for ``x``,
``R_src``, ``R_dst`` and ``rel`` in the three modes (node frames, per-edge ``rel``, world-frame
input), gradcheck / gradgradcheck, the multi-threaded path, int32 indices and non-contiguous
inputs, the huge-page advice, the build (into an empty cache folder) and its failure modes
(``TENSORFRAMES_KERNELS=0``, a broken compiler), ``kernel_supports`` and the saved-activation
bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from tensorframes.reps import Irreps, TensorReps, _kernel
from tensorframes.reps._fused import frame_change, frame_change_reference
from tensorframes.reps._kernel import kernel_available, kernel_error, kernel_supports
from tensorframes.testing import random_orthogonal

from ._saved import saved_bytes

pytestmark = pytest.mark.skipif(not kernel_available(),
                                reason=f"compiled kernel unavailable: {kernel_error()}")

IRREPS = "2x0e+1x0o+2x1o+1x1e+1x2e+2x2o"
TENSORREPS = "2x0n+1x0p+2x1n+1x1p+1x2n+1x2p"
CASES = [(IRREPS, 3), (TENSORREPS, 3), (TENSORREPS, 2)]
MODES = ["frames", "rel", "world"]
KERNEL_FN = "_KernelFrameChangeBackward"


def _reps(spec: str, d: int = 3):
    return Irreps(spec) if spec[-1] in "eoy" else TensorReps(spec, spatial_dim=d)


def _frames(n, d, g, dtype):
    """``n`` orthogonal frames, frame 0 a reflection and frame 1 a rotation."""
    R = random_orthogonal(n, d, generator=g, dtype=dtype)
    for i, want in ((0, -1.0), (1, 1.0)):
        if torch.linalg.det(R[i]) * want < 0:
            R[i, 0] = -R[i, 0]
    return R


def _case(reps, n_src=13, n_dst=9, E=57, dtype=torch.float64, seed=0):
    d = reps.spatial_dim
    g = torch.Generator().manual_seed(seed)
    R_src, R_dst = _frames(n_src, d, g, dtype), _frames(n_dst, d, g, dtype)
    x = torch.randn(n_src, reps.dim, generator=g, dtype=dtype)
    src = torch.randint(0, n_src, (E,), generator=g)
    dst = torch.randint(0, n_dst, (E,), generator=g)
    # both det signs on the edges' relative frames, and on the targets' frames (world mode)
    src[:3], dst[:3] = torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0])
    rel = R_dst[dst] @ R_src[src].transpose(-1, -2)
    for r in (rel, R_dst[dst]):
        assert (torch.linalg.det(r) < 0).any() and (torch.linalg.det(r) > 0).any()
    return x, R_src, R_dst, rel, src, dst


def _inputs(mode, x, R_src, R_dst, rel):
    """The differentiable inputs of ``mode`` (fresh leaves) and the keyword arguments."""
    if mode == "frames":
        leaves = {"x": x, "R_src": R_src, "R_dst": R_dst}
    elif mode == "rel":
        leaves = {"x": x, "rel": rel}
    else:
        leaves = {"x": x, "R_dst": R_dst}
    return {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}


def _run(fn, reps, mode, src, dst, leaves, **kw):
    args = {k: v for k, v in leaves.items() if k != "x"}
    if mode != "rel":
        args["dst"] = dst
    return fn(reps, leaves["x"], src, **args, **kw)


def _kernel_fc(reps, x, src, **kw):
    y = frame_change(reps, x, src, **kw, path="kernel")
    if y.requires_grad:
        assert type(y.grad_fn).__name__ == KERNEL_FN
    else:
        assert y.grad_fn is None
    return y


def _values_and_grads(fn, reps, mode, case, w):
    x, R_src, R_dst, rel, src, dst = case
    leaves = _inputs(mode, x, R_src, R_dst, rel)
    y = _run(fn, reps, mode, src, dst, leaves)
    grads = torch.autograd.grad((y * w).sum(), list(leaves.values()))
    return y.detach(), dict(zip(leaves, grads))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("spec", "d"), CASES)
def test_values_and_gradients_match_the_reference(spec, d, mode):
    reps = _reps(spec, d)
    case = _case(reps)
    w = torch.randn(case[4].shape[0], reps.dim, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    y, g = _values_and_grads(_kernel_fc, reps, mode, case, w)
    y_ref, g_ref = _values_and_grads(frame_change_reference, reps, mode, case, w)
    torch.testing.assert_close(y, y_ref, atol=1e-11, rtol=0)
    assert g.keys() == g_ref.keys()
    for k in g:
        assert g_ref[k].abs().max() > 0
        torch.testing.assert_close(g[k], g_ref[k], atol=1e-11, rtol=0, msg=k)


@pytest.mark.parametrize(("spec", "d"), CASES)
def test_same_frames_default_accumulates_both_gradients(spec, d):
    # R_dst defaults to R_src: the frames' gradient sums the source and the target parts
    reps = _reps(spec, d)
    x, R, _, _, src, _ = _case(reps, n_dst=13)
    dst = torch.randint(0, 13, src.shape, generator=torch.Generator().manual_seed(3))
    w = torch.randn(src.shape[0], reps.dim, dtype=torch.float64)
    out = []
    for fn in (_kernel_fc, frame_change_reference):
        xr, Rr = x.clone().requires_grad_(), R.clone().requires_grad_()
        y = fn(reps, xr, src, R_src=Rr, dst=dst)
        out.append((y.detach(), *torch.autograd.grad((y * w).sum(), [xr, Rr])))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


@pytest.mark.parametrize("mode", ["frames", "world"])
@pytest.mark.parametrize(("spec", "d"), [("1x0o+1x1e+1x2o", 3), ("1x0p+1x1n+1x2p", 2)])
def test_gradcheck_and_gradgradcheck(spec, d, mode):
    reps = _reps(spec, d)
    x, R_src, R_dst, rel, src, dst = _case(reps, n_src=2, n_dst=2, E=3)
    leaves = _inputs(mode, x, R_src, R_dst, rel)
    names = list(leaves)

    def fn(*tensors):
        return _run(_kernel_fc, reps, mode, src, dst, dict(zip(names, tensors)))

    assert torch.autograd.gradcheck(fn, list(leaves.values()))
    # fast mode (random projections of the second derivatives): the full check takes ~1.5 s
    assert torch.autograd.gradgradcheck(fn, list(leaves.values()), fast_mode=True)


def test_multithreaded_matches_reference_and_single_thread():
    reps = Irreps("1x0o+1x1o+1x2e")
    E = 2 * _kernel.EDGES_PER_THREAD + 123
    x, R_src, R_dst, rel, src, dst = _case(reps, n_src=40, n_dst=30, E=E)
    w = torch.randn(E, reps.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    old = torch.get_num_threads()
    results = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert _kernel._threads(E) == n  # the kernel really runs on n threads
            results[n] = _values_and_grads(_kernel_fc, reps, "frames",
                                           (x, R_src, R_dst, rel, src, dst), w)
    finally:
        torch.set_num_threads(old)
    y_ref, g_ref = _values_and_grads(frame_change_reference, reps, "frames",
                                     (x, R_src, R_dst, rel, src, dst), w)
    (y1, g1), (y2, g2) = results[1], results[2]
    torch.testing.assert_close(y2, y_ref, atol=1e-11, rtol=0)
    assert torch.equal(y1, y2)  # each edge is computed the same way on any thread
    for k in g2:
        torch.testing.assert_close(g2[k], g_ref[k], atol=1e-10, rtol=0, msg=k)
    torch.testing.assert_close(g2["x"], g1["x"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_int32_indices_and_non_contiguous_inputs(mode):
    reps = Irreps(IRREPS)
    x, R_src, R_dst, rel, src, dst = _case(reps)
    w = torch.randn(src.shape[0], reps.dim, dtype=torch.float64)
    # non-contiguous views with the same values: x transposed and sliced, frames transposed
    # twice inside a wider buffer, rel likewise
    x_nc = torch.randn(reps.dim, 2 * x.shape[0], dtype=torch.float64)
    x_nc[:, ::2] = x.t()
    x_nc = x_nc[:, ::2].t()

    def nc(R):
        buf = torch.zeros(R.shape[0], R.shape[2], 2 * R.shape[1], dtype=R.dtype)
        buf[:, :, ::2] = R.transpose(-1, -2)
        return buf[:, :, ::2].transpose(-1, -2)

    views = {"x": x_nc, "R_src": nc(R_src), "R_dst": nc(R_dst), "rel": nc(rel)}
    for v, t in zip(views.values(), (x, R_src, R_dst, rel)):
        assert not v.is_contiguous() and torch.equal(v, t)
    base = _inputs(mode, x, R_src, R_dst, rel)
    leaves = {k: views[k].detach().requires_grad_() for k in base}  # non-contiguous leaves
    assert src.dtype == torch.int64
    y = _run(_kernel_fc, reps, mode, src.int(), dst.int(), leaves)
    g = dict(zip(leaves, torch.autograd.grad((y * w).sum(), list(leaves.values()))))
    y_ref, g_ref = _values_and_grads(frame_change_reference, reps, mode,
                                     (x, R_src, R_dst, rel, src, dst), w)
    torch.testing.assert_close(y, y_ref, atol=1e-11, rtol=0)
    for k in g:
        torch.testing.assert_close(g[k], g_ref[k], atol=1e-11, rtol=0, msg=k)


def test_huge_page_advice_path(monkeypatch):
    monkeypatch.setattr(_kernel, "HUGE_PAGE_MIN_BYTES", 4096)
    lib = _kernel._load()
    advise, calls = lib.tf_advise_huge_pages, []

    def spy(ptr, nbytes):
        calls.append(nbytes)
        return advise(ptr, nbytes)

    monkeypatch.setattr(lib, "tf_advise_huge_pages", spy)
    reps = Irreps("4x0e+2x1o+2x2e")  # dim 20
    E = 12000  # output 12000 * 20 * 4 bytes = 960 KB, above the lowered threshold
    x, R_src, R_dst, _, src, dst = _case(reps, n_src=60, n_dst=50, E=E, dtype=torch.float32)
    xr, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
    y = _kernel_fc(reps, xr, src, R_src=R_src, R_dst=R_dst, dst=dst)
    assert calls == [E * reps.dim * 4]
    y_ref = frame_change_reference(reps, x64, src, R_src=R_src.double(), R_dst=R_dst.double(),
                                   dst=dst)
    torch.testing.assert_close(y.double(), y_ref, atol=1e-5, rtol=0)
    w = torch.randn_like(y)
    (gx,) = torch.autograd.grad((y * w).sum(), xr)  # its accumulators: advised, then zeroed
    assert len(calls) == 2 and calls[1] == _kernel._threads(E) * x.numel() * 4
    (gx_ref,) = torch.autograd.grad((y_ref * w.double()).sum(), x64)
    torch.testing.assert_close(gx.double(), gx_ref, atol=1e-3, rtol=1e-5)
    # the advice itself on a buffer holding whole 2 MiB pages: madvise succeeds (returns 0)
    big = _kernel._fresh(3 << 20, dtype=torch.float32, zero=True)
    assert calls[-1] == 12 << 20 and advise(big.data_ptr(), 12 << 20) == 0
    assert not big.any()


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """An unloaded kernel state with an empty cache folder (the real state comes back after)."""
    monkeypatch.setattr(_kernel, "_state", {})
    monkeypatch.setenv(_kernel.KERNEL_DIR_ENV, str(tmp_path))
    return tmp_path


def _check_fallback(expect_warning: str | None, reason: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not kernel_available()
        assert not kernel_available()  # cached: warned once at most
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    if expect_warning is None:
        assert runtime == []
    else:
        assert len(runtime) == 1 and expect_warning in str(runtime[0].message)
    assert reason in kernel_error()
    reps = Irreps("1x0o+1x1o+1x2e")
    x, R_src, R_dst, rel, src, dst = _case(reps)
    for kw in ({"R_src": R_src, "R_dst": R_dst, "dst": dst}, {"rel": rel},
               {"R_dst": R_dst, "dst": dst}):
        y = frame_change(reps, x, src, **kw)  # auto: the torch paths
        torch.testing.assert_close(y, frame_change_reference(reps, x, src, **kw), atol=1e-12,
                                   rtol=0)
        with pytest.raises(RuntimeError, match="unavailable"):
            frame_change(reps, x, src, **kw, path="kernel")
    xr = x.clone().requires_grad_()
    y = frame_change(reps, xr, src, R_src=R_src, R_dst=R_dst, dst=dst)
    assert type(y.grad_fn).__name__ == "_FrameChangeBackward"  # the chunked path


def test_disabled_by_environment(fresh_state, monkeypatch):
    monkeypatch.setenv(_kernel.KERNELS_ENV, "0")
    # an explicit opt-out is not a failure: no warning, the reason is in kernel_error
    _check_fallback(None, "TENSORFRAMES_KERNELS=0")
    assert list(fresh_state.iterdir()) == []  # nothing built


def test_broken_compiler(fresh_state, monkeypatch):
    monkeypatch.delenv(_kernel.KERNELS_ENV, raising=False)
    monkeypatch.setenv("CXX", "/bin/false")
    _check_fallback("/bin/false failed", "/bin/false failed")
    assert list(fresh_state.glob("*.so")) == []  # no half-built library left behind


def test_missing_compiler(fresh_state, monkeypatch):
    monkeypatch.delenv(_kernel.KERNELS_ENV, raising=False)
    monkeypatch.setenv("CXX", str(fresh_state / "no-such-compiler"))
    _check_fallback("no-such-compiler", "no-such-compiler")


def test_build_into_an_empty_folder(fresh_state, monkeypatch):
    monkeypatch.delenv(_kernel.KERNELS_ENV, raising=False)
    # -O0 instead of -O3: the same build path in ~1.5 s instead of ~5 s (the other tests run
    # the library built with the real flags)
    assert "-O3" in _kernel._FLAGS
    monkeypatch.setattr(_kernel, "_FLAGS", tuple("-O0" if f == "-O3" else f
                                                 for f in _kernel._FLAGS))
    assert list(fresh_state.iterdir()) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert kernel_available()
    assert kernel_error() is None
    built = list(fresh_state.iterdir())
    assert len(built) == 1 and built[0].name.startswith("frame_change-")
    assert built[0].suffix == ".so"
    lib = _kernel._state["lib"]
    assert lib._name == str(built[0]) and lib.tf_kernel_version() == _kernel._ABI_VERSION
    reps = Irreps("1x0o+1x1o+1x2e")
    x, R_src, R_dst, _, src, dst = _case(reps)
    y = _kernel_fc(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst)
    torch.testing.assert_close(
        y, frame_change_reference(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst),
        atol=1e-11, rtol=0)
    # a later process finds the cached library: no compiler needed, nothing rebuilt
    monkeypatch.setattr(_kernel, "_state", {})
    monkeypatch.setenv("CXX", "/bin/false")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert kernel_available()
    assert list(fresh_state.iterdir()) == built
    assert _kernel._state["lib"]._name == str(built[0])


def test_a_cached_library_that_does_not_load_is_rebuilt(tmp_path):
    # in a fresh process: this one has the library loaded, and dlopen matches loaded names
    code = textwrap.dedent("""
        import warnings
        import torch
        from tensorframes.reps import Irreps, _kernel
        from tensorframes.reps._fused import frame_change_reference
        _kernel._FLAGS = tuple("-O0" if f == "-O3" else f for f in _kernel._FLAGS)
        target = _kernel._target()
        target.parent.mkdir(parents=True)
        target.write_bytes(b"not a shared library")  # e.g. a copy cut short
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert _kernel.kernel_available()
        assert sorted(target.parent.iterdir()) == [target] and target.stat().st_size > 1000
        reps = Irreps("1x0o+1x1o+1x2e")
        x = torch.randn(5, reps.dim, dtype=torch.float64)
        R = torch.linalg.qr(torch.randn(5, 3, 3, dtype=torch.float64))[0]
        src, dst = torch.tensor([0, 1, 4, 2]), torch.tensor([3, 3, 0, 2])
        y = _kernel.kernel_frame_change(reps, x, src, R_src=R, dst=dst)
        torch.testing.assert_close(y, frame_change_reference(reps, x, src, R_src=R, dst=dst))
        print("rebuilt")
    """)
    env = {**os.environ, _kernel.KERNEL_DIR_ENV: str(tmp_path / "kernels")}
    env.pop(_kernel.KERNELS_ENV, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and "rebuilt" in proc.stdout, proc.stderr[-2000:]


def test_kernel_supports():
    ok = [Irreps("1x0e+1x0o+1x1o+1x1e+1x2e+1x2o"), Irreps("2x1y"),
          TensorReps("1x0n+1x1p+1x2n", spatial_dim=3), TensorReps("1x0p+1x2p", spatial_dim=2)]
    for reps in ok:
        for dtype in (torch.float32, torch.float64):
            assert kernel_supports(reps, "cpu", dtype)
            assert kernel_supports(reps, torch.device("cpu"), dtype)
        assert kernel_supports(reps)
        for device in ("cuda", "cuda:0", torch.device("cuda", 1), "meta"):
            assert not kernel_supports(reps, device, torch.float32)
        for dtype in (torch.float16, torch.bfloat16):
            assert not kernel_supports(reps, "cpu", dtype)
    assert not kernel_supports(Irreps("1x0e+1x3o"), "cpu", torch.float64)
    assert not kernel_supports(TensorReps("1x0n+1x3n", spatial_dim=3), "cpu", torch.float64)
    assert not kernel_supports(TensorReps("1x1n", spatial_dim=4), "cpu", torch.float64)
    assert not kernel_supports(TensorReps("1x0n", spatial_dim=4), "cpu", torch.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("spec", "d"), CASES)
def test_saved_activations_at_most_the_input(spec, d, mode):
    reps = _reps(spec, d)
    x, R_src, R_dst, rel, src, dst = _case(reps, n_src=50, n_dst=40, E=2000, dtype=torch.float32)
    leaves = _inputs(mode, x, R_src, R_dst, rel)
    inputs = sum(t.numel() * t.element_size() for t in leaves.values())
    inputs += src.numel() * src.element_size() + (0 if mode == "rel" else dst.numel() * 8)
    kern = saved_bytes(lambda: _run(_kernel_fc, reps, mode, src, dst, leaves))
    ref = saved_bytes(lambda: _run(frame_change_reference, reps, mode, src, dst, leaves))
    assert 0 < kern <= inputs
    assert ref > 2 * inputs  # the reference keeps per-edge activations (the test can fail)
