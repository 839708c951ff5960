"""Benchmarks are not tests: these check that every suite runs end to end on tiny sizes, and that
the harness times what it claims (interleaved rounds, per-call samples, paired ratios, the
process's own settings; the tuned allocator only in a child process)."""

import csv
import os
import pathlib
import subprocess
import sys
import time

import pytest
import torch

import tensorframes
from tensorframes.bench import SUITES
from tensorframes.bench.__main__ import main as bench_main
from tensorframes.bench.__main__ import tuned_command
from tensorframes.bench._harness import (
    TUNED_ALLOCATOR_ENV,
    Timing,
    allocator_description,
    side_by_side,
    time_interleaved,
    write_csv,
)


def test_every_suite_is_registered():
    assert set(SUITES) == {"reps", "frames", "tp", "layers", "e2e"}


def test_reps_and_frames_quick_write_tables(tmp_path, capsys):
    for suite in ("reps", "frames"):
        bench_main([suite, "--quick", "--out", str(tmp_path)])
        assert (tmp_path / f"{suite}.csv").stat().st_size > 0
        assert (tmp_path / f"{suite}.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "speed-up vs e3nn" in out and "| contender |" in out
    # the frame-change table: floor (the gather alone), reference, chunked and kernel, both
    # passes (the kernel row wherever the compiled kernel is available)
    from tensorframes.reps._kernel import kernel_available

    names = ["floor fwd", "reference fwd+bwd", "chunked fwd", "x floor"]
    names += ["kernel fwd", "kernel fwd+bwd"] if kernel_available() else []
    for name in names:
        assert name in out
    assert "default allocator]" in out and "tuned" not in out


def test_tuned_allocator_shows_the_child_run_beside_the_default(tmp_path, monkeypatch, capsys):
    """The default run stays in this process; the tuned run is the child process of
    tuned_command (stubbed here: it leaves its CSV), and both numbers are printed side by side."""
    import tensorframes.bench.__main__ as cli
    from tensorframes.bench import reps

    rows = [{"matrices": 8, "contender": "ours", "speed-up vs e3nn": "4.0x", "median_s": 0.001},
            {"matrices": 8, "contender": "e3nn", "speed-up vs e3nn": "1.0x", "median_s": 0.004}]
    monkeypatch.setattr(reps, "main", lambda quick, device: [dict(r) for r in rows])
    seen = {}

    def child(cmd, env, check):
        seen.update(cmd=cmd, env=env, check=check)
        tuned = [{**r, "speed-up vs e3nn": "2.0x", "median_s": 2 * r["median_s"]} for r in rows]
        write_csv(os.path.join(cmd[cmd.index("--out") + 1], "reps.csv"), tuned[::-1])

    monkeypatch.setattr(cli.subprocess, "run", child)
    bench_main(["reps", "--quick", "--tuned-allocator", "--out", str(tmp_path)])
    cmd, env = tuned_command("reps", quick=True, device="cpu", out=str(tmp_path / "tuned"))
    assert seen == {"cmd": cmd, "env": env, "check": True}
    out = capsys.readouterr().out
    assert "default allocator]" in out
    assert "| 8 | ours | 4.0x | 2.0x | 1.0 ms | 2.0 ms |" in out
    assert "| 8 | e3nn | 1.0x | 2.0x | 4.0 ms | 8.0 ms |" in out
    with open(tmp_path / "reps_allocators.csv") as f:
        both = list(csv.DictReader(f))
    assert [r["speed-up vs e3nn (tuned)"] for r in both] == ["2.0x", "2.0x"]


def test_the_tuned_child_process_receives_the_settings():
    """A process started the way --tuned-allocator starts its child reports the tuned
    allocator in its header; this process keeps the default."""
    _, env = tuned_command("reps", quick=True, device="cpu", out="unused")
    code = ("from tensorframes.bench._harness import allocator_description; "
            "print(allocator_description())")
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True)
    for k, v in TUNED_ALLOCATOR_ENV.items():
        assert f"{k}={v}" in child.stdout
    assert allocator_description() == "default allocator"


@pytest.mark.slow
def test_tuned_allocator_end_to_end(tmp_path, capfd):
    bench_main(["reps", "--quick", "--tuned-allocator", "--out", str(tmp_path)])
    out = capfd.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("[tensorframes.bench:")]
    assert len(headers) == 2 and headers[0].endswith("default allocator]")
    assert "tuned allocator (MALLOC_MMAP_THRESHOLD_=" in headers[1]
    with open(tmp_path / "reps_allocators.csv") as f:
        both = list(csv.DictReader(f))
    assert both and all(r["median (tuned)"] != "n/a" for r in both)


