"""Benchmark of frame construction: PCA frames, neighbour search, Gram-Schmidt, LearnedFrames.

``run(quick=False)`` times, on 16 clouds x 8,192 points with k = 16 (``quick``: 4 x 2,048):

- PCA frames, excluding neighbour search (the knn graph is built once): the library path
  (one scatter pass of moments + closed-form 3x3 eigen-solver + sign disambiguation) against a
  naive path doing the same work with per-edge outer products, ``torch.linalg.eigh`` and a
  second pass projecting the offsets for the signs;
- pure-torch knn graph against torch-cluster (when it imports);
- :func:`~tensorframes.frames.gram_schmidt` and :class:`~tensorframes.frames.LearnedFrames`.

Timings are medians over several runs after a warm-up, with contenders interleaved. Returns a
list of row dicts and prints a markdown table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from .. import graph
from ..frames import LearnedFrames, gram_schmidt, pca

__all__ = ["naive_pca", "run"]


def naive_pca(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Straightforward reference: the same frames as ``pca`` via ``torch.linalg.eigh``."""
    j, i = edge_index
    n = pos.shape[0]
    d = pos[j] - pos[i]
    cnt = torch.bincount(i, minlength=n).clamp_min(1).to(pos.dtype)
    cov = pos.new_zeros(n, 9).index_add_(0, i, (d[:, :, None] * d[:, None, :]).reshape(-1, 9))
    vals, vecs = torch.linalg.eigh(cov.view(n, 3, 3) / cnt[:, None, None])
    R = vecs.flip(-1).transpose(-1, -2)
    proj = torch.einsum("eab,eb->ea", R[i], d)
    m3 = pos.new_zeros(n, 3).index_add_(0, i, proj ** 3)
    m1 = pos.new_zeros(n, 3).index_add_(0, i, proj)
    s = torch.where(m3 != 0, torch.sign(m3), torch.sign(m1))
    s = torch.where(s == 0, torch.ones_like(s), s)
    return R * s[:, :, None]


def _clouds(b: int, n: int, device, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    v = torch.randn(b * n, 3, generator=generator)
    v = v / v.norm(dim=1, keepdim=True) * torch.tensor([1.0, 0.7, 0.4])
    v = v + 0.01 * torch.randn(v.shape, generator=generator)
    batch = torch.arange(b).repeat_interleave(n)
    return v.to(device), batch.to(device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time(fns: dict[str, Callable[[], object]], repeats: int, device) -> dict[str, float]:
    """Median seconds per contender; one warm-up each, then interleaved repeats."""
    for f in fns.values():
        f()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(quick: bool = False, device="cpu") -> list[dict]:
    """Run the benchmark; returns rows ``{task, contender, seconds, points_per_s, speedup}``."""
    b, n, k = (4, 2048, 16) if quick else (16, 8192, 16)
    repeats = 3 if quick else 5
    g = torch.Generator().manual_seed(0)
    pos, batch = _clouds(b, n, device, g)
    total = b * n
    rows: list[dict] = []

    def add(task, res, base):
        for name, sec in res.items():
            rows.append({"task": task, "contender": name, "seconds": sec,
                         "points_per_s": total / sec,
                         "speedup": res[base] / sec if base else float("nan")})

    ei = graph.knn_graph(pos, k, batch)
    with torch.no_grad():
        res = _time({"tensorframes.pca": lambda: pca(pos, edge_index=ei),
                     "naive eigh": lambda: naive_pca(pos, ei)}, repeats, device)
    add(f"pca frames ({b}x{n}, k={k}, graph given)", res, "naive eigh")

    knn_fns = {"pure torch": lambda: graph.knn_graph(pos, k, batch, backend="torch")}
    if graph.WITH_TORCH_CLUSTER and torch.device(device).type == "cpu" or (
            graph.WITH_TORCH_CLUSTER and torch.device(device).type == "cuda"):
        knn_fns["torch-cluster"] = lambda: graph.knn_graph(pos, k, batch, backend="cluster")
    res = _time(knn_fns, max(1, repeats - 2), device)
    add(f"knn graph ({b}x{n}, k={k})", res,
        "torch-cluster" if "torch-cluster" in res else None)

    u, v, w = (torch.randn(total, 3, generator=g).to(device) for _ in range(3))
    with torch.no_grad():
        res = _time({"gram_schmidt O(3)": lambda: gram_schmidt(u, v, w)}, repeats, device)
    add(f"gram_schmidt ({total} nodes)", res, None)

    model = LearnedFrames(0, 32, k=k).to(device)
    with torch.no_grad():
        res = _time({"LearnedFrames fwd": lambda: model(pos, batch, edge_index=ei)},
                    repeats, device)
    add(f"LearnedFrames ({b}x{n}, k={k}, graph given)", res, None)
    _print(rows)
    return rows


def _print(rows: list[dict]) -> None:
    print("| task | contender | median s | points/s | speedup vs baseline |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        sp = "" if r["speedup"] != r["speedup"] else f"{r['speedup']:.2f}x"
        print(f"| {r['task']} | {r['contender']} | {r['seconds']:.4f} | "
              f"{r['points_per_s']:.3g} | {sp} |")


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    run(quick=a.quick, device=a.device)


if __name__ == "__main__":
    main()
