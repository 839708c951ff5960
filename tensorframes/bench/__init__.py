"""Benchmark suites, timed as a user's plain Python process runs them.

``python -m tensorframes.bench <suite> [--quick] [--device cpu|cuda] [--out DIR]
[--tuned-allocator]``, with suites ``reps`` (frame-change transforms), ``frames`` (frame
construction), ``tp`` (tensor products against e3nn's), ``layers`` (one message-passing layer:
the cost of the frame change, and tensor frames against tensor products) and ``e2e``
(time to accuracy); ``all`` runs each.

Benchmarks print figures and ratios measured side by side in one run; they are not tests.
"""

SUITES = ("reps", "frames", "tp", "layers", "e2e")
