"""Command line entry point: ``python -m tensorframes.bench <suite>``.

Times a suite as a user's plain Python process runs it: the default allocator and PyTorch's
default thread settings. ``--tuned-allocator`` then runs the same suite again in a child
process with glibc's ``malloc`` tuned to keep freed memory
(:data:`~tensorframes.bench._harness.TUNED_ALLOCATOR_ENV`) and prints both numbers side by side;
the default numbers stay the reference.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

from . import SUITES
from ._harness import (
    TUNED_ALLOCATOR_ENV,
    allocator_description,
    markdown_table,
    read_csv,
    side_by_side,
    write_csv,
)


def _label(row: dict) -> str:
    """A short plot label: the row's name and its size / setting columns."""
    name = next((str(row[k]) for k in ("contender", "product", "model") if k in row), "?")
    extra = [f"{k}={row[k]}" for k in ("setting", "L", "matrices", "points", "edges") if k in row]
    return f"{name} ({', '.join(extra)})" if extra else name


def _plot(rows: list[dict], suite: str, path: str) -> None:
    import matplotlib  # only when plotting: importing it costs about a second

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


def tuned_command(suite: str, *, quick: bool, device: str, out: str
                  ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the ``--tuned-allocator`` run: this process's Python
    running the same suite into ``out``, with :data:`TUNED_ALLOCATOR_ENV` added to the
    environment."""
    cmd = [sys.executable, "-m", "tensorframes.bench", suite, "--device", device, "--out", out]
    if quick:
        cmd.append("--quick")
    return cmd, {**os.environ, **TUNED_ALLOCATOR_ENV}


def _run_tuned(suites: Sequence[str], args: argparse.Namespace) -> None:
    """Run the suites again under the tuned allocator, in a child process, and print each
    suite's ratios and medians beside the default ones."""
    out = os.path.join(args.out, "tuned")
    cmd, env = tuned_command(args.suite, quick=args.quick, device=args.device, out=out)
    shown = " ".join(f"{k}={v}" for k, v in TUNED_ALLOCATOR_ENV.items())
    print(f"[tuned allocator: {shown} {' '.join(cmd[1:])}]\n", flush=True)
    subprocess.run(cmd, env=env, check=True)
    for suite in suites:
        module = importlib.import_module(f"tensorframes.bench.{suite}")
        default = read_csv(os.path.join(args.out, f"{suite}.csv"))
        tuned = read_csv(os.path.join(out, f"{suite}.csv"))
        rows = side_by_side(default, tuned, module.KEY_COLUMNS, module.RATIO_COLUMNS)
        write_csv(os.path.join(args.out, f"{suite}_allocators.csv"), rows)
        print(f"\n## {suite}: default allocator (reference) beside the tuned allocator\n")
        print(markdown_table(rows))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the chosen suite(s); see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tensorframes.bench", description=__doc__)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default="bench_out", help="folder for CSV and PNG outputs")
    parser.add_argument("--tuned-allocator", action="store_true",
                        help="also run the suite in a child process whose glibc malloc keeps "
                             "freed memory, and show both numbers side by side")
    parser.add_argument("--e2e-from", metavar="DIR",
                        help="e2e: read the runs of a finished `python -m examples.normals "
                             "compare --preset quick` folder (same data and schedule) instead "
                             "of training them again")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: no CUDA device is available to torch {torch.__version__} "
                     "(a CPU-only build, or no GPU); run with --device cpu")
    if args.tuned_allocator and platform.libc_ver()[0] != "glibc":
        parser.error("--tuned-allocator tunes glibc's malloc; this Python does not run on glibc")
    suites = SUITES if args.suite == "all" else (args.suite,)
    os.makedirs(args.out, exist_ok=True)
    print(f"[tensorframes.bench: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{allocator_description()}]\n", flush=True)
    for suite in suites:
        start = time.perf_counter()
        module = importlib.import_module(f"tensorframes.bench.{suite}")
        params = inspect.signature(module.main).parameters
        extra = {"out": args.out} if "out" in params else {}
        if args.e2e_from and "reuse" in params:
            extra["reuse"] = args.e2e_from
        rows = module.main(quick=args.quick, device=args.device, **extra)
        write_csv(os.path.join(args.out, f"{suite}.csv"), rows)
        _plot(rows, suite, os.path.join(args.out, f"{suite}.png"))
        print(f"\n[{suite}: {time.perf_counter() - start:.1f} s; CSV and PNG in {args.out}/]\n",
              flush=True)
    if args.tuned_allocator:
        _run_tuned(suites, args)


if __name__ == "__main__":
    main()
