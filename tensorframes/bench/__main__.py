"""Command line entry point: ``python -m tensorframes.bench <suite>``."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import time

import torch

from . import SUITES
from ._harness import keep_freed_memory, write_csv


def _label(row: dict) -> str:
    """A short plot label: the row's name and its size / setting columns."""
    name = next((str(row[k]) for k in ("contender", "product", "model") if k in row), "?")
    extra = [f"{k}={row[k]}" for k in ("setting", "L", "matrices", "points", "edges") if k in row]
    return f"{name} ({', '.join(extra)})" if extra else name


def _plot(rows: list[dict], suite: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if "median_s" in r]
    if not timed:
        return
    labels = [_label(r) for r in timed]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(timed) + 1.5))
    ax.barh(range(len(timed)), [r["median_s"] for r in timed])
    ax.set_yticks(range(len(timed)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("median time [s] (log scale)")
    ax.set_title(f"tensorframes.bench {suite}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tensorframes.bench", description=__doc__)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default="bench_out", help="folder for CSV and PNG outputs")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device cuda: no CUDA device is available to torch {torch.__version__} "
                         "(a CPU-only build, or no GPU); run with --device cpu")
    suites = SUITES if args.suite == "all" else (args.suite,)
    os.makedirs(args.out, exist_ok=True)
    # timings must not depend on what ran before: no contender pays page faults for memory the
    # previous one freed (see keep_freed_memory)
    allocator = "glibc malloc keeps freed memory" if keep_freed_memory() else "default malloc"
    print(f"[tensorframes.bench: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{allocator}]\n")
    for suite in suites:
        start = time.perf_counter()
        module = importlib.import_module(f"tensorframes.bench.{suite}")
        params = inspect.signature(module.main).parameters
        extra = {}
        if suite == "tp" and "out" in params:  # the tp suite writes its own scaling plot
            extra["out"] = os.path.join(args.out, "tp_scaling.png")
        elif "out" in params:
            extra["out"] = args.out
        rows = module.main(quick=args.quick, device=args.device, **extra)
        write_csv(os.path.join(args.out, f"{suite}.csv"), rows)
        _plot(rows, suite, os.path.join(args.out, f"{suite}.png"))
        print(f"\n[{suite}: {time.perf_counter() - start:.1f} s; CSV and PNG in {args.out}/]\n")


if __name__ == "__main__":
    main()
