"""``models._predict.predict_normals``: tiles, halo, whole-cloud normalisation, input checks."""

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import models
from models._normalize import check_batch, cloud_normalization, normalize_positions
from models._predict import _grow, _neighbours, _tiles, predict_normals
from tensorframes.data._synthetic import generate_cloud


def _torus(n, seed=3, dtype=torch.float64):
    c = generate_cloud("torus", np.random.SeedSequence(seed), num_points=n, noise=0.005)
    return torch.tensor(c["pos"], dtype=dtype)


def _angle(a, b):
    """Unoriented angle in degrees, accurate near 0 (atan2, not acos)."""
    return torch.rad2deg(torch.atan2(torch.linalg.cross(a, b).norm(dim=-1),
                                     (a * b).sum(-1).abs()))


# ------------------------------------------------------------------ whole-cloud normalisation
def test_given_center_scale_normalise_a_part_as_the_whole():
    pos = _torus(300) * 123.0 + torch.tensor([5.0, -7.0, 1e3], dtype=torch.float64)
    batch = torch.zeros(300, dtype=torch.long)
    whole = normalize_positions(pos, batch)
    center, scale = cloud_normalization(pos)
    assert center.shape == (1, 3) and scale.shape == (1,)
    idx = torch.arange(0, 300, 7)
    part = normalize_positions(pos[idx], batch[idx], center, scale)
    torch.testing.assert_close(part, whole[idx], rtol=0, atol=1e-13)
    assert float(whole.norm(dim=-1).max()) == pytest.approx(1.0, abs=1e-14)
    # and through check_batch (the models' first step)
    got, _ = check_batch(Data(pos=pos[idx], norm_center=center, norm_scale=scale))
    torch.testing.assert_close(got, whole[idx], rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    "center, scale, err, match",
    [
        (torch.zeros(1, 3), None, ValueError, "together"),
        (torch.zeros(2, 3), torch.ones(2), ValueError, r"norm_center must have shape \(1, 3\)"),
        (torch.zeros(1, 3), torch.ones(1, 1), ValueError, r"norm_scale must have shape \(1,\)"),
        (torch.zeros(1, 3), torch.zeros(1), ValueError, "norm_scale must be > 0"),
        (torch.zeros(1, 3), -torch.ones(1), ValueError, "norm_scale must be > 0"),
        (torch.full((1, 3), math.nan), torch.ones(1), ValueError, "norm_center"),
        (torch.zeros(1, 3, dtype=torch.long), torch.ones(1), TypeError, "floating point"),
    ],
)
def test_given_center_scale_are_checked(center, scale, err, match):
    data = Data(pos=torch.randn(10, 3))
    if center is not None:
        data.norm_center = center
    if scale is not None:
        data.norm_scale = scale
    with pytest.raises(err, match=match):
        check_batch(data)


# ------------------------------------------------------------------ tiles and halo
def test_tiles_partition_the_cloud_within_the_size():
    pos = _torus(1000)
    tiles = _tiles(pos, 130)
    assert all(t.numel() <= 130 for t in tiles)
    assert torch.equal(torch.cat(tiles).sort().values, torch.arange(1000))
    assert len(tiles) == 8  # balanced median splits: 1000 -> 500 -> 250 -> 125


def test_halo_holds_every_core_points_neighbourhood():
    pos = _torus(800)
    nbr = _neighbours(pos, 10)
    core = _tiles(pos, 100)[0].sort().values
    one = _grow(core, nbr, 1, 800)
    assert torch.isin(nbr[core].reshape(-1), one).all()
    two = _grow(core, nbr, 2, 800)
    assert torch.isin(nbr[one].reshape(-1), two).all()
    assert torch.isin(one, two).all() and two.numel() > one.numel() > core.numel()
    assert torch.equal(_grow(core, nbr, 0, 800), core)


