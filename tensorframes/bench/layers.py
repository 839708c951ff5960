"""Benchmark suite ``layers``: the cost of the frame change in a wrapped PyG layer.

Baseline: the same stock ``PointNetConv`` (same widths, same graph) called without frames.
Contender: ``tensorframes.nn.wrap(PointNetConv, local={"x": "32x0n+16x1n+8x2n"},
world={"pos": "1x1n"})`` with PCA frames. Reported: forward and forward+backward medians, and the
bytes of activations saved for backward (a deterministic proxy of peak training memory on CPU;
on CUDA the allocator's peak is reported too).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import frames as tf_frames
from .. import graph
from ..nn import EdgeFrames, wrap
from ..reps import TensorReps
from ._harness import format_seconds, markdown_table, time_interleaved

REPS = TensorReps("32x0n+16x1n+8x2n")


def saved_activation_bytes(fn) -> int:
    """Bytes of distinct tensor storages autograd saves for backward while running ``fn``."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _point_cloud(num_clouds: int, points: int, device, gen):
    pos = torch.randn(num_clouds * points, 3, generator=gen) * torch.tensor([1.0, 0.6, 0.3])
    batch = torch.arange(num_clouds).repeat_interleave(points)
    return pos.to(device), batch.to(device)


def run(quick: bool = False, device: str = "cpu", repeats: int | None = None) -> list[dict]:
    num_clouds, points, k = (4, 1024, 16) if quick else (16, 2048, 16)
    repeats = repeats or (3 if quick else 5)
    gen = torch.Generator().manual_seed(0)
    pos, batch = _point_cloud(num_clouds, points, device, gen)
    edge_index = graph.knn_graph(pos, k=k, batch=batch)
    frames = tf_frames.pca(pos, edge_index=edge_index)
    edge_frames = EdgeFrames.compute(edge_index, frames)
    C = REPS.dim
    torch.manual_seed(0)
    from torch_geometric.nn import PointNetConv

    def make_layer():
        torch.manual_seed(0)
        local_nn = nn.Sequential(nn.Linear(C + 3, 128), nn.ReLU(), nn.Linear(128, C))
        return PointNetConv(local_nn, add_self_loops=False).to(device)

    plain = make_layer()
    wrapped = wrap(make_layer(), local={"x": REPS}, world={"pos": "1x1n"})
    x = torch.randn(pos.shape[0], C, generator=gen).to(device).requires_grad_(True)

    def fwd_plain():
        return plain(x, pos, edge_index)

    def fwd_wrapped():
        return wrapped(x, pos, edge_index, frames=frames, edge_frames=edge_frames)

    def fwd_wrapped_uncached():
        return wrapped(x, pos, edge_index, frames=frames)

    def train_step(fwd):
        def step():
            fwd().square().mean().backward()

        return step

    fwd_timings = time_interleaved(
        {
            "plain": fwd_plain,
            "wrapped": fwd_wrapped,
            "wrapped (no EdgeFrames)": fwd_wrapped_uncached,
        },
        repeats=repeats,
        device=device,
    )
    bwd_timings = time_interleaved(
        {
            "plain": train_step(fwd_plain),
            "wrapped": train_step(fwd_wrapped),
            "wrapped (no EdgeFrames)": train_step(fwd_wrapped_uncached),
        },
        repeats=repeats,
        device=device,
    )
    rows = []
    base_f, base_b = fwd_timings["plain"].median, bwd_timings["plain"].median
    mem = {
        "plain": saved_activation_bytes(fwd_plain),
        "wrapped": saved_activation_bytes(fwd_wrapped),
        "wrapped (no EdgeFrames)": saved_activation_bytes(fwd_wrapped_uncached),
    }
    for name in fwd_timings:
        f, b = fwd_timings[name], bwd_timings[name]
        rows.append(
            {
                "points": pos.shape[0],
                "edges": edge_index.shape[1],
                "contender": name,
                "forward": format_seconds(f.median),
                "fwd+bwd": format_seconds(b.median),
                "fwd+bwd min/max": f"{format_seconds(b.min)} / {format_seconds(b.max)}",
                "fwd+bwd vs plain": f"{b.median / base_b:.2f}x",
                "forward vs plain": f"{f.median / base_f:.2f}x",
                "saved activations": f"{mem[name] / 2**20:.0f} MiB",
                "memory vs plain": f"{mem[name] / mem['plain']:.2f}x",
                "median_s": b.median,
            }
        )
    return rows


COLUMNS = ["contender", "points", "edges", "forward", "fwd+bwd", "fwd+bwd min/max",
           "forward vs plain", "fwd+bwd vs plain", "saved activations", "memory vs plain"]


def main(quick: bool = False, device: str = "cpu") -> list[dict]:
    rows = run(quick=quick, device=device)
    print("## layers: frame-change overhead of a wrapped PointNetConv "
          f"(x = {REPS}, k = 16; baseline: the same PointNetConv unwrapped)\n")
    print(markdown_table(rows, COLUMNS))
    return rows
