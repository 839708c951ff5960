"""``models.build``: one entry point for every architecture and flavour; ``models.load``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._common import FRAME_FLAVOURS, MESSAGES
from .baselines import PCABaseline

ARCHS = ("pointnet2", "dgcnn", "tp", "pca")
FLAVOURS = {
    "pointnet2": FRAME_FLAVOURS,
    "dgcnn": FRAME_FLAVOURS,
    "tp": ("cg", "gaunt"),
    "pca": ("pca",),
}
#: The ``format`` of the checkpoints written by ``python -m examples.normals train``.
CHECKPOINT_FORMAT_PREFIX = "tensorframes.examples.normals/"


def build(
    arch: str,
    flavour: str,
    *,
    messages: str = "tensor",
    update_frames: bool | str = False,
    **options: Any,
) -> nn.Module:
    """Build ``arch`` in ``flavour``; ``options`` go to the architecture's constructor.

    ``arch="pca"`` (flavour ``"pca"``, option ``k``) is the parameter-free PCA normal estimate.
    The returned module has ``model.arch``, ``model.flavour``, ``model.augment`` (whether the
    trainer should apply random O(3) augmentation) and ``model.options`` (for checkpoints).

    For ``pointnet2`` and ``dgcnn``: ``messages`` (``"scalar"``, ``"vector"``, ``"tensor"``,
    ``"irreps"``) picks the hidden features' type at one feature dimension, so every type has
    the same parameter count (an explicit ``hidden=`` overrides it), and ``update_frames``
    (``False``, ``True`` = ``"gram_schmidt"``, ``"quaternion"``, ``"axis_angle"``) refines the
    frames between layers (frame flavours only). Both are stored in ``model.messages`` /
    ``model.update_frames`` and in ``model.options``, so a checkpoint rebuilds the same model.
    The other archs take only the defaults.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if flavour not in FLAVOURS[arch]:
        raise ValueError(
            f"unknown flavour {flavour!r} for arch {arch!r}; expected one of {FLAVOURS[arch]}"
        )
    if messages not in MESSAGES:
        raise ValueError(f"unknown messages {messages!r}; expected one of {MESSAGES}")
    framed = arch in ("pointnet2", "dgcnn")
    if not framed and (messages != "tensor" or update_frames is not False):
        raise ValueError(
            f"messages= and update_frames= apply to 'pointnet2' and 'dgcnn' only; arch {arch!r} "
            f"got messages={messages!r}, update_frames={update_frames!r}"
        )
    # The networks are imported on demand: a model whose layers cannot be imported leaves the
    # others buildable (the normals `compare` command then reports its row as skipped).
    if arch == "pointnet2":
        from .pointnet2 import PointNet2

        model = PointNet2(frames=flavour, messages=messages, update_frames=update_frames,
                          **options)
    elif arch == "dgcnn":
        from .dgcnn import DGCNN

        model = DGCNN(frames=flavour, messages=messages, update_frames=update_frames, **options)
    elif arch == "tp":
        from .tp import TPNet

        model = TPNet(product=flavour, **options)
    else:
        model = PCABaseline(**options)
    if framed:
        options = {**options, "messages": messages, "update_frames": update_frames}
    model.arch, model.flavour, model.options = arch, flavour, dict(options)
    model.augment = flavour == "augment"
    return model


def load(path: str, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of a checkpoint written by ``python -m examples.normals train``.

    Reads the file with ``torch.load(..., weights_only=True)``, builds the stored
    ``arch`` / ``flavour`` / ``options`` with :func:`build` and loads the weights. The model is
    returned in eval mode. ``ValueError`` for a file that is not such a checkpoint.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(
            f"{path} cannot be read as a checkpoint ({type(err).__name__}: {err})"
        ) from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith(CHECKPOINT_FORMAT_PREFIX):
        raise ValueError(
            f"{path} is not a checkpoint of the normals example (format {fmt!r}, expected "
            f"{CHECKPOINT_FORMAT_PREFIX}...)"
        )
    model = build(ckpt["arch"], ckpt["flavour"], **(ckpt.get("options") or {}))
    model.load_state_dict(ckpt["model"])
    return model.eval()
