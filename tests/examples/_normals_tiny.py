"""A tiny stand-in that follows the ``models`` contract (fast, seeded, uses the global RNG)."""

import torch
from torch import nn
from torch_geometric.utils import scatter


class TinyNormalNet(nn.Module):
    """Per-point MLP on the point and its cloud's centroid-relative position.

    Not equivariant (a plain network), has dropout (so training consumes the global torch RNG,
    which the resume tests must restore) and a BatchNorm buffer."""

    def __init__(self, flavour: str = "plain", hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.flavour = flavour
        self.net = nn.Sequential(
            nn.Linear(6, hidden),
            nn.BatchNorm1d(hidden),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 3),
        )

    def forward(self, batch) -> torch.Tensor:
        if hasattr(batch, "normal"):
            raise AssertionError("the target leaked into the model input")
        center = scatter(batch.pos, batch.batch, dim=0, reduce="mean")
        return self.net(torch.cat([batch.pos, batch.pos - center[batch.batch]], -1))


def tiny(flavour: str = "plain", **options) -> TinyNormalNet:
    return TinyNormalNet(flavour, **options)
