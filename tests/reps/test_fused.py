"""The fused frame change (``tensorframes.reps._fused``) against the plain reference path.

Reference: gather ``x[src]``, relative frames ``R_i R_j^T``, ``Reps.transform`` (float64,
reflections included). Both fused paths, the compiled kernel (``path="kernel"``, Irreps
``l <= 2`` and TensorReps orders ``<= 2``) and the chunked pure-torch path
(``path="chunked"``): values and gradients for ``x`` and for both frame sets, gradcheck on a
small case, double backward against the reference, empty edge sets, float32, the dispatch rule
and the saved-activation bound. Kernel-specific tests are in ``test_kernel.py``.
"""

from __future__ import annotations

import pytest
import torch

from tensorframes.reps import Irreps, TensorReps
from tensorframes.reps._fused import (
    PATHS,
    _FrameChange,
    frame_change,
    frame_change_reference,
    supports_fused,
)
from tensorframes.reps._kernel import kernel_available, kernel_supports
from tensorframes.testing import random_orthogonal

from ._saved import saved_bytes

IRREPS = ["16x0e+8x1o+4x2e", "3x0o+2x1e+1x2o+2x0e+1x1o", "1x2e+2x3o+1x4e+1x0o", "2x1y+1x3y"]
TENSORREPS = ["4x0n+3x1n+2x2n", "2x0p+2x1p+1x2p+1x0n", "1x2n+1x1n"]
FUSED_PATHS = ["kernel", "chunked"]
#: The grad_fn of each fused path's output.
GRAD_FN = {"kernel": "_KernelFrameChangeBackward", "chunked": "_FrameChangeBackward"}


def _reps(spec: str, d: int = 3):
    return Irreps(spec) if spec[-1] in "eoy" else TensorReps(spec, spatial_dim=d)


def _need(path: str, reps, dtype=torch.float64) -> None:
    """Skip where ``path`` cannot run ``reps`` (the kernel: ``kernel_supports``, built)."""
    if path == "kernel":
        if not kernel_supports(reps, "cpu", dtype):
            pytest.skip(f"the kernel does not support {reps!r}")
        if not kernel_available():
            pytest.skip("the compiled kernel is unavailable")


def _case(reps, n_src=13, n_dst=9, E=57, dtype=torch.float64, seed=0, d=3):
    g = torch.Generator().manual_seed(seed)
    R_src = random_orthogonal(n_src, d, generator=g, dtype=dtype)
    R_dst = random_orthogonal(n_dst, d, generator=g, dtype=dtype)
    # both rotations and reflections occur (the parity / det paths): flip one axis where needed
    for R in (R_src, R_dst):
        for i, want in ((0, -1.0), (1, 1.0)):
            if torch.linalg.det(R[i]) * want < 0:
                R[i, 0] = -R[i, 0]
    assert (torch.linalg.det(R_src) < 0).any() and (torch.linalg.det(R_src) > 0).any()
    x = torch.randn(n_src, reps.dim, generator=g, dtype=dtype)
    src = torch.randint(0, n_src, (E,), generator=g)
    dst = torch.randint(0, n_dst, (E,), generator=g)
    return x, R_src, R_dst, src, dst


def _grads(fn, reps, x, R_src, R_dst, src, dst, w):
    leaves = [t.detach().clone().requires_grad_() for t in (x, R_src, R_dst)]
    y = fn(reps, leaves[0], src, R_src=leaves[1], R_dst=leaves[2], dst=dst)
    (y * w).sum().backward()
    return y.detach(), [t.grad for t in leaves]


def test_kernel_supports_the_expected_specs():
    # the kernel runs exactly the specs with l <= 2 / order <= 2 (the skips below follow it)
    supported = [s for s in IRREPS + TENSORREPS if kernel_supports(_reps(s), "cpu", torch.float64)]
    assert supported == [s for s in IRREPS + TENSORREPS
                         if s not in ("1x2e+2x3o+1x4e+1x0o", "2x1y+1x3y")]


