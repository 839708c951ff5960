"""The tensor-product baseline: a NequIP-style network of ``TPConv`` layers.

Equivariance the established way: features are e3nn irreps in the world frame, messages are
tensor products of neighbour features with the edges' spherical harmonics (Clebsch-Gordan or
Gaunt), nonlinearities act on scalars and gate the norms of higher irreps. The output is one
``1o`` vector per point: the normal, in world coordinates.

Edge lengths enter the radial features in units of the receiving point's neighbourhood radius
(its distance to its ``k``-th neighbour), so the network sees the same radial inputs at any
sampling density and any scale; the neighbourhood radius is invariant under O(3) and
translations, so equivariance is untouched. Earlier versions used units of the cloud's RMS
radius: trained at 256 points (quick preset), the error went from 12.98 to 38.46 degrees at
2,048 points, where edges are ~2.8x shorter; with this scale (6 of 16 epochs trained) it goes
from 14.34 to 20.69. What remains is the receptive field: three hops of 16 neighbours cover a
~2.8x smaller patch at 8x the points.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

import tensorframes as tf
from tensorframes.nn import TensorProductFactory, TPConv
from tensorframes.nn._tpconv import bessel_basis, polynomial_envelope
from tensorframes.o3 import spherical_harmonics

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


class LocalScaleTPConv(TPConv):
    """``TPConv`` whose edge vectors are divided by a per-receiver length ``scale_i``.

    ``forward(x, pos, edge_index, scale)``: ``scale`` ``(N,)`` positive; the message of edge
    ``j -> i`` sees ``(pos_j - pos_i) / scale_i`` (spherical harmonics of its direction, radial
    basis of its length). With ``scale`` equal to one everywhere this is ``TPConv``.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, pos: torch.Tensor, edge_index: torch.Tensor, scale: torch.Tensor
    ) -> torch.Tensor:
        """``x`` ``(N, irreps_in.dim)``, ``pos`` ``(N, 3)``, ``scale`` ``(N,)``."""
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x must be (N, {self.irreps_in.dim}), got {tuple(x.shape)}")
        if scale.shape != (x.shape[0],):
            raise ValueError(f"scale must be ({x.shape[0]},), got {tuple(scale.shape)}")
        h = self.lin1(x)
        out = self.propagate(
            edge_index, h=h, pos=pos, scale=scale[:, None], size=(x.shape[0], x.shape[0])
        )
        return self.lin2(out / math.sqrt(self.avg_num_neighbors))

    def message(  # type: ignore[override]
        self, h_j: torch.Tensor, pos_i: torch.Tensor, pos_j: torch.Tensor, scale_i: torch.Tensor
    ) -> torch.Tensor:
        """``Lin_1(x_j) (x)_w Y(r_ij / s_i)``, ``(E, mid.dim)``."""
        vec = (pos_j - pos_i) / scale_i  # scale_i: (E, 1)
        r = vec.norm(dim=-1)
        sh = spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        emb = bessel_basis(r, self.num_basis, self.cutoff)
        w = self.radial(emb) * polynomial_envelope(r, self.cutoff)[:, None]
        return self.tp(h_j, sh, w)


def neighbourhood_radius(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``(N,)``: each receiver's largest edge length (its ``k``-th neighbour's distance), 1 for
    a point whose neighbours all coincide with it (or that has none): a length that follows the
    sampling density, invariant under O(3) and translations and equivariant under scaling."""
    src, dst = edge_index
    length = (pos[src] - pos[dst]).norm(dim=-1)
    radius = scatter(length, dst, 0, dim_size=pos.shape[0], reduce="max")
    return torch.where(radius > 0, radius, torch.ones_like(radius))


class TPNet(nn.Module):
    """A stack of ``TPConv`` layers on the k-NN graph; edge lengths in units of the receiver's
    neighbourhood radius (:func:`neighbourhood_radius`), so the radial features do not depend
    on the sampling density or the cloud's scale.

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
            LocalScaleTPConv(a, b, irreps_sh, **opts) for a, b in zip(widths[:-1], widths[1:])
        )
        self.gates = nn.ModuleList(NormGate(hidden) for _ in range(num_layers - 1))

    def forward(self, data: Batch) -> torch.Tensor:
        """Normals ``(N, 3)`` in world coordinates for a PyG batch with ``pos`` (and ``batch``)."""
        pos, batch = check_batch(data)
        with torch.no_grad():
            edge_index = tf.graph.knn_graph(pos, self.k, batch)
            scale = neighbourhood_radius(pos, edge_index)
        h = pos.new_ones(pos.shape[0], 1)
        for i, conv in enumerate(self.convs):
            h = conv(h, pos, edge_index, scale)
            if i < len(self.gates):
                h = self.gates[i](h)
        return h
