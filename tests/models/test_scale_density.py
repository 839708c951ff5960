"""Every model of ``models.build``: predictions independent of the cloud's scale and placement;
TP: neighbourhood scales that follow the sampling density."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

import models
import tensorframes as tf
from models.tp import neighbourhood_radius
from tensorframes.data._synthetic import generate_cloud

SMALL = {
    "pointnet2": dict(hidden=("4x0n+2x1n+1x2n",) * 3, width=16, k=8),
    "dgcnn": dict(hidden="4x0n+2x1n+1x2n", width=16, k=8, num_layers=2),
    "tp": dict(hidden="4x0e+2x1o+1x2e", num_layers=2, k=8),
    "pca": dict(k=8),
}
ALL = [(arch, flavour) for arch in models.ARCHS for flavour in models.FLAVOURS[arch]]


def _cloud(n, name="torus", seed=3, dtype=torch.float64):
    c = generate_cloud(name, np.random.SeedSequence(seed), num_points=n, noise=0.005)
    return torch.tensor(c["pos"], dtype=dtype)


def _angle(a, b):
    """Unoriented angle in degrees, accurate near 0."""
    return torch.rad2deg(torch.atan2(torch.linalg.cross(a, b).norm(dim=-1),
                                     (a * b).sum(-1).abs()))


def _call(model, pos):
    torch.manual_seed(1)  # flavour "random" draws its frames per call: the same ones each time
    with torch.no_grad():
        return model(Data(pos=pos))


def _build(arch, flavour, dtype):
    torch.manual_seed(0)
    model = models.build(arch, flavour, **SMALL[arch]).to(dtype)
    return model.eval()


@pytest.mark.parametrize("arch, flavour", ALL)
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_scale_and_translation_change_no_prediction_float64(arch, flavour, scale):
    model = _build(arch, flavour, torch.float64)
    pos = _cloud(160)
    shift = torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64)
    ref = _call(model, pos)
    got = _call(model, pos * scale + scale * shift)
    assert torch.isfinite(ref).all()
    # the raw output vectors, not only their directions, to float64 round-off
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


@pytest.mark.parametrize("arch, flavour", ALL)
def test_scale_and_translation_float32(arch, flavour):
    model = _build(arch, flavour, torch.float32)
    pos = _cloud(160, dtype=torch.float32)
    ref = _call(model, pos)
    for scale in (1e-3, 1e3):
        got = _call(model, pos * scale + scale * torch.tensor([1.0, 2.0, -1.0]))
        assert float(_angle(got, ref).mean()) < 1e-2, (arch, flavour, scale)


# ------------------------------------------------------------------ density (TP)
def test_neighbourhood_radius_is_the_kth_neighbour_distance():
    pos = _cloud(200)
    ei = tf.graph.knn_graph(pos, 8)
    got = neighbourhood_radius(pos, ei)
    d = torch.cdist(pos, pos)
    d.fill_diagonal_(float("inf"))
    ref = d.topk(8, largest=False).values[:, -1]
    torch.testing.assert_close(got, ref)
    # coincident points: radius 1 (no division by zero)
    same = torch.zeros(5, 3, dtype=torch.float64)
    assert torch.equal(neighbourhood_radius(same, tf.graph.knn_graph(same, 3)),
                       torch.ones(5, dtype=torch.float64))


def test_tp_radial_inputs_follow_the_sampling_density():
    """The same shape at 256 and 2,048 points: edge lengths in units of the cloud's radius
    shrink by ~sqrt(8), those TP's radial features see (units of the neighbourhood radius) do
    not."""
    stats = {}
    for n in (256, 2048):
        pos = _cloud(n, name="ellipsoid", seed=5)
        pos = (pos - pos.mean(0)) / (pos - pos.mean(0)).norm(dim=-1).max()
        ei = tf.graph.knn_graph(pos, 16)
        length = (pos[ei[0]] - pos[ei[1]]).norm(dim=-1)
        stats[n] = (float(length.median()),
                    float((length / neighbourhood_radius(pos, ei)[ei[1]]).median()))
    raw_ratio = stats[256][0] / stats[2048][0]
    scaled_ratio = stats[256][1] / stats[2048][1]
    assert raw_ratio > 2.3  # what the old per-cloud scale fed the radial basis
    assert abs(scaled_ratio - 1) < 0.05


def test_tp_output_depends_on_the_neighbourhood_only_not_on_the_cloud_extent():
    """A patch with a far cluster at distance 3 or 30: the cloud's radius (and so the patch's
    size in normalised coordinates) changes tenfold; the patch's predictions must not."""
    model = _build("tp", "cg", torch.float64)
    patch = _cloud(150, name="ellipsoid", seed=1)
    far = _cloud(60, name="torus", seed=2) * 0.3
    outs = []
    for d in (3.0, 30.0):
        pos = torch.cat([patch, far + torch.tensor([d, 0.0, 0.0], dtype=torch.float64)])
        with torch.no_grad():
            outs.append(model(Data(pos=pos))[:150])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-9 * float(outs[0].abs().max()))


def test_tp_each_cloud_of_a_batch_uses_its_own_scales():
    model = _build("tp", "cg", torch.float64)
    a, b = _cloud(100, seed=1), _cloud(120, name="ellipsoid", seed=2)
    with torch.no_grad():
        both = model(Batch.from_data_list([Data(pos=a), Data(pos=b * 1e3)]))
        alone = torch.cat([model(Data(pos=a)), model(Data(pos=b))])
    torch.testing.assert_close(both, alone, rtol=1e-9, atol=1e-9 * float(alone.abs().max()))


# ------------------------------------------------------------------ the density command
def test_density_command_on_a_pca_row(tmp_path):
    """``density`` on a compare folder holding only the PCA row: table, JSON and files."""
    import argparse
    import json

    from examples import _normals_density as density

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = dict(data="synthetic", root=str(tmp_path / "data"), num_shapes=4, num_test_shapes=2,
                  num_points=64, noise=0.01, pose="canonical", batch_size=2, eval_seed=1234)
    rows = [dict(key="pca", label="PCA normal estimate", arch="pca", flavour="pca",
                 options={"k": 8})]
    (run_dir / "results.json").write_text(json.dumps({"config": config, "rows": rows}))
    parser = argparse.ArgumentParser()
    density.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["density", str(run_dir), "--points", "32,16", "--out",
                              str(tmp_path / "out"), "--device", "cpu"])
    assert args.points == [16, 32]
    assert args.func(args) == 0
    got = json.loads((tmp_path / "out" / "density.json").read_text())
    errs = got["rows"][0]["errors"]
    assert set(errs) == {"16", "32"} and all(0 < v < 90 for v in errs.values())
    assert errs["32"] < errs["16"]  # PCA with k=8 improves with more points
    table = (tmp_path / "out" / "density.md").read_text()
    assert "| model | 16 | 32 |" in table and "| PCA normal estimate | " in table
    with pytest.raises(SystemExit):
        parser.parse_args(["density", str(run_dir), "--points", "8,x"])
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        density.find_models(str(tmp_path / "out"))
