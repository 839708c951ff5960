"""Benchmark suite ``layers``: one message-passing layer, tensor frames versus tensor products.

Part 1, the cost of the frame change. Baseline: a stock ``PointNetConv`` (same widths, same
graph) called without frames. Contender: ``tensorframes.nn.wrap(PointNetConv,
local={"x": "32x0n+16x1n+8x2n"}, world={"pos": "1x1n"})`` with PCA frames; and the same function
written as a user's own layer (``PointNetLike``), which ``wrap`` runs on its generic path.

Part 2, the two routes to equivariance at matched representations: the same input and output
irreps ``C x (0e + 1o + 2e + ...)`` up to degree ``L`` for every contender (tensor frames carry
them in local frames), one layer on the same k-NN graph. Contenders: the wrapped
``PointNetConv`` (``dim + 3 -> 64`` with SiLU on each message, sum aggregation, then
``64 -> dim`` on the sum: the MLP ``dim + 3 -> 64 -> dim`` with its last linear map moved past
the sum, the same function up to the bias, added once instead of once per neighbour), ``TPConv``
with our Clebsch-Gordan product, with the grid Gaunt product, and with e3nn's ``TensorProduct``
(baseline of the ratios; NequIP-style: channel-wise product with the edge harmonics up to ``L``,
radial MLP 8 -> 64 -> path weights).

Measured: float32 on the default device ``cpu``; the contenders of each part interleaved in one
process, forward alone and forward + backward (of the mean square of the output) timed
separately. Reported: forward and forward+backward medians, their ratios to the baseline
(median of per-round ratios), and the bytes of activations autograd saves for backward (a
deterministic proxy of peak training memory on CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch_geometric.nn import MessagePassing, PointNetConv

from .. import frames as tf_frames
from .. import graph
from ..nn import EdgeFrames, TPConv, wrap
from ..reps import Irreps, TensorReps
from ._harness import format_seconds, markdown_table, time_interleaved

REPS = TensorReps("32x0n+16x1n+8x2n")


class PointNetLike(MessagePassing):
    """``PointNetConv`` (no global nn, no self loops) as a user writes it: ``wrap`` has no entry
    for it and takes its generic path (a frame change in ``propagate``)."""

    def __init__(self, local_nn: nn.Module) -> None:
        super().__init__(aggr="max")
        self.local_nn = local_nn

    def forward(self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor
                ) -> torch.Tensor:
        return self.propagate(edge_index, x=x, pos=pos)

    def message(self, x_j: torch.Tensor, pos_i: torch.Tensor, pos_j: torch.Tensor
                ) -> torch.Tensor:
        return self.local_nn(torch.cat([x_j, pos_j - pos_i], dim=-1))


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of distinct tensor storages autograd saves for backward while running ``fn``."""
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _point_cloud(num_clouds: int, points: int, device: str | torch.device,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.randn(num_clouds * points, 3, generator=gen) * torch.tensor([1.0, 0.6, 0.3])
    batch = torch.arange(num_clouds).repeat_interleave(points)
    return pos.to(device), batch.to(device)


def run(quick: bool = False, device: str = "cpu", repeats: int | None = None) -> list[dict]:
    """Part 1: a stock PointNetConv unwrapped against wrapped (with and without precomputed
    EdgeFrames); one row per contender."""
    num_clouds, points, k = (4, 1024, 16) if quick else (16, 2048, 16)
    repeats = repeats or (3 if quick else 5)
    gen = torch.Generator().manual_seed(0)
    pos, batch = _point_cloud(num_clouds, points, device, gen)
    edge_index = graph.knn_graph(pos, k=k, batch=batch)
    frames = tf_frames.pca(pos, edge_index=edge_index)
    edge_frames = EdgeFrames.compute(edge_index, frames)
    C = REPS.dim

    def make_layer():  # seeded: plain and wrapped start from the same weights
        torch.manual_seed(0)
        local_nn = nn.Sequential(nn.Linear(C + 3, 128), nn.ReLU(), nn.Linear(128, C))
        return PointNetConv(local_nn, add_self_loops=False).to(device)

    plain = make_layer()
    wrapped = wrap(make_layer(), local={"x": REPS}, world={"pos": "1x1n"})
    # the same function through wrap's generic path (same weights)
    generic = wrap(PointNetLike(make_layer().local_nn), local={"x": REPS},
                   world={"pos": "1x1n"})
    x = torch.randn(pos.shape[0], C, generator=gen).to(device).requires_grad_(True)

    def fwd_plain():
        return plain(x, pos, edge_index)

    def fwd_wrapped():
        return wrapped(x, pos, edge_index, frames=frames, edge_frames=edge_frames)

    def fwd_wrapped_uncached():
        return wrapped(x, pos, edge_index, frames=frames)

    def fwd_generic():
        return generic(x, pos, edge_index, frames=frames, edge_frames=edge_frames)

    src = edge_index[0]

    def fwd_floor():  # the gather every implementation does at least once: x[src], fresh output
        return x.index_select(0, src)

    def train_step(fwd):
        def step():
            fwd().square().mean().backward()

        return step

    fwd_timings = time_interleaved(
        {
            "plain": fwd_plain,
            "wrapped": fwd_wrapped,
            "wrapped (no EdgeFrames)": fwd_wrapped_uncached,
            "wrapped, generic path": fwd_generic,
            "floor (gather x[src] alone)": fwd_floor,
        },
        repeats=repeats,
        device=device,
        desc="layers frame change, fwd",
    )
    bwd_timings = time_interleaved(
        {
            "plain": train_step(fwd_plain),
            "wrapped": train_step(fwd_wrapped),
            "wrapped (no EdgeFrames)": train_step(fwd_wrapped_uncached),
            "wrapped, generic path": train_step(fwd_generic),
            "floor (gather x[src] alone)": train_step(fwd_floor),
        },
        repeats=repeats,
        device=device,
        desc="layers frame change, fwd+bwd",
    )
    rows = []
    mem = {
        "plain": saved_activation_bytes(fwd_plain),
        "wrapped": saved_activation_bytes(fwd_wrapped),
        "wrapped (no EdgeFrames)": saved_activation_bytes(fwd_wrapped_uncached),
        "wrapped, generic path": saved_activation_bytes(fwd_generic),
        "floor (gather x[src] alone)": saved_activation_bytes(fwd_floor),
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
                "fwd+bwd vs plain": f"{1 / b.speedup_over(bwd_timings['plain']):.2f}x",
                "forward vs plain": f"{1 / f.speedup_over(fwd_timings['plain']):.2f}x",
                "saved activations": f"{mem[name] / 2**20:.0f} MiB",
                "memory vs plain": f"{mem[name] / mem['plain']:.2f}x",
                "median_s": b.median,
            }
        )
    return rows


