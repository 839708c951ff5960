"""``models.build``: one entry point for every architecture and flavour."""

from __future__ import annotations

from torch import nn

ARCHS = ("pointnet2", "dgcnn", "tp")
FLAVOURS = {
    "pointnet2": ("plain", "augment", "pca", "learned"),
    "dgcnn": ("plain", "augment", "pca", "learned"),
    "tp": ("cg", "gaunt"),
}


def build(arch: str, flavour: str, **options) -> nn.Module:
    """Build ``arch`` in ``flavour``; ``options`` go to the architecture's constructor.

    The returned module has ``model.arch``, ``model.flavour``, ``model.augment`` (whether the
    trainer should apply random O(3) augmentation) and ``model.options`` (for checkpoints).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if flavour not in FLAVOURS[arch]:
        raise ValueError(
            f"unknown flavour {flavour!r} for arch {arch!r}; expected one of {FLAVOURS[arch]}"
        )
    if arch == "pointnet2":
        from .pointnet2 import PointNet2

        model = PointNet2(frames=flavour, **options)
    elif arch == "dgcnn":
        from .dgcnn import DGCNN

        model = DGCNN(frames=flavour, **options)
    else:
        from .tp import TPNet

        model = TPNet(product=flavour, **options)
    model.arch, model.flavour, model.options = arch, flavour, dict(options)
    model.augment = flavour == "augment"
    return model
