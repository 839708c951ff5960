"""Pieces shared by the reference architectures."""

from __future__ import annotations

import torch
from torch import nn

import tensorframes as tf

from ._normalize import check_batch, normalize_positions

__all__ = ["FRAME_FLAVOURS", "FrameBuilder", "check_batch", "mlp", "normal_head",
           "normalize_positions"]

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
