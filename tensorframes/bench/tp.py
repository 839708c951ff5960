"""Benchmark suite ``tp``: tensor products versus e3nn's, in the "Price of Freedom" setup.

Baseline: e3nn 0.6 ``o3.FullyConnectedTensorProduct`` with the same irreps (so the same paths,
float32, CPU). Contenders: our CG product (``method="dense"`` and ``"sparse"``), the Gaunt product
(``"fourier"`` and ``"grid"``) and the vector Gaunt product, all with single-copy irreps
(``channels=1``). Settings, for degree ``L`` (parity of the spherical harmonics):

* ``single/single``: ``1xL (x) 1xL -> 1xL`` (one output irrep; Gaunt realises it only for even L);
* ``single/many``: ``1xL (x) 1xL -> every l <= 2L`` (both parities);
* ``many/many``: ``0..L (x) 0..L -> every l <= 2L`` (both parities).

Measured: forward calls without gradients on a batch of 10,000 (``quick``: 1,000) input pairs,
L = 1..8 (``quick``: 1..4), all products of one setting and L interleaved in one process.
Reported per product and L: median time, speed relative to e3nn (median of the per-round
ratios, see :meth:`~tensorframes.bench._harness.Timing.speedup_over`), the expressivity
(:func:`tensorframes.o3.expressivity`, small L only: it is a Jacobian rank), the growth exponent
``a`` of ``time ~ L^a`` fitted by least squares on log-log, and the speed targets
(:data:`TARGETS`: CG dense at least as fast as e3nn at every L, the grid Gaunt product at least
10x the Fourier one at L >= 6), each marked met or not from a single timing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch

from ..o3._expressivity import expressivity
from ..o3._gaunt import GauntTensorProduct, VectorGauntTensorProduct
from ..o3._tensor_product import FullyConnectedTensorProduct
from ._harness import format_seconds, markdown_table, time_interleaved

SETTINGS = ("single/single", "single/many", "many/many")
PRODUCTS = ("e3nn", "CG dense", "CG sparse", "Gaunt fourier", "Gaunt grid", "vector Gaunt")
BASELINE = "e3nn 0.6 FullyConnectedTensorProduct, same irreps and paths, float32"


def _ir(l: int, p: int | None = None) -> str:
    p = (-1) ** l if p is None else p
    return f"{l}{'e' if p == 1 else 'o'}"


def irreps_for(setting: str, L: int) -> tuple[str, str, str]:
    """``(irreps_in1, irreps_in2, irreps_out)`` of a setting."""
    if setting == "single/single":
        return _ir(L), _ir(L), _ir(L, 1)
    both = "+".join(f"{_ir(l, 1)}+{_ir(l, -1)}" for l in range(2 * L + 1))
    if setting == "single/many":
        return _ir(L), _ir(L), both
    if setting == "many/many":
        sh = "+".join(_ir(l) for l in range(L + 1))
        return sh, sh, both
    raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")


def _build(name: str, i1: str, i2: str, io: str) -> torch.nn.Module | None:
    if name == "e3nn":
        try:
            from e3nn import o3
        except ImportError:
            return None
        return o3.FullyConnectedTensorProduct(i1, i2, io)
    if name.startswith("CG"):
        return FullyConnectedTensorProduct(i1, i2, io, method=name.split()[1])
    if name.startswith("Gaunt"):
        return GauntTensorProduct(i1, i2, io, method=name.split()[1], channels=1)
    return VectorGauntTensorProduct(i1, i2, io, channels=1)


def _no_grad_call(m: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor
                  ) -> Callable[[], torch.Tensor]:
    def f() -> torch.Tensor:
        with torch.no_grad():
            return m(x1, x2)

    return f


def growth_exponent(Ls: Sequence[int], times: Sequence[float]) -> float:
    """Least-squares slope of ``log t`` against ``log L``."""
    x = torch.tensor([math.log(L) for L in Ls], dtype=torch.float64)
    y = torch.tensor([math.log(t) for t in times], dtype=torch.float64)
    if len(x) < 2:
        return float("nan")
    xm, ym = x.mean(), y.mean()
    return float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())


def run(quick: bool = False, device: str = "cpu", *, repeats: int | None = None,
        Ls: Sequence[int] | None = None, settings: Sequence[str] = SETTINGS,
        expressivity_lmax: int | None = None) -> list[dict]:
    """Time every product in every setting, each setting and L once; one row per (setting, L,
    product)."""
    batch = 1_000 if quick else 10_000
    Ls = list(Ls) if Ls is not None else (list(range(1, 5)) if quick else list(range(1, 9)))
    repeats = repeats or (3 if quick else 9)
    expressivity_lmax = (1 if quick else 2) if expressivity_lmax is None else expressivity_lmax
    gen = torch.Generator().manual_seed(0)
    rows = []
    for setting in settings:
        for L in Ls:
            i1, i2, io = irreps_for(setting, L)
            mods = {n: _build(n, i1, i2, io) for n in PRODUCTS}
            mods = {n: m.to(device) for n, m in mods.items() if m is not None}
            x1 = torch.randn(batch, mods["CG dense"].irreps_in1.dim, generator=gen).to(device)
            x2 = torch.randn(batch, mods["CG dense"].irreps_in2.dim, generator=gen).to(device)

            contenders = {n: _no_grad_call(m, x1, x2) for n, m in mods.items()}
            timings = time_interleaved(contenders, repeats=repeats, device=device,
                                       desc=f"tp {setting} L={L}")
            base, fourier = timings.get("e3nn"), timings.get("Gaunt fourier")
            expr = {}
            if L <= expressivity_lmax:
                for n in ("CG dense", "Gaunt grid", "vector Gaunt"):
                    expr[n] = expressivity(mods[n].cpu())
                expr["CG sparse"] = expr["e3nn"] = expr["CG dense"]
                expr["Gaunt fourier"] = expr["Gaunt grid"]
            for n, t in timings.items():
                rows.append({
                    "setting": setting, "L": L, "product": n,
                    "median": format_seconds(t.median),
                    "vs e3nn": f"{t.speedup_over(base):.2f}x" if base else "n/a",
                    "expressivity": expr.get(n, ""),
                    "median_s": t.median,
                    "speedup_e3nn": t.speedup_over(base) if base else float("nan"),
                    "speedup_fourier": t.speedup_over(fourier) if fourier else float("nan"),
                })
    return rows


COLUMNS = ["setting", "L", "product", "vs e3nn", "median", "expressivity"]
#: columns that name a row, and its ratios (``--tuned-allocator``'s side-by-side table)
KEY_COLUMNS = ["setting", "L", "product"]
RATIO_COLUMNS = ["vs e3nn"]


def exponents(rows: list[dict]) -> list[dict]:
    """Growth exponent per (setting, product)."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        for n in dict.fromkeys(r["product"] for r in rows):
            sel = [r for r in rows if r["setting"] == setting and r["product"] == n]
            if sel:
                a = growth_exponent([r["L"] for r in sel], [r["median_s"] for r in sel])
                out.append({"setting": setting, "product": n, "exponent a (t ~ L^a)": f"{a:.2f}"})
    return out