# ------------------------------------------------------------------ tiled == untiled
def test_pca_tiled_equals_untiled_float64():
    pos = _torus(1500) * 1e3 - 42.0
    model = models.build("pca", "pca", k=12)
    whole = predict_normals(model, pos, tile_points=10_000)
    tiled = predict_normals(model, pos, tile_points=200)
    assert tiled.shape == (1500, 3) and tiled.dtype == torch.float64
    torch.testing.assert_close(tiled.norm(dim=-1), torch.ones(1500, dtype=torch.float64))
    assert float(_angle(whole, tiled).max()) < 1e-9
    # and the untiled prediction is the model's own output, normalised
    ref = model(Data(pos=pos))
    ref = ref / ref.norm(dim=-1, keepdim=True)
    assert float(_angle(whole, ref).max()) < 1e-9


def test_tp_tiled_equals_untiled_float64():
    torch.manual_seed(0)
    model = models.build("tp", "cg", hidden="4x0e+2x1o+1x2e", num_layers=3, k=8).double()
    pos = _torus(600)
    whole = predict_normals(model, pos, tile_points=10_000)
    tiled = predict_normals(model, pos, tile_points=100)  # 8 tiles, 3-hop halo
    assert float(_angle(whole, tiled).max()) < 1e-9
    # a halo one hop short of the receptive field is not exact: the halo matters
    short = predict_normals(model, pos, tile_points=100, halo_hops=1)
    assert float(_angle(whole, short).max()) > 1e-6


def test_pointnet2_with_halo_over_the_whole_cloud_is_untiled():
    torch.manual_seed(0)
    model = models.build("pointnet2", "pca", width=16, k=8,
                         hidden=("4x0n+2x1n+1x2n",) * 3).double()
    pos = _torus(400)
    whole = predict_normals(model, pos, tile_points=10_000)
    tiled = predict_normals(model, pos, tile_points=100, halo_hops=400)
    assert torch.equal(whole, tiled)  # every tile + halo is the whole cloud: core rows only
    approx = predict_normals(model, pos, tile_points=100)  # the default 8-hop halo
    assert approx.shape == (400, 3) and torch.isfinite(approx).all()


def test_dtype_device_mode_and_grad():
    model = models.build("tp", "cg", hidden="2x0e+1x1o", num_layers=2, k=6)
    model.train()
    pos = _torus(120).requires_grad_(True)  # float64 input, float32 model
    out = predict_normals(model, pos, tile_points=50)
    assert out.dtype == torch.float64 and not out.requires_grad
    assert model.training  # mode restored


# ------------------------------------------------------------------ input checks
class _NoArch(torch.nn.Module):
    def forward(self, data):
        return data.pos


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(pos=torch.randn(10, 2)), ValueError, r"\(N, 3\)"),
        (dict(pos=torch.randn(0, 3)), ValueError, r"N >= 1"),
        (dict(pos=torch.ones(10, 3, dtype=torch.long)), TypeError, "floating point"),
        (dict(pos=torch.tensor([[0.0, 0.0, math.inf]] * 10)), ValueError, "pos"),
        (dict(pos=[[0.0, 0.0, 0.0]]), TypeError, "torch.Tensor"),
        (dict(pos=torch.randn(10, 3), tile_points=0), ValueError, "tile_points"),
        (dict(pos=torch.randn(10, 3), halo_hops=-1), ValueError, "halo_hops"),
    ],
)
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        predict_normals(models.build("pca", "pca"), **kwargs)


def test_unknown_model_needs_halo_hops():
    pos = torch.randn(50, 3)
    with pytest.raises(ValueError, match="halo_hops"):
        predict_normals(_NoArch(), pos, tile_points=10)
    out = predict_normals(_NoArch(), pos, tile_points=10, halo_hops=0)
    torch.testing.assert_close(out, normalize_positions(pos, torch.zeros(50, dtype=torch.long))
                               / normalize_positions(pos, torch.zeros(50, dtype=torch.long))
                               .norm(dim=-1, keepdim=True))
    with pytest.raises(TypeError, match="nn.Module"):
        predict_normals(lambda d: d.pos, pos)
