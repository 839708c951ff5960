"""PCA-frame models on noise-free CAD shapes (flat faces, exact symmetries): equivariant to
0.01 degrees, float32 and float64, thanks to the sign tie-break of ``tf.frames.pca``."""

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import models
from tensorframes._math import haar_orthogonal_np
from tensorframes.data._synthetic import generate_cloud

SHAPES = ("cube", "cylinder", "hex_prism")
NUM_POINTS = 2048
#: Bound of the issue: mean angle between f(Qx) and Q f(x), in degrees.
MAX_MEAN_DEG = 0.01


def _cloud(name: str, dtype: torch.dtype) -> torch.Tensor:
    c = generate_cloud(name, np.random.SeedSequence([2026, len(name)]), num_points=NUM_POINTS)
    return torch.from_numpy(c["pos"]).to(dtype)


def _orthogonal(seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Random O(3) element with determinant -1 (a rotation times a reflection)."""
    q = haar_orthogonal_np(np.random.default_rng(seed), 3, det=1)
    return torch.from_numpy(q * np.array([[1.0], [1.0], [-1.0]]).T).to(dtype)


def mean_angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean angle between the rows of ``a`` and ``b`` in degrees (float64, via atan2)."""
    a, b = a.double(), b.double()
    cross = torch.linalg.cross(a, b).norm(dim=1)
    dot = (a * b).sum(1)
    return float(torch.atan2(cross, dot).mean()) * 180 / math.pi


def equivariance_error(model, pos: torch.Tensor, seeds=(0, 1)) -> float:
    """Largest over ``seeds`` of the mean angle between ``f(Qx)`` and ``Q f(x)``."""
    batch = torch.zeros(pos.shape[0], dtype=torch.long)
    ptr = torch.tensor([0, pos.shape[0]])

    def f(p):
        return model(Batch(pos=p, batch=batch, ptr=ptr))

    with torch.no_grad():
        ref = f(pos)
        errs = []
        for s in seeds:
            q = _orthogonal(s, pos.dtype)
            errs.append(mean_angle_deg(f(pos @ q.T), ref @ q.T))
    return max(errs)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_pca_frame_models_equivariant_on_flat_shapes(arch, dtype):
    torch.manual_seed(0)
    model = models.build(arch, "pca").to(dtype).eval()
    for name in SHAPES:
        err = equivariance_error(model, _cloud(name, dtype))
        assert err <= MAX_MEAN_DEG, (arch, dtype, name, err)


def test_pca_frame_model_equivariant_on_a_cube_quick():
    """Fast check (not slow): small DGCNN, float32, one cube and one reflection."""
    torch.manual_seed(0)
    model = models.build("dgcnn", "pca", hidden="4x0n+2x1n+1x2n", width=16, k=16,
                         num_layers=2).eval()
    err = equivariance_error(model, _cloud("cube", torch.float32), seeds=(3,))
    assert err <= MAX_MEAN_DEG, err