#: The issue's speed targets: (product, reference, least speed-up, from L)
TARGETS = (("CG dense", "e3nn", 1.0, 1), ("Gaunt grid", "Gaunt fourier", 10.0, 6))


def targets(rows: list[dict]) -> list[dict]:
    """The speed targets per setting and L: speed-up (median of per-round ratios) and whether
    it is met."""
    out = []
    key = {"e3nn": "speedup_e3nn", "Gaunt fourier": "speedup_fourier"}
    for r in rows:
        for product, ref, least, L0 in TARGETS:
            if r["product"] != product or r["L"] < L0 or key[ref] not in r:
                continue
            x = r[key[ref]]
            if x != x:  # NaN: the reference did not run (e3nn not installed)
                continue
            out.append({"setting": r["setting"], "L": r["L"], "product": product,
                        "reference": ref, "speed-up": f"{x:.2f}x", "target": f">= {least:g}x",
                        "met": "yes" if x >= least else "NO"})
    return out


def plot(rows: list[dict], out: str) -> None:
    """Time versus L per product, one panel per setting (log-log), saved as PNG."""
    import matplotlib  # only when plotting: importing it costs about a second

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for n in dict.fromkeys(r["product"] for r in rows):
            sel = [r for r in rows if r["setting"] == setting and r["product"] == n]
            ax.plot([r["L"] for r in sel], [r["median_s"] for r in sel], marker="o", label=n)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("L")
        ax.set_ylabel("median time [s]")
        ax.set_title(setting)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"tensor products, baseline: {BASELINE}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


TARGET_COLUMNS = ["setting", "L", "product", "reference", "speed-up", "target", "met"]


def main(quick: bool = False, device: str = "cpu", out: str | None = "bench_out") -> list[dict]:
    """Run, print the tables (times, growth exponents, speed targets), plot the scaling into
    ``out/tp_scaling.png`` (no plot when ``out`` is None) and return the rows."""
    rows = run(quick=quick, device=device)
    print(f"## tp: tensor products on CPU (baseline: {BASELINE})\n")
    print(markdown_table(rows, COLUMNS))
    print("\n### growth exponents\n")
    print(markdown_table(exponents(rows), ["setting", "product", "exponent a (t ~ L^a)"]))
    met = targets(rows)
    if met:
        n_met = sum(t["met"] == "yes" for t in met)
        print(f"\n### speed targets: {n_met} of {len(met)} met\n")
        print(markdown_table(met, TARGET_COLUMNS))
    if out:
        path = os.path.join(out, "tp_scaling.png")
        plot(rows, path)
        print(f"\nplot: {path}")
    return rows