def test_tuned_command_reruns_the_same_suite_with_the_settings(monkeypatch):
    monkeypatch.setenv("TF_BENCH_TEST_MARKER", "kept")
    cmd, env = tuned_command("tp", quick=True, device="cpu", out="somewhere/tuned")
    assert cmd[:4] == [sys.executable, "-m", "tensorframes.bench", "tp"]
    assert cmd[4:] == ["--device", "cpu", "--out", "somewhere/tuned", "--quick"]
    assert "--tuned-allocator" not in cmd  # the child must not spawn another child
    assert env["TF_BENCH_TEST_MARKER"] == "kept"
    assert {k: env[k] for k in TUNED_ALLOCATOR_ENV} == TUNED_ALLOCATOR_ENV
    assert all(k not in os.environ for k in TUNED_ALLOCATOR_ENV)  # only the child's copy
    assert allocator_description(env).startswith("tuned allocator (MALLOC_MMAP_THRESHOLD_=")
    assert allocator_description({}) == "default allocator"


def test_tuned_allocator_needs_glibc(tmp_path, monkeypatch, capsys):
    import tensorframes.bench.__main__ as cli

    monkeypatch.setattr(cli.platform, "libc_ver", lambda: ("", ""))
    with pytest.raises(SystemExit):
        bench_main(["reps", "--quick", "--tuned-allocator", "--out", str(tmp_path)])
    assert "glibc" in capsys.readouterr().err


def test_the_library_never_tunes_the_allocator():
    """No library module (and no other test) calls mallopt or loads libc: importing or running
    tensorframes, or running the test suite, leaves a process's allocator as it is."""
    needles = ("mall" + "opt(", "libc.so", "keep_freed" + "_memory")
    roots = [pathlib.Path(tensorframes.__file__).parent, pathlib.Path(__file__).parent]
    offenders = [
        str(path) for root in roots for path in root.rglob("*.py")
        if path.resolve() != pathlib.Path(__file__).resolve()
        and any(n in path.read_text() for n in needles)
    ]
    assert offenders == []


def test_side_by_side_pairs_rows_by_their_keys():
    default = [{"matrices": 10, "contender": "a", "speed-up vs e3nn": "5.0x", "median_s": 0.002},
               {"matrices": 10, "contender": "b", "speed-up vs e3nn": "1.0x", "median_s": 0.01}]
    tuned = [{"matrices": "10", "contender": "b", "speed-up vs e3nn": "1.0x", "median_s": "0.02"},
             {"matrices": "10", "contender": "a", "speed-up vs e3nn": "9.0x", "median_s": "0.001"}]
    rows = side_by_side(default, tuned, ["matrices", "contender"], ["speed-up vs e3nn"])
    assert rows == [
        {"matrices": 10, "contender": "a", "speed-up vs e3nn": "5.0x",
         "speed-up vs e3nn (tuned)": "9.0x", "median": "2.0 ms", "median (tuned)": "1.0 ms"},
        {"matrices": 10, "contender": "b", "speed-up vs e3nn": "1.0x",
         "speed-up vs e3nn (tuned)": "1.0x", "median": "10.0 ms", "median (tuned)": "20.0 ms"},
    ]
    lone = side_by_side(default, tuned[:1], ["matrices", "contender"], ["speed-up vs e3nn"])
    assert lone[0]["speed-up vs e3nn (tuned)"] == "n/a" and lone[0]["median (tuned)"] == "n/a"


def test_tp_suite_tiny(tmp_path):
    from tensorframes.bench import tp
    from tensorframes.bench.__main__ import _plot

    rows = tp.run(quick=True, Ls=[1], repeats=1)
    assert rows and all(r["median_s"] > 0 for r in rows if "median_s" in r)
    assert {r["product"] for r in rows} <= set(tp.PRODUCTS)
    assert len(rows) == len({(r["setting"], r["L"], r["product"]) for r in rows})
    grid = [r for r in rows if r["product"] == "Gaunt grid"]
    assert all(r["speedup_fourier"] > 0 for r in grid)  # paired with the Fourier timings
    if any(r["product"] == "e3nn" for r in rows):  # at L = 1 only the CG target applies
        assert {t["product"] for t in tp.targets(rows)} == {"CG dense"}
        assert all(r["speedup_e3nn"] == 1.0 for r in rows if r["product"] == "e3nn")
    _plot(rows, "tp", str(tmp_path / "tp.png"))  # the generic plot takes every suite's rows
    assert (tmp_path / "tp.png").stat().st_size > 0