@pytest.mark.parametrize(("path", "chunk"), [("kernel", None), ("chunked", 5), ("chunked", None)])
@pytest.mark.parametrize("spec", IRREPS + TENSORREPS)
def test_fused_matches_reference_values_and_gradients(spec, path, chunk):
    reps = _reps(spec)
    assert supports_fused(reps)
    _need(path, reps)
    x, R_src, R_dst, src, dst = _case(reps)
    w = torch.randn(src.shape[0], reps.dim, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    y_ref, g_ref = _grads(frame_change_reference, reps, x, R_src, R_dst, src, dst, w)

    def fused(*args, **kw):
        y = frame_change(*args, **kw, path=path, chunk=chunk)
        assert type(y.grad_fn).__name__ == GRAD_FN[path]
        return y

    y, g = _grads(fused, reps, x, R_src, R_dst, src, dst, w)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


@pytest.mark.parametrize("path", FUSED_PATHS)
@pytest.mark.parametrize("spec", ["1x0o+2x1o+1x2e", "1x0p+1x1n+1x2p"])
def test_fused_gradcheck(spec, path):
    reps = _reps(spec)
    _need(path, reps)
    x, R_src, R_dst, src, dst = _case(reps, n_src=4, n_dst=3, E=7)
    inputs = [t.clone().requires_grad_() for t in (x, R_src, R_dst)]
    chunk = 3 if path == "chunked" else None
    assert torch.autograd.gradcheck(
        lambda a, b, c: frame_change(reps, a, src, R_src=b, R_dst=c, dst=dst, path=path,
                                     chunk=chunk),
        inputs)


@pytest.mark.parametrize("path", FUSED_PATHS)
@pytest.mark.parametrize("spec", ["16x0e+8x1o+4x2e", "2x0p+1x1n+1x2n"])
def test_fused_with_given_relative_frames(spec, path):
    reps = _reps(spec)
    _need(path, reps)
    x, R_src, R_dst, src, dst = _case(reps)
    rel = (R_dst[dst] @ R_src[src].transpose(-1, -2)).requires_grad_()
    xr = x.clone().requires_grad_()
    y = frame_change(reps, xr, src, rel=rel, path=path, chunk=6 if path == "chunked" else None)
    assert type(y.grad_fn).__name__ == GRAD_FN[path]
    w = torch.randn_like(y)
    gx, grel = torch.autograd.grad((y * w).sum(), [xr, rel])
    rel2 = rel.detach().clone().requires_grad_()
    xr2 = x.clone().requires_grad_()
    y2 = frame_change_reference(reps, xr2, src, rel=rel2)
    gx2, grel2 = torch.autograd.grad((y2 * w).sum(), [xr2, rel2])
    torch.testing.assert_close(y, y2, atol=1e-12, rtol=0)
    torch.testing.assert_close(gx, gx2, atol=1e-11, rtol=0)
    torch.testing.assert_close(grel, grel2, atol=1e-11, rtol=0)


@pytest.mark.parametrize("path", [*FUSED_PATHS, "auto"])
def test_fused_float32_and_same_frames_default(path):
    reps = Irreps("16x0e+8x1o+4x2e")
    _need(path, reps, torch.float32)
    x, R, _, src, dst = _case(reps, n_dst=13, dtype=torch.float64)
    y64 = frame_change_reference(reps, x, src, R_src=R, dst=dst)
    # R_dst defaults to R_src
    y32 = frame_change(reps, x.float(), src, R_src=R.float(), dst=dst, path=path)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", FUSED_PATHS)
def test_fused_tensorreps_other_dimension(path):
    reps = TensorReps("2x0n+2x1n+1x2p", spatial_dim=2)
    _need(path, reps)
    x, R_src, R_dst, src, dst = _case(reps, d=2)
    w = torch.randn(src.shape[0], reps.dim, dtype=torch.float64)
    y_ref, g_ref = _grads(frame_change_reference, reps, x, R_src, R_dst, src, dst, w)

    def fused(*args, **kw):
        y = frame_change(*args, **kw, path=path)
        assert type(y.grad_fn).__name__ == GRAD_FN[path]
        return y

    y, g = _grads(fused, reps, x, R_src, R_dst, src, dst, w)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


@pytest.mark.parametrize("path", FUSED_PATHS)
@pytest.mark.parametrize("spec", ["16x0e+8x1o+4x2e", "4x0n+2x1n+1x2p"])
def test_fused_empty_edge_set(spec, path):
    reps = _reps(spec)
    _need(path, reps)
    x, R_src, R_dst, _, _ = _case(reps)
    empty = torch.zeros(0, dtype=torch.long)
    xr = x.clone().requires_grad_()
    Rr = R_src.clone().requires_grad_()
    Rd = R_dst.clone().requires_grad_()
    y = frame_change(reps, xr, empty, R_src=Rr, R_dst=Rd, dst=empty, path=path)
    assert y.shape == (0, reps.dim)
    assert type(y.grad_fn).__name__ == GRAD_FN[path]
    y.sum().backward()
    assert torch.equal(xr.grad, torch.zeros_like(x))
    assert torch.equal(Rr.grad, torch.zeros_like(R_src))
    assert torch.equal(Rd.grad, torch.zeros_like(R_dst))


def test_dispatch_rule():
    assert PATHS == ("auto", "kernel", "chunked", "reference")
    assert supports_fused(Irreps("1x0e+1x5o"))  # every degree
    assert supports_fused(TensorReps("1x2p+3x0n"))
    assert not supports_fused(TensorReps("1x3n"))  # orders >= 3 fall back
    reps = TensorReps("2x1n+1x3n")
    x, R_src, R_dst, src, dst = _case(reps)
    y = frame_change(reps, x.requires_grad_(), src, R_src=R_src, R_dst=R_dst, dst=dst)
    assert type(y.grad_fn).__name__ not in GRAD_FN.values()  # auto: the reference path
    torch.testing.assert_close(
        y, frame_change_reference(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst))
    with pytest.raises(ValueError, match="does not support"):
        frame_change(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst, path="chunked")
    with pytest.raises(ValueError, match="does not support"):
        frame_change(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst, path="kernel")
    # path="reference": the plain composition, no custom autograd Function
    x1 = torch.randn(13, 3, dtype=torch.float64, requires_grad=True)
    y = frame_change(Irreps("1x1o"), x1, src, R_src=R_src, R_dst=R_dst, dst=dst,
                     path="reference")
    assert type(y.grad_fn).__name__ not in GRAD_FN.values()
    assert not isinstance(y.grad_fn, torch.autograd.function.BackwardCFunction)
    y = frame_change(Irreps("1x1o"), x1.detach(), src, R_src=R_src, R_dst=R_dst, dst=dst,
                     path="reference")
    assert y.grad_fn is None
    # auto on a case both fused paths support: the kernel when built, else the chunked path
    y = frame_change(Irreps("1x1o+1x2e"), torch.randn(13, 8, dtype=torch.float64,
                                                      requires_grad=True),
                     src, R_src=R_src, R_dst=R_dst, dst=dst)
    want = "kernel" if kernel_available() else "chunked"
    assert type(y.grad_fn).__name__ == GRAD_FN[want]
    # auto with l = 3 (no kernel): the chunked path
    y = frame_change(Irreps("1x3o"), torch.randn(13, 7, dtype=torch.float64,
                                                 requires_grad=True),
                     src, R_src=R_src, R_dst=R_dst, dst=dst)
    assert type(y.grad_fn).__name__ == GRAD_FN["chunked"]
    with pytest.raises(ValueError, match="path must be one of"):
        frame_change(Irreps("1x1o"), x1, src, R_src=R_src, R_dst=R_dst, dst=dst, path="bogus")


@pytest.mark.parametrize("path", FUSED_PATHS)
@pytest.mark.parametrize("spec", ["16x0e+8x1o+4x2e", "16x0n+8x1n+4x2n"])
def test_saved_activations_at_most_the_input(spec, path):
    reps = _reps(spec)
    _need(path, reps, torch.float32)
    x, R_src, R_dst, src, dst = _case(reps, n_src=50, n_dst=40, E=2000, dtype=torch.float32)
    x.requires_grad_()
    R_src.requires_grad_()
    inputs = sum(t.numel() * t.element_size() for t in (x, R_src, R_dst, src, dst))
    fused = saved_bytes(lambda: frame_change(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst,
                                              path=path))
    ref = saved_bytes(lambda: frame_change_reference(reps, x, src, R_src=R_src, R_dst=R_dst,
                                                      dst=dst))
    assert 0 < fused <= inputs
    assert ref > 2 * inputs  # the reference keeps per-edge activations (the test can fail)


def _second_derivatives(path, reps, x, R_src, R_dst, src, dst, w):
    """``d/d(x, R_src, R_dst) sum(g**2)`` with ``g = d sum(w y) / d(x, R_src, R_dst)``."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, R_src, R_dst)]
    y = frame_change(reps, leaves[0], src, R_src=leaves[1], R_dst=leaves[2], dst=dst, path=path)
    if path != "reference":
        assert type(y.grad_fn).__name__ == GRAD_FN[path]
    gs = torch.autograd.grad((y * w).sum(), leaves, create_graph=True)
    loss = sum((g**2).sum() for g in gs)
    return [g.detach() for g in gs], torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("path", FUSED_PATHS)
@pytest.mark.parametrize("spec", ["1x0o+1x1o+1x2e+1x1e", "1x0p+1x1n+1x2p"])
def test_double_backward_matches_the_reference(spec, path):
    reps = _reps(spec)
    _need(path, reps)
    x, R_src, R_dst, src, dst = _case(reps)
    w = torch.randn(src.shape[0], reps.dim, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    g, gg = _second_derivatives(path, reps, x, R_src, R_dst, src, dst, w)
    g_ref, gg_ref = _second_derivatives("reference", reps, x, R_src, R_dst, src, dst, w)
    for a, b in zip(g + list(gg), g_ref + list(gg_ref)):
        assert a.abs().max() > 0  # the comparison is not vacuous
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_bad_input():
    reps = Irreps("1x1o")
    x, R_src, R_dst, src, dst = _case(reps)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        frame_change(reps, x[:, :2], src, R_src=R_src, dst=dst)
    with pytest.raises(TypeError, match="share a dtype"):
        frame_change(reps, x.float(), src, R_src=R_src, R_dst=R_dst, dst=dst)
    with pytest.raises(ValueError, match="R_src has 12 frames"):
        frame_change(reps, x, src, R_src=R_src[:12], R_dst=R_dst, dst=dst)
    with pytest.raises(ValueError, match="same length"):
        frame_change(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst[:3])
    with pytest.raises(ValueError, match="either rel"):
        frame_change(reps, x, src, R_src=R_src, rel=R_src)
    with pytest.raises(ValueError, match="needs R_src"):
        frame_change(reps, x, src)
    with pytest.raises(ValueError, match="int64 index"):
        frame_change(reps, x, src.double(), R_src=R_src, R_dst=R_dst, dst=dst)
    with pytest.raises(ValueError, match="chunk"):
        frame_change(reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst, chunk=0, path="chunked")
    with pytest.raises(TypeError, match="Reps"):
        frame_change("1x1o", x, src, R_src=R_src, R_dst=R_dst, dst=dst)
    # world-frame input (no R_src): not a chunked case
    with pytest.raises(ValueError, match="does not support"):
        frame_change(reps, x, src, R_dst=R_dst, dst=dst, path="chunked")
    assert issubclass(_FrameChange, torch.autograd.Function)


@pytest.mark.parametrize("path", ["auto", "kernel", "chunked", "reference"])
def test_out_of_range_indices_are_refused_on_every_path(path):
    reps = Irreps("1x0e+1x1o")
    x, R_src, R_dst, src, dst = _case(reps)
    if path == "kernel" and not kernel_available():
        pytest.skip("the compiled kernel is unavailable here")
    for bad_src, bad_dst, name in ((src.clone(), dst, "src"), (src, dst.clone(), "dst")):
        (bad_src if name == "src" else bad_dst)[3] = -1
        with pytest.raises(IndexError, match=rf"{name} holds indices in \[-1,"):
            frame_change(reps, x, bad_src, R_src=R_src, R_dst=R_dst, dst=bad_dst, path=path)
    with pytest.raises(IndexError, match=r"outside \[0, 13\)"):
        frame_change(reps, x, src + 13, R_src=R_src, R_dst=R_dst, dst=dst, path=path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", ["16x0e+8x1o+4x2e", "16x0n+8x1n+4x2n", "1x2e+2x3o+1x4e+1x0o"])
def test_cuda_paths_match_the_cpu_reference(spec):
    """On a GPU ``auto`` takes the chunked path (the kernel is CPU-only); values and gradients
    for x and both frame sets equal the float64 CPU reference, reflections included."""
    reps = _reps(spec)
    x, R_src, R_dst, src, dst = _case(reps, n_src=300, n_dst=200, E=5000)
    w = torch.randn(src.shape[0], reps.dim, dtype=torch.float64)
    y_ref, g_ref = _grads(frame_change_reference, reps, x, R_src, R_dst, src, dst, w)
    cuda = [t.cuda() for t in (x, R_src, R_dst, src, dst, w)]
    for path in ("auto", "chunked", "reference"):
        def run(*args, path=path, **kw):
            return frame_change(*args, **kw, path=path)

        y, g = _grads(run, reps, *cuda[:5], cuda[5])
        assert y.is_cuda
        torch.testing.assert_close(y.cpu(), y_ref, atol=1e-11, rtol=0)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a.cpu(), b, atol=1e-10, rtol=0)
