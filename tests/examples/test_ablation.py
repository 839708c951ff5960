"""Tests of the ``ablation`` preset of ``python -m examples.normals compare``: rows over seeds.

Most use the tiny stand-in model (``tests/examples/_normals_tiny.py``) through
:func:`examples._normals_ablation.run_ablation`; one runs the hidden ``ablation_tiny`` preset
through the CLI with the reference architectures.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # models/ and examples/ run from a checkout
    sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from examples import _normals_ablation as abl  # noqa: E402
from examples import _normals_compare as cmp  # noqa: E402
from examples.normals import main  # noqa: E402

TINY = "tests.examples._normals_tiny:tiny"
BROKEN = "tests.examples.test_ablation:broken"
PNG = b"\x89PNG\r\n\x1a\n"


class _Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, batch) -> torch.Tensor:
        raise RuntimeError("this model always fails")


def broken(flavour: str = "plain", **options) -> nn.Module:
    """A model that builds (it has parameters) and fails in its first forward pass."""
    return _Broken()


def _base(tmp_path, **extra) -> dict:
    base = dict(cmp.PRESETS["tiny"]["config"], root=str(tmp_path / "data"), progress=False)
    return {**base, "epochs": 2, **extra}


ROWS = [
    ("tiny_plain", "Tiny plain", TINY, "plain", {}),
    ("tiny_augment", "Tiny augmented", TINY, "augment", {"hidden": 8}),
]


def _json(path: Path):
    return json.loads(path.read_text())


# =============================================================================== pure parts
def test_aggregate_is_mean_and_sample_std():
    a = abl.aggregate([1.0, 2.0, 4.0])
    assert a["n"] == 3
    assert a["mean"] == pytest.approx(7 / 3)
    assert a["std"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    assert a["std"] == pytest.approx(((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) ** 0.5 / 2**0.5)
    assert abl.aggregate([3.5]) == {"mean": 3.5, "std": 0.0, "n": 1}
    assert abl.aggregate([]) == {"mean": None, "std": None, "n": 0}


def test_parameter_spread():
    assert abl.parameter_spread({"a": 100, "b": 102, "c": 101}) == pytest.approx(0.02)
    assert abl.parameter_spread({"a": 100}) is None
    assert abl.parameter_spread({"a": 57471, "b": 57471}) == 0.0


def test_presets_rows_and_public_names():
    assert "ablation" in cmp.PUBLIC_PRESETS and "ablation_tiny" not in cmp.PUBLIC_PRESETS
    quick = [r[0] for r in cmp.PRESETS["quick"]["rows"]]
    assert quick == ["pca", "pointnet2_plain", "pointnet2_augment", "pointnet2_pca",
                     "pointnet2_pca_scalar", "pointnet2_learned", "tp_cg"]
    scalar = dict((r[0], r) for r in cmp.ROWS)["pointnet2_pca_scalar"]
    assert scalar[1] == "PointNet++ PCA frames, scalar messages (canonicalization)"
    assert scalar[4] == {"messages": "scalar"}
    ablation = cmp.PRESETS["ablation"]
    assert tuple(ablation["seeds"]) == (0, 1, 2)
    keys = [r[0] for r in ablation["rows"]]
    assert len(keys) == len(set(keys)) == 1 + 2 * 11 and keys[0] == "pca"
    for arch in ("pointnet2", "dgcnn"):
        specs = {(r[3], tuple(sorted(r[4].items()))) for r in ablation["rows"] if r[2] == arch}
        assert specs == {
            ("pca", (("messages", "scalar"),)),
            ("pca", (("messages", "vector"),)),
            ("pca", ()),  # tensor messages: the default
            ("pca", (("messages", "irreps"),)),
            ("learned", ()),
            ("pca", (("update_frames", True),)),
            ("learned", (("update_frames", True),)),
            ("three_nn", ()),
            ("random", ()),
            ("plain", ()),
            ("augment", ()),
        }
        assert set(cmp.MESSAGE_ROWS[arch]) <= set(keys)


def test_every_ablation_row_builds_and_message_rows_match_in_size():
    """The reference models take every row's options, and the message types of one
    architecture have the same parameter count within 2%."""
    rows = cmp.preset_rows(cmp.PRESETS["ablation"], None)
    counts = {}
    for key, _label, arch, flavour, options in rows:
        counts[key] = sum(p.numel() for p in models.build(arch, flavour, **options).parameters())
    for arch, keys in cmp.MESSAGE_ROWS.items():
        spread = abl.parameter_spread({k: counts[k] for k in keys})
        assert spread is not None and spread <= abl.SPREAD_LIMIT, (arch, counts)
    assert counts["pca"] == 0


# =============================================================================== runs
def test_seeds_run_in_their_folders_aggregate_and_resume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "abl"
    code = abl.run_ablation(_base(tmp_path), ROWS, (0, 1), out=str(out), preset="t")
    printed = capsys.readouterr().out
    assert code == 0
    results = _json(out / "results.json")
    assert results["seeds"] == [0, 1]
    finals = {}
    for key, *_ in ROWS:
        for seed in (0, 1):
            run = out / key / f"seed{seed}"
            assert (run / "checkpoint.pt").exists()
            config = _json(run / "config.json")
            assert config["seed"] == seed and config["out"] == str(run)
            finals[key, seed] = _json(run / "final.json")
    # the two seeds differ (initialisation and shuffling), the data does not
    assert finals["tiny_plain", 0]["given"] != finals["tiny_plain", 1]["given"]
    for row in results["rows"]:
        key = row["key"]
        assert row["status"] == "ok" and [r["seed"] for r in row["runs"]] == [0, 1]
        for name, path in (("given", ("given", "unoriented", "mean")),
                           ("rotated", ("rotated", "unoriented", "mean")),
                           ("train_time_s", ("train_time_s",)),
                           ("equivariance_error", ("equivariance_error",))):
            values = []
            for seed in (0, 1):
                v = finals[key, seed]
                for p in path:
                    v = v[p]
                values.append(v)
            agg = row["aggregate"][name]
            assert agg["n"] == 2
            assert agg["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            assert agg["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
        given = row["aggregate"]["given"]
        assert f"{given['mean']:.2f} ± {given['std']:.2f}" in printed
        assert row["parameters"] == finals[key, 0]["parameters"]
    with open(out / "results.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(r["key"], r["seed"]) for r in lines] == [
        (k, s) for k, *_ in ROWS for s in ("0", "1", "mean", "std")
    ]
    mean_line = next(r for r in lines if r["key"] == "tiny_plain" and r["seed"] == "mean")
    expected = results["rows"][0]["aggregate"]["given"]["mean"]
    assert float(mean_line["given"]) == pytest.approx(expected)
    assert (out / "ablation.png").read_bytes()[:8] == PNG
    table = (out / "table.md").read_text()
    assert "| Tiny plain | 195 | 2/2 |" in table

    # existing runs are never overwritten without --resume
    with pytest.raises(ValueError, match="--resume"):
        abl.run_ablation(_base(tmp_path), ROWS, (0, 1), out=str(out))

    # --resume reads the finished runs back: no training, checkpoints untouched, same numbers
    calls = []
    monkeypatch.setattr(abl, "train", lambda *a, **k: calls.append(a) or pytest.fail("trained"))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")}
    assert len(mtimes) == 4
    assert abl.run_ablation(_base(tmp_path), ROWS, (0, 1), out=str(out), resume=True) == 0
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("checkpoint.pt")} == mtimes
    again = _json(out / "results.json")
    assert [r["aggregate"] for r in again["rows"]] == [r["aggregate"] for r in results["rows"]]
    assert all(run["reused"] for row in again["rows"] for run in row["runs"])


def test_interrupted_runs_are_continued_and_new_seeds_trained(tmp_path, monkeypatch):
    out = tmp_path / "abl"
    rows = ROWS[:1]
    # stopped after one of two epochs: no final evaluation yet, reported as failed
    code = abl.run_ablation(_base(tmp_path, stop_after=1), rows, (0,), out=str(out))
    assert code == 1
    assert _json(out / "results.json")["rows"][0]["status"] == "failed"
    assert len(_json(out / "tiny_plain" / "seed0" / "metrics.json")) == 1

    trained = []
    real_train = abl.train

    def counting_train(cfg, **kw):
        trained.append((cfg.seed, cfg.resume))
        return real_train(cfg, **kw)

    monkeypatch.setattr(abl, "train", counting_train)
    code = abl.run_ablation(_base(tmp_path), rows, (0, 1), out=str(out), resume=True)
    assert code == 0
    assert trained == [(0, True), (1, False)]  # seed 0 continued, seed 1 new
    assert len(_json(out / "tiny_plain" / "seed0" / "metrics.json")) == 2
    # the continued run equals an uninterrupted one with the same seed
    fresh = tmp_path / "fresh"
    abl.run_ablation(_base(tmp_path), rows, (0,), out=str(fresh))
    assert (_json(out / "tiny_plain" / "seed0" / "final.json")["given"]
            == _json(fresh / "tiny_plain" / "seed0" / "final.json")["given"])


def test_failed_and_skipped_rows_are_reported_and_the_rest_aggregated(tmp_path, capsys):
    rows = [
        ROWS[0],
        ("broken", "Always fails", BROKEN, "plain", {}),
        ("missing", "Not written yet", "tests.examples._no_such_module:build", "plain", {}),
        ("bad_option", "Option it does not take", TINY, "plain", {"no_such_option": 1}),
    ]
    out = tmp_path / "abl"
    code = abl.run_ablation(_base(tmp_path), rows, (0, 1), out=str(out))
    captured = capsys.readouterr()
    assert code == 1
    results = {r["key"]: r for r in _json(out / "results.json")["rows"]}
    assert results["tiny_plain"]["status"] == "ok"
    assert results["tiny_plain"]["aggregate"]["given"]["n"] == 2
    assert results["broken"]["status"] == "failed"
    assert [r["status"] for r in results["broken"]["runs"]] == ["failed", "failed"]
    assert "this model always fails" in results["broken"]["runs"][0]["reason"]
    assert results["missing"]["status"] == "skipped"
    assert "ModuleNotFoundError" in results["missing"]["reason"]
    assert results["bad_option"]["status"] == "skipped"
    assert "no_such_option" in results["bad_option"]["reason"]
    assert "| Always fails | failed: seed 0: RuntimeError" in captured.out
    assert "| Not written yet | skipped: ModuleNotFoundError" in captured.out
    assert "Failed: Always fails, seed 1" in captured.out
    assert (out / "ablation.png").read_bytes()[:8] == PNG
    assert not (out / "missing").exists()


def test_parameter_spread_warning(tmp_path, capsys):
    rows = [
        ("a", "Tiny 16", TINY, "plain", {}),
        ("b", "Tiny 32", TINY, "plain", {"hidden": 32}),
    ]
    abl.run_ablation(_base(tmp_path, epochs=1), rows, (0,), out=str(tmp_path / "abl"),
                     groups={"tiny": ("a", "b")})
    out = capsys.readouterr().out
    assert "Parameters of the message-type rows of tiny: a 195, b 387" in out
    assert "WARNING: tiny's message-type rows differ by 98.5%" in out
    spread = _json(tmp_path / "abl" / "results.json")["parameter_spread"]["tiny"]
    assert spread["relative_spread"] == pytest.approx((387 - 195) / 195)


def test_ablation_tiny_preset_through_the_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["compare", "--preset", "ablation_tiny", "--out", str(out), "--no-progress",
            "--root", str(tmp_path / "data")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = cmp.PRESETS["ablation_tiny"]["rows"]
    results = _json(out / "results.json")
    assert [r["key"] for r in results["rows"]] == [r[0] for r in rows]
    for row in results["rows"]:
        assert row["status"] == "ok", row
    assert sorted(os.listdir(out / "pointnet2_pca_scalar")) == ["seed0", "seed1"]
    assert "| PCA normal estimate (no learning) | 0 | - (no learning) |" in printed
    assert "message-type rows of pointnet2" in printed
    assert main(args + ["--resume"]) == 0