def test_tp_targets_table_marks_met_and_missed():
    from tensorframes.bench import tp

    rows = [{"setting": "many/many", "L": L, "product": p, "speedup_e3nn": e, "speedup_fourier": f}
            for L, p, e, f in [(5, "Gaunt grid", 3.0, 20.0), (6, "Gaunt grid", 3.0, 9.5),
                               (7, "Gaunt grid", 3.0, 12.0), (1, "CG dense", 0.9, 1.0),
                               (2, "CG dense", float("nan"), 1.0)]]
    table = tp.targets(rows)
    met = {(t["product"], t["L"]): t["met"] for t in table}
    # grid below L = 6 and CG without e3nn have no target
    assert met == {("Gaunt grid", 6): "NO", ("Gaunt grid", 7): "yes", ("CG dense", 1): "NO"}
    assert all(list(t) == tp.TARGET_COLUMNS for t in table)
    speed = {(t["product"], t["L"]): t["speed-up"] for t in table}
    assert speed[("Gaunt grid", 6)] == "9.50x" and speed[("CG dense", 1)] == "0.90x"


def test_speedup_pairs_rounds():
    # a slow phase (2x) starts in round 3 between the two calls and lasts: per round "fast" is
    # 2x faster except in round 3; the ratio of the medians says 1x
    base = Timing("base", 2.0, 2.0, 4.0, samples=[2.0, 2.0, 2.0, 4.0, 4.0])
    fast = Timing("fast", 2.0, 1.0, 2.0, samples=[1.0, 1.0, 2.0, 2.0, 2.0])
    assert fast.speedup_over(base) == 2.0 and base.median / fast.median == 1.0
    lone = Timing("lone", 1.0, 1.0, 1.0)  # no samples: ratio of medians
    assert lone.speedup_over(base) == 2.0


def test_rounds_interleave_contenders_in_order():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = time_interleaved(contenders, repeats=3, max_repeats=3, warmup=2, min_sample_s=0)
    assert calls == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3
    assert [len(t.samples) for t in timings.values()] == [3, 3, 3]
    assert all(t.extra == {"rounds": 3, "number": 1} for t in timings.values())


def test_cheap_contenders_fill_a_sample_and_report_time_per_call():
    count = {"cheap": 0, "slow": 0}

    def cheap():
        count["cheap"] += 1

    def slow():
        count["slow"] += 1
        time.sleep(0.003)

    timings = time_interleaved({"cheap": cheap, "slow": slow}, repeats=2, max_repeats=2,
                               min_sample_s=1e-3)
    n = timings["cheap"].extra["number"]
    assert n > 10 and timings["slow"].extra["number"] == 1
    assert count == {"cheap": 1 + 2 * n, "slow": 1 + 2}
    assert timings["cheap"].median < 1e-4  # per call, not per sample of n calls
    assert timings["slow"].min >= 0.003
    assert timings["cheap"].speedup_over(timings["slow"]) > 10


def test_harness_keeps_the_process_thread_setting():
    """torch.utils.benchmark.Timer would run contenders on one thread; users run on all."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        time_interleaved({"a": lambda: seen.append(torch.get_num_threads())}, repeats=2,
                         max_repeats=2, min_sample_s=0)
        assert seen == [2, 2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_harness_adds_rounds_only_while_cheap():
    fast = time_interleaved({"a": lambda: None, "b": lambda: None}, repeats=3, max_repeats=9)
    assert {t.extra["rounds"] for t in fast.values()} == {9}
    slow = time_interleaved({"a": lambda: time.sleep(0.02)}, repeats=2, budget_s=0.01)
    assert slow["a"].extra["rounds"] == 2 and slow["a"].min >= 0.02


def test_layers_suite_tiny():
    from tensorframes.bench import layers

    rows = layers.run_versus_tp(quick=True, repeats=1, channels=4)
    names = {r["contender"] for r in rows}
    assert "tensor frames: wrap(PointNetConv)" in names and "TPConv (cg)" in names
    assert all(r["median_s"] > 0 for r in rows)


@pytest.mark.slow
def test_layers_and_e2e_quick(tmp_path):
    for suite in ("layers", "e2e"):
        bench_main([suite, "--quick", "--out", str(tmp_path)])
        assert (tmp_path / f"{suite}.csv").stat().st_size > 0
    assert (tmp_path / "e2e_curves.png").stat().st_size > 0
    with open(tmp_path / "layers.csv") as f:
        assert "floor (gather x[src] alone)" in {r["contender"] for r in csv.DictReader(f)}


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(SystemExit):
        bench_main(["reps", "--quick", "--device", "cuda", "--out", str(tmp_path)])
    assert "no CUDA device" in capsys.readouterr().err
