"""Shared timing harness of the benchmark suites.

Contenders of one comparison run interleaved in one process: a warm-up of each, then rounds in
which every contender is timed once, in the same order, so that the machine's slow and fast
phases hit all of them alike. Results are medians with min and max, and ratios are medians of
per-round ratios (:meth:`Timing.speedup_over`). Every table names the baseline its ratios refer
to.

The process is timed as a user's plain Python process runs: its default allocator and thread
settings are never changed here. :data:`TUNED_ALLOCATOR_ENV` describes the one tuned setting the
command line can show beside the default (``--tuned-allocator``), in a separate process.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils import benchmark
from tqdm.auto import tqdm


@dataclass
class Timing:
    """Median, min and max wall time in seconds of one call of a contender, and its samples
    (one per round of :func:`time_interleaved`, in round order)."""

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
        minutes on a shared machine) scales both times of a round alike and cancels in its
        ratio; a ratio of the two medians can instead pair a fast-phase median with a slow-phase
        one. Without paired samples (none, or unequal counts): the ratio of the medians.
        """
        if len(self.samples) != len(base.samples) or not self.samples:
            return base.median / self.median
        return statistics.median(b / s for b, s in zip(base.samples, self.samples))


def _stopwatch(fn: Callable[[], object]) -> timeit.Timer:
    """A :class:`timeit.Timer` calling ``fn`` whose clock is :func:`torch.utils.benchmark.timer`
    (``perf_counter`` after synchronising the accelerator, if any, so that a time includes its
    kernels); like every ``timeit`` timer it pauses Python's garbage collector while timing."""
    return timeit.Timer(fn, timer=benchmark.timer)


def time_interleaved(
    contenders: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    budget_s: float = 2.0,
    max_repeats: int = 25,
    min_sample_s: float = 1e-3,
    desc: str | None = None,
) -> dict[str, Timing]:
    """Time every contender at least ``repeats`` times, interleaved, after ``warmup`` untimed
    calls each.

    Each round times every contender once, in the order given. Rounds are added while a round
    is cheap: as many as fit in ``budget_s`` (judged by the warm-up round), at most
    ``max_repeats``. A contender faster than ``min_sample_s`` is called ``number`` times in a row
    per sample (enough to fill ``min_sample_s``, judged by its warm-up), and its sample is the
    time per call; slower contenders are called once per sample. ``Timing.extra`` records
    ``rounds`` and ``number``.

    Built on :mod:`torch.utils.benchmark` where it fits: its clock synchronises the accelerator
    (``device`` only labels the progress bar). Its ``Timer.timeit`` and ``blocked_autorange``
    do not fit the interleaved rounds: each call of them adds warm-up calls of its own (tripling
    the cost of a contender timed once per round), and ``Timer`` runs on one thread unless told
    otherwise, where a user's process runs on all of PyTorch's threads; here the process's own
    thread setting is left as it is. A progress bar (tqdm, on stderr, only on a terminal) counts
    the calls.
    """
    names = list(contenders)
    clocks = {name: _stopwatch(contenders[name]) for name in names}
    bar = tqdm(total=len(names) * (warmup + repeats), desc=desc or f"timing ({device})",
               leave=False, disable=None)
    round_s = 0.0
    number: dict[str, int] = {}
    for name in names:
        bar.set_postfix_str(f"warm-up {name}"[:40])
        t = 0.0
        for _ in range(warmup):
            t = clocks[name].timeit(1)
            bar.update()
        number[name] = max(1, math.ceil(min_sample_s / t)) if t > 0 else 1
        round_s += t * number[name]
    rounds = repeats
    if round_s > 0:
        rounds = max(repeats, min(max_repeats, int(budget_s / round_s)))
    bar.total = len(names) * (warmup + rounds)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            bar.set_postfix_str(name[:40])
            samples[name].append(clocks[name].timeit(number[name]) / number[name])
            bar.update()
    bar.close()
    return {
        name: Timing(name, statistics.median(s), min(s), max(s),
                     {"rounds": len(s), "number": number[name]}, list(s))
        for name, s in samples.items()
    }


#: The tuned allocator of ``python -m tensorframes.bench --tuned-allocator``: environment
#: variables that glibc's ``malloc`` reads at start-up (the ``mallopt`` settings
#: ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``, ``M_TOP_PAD``; see ``man mallopt``). They make it
#: keep freed memory instead of handing it back to the OS: buffers up to 32 MiB come from the
#: heap, the heap is not trimmed below 2 GiB, and it grows in steps of at least 64 MiB. A
#: contender then reuses memory another one freed instead of page-faulting it in afresh. Users'
#: processes do not run like this unless they set the variables themselves.
TUNED_ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1),
    "MALLOC_TOP_PAD_": str(64 << 20),
}


def allocator_description(env: Mapping[str, str] | None = None) -> str:
    """What the run header says about the allocator of a process with environment ``env``
    (default: this process's)."""
    env = os.environ if env is None else env
    tuned = {k: env[k] for k in TUNED_ALLOCATOR_ENV if k in env}
    if not tuned:
        return "default allocator"
    return "tuned allocator (" + ", ".join(f"{k}={v}" for k, v in tuned.items()) + ")"


def side_by_side(default: Sequence[dict], tuned: Sequence[dict], keys: Sequence[str],
                 ratios: Sequence[str]) -> list[dict]:
    """One row per row of ``default``: its ``keys`` columns, then each of its ``ratios`` columns
    and the median time, each beside the value of the ``tuned`` row with the same keys."""
    def key(r: dict) -> tuple:  # as strings: the tuned rows come back from a CSV
        return tuple(str(r.get(k, "")) for k in keys)

    by_key = {key(r): r for r in tuned}
    out = []
    for r in default:
        t = by_key.get(key(r), {})
        row = {k: r[k] for k in keys if k in r}
        for c in ratios:
            if c in r:
                row[c] = r[c]
                row[f"{c} (tuned)"] = t.get(c, "n/a")
        if "median_s" in r:
            row["median"] = format_seconds(float(r["median_s"]))
            row["median (tuned)"] = (format_seconds(float(t["median_s"])) if "median_s" in t
                                     else "n/a")
        out.append(row)
    return out


def format_seconds(t: float) -> str:
    """``t`` seconds with a unit that keeps two to four significant digits."""
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Render ``rows`` (dicts) as a markdown table with the given columns (default: every
    column, in first-seen order)."""
    columns = list(columns) if columns is not None else _columns(rows)
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _columns(rows: Sequence[dict]) -> list[str]:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    return columns


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Write rows (dicts) to ``path``, columns in first-seen order."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str) -> list[dict]:
    """The rows :func:`write_csv` wrote (every value a string)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
