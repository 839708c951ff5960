"""Tests of the normal-regression example (``python -m examples.normals``).

They use a tiny stand-in model (``tests/examples/_normals_tiny.py``, passed as
``--arch tests.examples._normals_tiny:tiny``) so that they stay fast and independent of the
reference architectures; the ``compare`` test uses the real ones with a micro preset.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # models/ and examples/ run from a checkout
    sys.path.insert(0, str(ROOT))

from examples import _normals_compare as cmp  # noqa: E402
from examples import _normals_data as ndata  # noqa: E402
from examples import _normals_eval as neval  # noqa: E402
from examples import _normals_io as nio  # noqa: E402
from examples import _normals_loop as nloop  # noqa: E402
from examples import _normals_model as nmodel  # noqa: E402
from examples._normals_metrics import (  # noqa: E402
    angular_error,
    summarize,
    unoriented_cosine_loss,
)
from examples.normals import main, parse_model_options  # noqa: E402
from tensorframes.data import default_cache_dir  # noqa: E402

TINY = "tests.examples._normals_tiny:tiny"
TIME_KEYS = ("epoch_time_s", "train_time_s", "eval_time_s")


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    """The data layer's default cache (``$XDG_CACHE_HOME/tensorframes``) inside the test's
    temporary folder, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    return tmp_path / "xdg_cache" / "tensorframes"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One synthetic-data cache shared by the tests of this module."""
    return str(tmp_path_factory.mktemp("normals_data"))


def _train_args(data_root, out, *extra, flavour="augment", epochs=4):
    return [
        "train",
        "--arch",
        TINY,
        "--flavour",
        flavour,
        "--root",
        data_root,
        "--num-shapes",
        "12",
        "--num-test-shapes",
        "4",
        "--num-points",
        "48",
        "--epochs",
        str(epochs),
        "--batch-size",
        "4",
        "--lr",
        "0.01",
        "--seed",
        "3",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _snapshot(folder):
    """Bytes and mtimes of every file below ``folder``."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _drop_times(obj):
    if isinstance(obj, dict):
        return {k: _drop_times(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_drop_times(v) for v in obj]
    return obj


# =============================================================================== metrics
def _rotate_about_z(v, degrees):
    a = np.deg2rad(degrees)
    R = torch.tensor([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return v @ R.T


def test_angular_error_known_angles():
    n = torch.tensor([[1.0, 0.0, 0.0]]).repeat(6, 1).double()
    angles = torch.tensor([0.0, 30.0, 60.0, 90.0, 150.0, 180.0])
    pred = torch.stack([_rotate_about_z(n[i], float(a)) for i, a in enumerate(angles)])
    pred = pred * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0], [7.0]])  # length is ignored
    oriented = angular_error(pred, n, oriented=True)
    unoriented = angular_error(pred, n)
    torch.testing.assert_close(oriented, angles.double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(
        unoriented, torch.tensor([0.0, 30.0, 60.0, 90.0, 30.0, 0.0]).double(), atol=1e-9, rtol=0
    )


def test_sign_flip_and_degenerate_predictions():
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(50, 3, generator=g), dim=-1)
    assert angular_error(-n, n).abs().max() < 1e-6  # unoriented: -n is a perfect answer
    torch.testing.assert_close(
        angular_error(-n, n, oriented=True), torch.full((50,), 180.0).double(), atol=1e-5, rtol=0
    )
    assert angular_error(n, n, oriented=True).abs().max() < 1e-6
    # tiny angles are resolved (acos of a clamped cosine would give 0 or lose precision)
    e = angular_error(torch.tensor([[1.0, 1e-6, 0.0]]).double(), torch.tensor([[1.0, 0, 0]]))
    assert abs(float(e) - np.rad2deg(1e-6)) < 1e-12
    # a zero prediction has no direction: it scores 90 degrees, never 0
    zero = angular_error(torch.zeros(2, 3), n[:2])
    torch.testing.assert_close(zero, torch.full((2,), 90.0).double())
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        angular_error(torch.zeros(4, 3), torch.zeros(5, 3))


def test_summarize_and_loss():
    s = summarize(torch.tensor([0.0, 10.0, 20.0, 90.0]))
    assert s == {"mean": 30.0, "median": 15.0}
    n = torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    assert float(unoriented_cosine_loss(3 * n, n)) < 1e-6
    assert float(unoriented_cosine_loss(-n, n)) < 1e-6
    t = torch.nn.functional.normalize(torch.linalg.cross(n, torch.randn(20, 3)), dim=-1)
    assert abs(float(unoriented_cosine_loss(t, n)) - 1.0) < 1e-6


