"""Benchmark suite ``reps``: frame-change transforms versus e3nn's ``D_from_matrix`` + einsum.

Measured: one call of ``reps.transform(x, R)`` (forward, float32, no gradients) on 320,000
random O(3) matrices (``quick``: 32,000), all contenders of a case interleaved in one process.
Baseline: e3nn 0.6 doing the same work the way an e3nn user would,
``D = irreps.D_from_matrix(R)`` followed by ``einsum("nij,nj->ni", D, x)``, in chunks of 16,000
matrices (the dense matrices of all 320,000 would not fit in memory for the larger cases).
Contenders: ``tensorframes.Irreps.transform`` and ``tensorframes.TensorReps.transform``
(Cartesian tensors of the same orders).

Second table, the frame change of message passing as layers run it: 320,000 edges between
20,000 random O(3) frames (``quick``: 32,000 and 2,000), work = gather ``x[src]``,
``R_i R_j^T``, transform, forward and forward + backward (gradient to ``x``), with the default
allocator and threads. Contenders, all interleaved: the *floor* (``x.index_select(0, src)`` into
a fresh output of the same size, and its backward: what every implementation does at least
once), the pure-torch *reference* (:func:`tensorframes.reps._fused.frame_change_reference`), the
*chunked* pure-torch path and the compiled *kernel* (:func:`tensorframes.reps._fused.frame_change`
with ``path="chunked"`` / ``"kernel"``; the kernel row is absent where it is unavailable).
Ratios are medians of per-round ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from ..reps import Irreps, TensorReps
from ..reps._fused import frame_change
from ..reps._kernel import kernel_available, kernel_supports
from ..testing import random_orthogonal
from ._harness import format_seconds, markdown_table, time_interleaved

#: (Irreps, TensorReps of the same orders) pairs; the first is issue 2's headline case.
CASES = [
    ("16x0e+8x1o+4x2e", "16x0n+8x1n+4x2n"),
    ("32x0e+16x1o+8x2e", "32x0n+16x1n+8x2n"),
    ("8x0e+8x1o+8x2e+8x3o+8x4e", "8x0n+8x1n+8x2n+8x3n+8x4n"),
]


#: matrices per e3nn call: bounds its dense D to a few hundred MB
E3NN_CHUNK = 16_000


def _e3nn_path(irreps_str: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    try:
        from e3nn import o3
    except ImportError:  # e3nn is the reference only; the suite still times our paths
        return None
    irreps = o3.Irreps(irreps_str)

    def run(x, R):
        # in chunks: the dense (n, dim, dim) matrices of all 320k elements would not fit in RAM
        return torch.cat(
            [
                torch.einsum("nij,nj->ni", irreps.D_from_matrix(Rc), xc)
                for Rc, xc in zip(R.split(E3NN_CHUNK), x.split(E3NN_CHUNK))
            ]
        )

    return run


def run(quick: bool = False, device: str = "cpu", repeats: int | None = None) -> list[dict]:
    """Time the transforms on random O(3) matrices; return one row per contender and size."""
    sizes = [32_000] if quick else [320_000]
    cases = CASES[:1] if quick else CASES
    repeats = repeats or 3
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in sizes:
        R = random_orthogonal(n, 3, generator=gen, dtype=torch.float32).to(device)
        for irreps_str, cart_str in cases:
            irreps, cart = Irreps(irreps_str), TensorReps(cart_str)
            x_irr = torch.randn(n, irreps.dim, generator=gen).to(device)
            x_cart = torch.randn(n, cart.dim, generator=gen).to(device)
            contenders = {
                f"Irreps({irreps_str}).transform": partial(irreps.transform, x_irr, R),
                f"TensorReps({cart_str}).transform": partial(cart.transform, x_cart, R),
            }
            e3nn_fn = _e3nn_path(irreps_str)
            baseline = f"e3nn D_from_matrix+einsum ({irreps_str})"
            if e3nn_fn is not None:
                contenders[baseline] = partial(e3nn_fn, x_irr, R)
            timings = time_interleaved(contenders, repeats=repeats, device=device,
                                       desc=f"reps {irreps_str}")
            base = timings.get(baseline)
            for name, t in timings.items():
                rows.append(
                    {
                        "matrices": n,
                        "contender": name,
                        "median": format_seconds(t.median),
                        "min": format_seconds(t.min),
                        "max": format_seconds(t.max),
                        "speed-up vs e3nn": f"{t.speedup_over(base):.1f}x" if base else "n/a",
                        "median_s": t.median,
                    }
                )
    return rows


#: (nodes, edges) of the frame-change table
FRAME_CHANGE_SIZES = {False: (20_000, 320_000), True: (2_000, 32_000)}


def _frame_change_contenders(reps, R, src, dst, gen, device) -> dict[str, Callable[[], object]]:
    n, e = R.shape[0], src.shape[0]
    x = torch.randn(n, reps.dim, generator=gen).to(device)
    xg = x.clone().requires_grad_()
    g = torch.randn(e, reps.dim, generator=gen).to(device)

    def backward(y):
        y.backward(g)
        xg.grad = None

    def run(path, x):
        return frame_change(reps, x, src, R_src=R, dst=dst, path=path)

    paths = ["reference", "chunked"]
    if kernel_supports(reps, device) and kernel_available():
        paths.append("kernel")
    contenders: dict[str, Callable[[], object]] = {
        "floor fwd": partial(torch.index_select, x, 0, src),
        "floor fwd+bwd": lambda: backward(xg.index_select(0, src)),
    }
    for path in paths:
        contenders[f"{path} fwd"] = partial(run, path, x)
        contenders[f"{path} fwd+bwd"] = partial(lambda p: backward(run(p, xg)), path)
    return contenders


def run_frame_change(quick: bool = False, device: str = "cpu",
                     repeats: int | None = None) -> list[dict]:
    """Time floor, reference, chunked and kernel frame change (forward, forward + backward)."""
    n, e = FRAME_CHANGE_SIZES[bool(quick)]
    gen = torch.Generator().manual_seed(1)
    R = random_orthogonal(n, 3, generator=gen, dtype=torch.float32).to(device)
    src = torch.randint(0, n, (e,), generator=gen).to(device)
    dst = torch.randint(0, n, (e,), generator=gen).to(device)
    rows = []
    for reps in (Irreps(CASES[0][0]), TensorReps(CASES[0][1])):
        contenders = _frame_change_contenders(reps, R, src, dst, gen, device)
        timings = time_interleaved(contenders, repeats=repeats or 5, device=device,
                                   desc=f"frame change {reps}")
        for name, t in timings.items():
            kind, pass_ = name.split(" ")
            floor, reference = timings[f"floor {pass_}"], timings[f"reference {pass_}"]
            rows.append({
                "edges": e,
                "contender": f"{type(reps).__name__}({reps}) {name}",
                "x floor": f"{floor.speedup_over(t):.2f}",
                "speed-up vs reference": f"{t.speedup_over(reference):.2f}x",
                "median": format_seconds(t.median),
                "min": format_seconds(t.min),
                "max": format_seconds(t.max),
                "median_s": t.median,
            })
    return rows


FRAME_CHANGE_COLUMNS = ["edges", "contender", "x floor", "speed-up vs reference", "median",
                        "min", "max"]
COLUMNS = ["matrices", "contender", "speed-up vs e3nn", "median", "min", "max"]
#: columns that name a row, and its ratios (``--tuned-allocator``'s side-by-side table)
KEY_COLUMNS = ["matrices", "contender"]
RATIO_COLUMNS = ["speed-up vs e3nn"]
BASELINE = "e3nn 0.6 D_from_matrix + einsum, same irreps, float32"


def main(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Run, print the markdown table, return the rows."""
    rows = run(quick=quick, device=device)
    print(f"## reps: frame-change transforms on random O(3) matrices (baseline: {BASELINE})\n")
    print(markdown_table(rows, COLUMNS))
    fc = run_frame_change(quick=quick, device=device)
    print("\n## reps: frame change per edge, gather + R_i R_j^T + transform (baseline: the "
          "pure-torch reference; 'x floor': times the gather alone)\n")
    print(markdown_table(fc, FRAME_CHANGE_COLUMNS))
    return rows + fc
