"""Benchmark suite ``e2e``: time-to-accuracy on the normal-regression task.

Every model flavour trains on the same data with the same budget (epochs, batch, learning rate,
seed) through ``python -m examples.normals``'s own training loop; after every epoch the test
error (unoriented mean angle, degrees) is recorded against the cumulative training wall time.
The table names the baseline (the PCA normal estimate, which needs no training) and reports the
final error, the training time, and the time each model needed to beat the baseline.

Needs a checkout (``models/`` and ``examples/`` are not installed with the package).
"""

from __future__ import annotations

import json
import os
import os.path as osp
import shutil
import tempfile

from ._harness import format_seconds, markdown_table

#: the rows of ``examples.normals compare`` plus DGCNN with PCA frames
EXTRA_ROWS = (("dgcnn_pca", "DGCNN PCA frames", "dgcnn", "pca"),)

SIZES = {
    True: dict(num_shapes=48, num_test_shapes=16, num_points=128, epochs=4, batch_size=8),
    False: dict(num_shapes=256, num_test_shapes=64, num_points=256, epochs=16, batch_size=8),
}


def _import_compare():
    try:
        from examples import _normals_compare
    except ImportError as err:
        raise ImportError(
            "the e2e suite trains the reference models: run it from a checkout of tensorframes "
            "(models/ and examples/ are not installed with the package)"
        ) from err
    return _normals_compare


def run(quick: bool = False, device: str = "cpu", out: str | None = None) -> list[dict]:
    """Train every model flavour (in ``out/e2e_runs``, else a temporary folder); one row per
    model with its final error, training time and time to beat the baseline."""
    comp = _import_compare()
    base = dict(data="synthetic", noise=0.01, pose="canonical", lr=3e-3, seed=0, eval_seed=1234,
                device=device, progress=False, **SIZES[quick])
    all_rows = (*comp.ROWS, *EXTRA_ROWS)
    rows = [(key, label, arch, flavour, {}) for key, label, arch, flavour in all_rows]
    work = out or tempfile.mkdtemp(prefix="tf_e2e_")
    run_dir = osp.join(work, "e2e_runs")
    if osp.exists(run_dir):
        shutil.rmtree(run_dir)
    status = comp.compare(base, rows, out=run_dir, preset="e2e quick" if quick else "e2e")
    if status != 0:
        raise RuntimeError(f"a row failed during training; see {run_dir}")
    with open(osp.join(run_dir, "results.json")) as f:
        summary = {r["key"]: r for r in json.load(f)["rows"]}
    baseline = summary["pca"]["metrics"]["given"]["unoriented"]["mean"]
    table = []
    for key, label, *_ in all_rows:
        row = summary.get(key, {})
        if row.get("status", "ok") != "ok":
            table.append({"model": label, "final error": row.get("status"), "median_s": 0.0})
            continue
        history = []
        path = osp.join(run_dir, key, "metrics.json")
        if osp.exists(path):
            with open(path) as f:
                history = json.load(f)
        curve = [(h["train_time_s"], h["test_unoriented_mean"]) for h in history]
        beat = next((t for t, e in curve if e < baseline), None)
        final = row["metrics"]["given"]["unoriented"]["mean"]
        train_time = row.get("train_time_s") or 0.0
        table.append({
            "model": label,
            "final error": f"{final:.2f}",
            "vs baseline": f"{final / baseline:.2f}x",
            "training time": format_seconds(train_time) if train_time else "none",
            "time to beat baseline": ("-" if key == "pca" else
                                      format_seconds(beat) if beat is not None else "not reached"),
            "curve": curve,
            "median_s": train_time,
        })
    return table


COLUMNS = ["model", "final error", "vs baseline", "training time", "time to beat baseline"]
#: columns that name a row, and its ratios (``--tuned-allocator``'s side-by-side table; there
#: the median is the training time)
KEY_COLUMNS = ["model"]
RATIO_COLUMNS = ["vs baseline"]


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
        elif r.get("final error") not in (None, "skipped", "failed"):
            ax.axhline(float(r["final error"]), ls="--", color="k", label=r["model"])
    ax.set_xlabel("training wall time [s]")
    ax.set_ylabel("test error, unoriented mean [deg]")
    ax.set_title("time to accuracy (normal regression, SyntheticShapes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(quick: bool = False, device: str = "cpu", out: str = "bench_out") -> list[dict]:
    """Run, print the markdown table, plot the curves into ``out/e2e_curves.png``, return the
    rows."""
    os.makedirs(out, exist_ok=True)
    rows = run(quick=quick, device=device, out=out)
    print("## e2e: time to accuracy (baseline: PCA normal estimate, no training)\n")
    print(markdown_table(rows, COLUMNS))
    plot(rows, osp.join(out, "e2e_curves.png"))
    for r in rows:
        r.pop("curve", None)
    return rows
