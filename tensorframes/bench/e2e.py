"""Benchmark suite ``e2e``: time to accuracy on the normal-regression task.

Every model of ``python -m examples.normals compare --preset quick`` (plus DGCNN with PCA
frames) trains on the same data with the same budget (epochs, batch, learning rate, seed)
through the example's own training loop; after every epoch the test error (unoriented mean
angle, degrees) is recorded against the cumulative *training* wall time (the evaluations are
not counted). From these curves the table reports, per model, the time it needed to reach

* the tensor-product baseline's *final* test error (and the speed-up: the TP baseline's whole
  training time divided by that time; the headline "PCA-frame PointNet++ reaches the TP
  baseline's final error N x faster"),
* the error of the PCA normal estimate (no training).

A model reaches a target at the end of the first evaluated epoch whose error is at most the
target; "not reached" if no epoch is. The times are only as fine as an epoch.

Needs a checkout (``models/`` and ``examples/`` are not installed with the package).
"""

from __future__ import annotations

import json
import math
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Mapping, Sequence

from ._harness import format_seconds, markdown_table

#: rows beside those of ``examples.normals compare --preset quick``
EXTRA_ROWS = (("dgcnn_pca", "DGCNN PCA frames", "dgcnn", "pca", {}),)
#: the reference whose final error every model tries to reach, and the no-learning estimate
REFERENCE_KEY, ESTIMATE_KEY = "tp_cg", "pca"
#: the row of the speed headline
HEADLINE_KEY = "pointnet2_pca"

SIZES = {
    True: dict(num_shapes=48, num_test_shapes=16, num_points=128, epochs=4, batch_size=8),
    False: dict(num_shapes=256, num_test_shapes=64, num_points=256, epochs=16, batch_size=8),
}

COLUMNS = [
    "model",
    "final error",
    "vs PCA estimate",
    "training time",
    "time to TP final error",
    "speed-up vs TP",
    "time to PCA estimate error",
]
#: columns that name a row, and its ratios (``--tuned-allocator``'s side-by-side table; there
#: the median is the training time)
KEY_COLUMNS = ["model"]
RATIO_COLUMNS = ["vs PCA estimate", "speed-up vs TP"]


def time_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """The cumulative training time at the first point of ``curve`` whose error is at most
    ``target``; ``None`` if there is none.

    ``curve``: ``(training time, test error)`` after each evaluated epoch, in order, the times
    cumulative (non-decreasing). A ``ValueError`` for a non-finite target, time or error, or for
    times that decrease."""
    if not math.isfinite(target):
        raise ValueError(f"target must be a finite error, got {target!r}")
    last = -math.inf
    for t, e in curve:
        if not (math.isfinite(t) and math.isfinite(e)) or t < 0:
            raise ValueError(f"curve points must be finite with times >= 0, got ({t!r}, {e!r})")
        if t < last:
            raise ValueError(f"curve times must be cumulative (non-decreasing): {t} after {last}")
        last = t
    return next((t for t, e in curve if e <= target), None)


def speedup(reference_time: float | None, time: float | None) -> float | None:
    """``reference_time / time`` (``None`` if either is missing or ``time`` is not positive)."""
    if reference_time is None or time is None or time <= 0:
        return None
    return reference_time / time


def accuracy_table(entries: Sequence[Mapping]) -> list[dict]:
    """The table's rows from one entry per model: ``key``, ``label``, ``status`` (``"ok"``,
    else the row only names it), ``final`` (final test error), ``train_time_s`` and ``curve``
    (see :func:`time_to_reach`). Targets: the final error of the entry :data:`REFERENCE_KEY`
    and the error of :data:`ESTIMATE_KEY` (no training); ``"n/a"`` where that entry is missing.
    Each row keeps its numbers too (``time_to_reference_s``, ``speedup``, ...)."""
    by_key = {e["key"]: e for e in entries if e.get("status", "ok") == "ok"}
    ref = by_key.get(REFERENCE_KEY)
    est = by_key.get(ESTIMATE_KEY)
    ref_error = ref["final"] if ref else None
    ref_time = ref["train_time_s"] if ref else None
    est_error = est["final"] if est else None
    rows = []
    for e in entries:
        if e.get("status", "ok") != "ok":
            rows.append({"model": e["label"], "final error": e.get("status"), "median_s": 0.0})
            continue
        trained = bool(e.get("train_time_s")) and e["key"] != ESTIMATE_KEY
        curve = list(e.get("curve") or [])
        t_ref = time_to_reach(curve, ref_error) if trained and ref_error is not None else None
        t_est = time_to_reach(curve, est_error) if trained and est_error is not None else None
        gain = speedup(ref_time, t_ref)
        row = {
            "model": e["label"],
            "final error": f"{e['final']:.2f}",
            "vs PCA estimate": f"{e['final'] / est_error:.2f}x" if est_error else "n/a",
            "training time": format_seconds(e["train_time_s"]) if trained else "none",
            "time to TP final error": _reach_cell(trained, ref_error, t_ref),
            "speed-up vs TP": f"{gain:.1f}x" if gain is not None else _na(trained, ref_error),
            "time to PCA estimate error": _reach_cell(trained, est_error, t_est),
            "curve": curve,
            "median_s": e["train_time_s"] if trained else 0.0,
            "time_to_reference_s": t_ref,
            "time_to_estimate_s": t_est,
            "speedup": gain,
        }
        rows.append(row)
    return rows


def _na(trained: bool, target: float | None) -> str:
    if not trained:
        return "-"
    return "n/a" if target is None else "not reached"


