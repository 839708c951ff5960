"""Benchmark suite ``frames``: PCA frames, neighbour search, Gram-Schmidt, LearnedFrames.

Measured: forward calls without gradients, float32; ``run(quick=False)`` times, on 16 clouds
x 8,192 points with k = 16 (``quick``: 4 x 2,048):

- PCA frames, excluding neighbour search (the knn graph is built once): the library path
  (one scatter pass of moments + closed-form 3x3 eigen-solver + sign disambiguation) against a
  naive path doing the same work with per-edge outer products, ``torch.linalg.eigh`` and a
  second pass projecting the offsets for the signs (third moment only); once on the noisy
  ellipsoids and once on noise-free CAD shapes (``SyntheticShapes``' cube, cylinder,
  hex_prism, slotted_box), where the library's equivariant tie-break runs for most nodes (the
  naive path has none: the ratio shows its cost);
- pure-torch knn graph against torch-cluster (when it imports);
- :func:`~tensorframes.frames.gram_schmidt` and :class:`~tensorframes.frames.LearnedFrames`.

Timings are medians over several runs after a warm-up, with contenders interleaved
(``_harness.time_interleaved``). ``run`` returns the rows; ``main`` also prints a markdown table.
Run with ``python -m tensorframes.bench frames``.
"""

from __future__ import annotations

import torch

from .. import graph
from ..frames import LearnedFrames, gram_schmidt, pca
from ._harness import format_seconds, markdown_table, time_interleaved

__all__ = ["main", "naive_pca", "run"]


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


def _clouds(b: int, n: int, device: str | torch.device, generator: torch.Generator
            ) -> tuple[torch.Tensor, ...]:
    v = torch.randn(b * n, 3, generator=generator)
    v = v / v.norm(dim=1, keepdim=True) * torch.tensor([1.0, 0.7, 0.4])
    v = v + 0.01 * torch.randn(v.shape, generator=generator)
    batch = torch.arange(b).repeat_interleave(n)
    return v.to(device), batch.to(device)


def _cad_clouds(b: int, n: int, device: str | torch.device) -> tuple[torch.Tensor, ...]:
    """``b`` noise-free CAD clouds (cube, cylinder, hex_prism, slotted_box in turn): flat
    faces, where most normals' signs come from the tie-break rules of ``pca``."""
    import numpy as np

    from ..data._synthetic import CAD_SHAPES, generate_cloud

    pos = [torch.from_numpy(generate_cloud(CAD_SHAPES[c % len(CAD_SHAPES)],
                                           np.random.SeedSequence([0, c]), num_points=n)["pos"])
           for c in range(b)]
    batch = torch.arange(b).repeat_interleave(n)
    return torch.cat(pos).float().to(device), batch.to(device)


def run(quick: bool = False, device: str = "cpu", repeats: int | None = None) -> list[dict]:
    """Run the benchmark; one row per contender (``median_s`` in seconds, ``points/s``,
    ``speed-up`` against the row's baseline)."""
    b, n, k = (4, 2048, 16) if quick else (16, 8192, 16)
    repeats = repeats or (3 if quick else 5)
    g = torch.Generator().manual_seed(0)
    pos, batch = _clouds(b, n, device, g)
    total = b * n
    rows: list[dict] = []

    def add(task, timings, base):
        for name, t in timings.items():
            sp = t.speedup_over(timings[base]) if base in timings else None
            rows.append({"task": task, "contender": name, "points": total,
                         "median": format_seconds(t.median), "min": format_seconds(t.min),
                         "max": format_seconds(t.max), "points/s": f"{total / t.median:.3g}",
                         "speed-up": f"{sp:.2f}x" if sp is not None else "",
                         "baseline": base if base in timings else "", "median_s": t.median})

    ei = graph.knn_graph(pos, k, batch)
    with torch.no_grad():
        t = time_interleaved({"tensorframes.frames.pca": lambda: pca(pos, edge_index=ei),
                              "naive eigh": lambda: naive_pca(pos, ei)},
                             repeats=repeats, device=device)
    add(f"pca frames ({b}x{n}, k={k}, graph given)", t, "naive eigh")

    cad, cad_batch = _cad_clouds(b, n, device)
    ei_cad = graph.knn_graph(cad, k, cad_batch)
    with torch.no_grad():
        t = time_interleaved(
            {"tensorframes.frames.pca": lambda: pca(cad, edge_index=ei_cad, batch=cad_batch),
             "naive eigh": lambda: naive_pca(cad, ei_cad)},
            repeats=repeats, device=device)
    add(f"pca frames, noise-free CAD shapes ({b}x{n}, k={k}, graph given)", t, "naive eigh")

    knn_fns = {"pure torch": lambda: graph.knn_graph(pos, k, batch, backend="torch")}
    if graph.WITH_TORCH_CLUSTER:
        knn_fns["torch-cluster"] = lambda: graph.knn_graph(pos, k, batch, backend="cluster")
    t = time_interleaved(knn_fns, repeats=max(1, repeats - 2), device=device)
    add(f"knn graph ({b}x{n}, k={k})", t, "torch-cluster")

    u, v, w = (torch.randn(total, 3, generator=g).to(device) for _ in range(3))
    with torch.no_grad():
        t = time_interleaved({"gram_schmidt (O(3), 3 vectors)": lambda: gram_schmidt(u, v, w)},
                             repeats=repeats, device=device)
    add(f"gram_schmidt ({total} nodes)", t, "")

    model = LearnedFrames(0, 32, k=k).to(device)
    with torch.no_grad():
        t = time_interleaved({"LearnedFrames(hidden=32) forward":
                              lambda: model(pos, batch, edge_index=ei)},
                             repeats=repeats, device=device)
    add(f"LearnedFrames ({b}x{n}, k={k}, graph given)", t, "")
    return rows


COLUMNS = ["task", "contender", "speed-up", "baseline", "median", "min", "max", "points/s"]
#: columns that name a row, and its ratios (``--tuned-allocator``'s side-by-side table)
KEY_COLUMNS = ["task", "contender"]
RATIO_COLUMNS = ["speed-up"]


def main(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Run, print the markdown table, return the rows."""
    rows = run(quick=quick, device=device)
    print("## frames: PCA frames (vs naive eigh), knn (pure torch vs torch-cluster), "
          "gram_schmidt, LearnedFrames\n")
    print(markdown_table(rows, COLUMNS))
    return rows
