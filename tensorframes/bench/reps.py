"""Benchmark suite ``reps``: frame-change transforms versus e3nn's ``D_from_matrix`` + einsum.

Measured: one call of ``reps.transform(x, R)`` (forward, float32, no gradients) on 320,000
random O(3) matrices (``quick``: 32,000), all contenders of a case interleaved in one process.
Baseline: e3nn 0.6 doing the same work the way an e3nn user would,
``D = irreps.D_from_matrix(R)`` followed by ``einsum("nij,nj->ni", D, x)``, in chunks of 16,000
matrices (the dense matrices of all 320,000 would not fit in memory for the larger cases).
Contenders: ``tensorframes.Irreps.transform`` and ``tensorframes.TensorReps.transform``
(Cartesian tensors of the same orders).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from ..reps import Irreps, TensorReps
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
    return rows