def _reach_cell(trained: bool, target: float | None, t: float | None) -> str:
    return format_seconds(t) if t is not None else _na(trained, target)


def headline(rows: Sequence[Mapping], entries: Sequence[Mapping]) -> str:
    """One sentence: how much faster the PCA-frame PointNet++ reaches the TP baseline's final
    error than the TP baseline's whole training."""
    by_key = {e["key"]: (e, r) for e, r in zip(entries, rows)}
    if HEADLINE_KEY not in by_key or REFERENCE_KEY not in by_key:
        return "headline: the PCA-frame PointNet++ or the TP baseline did not run"
    (e, r), (ref, _) = by_key[HEADLINE_KEY], by_key[REFERENCE_KEY]
    if ref.get("status", "ok") != "ok" or e.get("status", "ok") != "ok":
        return "headline: the PCA-frame PointNet++ or the TP baseline did not finish"
    target = f"the TP baseline's final error ({ref['final']:.2f} deg after " \
             f"{format_seconds(ref['train_time_s'])} of training)"
    if r.get("speedup") is None:
        return f"{e['label']} does not reach {target} within its budget."
    return (f"{e['label']} reaches {target} {r['speedup']:.1f}x faster: after "
            f"{format_seconds(r['time_to_reference_s'])} of training (training wall time only, "
            "evaluations excluded).")


def _import_compare():
    try:
        from examples import _normals_compare
    except ImportError as err:
        raise ImportError(
            "the e2e suite trains the reference models: run it from a checkout of tensorframes "
            "(models/ and examples/ are not installed with the package)"
        ) from err
    return _normals_compare


def run(quick: bool = False, device: str = "cpu", out: str | None = None,
        reuse: str | None = None) -> tuple[list[dict], list[dict]]:
    """Train every model (in ``out/e2e_runs``, else a temporary folder); returns the table's
    rows (see :func:`accuracy_table`) and the entries they were computed from.

    ``reuse``: a finished ``python -m examples.normals compare --preset quick`` folder (the same
    data and schedule as the full-size suite; it records an evaluation after every epoch) whose
    runs are read instead of training again; rows it lacks (DGCNN) are reported missing.
    """
    comp = _import_compare()
    rows = [*comp.preset_rows(comp.PRESETS["quick"], None), *EXTRA_ROWS]
    if reuse is not None:
        run_dir = reuse
        if not osp.exists(osp.join(run_dir, "results.json")):
            raise ValueError(f"--e2e-from {run_dir}: no results.json (not a finished compare "
                             "folder)")
    else:
        base = dict(data="synthetic", noise=0.01, pose="canonical", lr=3e-3, seed=0,
                    eval_seed=1234, device=device, progress=False, **SIZES[quick])
        work = out or tempfile.mkdtemp(prefix="tf_e2e_")
        run_dir = osp.join(work, "e2e_runs")
        if osp.exists(run_dir):
            shutil.rmtree(run_dir)
        status = comp.compare(base, rows, out=run_dir, preset="e2e quick" if quick else "e2e")
        if status != 0:
            raise RuntimeError(f"a row failed during training; see {run_dir}")
    with open(osp.join(run_dir, "results.json")) as f:
        summary = {r["key"]: r for r in json.load(f)["rows"]}
    entries = []
    for key, label, *_ in rows:
        row = summary.get(key, {})
        entry = {"key": key, "label": label, "status": row.get("status", "missing")}
        if entry["status"] == "ok":
            history = []
            path = osp.join(run_dir, key, "metrics.json")
            if osp.exists(path):
                with open(path) as f:
                    history = json.load(f)
            entry.update(
                final=row["metrics"]["given"]["unoriented"]["mean"],
                train_time_s=row.get("train_time_s") or 0.0,
                curve=[(h["train_time_s"], h["test_unoriented_mean"])
                       for h in history if "test_unoriented_mean" in h],
            )
        entries.append(entry)
    return accuracy_table(entries), entries


def plot(rows: list[dict], path: str) -> None:
    """Test error against cumulative training time, one curve per model, saved as PNG."""
    import matplotlib  # only when plotting: importing it costs about a second

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get("curve"):
            t, e = zip(*r["curve"])
            ax.plot(t, e, marker="o", label=r["model"])
        elif r.get("final error") not in (None, "skipped", "failed", "missing"):
            ax.axhline(float(r["final error"]), ls="--", color="k", label=r["model"])
    ax.set_xlabel("training wall time [s] (evaluations excluded)")
    ax.set_ylabel("test error, unoriented mean [deg]")
    ax.set_title("time to accuracy (normal regression, SyntheticShapes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(quick: bool = False, device: str = "cpu", out: str = "bench_out",
         reuse: str | None = None) -> list[dict]:
    """Run (or read ``reuse``, see :func:`run`), print the markdown table and the headline, plot
    the curves into ``out/e2e_curves.png``, return the rows."""
    os.makedirs(out, exist_ok=True)
    rows, entries = run(quick=quick, device=device, out=out, reuse=reuse)
    print("## e2e: time to accuracy (targets: the TP baseline's final error, the PCA normal "
          "estimate's error; times: training wall time only, evaluations excluded, resolution "
          "one epoch)\n")
    print(markdown_table(rows, COLUMNS))
    print(f"\n{headline(rows, entries)}")
    plot(rows, osp.join(out, "e2e_curves.png"))
    for r in rows:
        for k in ("curve", "time_to_reference_s", "time_to_estimate_s", "speedup"):
            r.pop(k, None)
    return rows
