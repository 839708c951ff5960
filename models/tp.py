"""The tensor-product baseline: a NequIP-style network of ``TPConv`` layers.

Equivariance the established way: features are e3nn irreps in the world frame, messages are
tensor products of neighbour features with the edges' spherical harmonics (Clebsch-Gordan or
Gaunt), nonlinearities act on scalars and gate the norms of higher irreps. The output is one
``1o`` vector per point: the normal, in world coordinates.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

import tensorframes as tf
from tensorframes.nn import TensorProductFactory, TPConv

from ._common import check_batch


class NormGate(nn.Module):
    """Equivariant nonlinearity: SiLU on scalars, ``x * sigmoid(|x| + b)`` on every other irrep."""

    def __init__(self, irreps: tf.Irreps | str) -> None:
        super().__init__()
        self.irreps = tf.Irreps(irreps)
        n_gated = sum(mul for mul, ir in self.irreps if ir.l > 0 or ir.p != 1)
        self.bias = nn.Parameter(torch.zeros(max(n_gated, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, start = [], 0
        blocks = x.split([b.dim for b in self.irreps], dim=1)  # backward: one cat
        for (mul, ir), block in zip(self.irreps, blocks):
            if ir.l == 0 and ir.p == 1:
                out.append(torch.nn.functional.silu(block))
                continue
            v = block.unflatten(-1, (mul, ir.dim))
            norm = v.norm(dim=-1, keepdim=True)
            gate = torch.sigmoid(norm + self.bias[start : start + mul, None])
            out.append((v * gate).flatten(-2))
            start += mul
        return torch.cat(out, -1)


class TPNet(nn.Module):
    """A stack of ``TPConv`` layers on the k-NN graph, positions scaled to unit RMS radius.

    Args:
        product: ``"cg"``, ``"gaunt"`` or a tensor-product factory (``TPConv``'s product).
        hidden: irreps of the hidden features.
        num_layers: ``TPConv`` layers (the last one outputs ``1x1o``).
        k: neighbours per point.
        irreps_sh: spherical harmonics of the edges.
    """

    def __init__(self, *, product: str | TensorProductFactory = "cg",
                 hidden: str = "16x0e+8x1o+4x2e", num_layers: int = 3, k: int = 16,
                 irreps_sh: str = "0e+1o+2e", cutoff: float = 1.5) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        self.k = k
        hidden = tf.Irreps(hidden)
        widths = [tf.Irreps("1x0e")] + [hidden] * (num_layers - 1) + [tf.Irreps("1x1o")]
        opts = dict(product=product, cutoff=cutoff, avg_num_neighbors=float(k))
        self.convs = nn.ModuleList(
            TPConv(a, b, irreps_sh, **opts) for a, b in zip(widths[:-1], widths[1:])
        )
        self.gates = nn.ModuleList(NormGate(hidden) for _ in range(num_layers - 1))

    def forward(self, data: Batch) -> torch.Tensor:
        """Normals ``(N, 3)`` in world coordinates for a PyG batch with ``pos`` (and ``batch``)."""
        pos, batch = check_batch(data)
        centred = pos - scatter(pos, batch, 0, reduce="mean")[batch]
        rms = scatter((centred**2).sum(-1), batch, 0, reduce="mean").sqrt().clamp_min(1e-12)
        pos_n = centred / rms[batch, None]  # scale-invariant, like the frame-based models
        with torch.no_grad():
            edge_index = tf.graph.knn_graph(pos_n, self.k, batch)
        h = pos.new_ones(pos.shape[0], 1)
        for i, conv in enumerate(self.convs):
            h = conv(h, pos_n, edge_index)
            if i < len(self.gates):
                h = self.gates[i](h)
        return h