COLUMNS = ["contender", "points", "edges", "forward vs plain", "fwd+bwd vs plain",
           "memory vs plain", "forward", "fwd+bwd", "fwd+bwd min/max", "saved activations"]

TP_BASELINE = "TPConv with e3nn's TensorProduct"


def run_versus_tp(quick: bool = False, device: str = "cpu", repeats: int | None = None,
                  channels: int = 32, hidden: int = 64) -> list[dict]:
    """Part 2: wrapped PointNetConv versus TPConv (CG, Gaunt, e3nn) at matched reps."""
    k = 16
    edges = 10_000 if quick else 100_000
    ls = (1, 2) if quick else (1, 2, 3)
    repeats = repeats or 3
    n = edges // k
    gen = torch.Generator().manual_seed(1)
    pos = (torch.randn(n, 3, generator=gen) * torch.tensor([1.0, 0.6, 0.3])).to(device)
    edge_index = graph.knn_graph(pos, k=k)
    frames = tf_frames.pca(pos, edge_index=edge_index)
    edge_frames = EdgeFrames.compute(edge_index, frames)
    try:
        from e3nn import o3 as e3nn_o3

        products = ("cg", "gaunt", "e3nn")
    except ImportError:
        products = ("cg", "gaunt")
    rows = []
    for L in ls:
        irreps = Irreps("+".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}"
                                 for l in range(L + 1)))
        sh = "+".join(f"1x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))
        torch.manual_seed(0)
        d = irreps.dim
        # the MLP's last linear map runs after the sum (global_nn): for sum aggregation the same
        # function (up to the bias, added once instead of once per neighbour) and parameters as
        # inside local_nn, with hidden-width messages
        tf_layer = wrap(
            PointNetConv(nn.Sequential(nn.Linear(d + 3, hidden), nn.SiLU()),
                         global_nn=nn.Linear(hidden, d), add_self_loops=False, aggr="add"),
            local={"x": irreps}, world={"pos": "1x1n"},
        ).to(device)
        x = torch.randn(n, d, generator=gen).to(device).requires_grad_(True)
        tf_name = "tensor frames: wrap(PointNetConv)"
        fwd = {tf_name: partial(tf_layer, x, pos, edge_index, frames=frames,
                                edge_frames=edge_frames)}
        params = {tf_name: sum(p.numel() for p in tf_layer.parameters())}
        for product in products:
            factory = (partial(e3nn_o3.TensorProduct, shared_weights=False,
                               internal_weights=False) if product == "e3nn" else product)
            conv = TPConv(irreps, irreps, sh, product=factory, cutoff=10.0,
                          avg_num_neighbors=k).to(device)
            name = TP_BASELINE if product == "e3nn" else f"TPConv ({product})"
            fwd[name] = partial(conv, x, pos, edge_index)
            params[name] = sum(p.numel() for p in conv.parameters())

        def step(f):
            return lambda: f().square().mean().backward()

        t_fwd = time_interleaved(fwd, repeats=repeats, device=device, desc=f"layers L={L} fwd")
        t_bwd = time_interleaved({k_: step(f) for k_, f in fwd.items()}, repeats=repeats,
                                 device=device, desc=f"layers L={L} fwd+bwd")
        base = t_bwd.get(TP_BASELINE)
        for name, f in fwd.items():
            mem = saved_activation_bytes(f)
            rows.append({
                "L": L, "channels": channels, "edges": edge_index.shape[1], "contender": name,
                "parameters": params[name],
                "forward": format_seconds(t_fwd[name].median),
                "fwd+bwd": format_seconds(t_bwd[name].median),
                "fwd+bwd min/max": f"{format_seconds(t_bwd[name].min)} / "
                                   f"{format_seconds(t_bwd[name].max)}",
                "fwd+bwd speed-up vs e3nn TP": (f"{t_bwd[name].speedup_over(base):.1f}x"
                                                if base else "n/a"),
                "saved activations": f"{mem / 2**20:.0f} MiB",
                "median_s": t_bwd[name].median,
            })
    return rows


TP_COLUMNS = ["L", "channels", "edges", "contender", "fwd+bwd speed-up vs e3nn TP", "parameters",
              "forward", "fwd+bwd", "fwd+bwd min/max", "saved activations"]
#: columns that name a row, and its ratios (``--tuned-allocator``'s side-by-side table; part 1
#: rows have no ``L``)
KEY_COLUMNS = ["L", "contender"]
RATIO_COLUMNS = ["forward vs plain", "fwd+bwd vs plain", "fwd+bwd speed-up vs e3nn TP"]


def main(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Run both parts, print their markdown tables, return the rows of both."""
    rows = run(quick=quick, device=device)
    print("## layers (1): frame-change overhead of a wrapped PointNetConv "
          f"(x = {REPS}, k = 16; baseline: the same PointNetConv unwrapped)\n")
    print(markdown_table(rows, COLUMNS))
    rows_tp = run_versus_tp(quick=quick, device=device)
    print("\n## layers (2): tensor frames versus tensor products at matched representations "
          f"(k = 16; baseline: {TP_BASELINE})\n")
    print(markdown_table(rows_tp, TP_COLUMNS))
    return rows + rows_tp