class _Radial(torch.nn.Module):
    """Predicts ``sign * pos``: exact (outward) normals of a sphere centred at the origin,
    and O(3)-equivariant."""

    def __init__(self, sign=1.0):
        super().__init__()
        self.sign = sign

    def forward(self, batch):
        return self.sign * batch.pos


class _Constant(torch.nn.Module):
    def forward(self, batch):
        return torch.tensor([0.0, 0.0, 1.0]).expand(len(batch.pos), 3)


def _spheres(n_clouds=3, n_points=40):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n_clouds):
        p = torch.nn.functional.normalize(torch.randn(n_points, 3, generator=g), dim=-1)
        out.append(Data(pos=p, normal=p.clone()))
    return out


def test_evaluate_rotated_metrics_and_gap():
    kw = dict(batch_size=2, eval_seed=5, device=torch.device("cpu"))
    m = neval.evaluate(_Radial(), _spheres(), **kw)["metrics"]
    for split in ("given", "rotated"):
        assert m[split]["unoriented"]["mean"] < 1e-4 and m[split]["oriented"]["mean"] < 1e-4
    assert abs(m["gap"]["unoriented"]) < 1e-4 and m["equivariance_error"] < 1e-4

    m = neval.evaluate(_Radial(-1.0), _spheres(), **kw)["metrics"]  # inward: oriented 180
    assert m["given"]["unoriented"]["mean"] < 1e-4
    assert abs(m["rotated"]["oriented"]["mean"] - 180.0) < 1e-3

    # not equivariant: the prediction does not follow the rotation
    res = neval.evaluate(_Constant(), _spheres(), **kw)
    m, e = res["metrics"], res["errors"]
    z = torch.cat([d.normal for d in _spheres()])[:, 2].double()
    expected = torch.rad2deg(torch.acos(z.abs().clamp(max=1)))
    torch.testing.assert_close(e["given_unoriented"], expected, atol=1e-4, rtol=0)
    assert m["equivariance_error"] > 10
    assert not torch.allclose(e["given_unoriented"], e["rotated_unoriented"])
    # seeded: the same draws every time, different with another seed
    again = neval.evaluate(_Constant(), _spheres(), **kw)["errors"]["rotated_unoriented"]
    assert torch.equal(again, e["rotated_unoriented"])
    other = neval.evaluate(_Constant(), _spheres(), **{**kw, "eval_seed": 6})["errors"]
    assert not torch.equal(other["rotated_unoriented"], e["rotated_unoriented"])


