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
    """Median, min and max wall time in seconds of one contender."""

    name: str
    median: float
    min: float
    max: float
    extra: dict = field(default_factory=dict)


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    contenders: dict[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    budget_s: float = 2.0,
    max_repeats: int = 25,
) -> dict[str, Timing]:
    """Time every contender at least ``repeats`` times, interleaved, after ``warmup`` untimed
    calls each.

    Rounds are added while a round is cheap: as many as fit in ``budget_s`` (judged by the
    warm-up round), at most ``max_repeats``, so millisecond-scale medians rest on more samples.
    On CUDA the device is synchronised around every call, so times include the kernels.
    """
    round_s = 0.0
    for fn in contenders.values():
        for _ in range(warmup):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
        round_s += time.perf_counter() - start if warmup else 0.0
    rounds = repeats
    if round_s > 0:
        rounds = max(repeats, min(max_repeats, int(budget_s / round_s)))
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {
        name: Timing(name, statistics.median(s), min(s), max(s)) for name, s in samples.items()
    }


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
