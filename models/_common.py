"""Pieces shared by the reference architectures."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

import tensorframes as tf

FRAME_FLAVOURS = ("plain", "augment", "pca", "learned")


def mlp(*widths: int, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class FrameBuilder(nn.Module):
    """Per-point frames for a flavour: identity (plain/augment), PCA, or learned."""

    def __init__(self, flavour: str, k: int = 16) -> None:
        super().__init__()
        if flavour not in FRAME_FLAVOURS:
            raise ValueError(f"frames must be one of {FRAME_FLAVOURS}, got {flavour!r}")
        self.flavour, self.k = flavour, k
        self.learned = tf.frames.LearnedFrames(k=k) if flavour == "learned" else None

    def forward(
        self, pos: torch.Tensor, batch: torch.Tensor | None, edge_index: torch.Tensor
    ) -> tf.Frames:
        if self.flavour in ("plain", "augment"):
            return tf.frames.identity(pos.shape[0], dtype=pos.dtype, device=pos.device)
        if self.flavour == "pca":
            return tf.frames.pca(pos, edge_index=edge_index, batch=batch)
        return self.learned(pos, batch, edge_index=edge_index)

    def extra_repr(self) -> str:
        return f"flavour={self.flavour!r}, k={self.k}"


def normal_head(in_channels: int, hidden: int) -> nn.Sequential:
    """MLP to one local vector, initialised to the frame's third axis (0, 0, 1).

    With PCA frames the third axis is the PCA normal, so an untrained model starts at the PCA
    estimate and learns corrections; other flavours start at an arbitrary fixed direction.
    """
    head = mlp(in_channels, hidden, 3)
    with torch.no_grad():
        head[-1].weight.mul_(0.1)
        head[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    return head


def _pow2_exponent(amax: torch.Tensor) -> torch.Tensor:
    """``e`` with ``amax * 2**-e`` in ``[0.5, 1)`` (0 where ``amax`` is 0)."""
    _, e = torch.frexp(amax)
    return torch.where(amax > 0, e, torch.zeros_like(e))


def _ldexp(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``x * 2**e`` exactly, in factors that neither over- nor underflow."""
    c = math.frexp(torch.finfo(x.dtype).max)[1] - 2
    for _ in range(3):
        step = e.clamp(-c, c)
        x = x * torch.exp2(step.to(x.dtype))
        e = e - step
    return x


def normalize_positions(pos: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Each cloud centred at its centroid and scaled to unit maximum radius (as
    :class:`tensorframes.data.CenterScale`), robustly for every finite input.

    The cloud is rescaled by a power of two (exact) before its centroid is taken and again
    before its radius is, so coordinates from subnormal to the largest float neither overflow
    nor underflow; a power-of-two factor cancels exactly in the result, so the output does not
    depend on it (and stays O(3)-equivariant bit for bit). A cloud whose points coincide is
    only centred.
    """
    if pos.shape[0] == 0:
        return pos
    size = int(batch.max()) + 1

    def cloud_exponent(x: torch.Tensor) -> torch.Tensor:
        amax = scatter(x.detach().abs().amax(-1), batch, 0, dim_size=size, reduce="max")
        return _pow2_exponent(amax).index_select(0, batch)[:, None]

    p = _ldexp(pos, -cloud_exponent(pos))
    rel = p - scatter(p, batch, 0, dim_size=size, reduce="mean").index_select(0, batch)
    rel = _ldexp(rel, -cloud_exponent(rel))
    radius = scatter(rel.norm(dim=-1), batch, 0, dim_size=size, reduce="max")
    radius = torch.where(radius > 0, radius, torch.ones_like(radius))
    return rel / radius.index_select(0, batch)[:, None]


def check_batch(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pos, batch)`` of a PyG Data/Batch, with a clear error for bad positions.

    ``pos`` comes back normalised per cloud by :func:`normalize_positions` (centroid 0, maximum
    radius 1), so the models' outputs do not depend on where a cloud sits or how large it is:
    large or tiny coordinates give the outputs of unit-scale ones (data already passed through
    ``CenterScale`` is unchanged up to round-off).
    """
    pos = getattr(data, "pos", None)
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(
            f"model input must hold pos of shape (N, 3), got "
            f"{None if pos is None else tuple(getattr(pos, 'shape', ()))}"
        )
    if not pos.is_floating_point():
        raise TypeError(f"model input pos must be a floating point tensor, got {pos.dtype}")
    tf.graph.check_finite(pos, "pos")
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    return normalize_positions(pos, batch), batch