def test_random_o3_includes_reflections():
    Q = ndata.random_o3(64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(Q @ Q.transpose(1, 2), torch.eye(3).double().expand(64, 3, 3))
    dets = torch.linalg.det(Q).round()
    assert (dets == 1).any() and (dets == -1).any()


def test_parse_model_options():
    opts = parse_model_options(
        ["k=16", "width=3.5", "hidden=['1x0n', '2x1n']", "act=relu", "flag=true", "x=None"]
    )
    assert opts == {
        "k": 16,
        "width": 3.5,
        "hidden": ["1x0n", "2x1n"],
        "act": "relu",
        "flag": True,
        "x": None,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_model_options(["novalue"])


# =============================================================================== training
def test_kill_and_resume_is_exact(tmp_path, data_root):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(_train_args(data_root, straight)) == 0
    assert main(_train_args(data_root, resumed, "--stop-after", "2")) == 0
    ckpt = _load(resumed / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["final"] is None
    assert not (resumed / "final.json").exists()
    # a "fresh process": scramble every global RNG; the checkpoint must restore them
    torch.manual_seed(12345)
    random.seed(12345)
    np.random.seed(12345)  # noqa: NPY002
    assert (
        main(["train", "--out", str(resumed), "--resume", "--no-progress", "--threads", "1"]) == 0
    )

    a, b = _load(straight / "checkpoint.pt"), _load(resumed / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _drop_times(a["history"]) == _drop_times(b["history"])
    fa = json.loads((straight / "final.json").read_text())
    fb = json.loads((resumed / "final.json").read_text())
    assert _drop_times(fa) == _drop_times(fb)
    assert json.loads((resumed / "metrics.json").read_text())[-1]["epoch"] == 4
    assert len((resumed / "metrics.csv").read_text().splitlines()) == 5  # header + 4 epochs
    # and the run is not trivially constant: training changed the parameters
    torch.manual_seed(3)
    fresh = nmodel.build_model(TINY, "augment", {})
    assert any(not torch.equal(v, a["model"][k]) for k, v in fresh.state_dict().items())


def test_seeded_runs_are_deterministic_and_seed_matters(tmp_path, data_root):
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        args = _train_args(data_root, tmp_path / name, epochs=1)
        args[args.index("--seed") + 1] = seed
        assert main(args) == 0
    a, b, c = (_load(tmp_path / n / "checkpoint.pt")["model"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_holds_plain_data(tmp_path, data_root):
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, epochs=1)) == 0
    ckpt = _load(out / "checkpoint.pt")  # weights_only=True must work
    assert ckpt["arch"] == TINY and ckpt["flavour"] == "augment" and ckpt["options"] == {}
    for key in ("model", "optimizer", "scheduler", "rng", "epoch", "history", "config"):
        assert key in ckpt
    assert set(ckpt["rng"][0]) >= {"torch", "numpy", "python", "generators"}
    assert set(ckpt["rng"][0]["generators"]) == {"shuffle", "augment"}
    assert (out / "metrics.csv").exists() and (out / "config.json").exists()


def test_checkpoint_from_another_model_is_refused(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, epochs=1)) == 0
    before = _snapshot(out)
    capsys.readouterr()

    code = main(_train_args(data_root, out, "--resume", flavour="plain", epochs=2))
    err = capsys.readouterr().err
    assert code == 2
    assert "another model" in err and "'augment'" in err and "'plain'" in err and TINY in err

    code = main(
        [
            "eval",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--arch",
            "pointnet2",
            "--flavour",
            "pca",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'pointnet2'" in err and TINY in err

    code = main(_train_args(data_root, out, "--resume", "--model-option", "hidden=8", epochs=2))
    err = capsys.readouterr().err
    assert code == 2 and "hidden" in err

    # training into a folder that holds a checkpoint needs --resume
    code = main(_train_args(data_root, out, epochs=1))
    assert code == 2 and "--resume" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_corrupted_checkpoint_gives_clear_error(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    before = _snapshot(out)
    assert main(_train_args(data_root, out, "--resume")) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["eval", "--out", str(out), "--no-progress"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    nio.save_checkpoint(str(path), {"format": nio.CHECKPOINT_FORMAT, "x": torch.arange(3)})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")  # half-written, then the "disk" fails
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        nio.save_checkpoint(str(path), {"format": nio.CHECKPOINT_FORMAT, "x": torch.arange(4)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp files
    assert torch.equal(nio.load_checkpoint(str(path))["x"], torch.arange(3))


def test_failed_save_during_training_keeps_last_checkpoint(tmp_path, data_root, monkeypatch):
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, "--stop-after", "1")) == 0
    before = _snapshot(out)
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt  # killed right after writing, before the rename

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--out", str(out), "--resume", "--no-progress", "--threads", "1"])
    monkeypatch.undo()
    assert _snapshot(out) == before
    assert _load(out / "checkpoint.pt")["epoch"] == 1


def test_nonfinite_loss_keeps_checkpoint(tmp_path, data_root, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, "--stop-after", "1")) == 0
    before = _snapshot(out)
    monkeypatch.setattr(nloop, "unoriented_cosine_loss", lambda p, t: (p * float("nan")).mean())
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and "epoch 2" in err
    assert _snapshot(out) == before


def test_eval_reproduces_final_metrics(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, epochs=2)) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "random O(3)" in printed and "equivariance gap" in printed
    final = json.loads((out / "final.json").read_text())
    ev = json.loads((out / "eval.json").read_text())
    for key in ("given", "rotated", "gap", "equivariance_error"):
        assert ev[key] == final[key], key
    assert (out / "eval.csv").exists()


def test_eval_pca_baseline_without_checkpoint(tmp_path, data_root):
    pytest.importorskip("models.baselines")
    out = tmp_path / "pca"
    args = [
        "eval",
        "--arch",
        "pca",
        "--model-option",
        "k=8",
        "--root",
        data_root,
        "--num-test-shapes",
        "4",
        "--num-points",
        "48",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["parameters"] == 0 and ev["num_clouds"] == 4
    assert ev["given"]["unoriented"]["mean"] < 45  # far better than chance (~57 degrees)
    assert abs(ev["gap"]["unoriented"]) < 1e-3 and ev["equivariance_error"] < 1e-2


# =============================================================================== ModelNet layout
def _write_modelnet(root: Path, n_points=60):
    """A tiny folder in the ``modelnet40_normal_resampled`` layout: points on spheres and
    ellipsoids with exact normals."""
    g = np.random.default_rng(0)
    classes = ["bowl", "cup"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    split = {"train": [], "test": []}
    for c, name in enumerate(classes):
        (root / name).mkdir(exist_ok=True)
        for i in range(1, 5):
            sid = f"{name}_{i:04d}"
            (split["train"] if i <= 3 else split["test"]).append(sid)
            u = g.normal(size=(n_points, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            axes = np.array([1.0, 1.0 + c, 0.5 + 0.1 * i])
            pos = u * axes
            nrm = u / axes
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
            lines = [",".join(f"{v:.6f}" for v in row) for row in np.hstack([pos, nrm])]
            (root / name / f"{sid}.txt").write_text("\n".join(lines) + "\n")
    for s, ids in split.items():
        (root / f"modelnet40_{s}.txt").write_text("\n".join(ids) + "\n")
    return root


def _modelnet_args(root, out, *extra):
    return [
        "--data",
        "modelnet",
        "--root",
        str(root),
        "--num-points",
        "48",
        "--batch-size",
        "3",
        "--no-progress",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def test_modelnet_folder_end_to_end(tmp_path, capsys):
    root = _write_modelnet(tmp_path / "modelnet")
    out = tmp_path / "run"
    args = ["train", "--arch", TINY, "--flavour", "plain", "--epochs", "1"]
    assert main(args + _modelnet_args(root, out)) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["num_clouds"] == 2 and final["num_points"] == 2 * 48
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--no-progress"]) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["data"]["data"] == "modelnet" and ev["rotated"] == final["rotated"]
    # the data layer's cache: in the user's cache folder, nothing written into the data folder
    assert Path(default_cache_dir("modelnet40normals", root)).is_dir()
    assert not (root / "processed").exists()


def test_modelnet_corrupt_files_leave_checkpoint_and_cache_intact(tmp_path, capsys):
    root = _write_modelnet(tmp_path / "modelnet")
    out = tmp_path / "run"
    base = ["train", "--arch", TINY, "--flavour", "plain", "--epochs", "2"]
    assert main(base + _modelnet_args(root, out, "--stop-after", "1")) == 0
    cache = Path(default_cache_dir("modelnet40normals", root))
    run_before, cache_before = _snapshot(out), _snapshot(cache)
    capsys.readouterr()
    victim = root / "cup" / "cup_0002.txt"
    good = victim.read_text()

    # a truncated file: the last line is cut in the middle
    victim.write_text(good[: len(good) - 25])
    assert main(base + _modelnet_args(root, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "error" in err and "cup_0002.txt" in err and "line" in err

    # a NaN in a cloud
    lines = good.splitlines()
    lines[5] = "nan,0.1,0.2,0.0,0.0,1.0"
    victim.write_text("\n".join(lines) + "\n")
    assert main(base + _modelnet_args(root, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "cup_0002.txt" in err and "NaN" in err
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(out / "checkpoint.pt"),
                "--root",
                str(root),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "NaN" in capsys.readouterr().err

    assert _snapshot(out) == run_before
    assert _snapshot(cache) == cache_before
    # repaired data: resuming works again
    victim.write_text(good)
    assert main(base + _modelnet_args(root, out, "--resume")) == 0
    assert _load(out / "checkpoint.pt")["epoch"] == 2


# =============================================================================== compare
def test_compare_tiny_preset_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--preset",
            "tiny",
            "--out",
            str(out),
            "--no-progress",
            "--root",
            str(tmp_path / "data"),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    table = (out / "table.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(rows) == 1 + len(cmp.ROWS)  # header + one row per model, skipped ones included
    assert "| model | parameters | training time |" in printed
    assert (out / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert [r["key"] for r in results["rows"]] == [r[0] for r in cmp.ROWS]
    for r in results["rows"]:
        assert r["status"] in ("ok", "skipped"), r
        assert r["status"] == "ok" or r["reason"]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(cmp.ROWS)

    # existing results are never overwritten without --resume; --resume reuses them
    assert (
        main(
            [
                "compare",
                "--preset",
                "tiny",
                "--out",
                str(out),
                "--no-progress",
                "--root",
                str(tmp_path / "data"),
            ]
        )
        == 2
    )
    assert "--resume" in capsys.readouterr().err
    assert (
        main(
            [
                "compare",
                "--preset",
                "tiny",
                "--out",
                str(out),
                "--no-progress",
                "--resume",
                "--root",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    assert (out / "table.md").read_text() == table


def test_compare_reports_unavailable_rows_as_skipped(tmp_path, monkeypatch, capsys):
    rows = [
        ("tiny", "Tiny stand-in", TINY, "plain", {}),
        ("missing", "Not written yet", "tests.examples._no_such_module:build", "cg", {}),
    ]
    base = dict(cmp.PRESETS["tiny"]["config"], root=str(tmp_path / "data"), progress=False)
    code = cmp.compare(base, rows, out=str(tmp_path / "cmp"))
    printed = capsys.readouterr().out
    assert code == 0
    assert "| Not written yet | skipped: ModuleNotFoundError" in printed
    assert "| Tiny stand-in | 195 |" in printed
    assert (tmp_path / "cmp" / "errors.png").exists()


def test_compare_unknown_preset_or_row(capsys):
    assert main(["compare", "--preset", "nope"]) == 2
    assert "--preset" in capsys.readouterr().err
    assert main(["compare", "--preset", "tiny", "--rows", "pca,nope"]) == 2
    assert "unknown row" in capsys.readouterr().err


# =============================================================================== DDP
def _torchrun(*args):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "examples.normals",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_torchrun_two_processes_keep_parameters_identical(tmp_path):
    out = tmp_path / "ddp"
    _torchrun(*_train_args(str(tmp_path / "data"), out, "--param-hash", epochs=2))
    h0 = (out / "param_hash.rank0.txt").read_text()
    h1 = (out / "param_hash.rank1.txt").read_text()
    assert h0 == h1 and len(h0.strip()) == 64
    ckpt = _load(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["epoch"] == 2
    # the checkpoint holds the synchronised parameters
    model = nmodel.build_model(TINY, "augment", {})
    model.load_state_dict(ckpt["model"])
    assert nmodel.parameter_hash(model) == h0.strip()
    # the two ranks drew different augmentations (they train on different shards)
    g0, g1 = (ckpt["rng"][r]["generators"]["augment"] for r in (0, 1))
    assert not torch.equal(g0, g1)
    # only rank 0 wrote the run's files (and holds the --out lock)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".lock",
        "checkpoint.pt",
        "config.json",
        "final.json",
        "metrics.csv",
        "metrics.json",
        "param_hash.rank0.txt",
        "param_hash.rank1.txt",
    ]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_torchrun_resume_is_exact(tmp_path):
    data = str(tmp_path / "data")
    _torchrun(*_train_args(data, tmp_path / "straight", epochs=3))
    _torchrun(*_train_args(data, tmp_path / "resumed", "--stop-after", "1", epochs=3))
    _torchrun("train", "--out", str(tmp_path / "resumed"), "--resume", "--no-progress")
    a, b = (_load(tmp_path / n / "checkpoint.pt") for n in ("straight", "resumed"))
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _drop_times(a["final"]) == _drop_times(b["final"])


def test_cli_runs_as_module(tmp_path):
    """``python -m examples.normals`` works from a checkout and reports errors with status 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.normals",
            "eval",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "error" in proc.stderr and "missing.pt" in proc.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


# =============================================================================== CLI fixes
TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
BOX_V = np.array([[x, y, z] for x in (0, 2.0) for y in (0, 1.0) for z in (0, 0.5)])
BOX_F = np.array(
    [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
)


def _write_off(path, v, f):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["OFF", f"{len(v)} {len(f)} 0"] + [" ".join(map(str, x)) for x in v]
    lines += [f"{len(x)} " + " ".join(map(str, x)) for x in f]
    path.write_text("\n".join(lines) + "\n")


def _mesh_folder(root):
    _write_off(root / "a" / "tet.off", TET_V, TET_F)
    _write_off(root / "b" / "box.off", BOX_V, BOX_F)
    _write_off(root / "b" / "flat_box.off", BOX_V * [1, 1, 0.1], BOX_F)
    return root


def _eval_meshes(root, out, *extra):
    args = ["eval", "--arch", "pca", "--model-option", "k=8", "--data", "meshes"]
    args += ["--root", str(root), "--num-points", "64", "--out", str(out), "--no-progress"]
    return main(args + list(extra))


def test_eval_split_all_tests_every_mesh_with_per_file_errors(tmp_path, capsys, _user_cache):
    pytest.importorskip("models.baselines")
    root = _mesh_folder(tmp_path / "meshes")
    before = _snapshot(root)
    assert _eval_meshes(root, tmp_path / "ev", "--split", "all") == 0
    printed = capsys.readouterr().out
    names = ["a/tet.off", "b/box.off", "b/flat_box.off"]
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["num_clouds"] == 3 and [r["name"] for r in ev["files"]] == names
    assert ev["data"]["split"] == "all" and "noise" not in ev["data"]
    rows = (tmp_path / "ev" / "eval_files.csv").read_text().splitlines()
    assert rows[0].startswith("name,points,given_unoriented_mean") and len(rows) == 4
    assert all(f"| {n} | 64 |" in printed for n in names)  # the files tested are named
    # the data folder is byte-for-byte unchanged; the cache went to the user's cache folder
    assert _snapshot(root) == before
    assert any(_user_cache.rglob("meshfolder_64_*.pt"))
    # each file's row is that file's own error: the same mesh alone in a folder gives it
    alone = tmp_path / "alone"
    _write_off(alone / "b" / "box.off", BOX_V, BOX_F)
    assert _eval_meshes(alone, tmp_path / "ev1", "--split", "all") == 0  # one mesh: fine
    one = json.loads((tmp_path / "ev1" / "eval.json").read_text())["files"]
    assert [r["name"] for r in one] == ["b/box.off"]
    assert one[0]["given_unoriented_mean"] == pytest.approx(
        ev["files"][1]["given_unoriented_mean"], rel=1e-6
    )
    assert ev["files"][0]["given_unoriented_mean"] != pytest.approx(
        ev["files"][1]["given_unoriented_mean"], rel=1e-3
    )
    # --test-fraction 1 (split test) also tests every mesh; a 1-mesh split is explained
    assert _eval_meshes(root, tmp_path / "ev2", "--test-fraction", "1") == 0
    assert json.loads((tmp_path / "ev2" / "eval.json").read_text())["num_clouds"] == 3
    capsys.readouterr()
    assert _eval_meshes(alone, tmp_path / "ev3") == 2
    assert "--split all" in capsys.readouterr().err
    assert _snapshot(root) == before


def test_cache_flag_chooses_the_cache_folder(tmp_path, capsys, _user_cache):
    pytest.importorskip("models.baselines")
    root = _mesh_folder(tmp_path / "meshes")
    before = _snapshot(root)
    cache = tmp_path / "my cache"
    assert _eval_meshes(root, tmp_path / "ev", "--split", "all", "--cache", str(cache)) == 0
    assert len(list(cache.rglob("meshfolder_64_*.pt"))) == 1
    assert not _user_cache.exists() and _snapshot(root) == before


def test_flags_that_do_not_apply_are_refused(tmp_path, data_root, capsys):
    root = _mesh_folder(tmp_path / "meshes")
    cases = [
        (("--split", "all", "--noise", "0.5"), "--noise applies to --data synthetic only"),
        (("--split", "all", "--pose", "canonical"), "--pose applies to --data synthetic only"),
        (("--split", "all", "--test-fraction", "1"), "--test-fraction does not apply with"),
    ]
    for extra, message in cases:
        assert _eval_meshes(root, tmp_path / "ev", *extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "ev" / "eval.json").exists()
    base = ["eval", "--arch", "pca", "--root", data_root, "--out", str(tmp_path / "e")]
    assert main(base + ["--test-fraction", "0.5", "--no-progress"]) == 2
    assert "--test-fraction applies to --data meshes only" in capsys.readouterr().err
    assert main(base + ["--cache", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "--cache applies to --data meshes / modelnet only" in capsys.readouterr().err
    assert main(base + ["--split", "all", "--no-progress"]) == 2
    assert "--split all evaluates every file of a mesh folder" in capsys.readouterr().err
    args = _train_args(data_root, tmp_path / "t", "--outliers", "0.1")
    i = args.index("--root")
    args[i : i + 2] = ["--data", "meshes", "--root", str(root)]
    assert main(args) == 2
    assert "--outliers applies to --data synthetic only" in capsys.readouterr().err


def _help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_states_true_defaults_and_full_epilog(tmp_path, data_root, capsys):
    import re

    from examples._normals_config import Config
    from examples.normals import build_parser

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    checked = 0
    for action in sub.choices["train"]._actions:
        m = re.search(r"\(default ([^;)]+)\)", action.help or "")
        if m and action.dest in Config.__dataclass_fields__ and action.dest != "num_shapes":
            want, value = getattr(Config, action.dest), m.group(1).strip()
            value = {"on": "True", "off": "False"}.get(value, value)
            assert str(want) == value or (isinstance(want, int | float) and float(value) == want), (
                action.dest,
                value,
            )
            checked += 1
    assert checked >= 8
    ev = " ".join(_help(["eval", "-h"], capsys).split())
    assert "--num-points NUM_POINTS points per cloud (default: the checkpoint's" in ev
    assert "(default 512)" not in ev
    # and eval of a checkpoint does use the checkpoint's values
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, epochs=1)) == 0
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--no-progress"]) == 0
    assert json.loads((out / "eval.json").read_text())["data"]["num_points"] == 48
    top = _help(["-h"], capsys)
    assert not any(ln.rstrip().endswith("::") for ln in top.splitlines())
    for command in ("train", "eval", "predict", "compare", "density", "--split all"):
        assert command in top.split("options:")[-1]
    assert top.rstrip().endswith("caches are never modified by a failing command.")


def test_progress_bars_end_their_line(tmp_path, data_root):
    import contextlib
    import io

    pytest.importorskip("tqdm")
    buf = io.StringIO()  # stdout and stderr interleaved, as in a terminal
    args = ["eval", "--arch", "pca", "--root", data_root, "--num-test-shapes", "4"]
    args += ["--num-points", "48", "--out", str(tmp_path / "e"), "--progress"]
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        assert main(args) == 0
    lines = buf.getvalue().split("\n")
    bars = [i for i, ln in enumerate(lines) if "eval:" in ln and "%|" in ln]
    assert bars, buf.getvalue()
    results = [i for i, ln in enumerate(lines) if "test clouds" in ln or "| as given |" in ln]
    assert results and all(i not in bars for i in results)
    assert all("%|" not in lines[i] for i in results)


def test_out_folder_lock_refuses_a_second_run(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path.insert(0, sys.argv[1]);"
         "from examples._normals_io import out_lock\n"
         "with out_lock(sys.argv[2]):\n print('locked', flush=True); time.sleep(120)",
         str(ROOT), str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(_train_args(data_root, out, epochs=1)) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by another run (process {holder.pid}" in err
        assert not (out / "checkpoint.pt").exists()
        assert main(["compare", "--preset", "quick", "--out", str(out), "--no-progress"]) == 2
        assert "is in use by another run" in capsys.readouterr().err
    finally:
        holder.kill()  # a crash: the operating system releases the lock
        holder.wait(timeout=30)
    assert main(_train_args(data_root, out, epochs=1)) == 0
    # in one process too: a held lock refuses eval into the same folder
    from examples._normals_io import out_lock

    with out_lock(str(out)):
        args = ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--no-progress"]
        assert main(args) == 2
        assert "is in use by another run" in capsys.readouterr().err
    assert main(args) == 0


def test_density_command_is_wired(tmp_path, capsys):
    assert main(["density", str(tmp_path / "no_run"), "--out", str(tmp_path / "d")]) == 2
    assert "no_run does not exist" in capsys.readouterr().err


def test_eval_split_all_of_a_checkpoint_trained_elsewhere(tmp_path, data_root, capsys):
    """A checkpoint trained on synthetic data (4 test clouds, 48 points) evaluated on every
    mesh of a folder: all 5 files, the checkpoint's points per cloud, no synthetic settings."""
    root = _mesh_folder(tmp_path / "meshes")
    _write_off(root / "c" / "tet2.off", TET_V * 2, TET_F)
    _write_off(root / "c" / "tet3.off", TET_V * [1, 2, 3], TET_F)
    out = tmp_path / "run"
    assert main(_train_args(data_root, out, epochs=1)) == 0
    args = ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--data", "meshes"]
    assert main(args + ["--root", str(root), "--split", "all", "--no-progress"]) == 0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_clouds"] == 5 and len(ev["files"]) == 5
    assert ev["data"]["num_points"] == 48 and ev["data"]["num_test_shapes"] is None
    assert "noise" not in ev["data"] and ev["data"]["root"] == str(root)
