"""Pieces shared by the reference architectures: MLPs, frames per flavour, message types and
frame refinement between layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import tensorframes as tf

from ._normalize import check_batch, normalize_positions

__all__ = ["FRAME_FLAVOURS", "FRAME_UPDATE_METHODS", "MESSAGES", "FrameBuilder", "check_batch",
           "frame_update", "hidden_reps", "mlp", "normal_head", "normalize_positions",
           "update_method"]

#: Frame flavours of the frame-based architectures (``pointnet2``, ``dgcnn``).
FRAME_FLAVOURS = ("plain", "augment", "pca", "learned", "random", "three_nn")
#: Flavours whose frames are not the identity (the ones that can be refined between layers).
_FRAMED = ("pca", "learned", "random", "three_nn")
#: Message types: what the hidden features are made of.
#: ``"scalar"``: invariant numbers only (``0n``), each in its own node's frame: local
#: canonicalisation, a neighbour's numbers arrive unchanged (in the sender's coordinates);
#: ``"vector"``: ``0n + 1n``; ``"tensor"``: ``0n + 1n + 2n`` (the default); ``"irreps"``:
#: ``0e + 1o + 2e`` as spherical :class:`tensorframes.Irreps`.
MESSAGES = ("scalar", "vector", "tensor", "irreps")
#: The parameterisations of :class:`tensorframes.frames.FrameUpdate` the models accept.
FRAME_UPDATE_METHODS = ("gram_schmidt", "quaternion", "axis_angle")


def hidden_reps(messages: str, dims: tuple[int, ...]) -> tuple[str, ...]:
    """Default hidden reps of message type ``messages`` with total dimension ``dims[l]`` per level.

    Every message type of one level has the same dimension, so the layers around them (MLPs
    sized by the feature dimension) have the same parameter count. Each dimension must be a
    multiple of 38 (PointNet++: 38 / 76 / 152, DGCNN: 76); ``m = dim / 38`` copies of
    ``38x0n``, ``8x0n + 10x1n``, ``8x0n + 4x1n + 2x2n`` or ``8x0e + 5x1o + 3x2e``.
    """
    if messages not in MESSAGES:
        raise ValueError(f"messages must be one of {MESSAGES}, got {messages!r}")
    blocks = {
        "scalar": ((38, "0n"),),
        "vector": ((8, "0n"), (10, "1n")),
        "tensor": ((8, "0n"), (4, "1n"), (2, "2n")),
        "irreps": ((8, "0e"), (5, "1o"), (3, "2e")),
    }[messages]
    out = []
    for dim in dims:
        if dim % 38:
            raise ValueError(f"hidden dimensions must be multiples of 38, got {dim}")
        m = dim // 38
        out.append("+".join(f"{mul * m}x{ir}" for mul, ir in blocks))
    return tuple(out)


def update_method(update_frames: bool | str, flavour: str) -> str | None:
    """The :class:`~tensorframes.frames.FrameUpdate` method of ``update_frames`` (None: off).

    ``True`` means ``"gram_schmidt"``. ``ValueError`` for an unknown value, and for a flavour
    with identity frames (``plain``/``augment``), where there is no frame to refine.
    """
    if update_frames is False or update_frames is None:
        return None
    method = "gram_schmidt" if update_frames is True else update_frames
    if method not in FRAME_UPDATE_METHODS:
        raise ValueError(
            f"update_frames must be False, True or one of {FRAME_UPDATE_METHODS}, "
            f"got {update_frames!r}"
        )
    if flavour not in _FRAMED:
        raise ValueError(
            f"update_frames={update_frames!r} needs frames to refine; flavour {flavour!r} has "
            f"identity frames (use one of {_FRAMED})"
        )
    return method


def frame_update(method: str | None, reps: Any) -> nn.Module | None:
    """An O(3) :class:`~tensorframes.frames.FrameUpdate` on features of ``reps`` (or None)."""
    if method is None:
        return None
    return tf.frames.FrameUpdate(reps, method=method, o3=True)


def mlp(*widths: int, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Linear layers with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class FrameBuilder(nn.Module):
    """Per-point frames for a flavour.

    * ``"plain"``, ``"augment"``: identity frames (an ordinary, non-equivariant network);
    * ``"pca"``: :func:`tensorframes.frames.pca` on the k-NN graph;
    * ``"learned"``: :class:`tensorframes.frames.LearnedFrames` on the k-NN graph;
    * ``"three_nn"``: :func:`tensorframes.frames.three_nn` (frames from the three nearest
      neighbours) on the same k-NN graph;
    * ``"random"``: a control. Independent Haar-random O(3) frames per point, drawn fresh on
      every call (training and eval alike) from the global torch RNG with
      :func:`tensorframes.frames.random`, so seeding with ``torch.manual_seed`` reproduces them.
      The frames ignore the geometry: the model is equivariant only in distribution (for a
      fixed draw ``R_i``, the input ``g x`` with frames ``R_i g^T`` gives ``g f(x)``; both draws
      are equally likely), and it shows what frames consistent with the geometry buy.
    """

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
        if self.flavour == "random":
            return tf.frames.random(pos.shape[0], dtype=pos.dtype, device=pos.device)
        if self.flavour == "three_nn":
            return tf.frames.three_nn(pos, batch, edge_index=edge_index)
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
