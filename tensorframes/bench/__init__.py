"""Benchmark suites.

``python -m tensorframes.bench <suite> [--quick] [--device cpu|cuda] [--out DIR]``.

Benchmarks print figures and ratios measured side by side in one run; they are not tests.
"""

SUITES = ("reps", "frames", "tp", "layers", "e2e")
