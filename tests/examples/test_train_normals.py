"""Tests of the copyable example ``examples/train_normals.py`` (tiny settings, seconds)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # examples/ runs from a checkout
    sys.path.insert(0, str(ROOT))

from examples.train_normals import main  # noqa: E402

TINY = ["--epochs", "3", "--points", "128", "--shapes", "16", "--seed", "0"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("train_normals_data"))


def test_pca_frames_learn_and_are_o3_invariant(data_root, capsys):
    res = main([*TINY, "--root", data_root])
    assert all(math.isfinite(v) for v in res.values()), res
    # training helps: far below the untrained network (whose output is an arbitrary direction)
    assert res["given"] < res["untrained"] - 5, res
    # equivariant: the same error on the test clouds under random rotations and reflections
    assert abs(res["rotated"] - res["given"]) < 0.05, res
    printed = capsys.readouterr().out
    assert f"test error as given:     {res['given']:.2f} deg" in printed
    assert f"test error random O(3):  {res['rotated']:.2f} deg" in printed


def test_without_frames_rotated_error_differs(data_root):
    """The same network without frames is not equivariant: the random O(3) test set (which
    must really be rotated) gives another error."""
    res = main([*TINY, "--root", data_root, "--frames", "none"])
    assert all(math.isfinite(v) for v in res.values()), res
    assert abs(res["rotated"] - res["given"]) > 1.0, res


def test_runs_as_a_script_and_as_a_module(data_root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(ROOT / "examples" / "train_normals.py")]
    proc = subprocess.run(
        [*script, "--epochs", "1", "--points", "48", "--shapes", "8", "--root", data_root],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = re.findall(r"test error (?:as given|random O\(3\)):\s+(\S+) deg", proc.stdout)
    assert len(errors) == 2 and all(math.isfinite(float(e)) for e in errors), proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "examples.train_normals", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--epochs" in proc.stdout, proc.stderr[-3000:]
