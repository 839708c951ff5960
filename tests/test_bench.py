"""Benchmarks are not tests: this only checks that every suite runs end to end on tiny sizes."""

import pytest
import torch

from tensorframes.bench import SUITES
from tensorframes.bench.__main__ import main as bench_main


def test_every_suite_is_registered():
    assert set(SUITES) == {"reps", "frames", "tp", "layers", "e2e"}


def test_reps_and_frames_quick_write_tables(tmp_path, capsys):
    for suite in ("reps", "frames"):
        bench_main([suite, "--quick", "--out", str(tmp_path)])
        assert (tmp_path / f"{suite}.csv").stat().st_size > 0
        assert (tmp_path / f"{suite}.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "speed-up vs e3nn" in out and "| contender |" in out


def test_tp_suite_tiny(tmp_path):
    from tensorframes.bench import tp
    from tensorframes.bench.__main__ import _plot

    rows = tp.run(quick=True, Ls=[1], repeats=1)
    assert rows and all(r["median_s"] > 0 for r in rows if "median_s" in r)
    grid = [r for r in rows if r["product"] == "Gaunt grid"]
    assert all(r["speedup_fourier"] > 0 for r in grid)  # paired with the Fourier timings
    probe = {}  # one reading per setting and L; the probes are not products
    for r in rows:
        probe.setdefault((r["setting"], r["L"]), set()).add(r["sgemm_thread_speedup"])
    assert all(len(v) == 1 for v in probe.values())
    assert not any("probe" in r["product"] for r in rows)
    if torch.get_num_threads() > 1:
        assert all(v.pop() > 0 for v in probe.values())
    if any(r["product"] == "e3nn" for r in rows):  # at L = 1 only the CG target applies
        assert {t["product"] for t in tp.targets(rows)} == {"CG dense"}
    _plot(rows, "tp", str(tmp_path / "tp.png"))  # the generic plot takes every suite's rows
    assert (tmp_path / "tp.png").stat().st_size > 0


def test_tp_targets_table_marks_met_and_missed():
    from tensorframes.bench import tp

    rows = [{"setting": "many/many", "L": L, "product": p, "speedup_e3nn": e, "speedup_fourier": f}
            for L, p, e, f in [(5, "Gaunt grid", 3.0, 20.0), (6, "Gaunt grid", 3.0, 9.5),
                               (7, "Gaunt grid", 3.0, 12.0), (1, "CG dense", 0.9, 1.0),
                               (2, "CG dense", float("nan"), 1.0)]]
    rows[1]["sgemm_thread_speedup"] = 1.04
    table = tp.targets(rows)
    met = {(t["product"], t["L"]): t["met"] for t in table}
    # grid below L = 6 and CG without e3nn have no target
    assert met == {("Gaunt grid", 6): "NO", ("Gaunt grid", 7): "yes", ("CG dense", 1): "NO"}
    probe = {(t["product"], t["L"]): t["threaded sgemm"] for t in table}
    assert probe[("Gaunt grid", 6)] == "1.04x" and probe[("Gaunt grid", 7)] == "n/a"


def test_tp_times_again_while_threaded_blas_is_degraded(monkeypatch):
    from tensorframes.bench import tp

    real = tp.blas_scaling
    readings = iter([1.0, 0.9, 1.8, 0.8, 0.9])  # probe readings of successive timings
    monkeypatch.setattr(tp, "blas_scaling", lambda timings: (real(timings), next(readings))[1])
    monkeypatch.setattr(tp, "PAUSE_S", 0.0)
    kw = dict(quick=True, Ls=[1], settings=("single/single",), repeats=1)
    rows = tp.run(retries=3, **kw)  # degraded twice, then normal: the third timing is kept
    assert {(r["attempts"], r["sgemm_thread_speedup"]) for r in rows} == {(3, 1.8)}
    assert not any("probe" in r["product"] for r in rows)
    rows = tp.run(retries=1, **kw)  # still degraded after the one retry: kept as it is
    assert {(r["attempts"], r["sgemm_thread_speedup"]) for r in rows} == {(2, 0.9)}


def test_blas_probes_time_one_gemm_on_one_and_all_threads():
    from tensorframes.bench._harness import blas_probes, blas_scaling, time_interleaved

    threads = torch.get_num_threads()
    assert blas_probes("cuda") == {}
    probes = blas_probes()
    if threads < 2:
        assert probes == {}
        return
    one, every = (f().clone() for f in probes.values())  # both write one buffer
    assert torch.allclose(one, every) and one.abs().sum() > 0  # the same product either way
    assert torch.get_num_threads() == threads  # restored after each call
    timings = time_interleaved({**probes, "other": lambda: None}, repeats=2, max_repeats=2)
    assert blas_scaling(timings) > 0 and list(timings) == ["other"]
    assert blas_scaling({}) != blas_scaling({})  # NaN without probes


def test_speedup_pairs_rounds():
    from tensorframes.bench._harness import Timing

    # a slow phase (2x) starts in round 3 between the two calls and lasts: per round "fast" is
    # 2x faster except in round 3; the ratio of the medians says 1x
    base = Timing("base", 2.0, 2.0, 4.0, samples=[2.0, 2.0, 2.0, 4.0, 4.0])
    fast = Timing("fast", 2.0, 1.0, 2.0, samples=[1.0, 1.0, 2.0, 2.0, 2.0])
    assert fast.speedup_over(base) == 2.0 and base.median / fast.median == 1.0
    lone = Timing("lone", 1.0, 1.0, 1.0)  # no samples: ratio of medians
    assert lone.speedup_over(base) == 2.0


def test_layers_suite_tiny(monkeypatch):
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


def test_harness_adds_rounds_only_while_cheap():
    import time

    from tensorframes.bench._harness import time_interleaved

    fast = time_interleaved({"a": lambda: None, "b": lambda: None}, repeats=3, max_repeats=9)
    assert {t.extra["rounds"] for t in fast.values()} == {9}
    slow = time_interleaved({"a": lambda: time.sleep(0.02)}, repeats=2, budget_s=0.01)
    assert slow["a"].extra["rounds"] == 2 and slow["a"].min >= 0.02


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(SystemExit):
        bench_main(["reps", "--quick", "--device", "cuda", "--out", str(tmp_path)])
    assert "no CUDA device" in capsys.readouterr().err


def test_keep_freed_memory_stops_refaulting():
    """After it, a freed 16 MB buffer is reused without page faults (glibc only)."""
    import resource

    from tensorframes.bench._harness import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("malloc is not glibc's")

    def faults_of_fresh_buffer():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(4 << 20)  # 16 MiB, written then freed
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_fresh_buffer()
    assert faults_of_fresh_buffer() < 100  # 4096 pages if the memory went back to the OS
