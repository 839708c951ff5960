"""Seeded point clouds shared by the frame tests (float64; cast by the caller)."""

from __future__ import annotations

import math

import torch


def ellipsoid(n: int, g: torch.Generator, axes=(1.0, 0.7, 0.4)) -> torch.Tensor:
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True) * torch.tensor(axes, dtype=torch.float64)


def torus(n: int, g: torch.Generator, R: float = 1.0, r: float = 0.35) -> torch.Tensor:
    a = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    b = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    return torch.stack([(R + r * torch.cos(b)) * torch.cos(a),
                        (R + r * torch.cos(b)) * torch.sin(a), r * torch.sin(b)], 1)


def cloud(idx: int, n: int = 1024) -> torch.Tensor:
    """Cloud number ``idx``: ellipsoid / torus, clean or noisy, seeded by ``idx``."""
    g = torch.Generator().manual_seed(1000 + idx)
    x = (ellipsoid if idx % 2 == 0 else torus)(n, g)
    if idx % 4 >= 2:
        x = x + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x


def transform(idx: int):
    """Seeded ``(Q, t, s)``: Q in O(3) with det -1 for odd idx, translation, scale."""
    g = torch.Generator().manual_seed(5000 + idx)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.linalg.det(q) > 0) == (idx % 2 == 1):
        q = q * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    t = torch.randn(3, generator=g, dtype=torch.float64)
    s = 0.5 + 2 * float(torch.rand(1, generator=g, dtype=torch.float64))
    return q, t, s
