"""Shared timing harness of the benchmark suites.

Contenders of one comparison run interleaved in one process (round-robin over repeats, after a
warm-up of each), so that machine noise hits all of them alike; results are medians with min and
max, and every table names the baseline its ratios refer to.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Median, min and max wall time in seconds of one contender, and its samples (one per
    round of :func:`time_interleaved`, in round order)."""

    name: str
    median: float
    min: float
    max: float
    extra: dict = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)

    def speedup_over(self, base: Timing) -> float:
        """How many times faster than ``base``: the median over rounds of ``base / self``.

        Both must come from one :func:`time_interleaved` call. Each round times every contender
        once, within about a second, so a slow phase of the machine (they last seconds to
        minutes here) scales both times of a round alike and cancels in its ratio; a ratio of
        the two medians can instead pair a fast-phase median with a slow-phase one. Without
        paired samples (none, or unequal counts): the ratio of the medians.
        """
        if len(self.samples) != len(base.samples) or not self.samples:
            return base.median / self.median
        return statistics.median(b / s for b, s in zip(base.samples, self.samples))


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory in this process instead of handing it back.

    By default glibc returns the top of its heap to the OS once more than a few MB are free,
    and serves allocations above a moving threshold by fresh ``mmap``. A contender that frees
    large tensors then makes the next contender page-fault its buffers in afresh, so a time
    depends on what ran before it (measured: the grid Gaunt product 12 ms on its own, 24 ms
    right after the vector Gaunt product). This sets the ``mmap`` threshold to its maximum
    (32 MiB), the trim threshold to 2 GiB and grows the heap in steps of at least 64 MiB: the
    CPU counterpart of PyTorch's CUDA caching allocator, under which GPU timings never see the
    effect. Buffers above 32 MiB still come from ``mmap``. Returns False (and changes nothing)
    where ``malloc`` is not glibc's.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20) and mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
                and mallopt(M_TOP_PAD, 64 << 20))


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: torch.device | str) -> float:
    """Seconds one call takes: CUDA events around it on a GPU, ``perf_counter`` on CPU."""
    if torch.device(device).type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return begin.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(
    contenders: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    budget_s: float = 2.0,
    max_repeats: int = 25,
    desc: str | None = None,
) -> dict[str, Timing]:
    """Time every contender at least ``repeats`` times, interleaved, after ``warmup`` untimed
    calls each.

    Rounds are added while a round is cheap: as many as fit in ``budget_s`` (judged by the
    warm-up round), at most ``max_repeats``, so millisecond-scale medians rest on more samples.
    On CUDA every call is timed with CUDA events after a device synchronisation, so times
    include the kernels. A progress bar (tqdm, on stderr, only on a terminal) counts the calls.
    """
    from tqdm.auto import tqdm

    names = list(contenders)
    bar = tqdm(total=len(names) * (warmup + repeats), desc=desc or "timing", leave=False,
               disable=None)
    round_s = 0.0
    for name in names:
        bar.set_postfix_str(f"warm-up {name}"[:40])
        for _ in range(warmup):
            t = _timed(contenders[name], device)
            bar.update()
        round_s += t if warmup else 0.0
    rounds = repeats
    if round_s > 0:
        rounds = max(repeats, min(max_repeats, int(budget_s / round_s)))
    bar.total = len(names) * (warmup + rounds)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            bar.set_postfix_str(name[:40])
            samples[name].append(_timed(contenders[name], device))
            bar.update()
    bar.close()
    return {
        name: Timing(name, statistics.median(s), min(s), max(s), {"rounds": len(s)}, list(s))
        for name, s in samples.items()
    }


#: Contender names of :func:`blas_probes` (removed again by :func:`blas_scaling`)
PROBE_ONE, PROBE_ALL = "sgemm probe, 1 thread", "sgemm probe, all threads"


def blas_probes(device: torch.device | str = "cpu") -> dict[str, Callable[[], object]]:
    """Two extra contenders that read the machine's state: one fixed float32 GEMM, run on one
    thread and on all of PyTorch's threads. Empty on CUDA and with one thread.

    The GEMM, ``(25, 25) @ (25, 32500)``, has the short and wide shape of the grid Gaunt
    product's quadrature in ``phi`` (degree 6, a batch chunk of 2,500); a call runs it four
    times, so that the cold first one (the probe that runs first follows a large contender)
    weighs little. Timed interleaved with the contenders, the per-round ratio of its two times
    (:func:`blas_scaling`) says how much the threads helped in those very rounds. On the 2-core
    VM these benchmarks ran on it reads 1.5-2.9x most of the time and 0.8-1.2x in windows of
    seconds to minutes in which the host runs two-thread BLAS at one-thread speed, whatever else
    runs (two single-thread processes, one per core, keep full speed then); see
    ``docs/benchmarks.md``.
    """
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads < 2:
        return {}
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(25, 25, generator=gen), torch.randn(25, 32500, generator=gen)
    out = torch.empty(25, 32500)

    def on(n: int) -> Callable[[], object]:
        def gemm():
            torch.set_num_threads(n)
            try:
                for _ in range(4):  # the first, after a contender, reads cold memory
                    torch.mm(a, b, out=out)
                return out
            finally:
                torch.set_num_threads(threads)

        return gemm

    return {PROBE_ONE: on(1), PROBE_ALL: on(threads)}


def blas_scaling(timings: dict[str, Timing]) -> float:
    """Removes the :func:`blas_probes` timings from ``timings`` and returns the speed-up of the
    threaded GEMM over the single-threaded one (median of per-round ratios); NaN without
    probes."""
    one, every = timings.pop(PROBE_ONE, None), timings.pop(PROBE_ALL, None)
    return every.speedup_over(one) if one and every else float("nan")


def format_seconds(t: float) -> str:
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Render ``rows`` (dicts) as a markdown table with the given columns."""
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Write rows (dicts) to ``path``, columns in first-seen order."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
