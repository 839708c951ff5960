"""The time-to-accuracy computation of ``python -m tensorframes.bench e2e`` on synthetic curves
(pure functions; the suite's end-to-end run is in ``tests/test_bench.py``)."""

import math

import pytest

from tensorframes.bench import e2e
from tensorframes.bench.e2e import accuracy_table, headline, speedup, time_to_reach


def test_time_to_reach_first_point_at_or_below_the_target():
    curve = [(10.0, 20.0), (20.0, 15.0), (30.0, 12.0), (40.0, 13.0), (50.0, 11.0)]
    assert time_to_reach(curve, 15.0) == 20.0  # equal counts as reached
    assert time_to_reach(curve, 14.9) == 30.0
    assert time_to_reach(curve, 12.5) == 30.0  # the first time, not the last
    assert time_to_reach(curve, 11.0) == 50.0


def test_time_to_reach_first_epoch_and_not_reached():
    curve = [(3.5, 9.0), (7.0, 8.0)]
    assert time_to_reach(curve, 10.0) == 3.5  # already at the end of the first epoch
    assert time_to_reach(curve, 7.99) is None  # never
    assert time_to_reach([], 10.0) is None


def test_time_to_reach_rejects_bad_curves():
    with pytest.raises(ValueError, match="finite"):
        time_to_reach([(1.0, 2.0)], math.nan)
    with pytest.raises(ValueError, match="finite"):
        time_to_reach([(1.0, math.inf)], 2.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        time_to_reach([(2.0, 5.0), (1.0, 4.0)], 1.0)


def test_speedup():
    assert speedup(120.0, 10.0) == 12.0
    assert speedup(120.0, None) is None
    assert speedup(None, 10.0) is None
    assert speedup(120.0, 0.0) is None


ENTRIES = [
    {"key": "pca", "label": "PCA estimate", "final": 14.0, "train_time_s": 0.0, "curve": []},
    {"key": "pointnet2_pca", "label": "PointNet++ PCA frames", "final": 9.0,
     "train_time_s": 40.0, "curve": [(10.0, 16.0), (20.0, 13.0), (30.0, 10.0), (40.0, 9.0)]},
    {"key": "pointnet2_plain", "label": "PointNet++ plain", "final": 30.0,
     "train_time_s": 50.0, "curve": [(25.0, 35.0), (50.0, 30.0)]},
    {"key": "fast", "label": "first epoch", "final": 5.0, "train_time_s": 8.0,
     "curve": [(4.0, 6.0), (8.0, 5.0)]},
    {"key": "tp_cg", "label": "TP baseline", "final": 12.0, "train_time_s": 150.0,
     "curve": [(50.0, 16.0), (100.0, 11.5), (150.0, 12.0)]},
    {"key": "gone", "label": "skipped model", "status": "skipped"},
]


def test_accuracy_table_on_synthetic_curves():
    rows = {r["model"]: r for r in accuracy_table(ENTRIES)}
    pn = rows["PointNet++ PCA frames"]
    assert pn["time_to_reference_s"] == 30.0  # first error <= 12.0
    assert pn["speedup"] == pytest.approx(150.0 / 30.0)
    assert pn["speed-up vs TP"] == "5.0x"
    assert pn["time_to_estimate_s"] == 20.0  # first error <= 14.0
    assert pn["vs PCA estimate"] == f"{9.0 / 14.0:.2f}x"
    plain = rows["PointNet++ plain"]
    assert plain["time to TP final error"] == "not reached"
    assert plain["speed-up vs TP"] == "not reached"
    assert plain["time to PCA estimate error"] == "not reached"
    assert plain["speedup"] is None
    fast = rows["first epoch"]
    assert fast["time_to_reference_s"] == 4.0 and fast["time_to_estimate_s"] == 4.0
    assert fast["speed-up vs TP"] == "37.5x"
    tp = rows["TP baseline"]  # reaches its final error before its last epoch (not monotone)
    assert tp["time_to_reference_s"] == 100.0 and tp["speed-up vs TP"] == "1.5x"
    est = rows["PCA estimate"]
    assert est["training time"] == "none" and est["time to TP final error"] == "-"
    assert rows["skipped model"]["final error"] == "skipped"
    assert set(e2e.COLUMNS) <= set(pn)


def test_accuracy_table_without_the_reference():
    entries = [e for e in ENTRIES if e["key"] != "tp_cg"]
    rows = {r["model"]: r for r in accuracy_table(entries)}
    pn = rows["PointNet++ PCA frames"]
    assert pn["time to TP final error"] == "n/a" and pn["speed-up vs TP"] == "n/a"
    assert pn["time_to_estimate_s"] == 20.0


def test_headline():
    rows = accuracy_table(ENTRIES)
    text = headline(rows, ENTRIES)
    assert "PointNet++ PCA frames reaches the TP baseline's final error (12.00 deg" in text
    assert "5.0x faster" in text and "evaluations excluded" in text
    slow = [dict(e, curve=[(40.0, 13.0)]) if e["key"] == "pointnet2_pca" else e for e in ENTRIES]
    assert "does not reach" in headline(accuracy_table(slow), slow)


def test_run_reads_a_finished_compare_folder(tmp_path):
    """``--e2e-from``: the curves come from the folder's per-epoch metrics, nothing is trained."""
    import json

    def row(key, final, t):
        return {"key": key, "status": "ok", "train_time_s": t,
                "metrics": {"given": {"unoriented": {"mean": final}}}}

    rows = [row("pca", 14.0, 0.0), row("tp_cg", 12.0, 100.0), row("pointnet2_pca", 8.0, 40.0)]
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows}))
    curves = {"tp_cg": [(50.0, 13.0), (100.0, 12.0)],
              "pointnet2_pca": [(10.0, 13.5), (20.0, 11.5), (40.0, 8.0)]}
    for key, curve in curves.items():
        (tmp_path / key).mkdir()
        (tmp_path / key / "metrics.json").write_text(json.dumps(
            [{"train_time_s": t, "test_unoriented_mean": e} for t, e in curve]))
    table, entries = e2e.run(reuse=str(tmp_path))
    by_key = {e["key"]: e for e in entries}
    assert by_key["pointnet2_pca"]["curve"] == [tuple(p) for p in curves["pointnet2_pca"]] or \
        by_key["pointnet2_pca"]["curve"] == [list(p) for p in curves["pointnet2_pca"]]
    assert by_key["dgcnn_pca"]["status"] == "missing"
    text = headline(table, entries)
    assert "5.0x" in text  # TP trains 100 s; PointNet++ reaches 12.0 after 20 s
    with pytest.raises(ValueError, match="results.json"):
        e2e.run(reuse=str(tmp_path / "nothing"))
