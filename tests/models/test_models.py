import pytest
import torch
from torch_geometric.data import Batch, Data

import models
import tensorframes as tf
from tensorframes.testing import POSITIONS, assert_equivariant

FRAME_FLAVOURS = ("plain", "augment", "pca", "learned", "random", "three_nn")
FRAME_ARCHS = [(arch, f) for arch in ("pointnet2", "dgcnn") for f in FRAME_FLAVOURS]
SMALL = {
    "pointnet2": dict(hidden=("4x0n+2x1n+1x2n", "4x0n+2x1n+1x2n", "4x0n+2x1n+1x2n"), width=16,
                      k=8),
    "dgcnn": dict(hidden="4x0n+2x1n+1x2n", width=16, k=8, num_layers=2),
}


def _batch(n=96, clouds=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(clouds):
        pos = torch.randn(n, 3, generator=gen) * torch.tensor([2.0, 1.0, 0.5])
        pos = pos + 0.3 * pos[:, :1] ** 2 * torch.tensor([0.0, 1.0, 0.0])
        data.append(Data(pos=pos))
    return Batch.from_data_list(data)


def _as_fn(model, batch):
    def fn(pos):
        return model(Batch(pos=pos, batch=batch.batch, ptr=batch.ptr))

    return fn


@pytest.mark.parametrize("arch, flavour", FRAME_ARCHS)
def test_output_shape_and_flags(arch, flavour):
    model = models.build(arch, flavour, **SMALL[arch])
    batch = _batch()
    out = model(batch)
    assert out.shape == (batch.pos.shape[0], 3) and torch.isfinite(out).all()
    assert model.augment == (flavour == "augment")
    assert (model.arch, model.flavour) == (arch, flavour)


@pytest.mark.parametrize("arch, flavour", [a for a in FRAME_ARCHS
                                           if a[1] in ("pca", "learned", "three_nn")])
def test_frame_models_are_o3_equivariant(arch, flavour):
    torch.manual_seed(0)
    model = models.build(arch, flavour, **SMALL[arch]).double()
    batch = _batch()
    report = assert_equivariant(_as_fn(model, batch), (batch.pos,), (POSITIONS,), "1x1n",
                                n_samples=2)
    assert report["output[0]"] < 1e-10


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_plain_models_are_not_equivariant(arch):
    torch.manual_seed(0)
    model = models.build(arch, "plain", **SMALL[arch]).double()
    batch = _batch()
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(_as_fn(model, batch), (batch.pos,), (POSITIONS,), "1x1n",
                           n_samples=2)


def test_build_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown arch"):
        models.build("pointnet3", "pca")
    with pytest.raises(ValueError, match="unknown flavour"):
        models.build("dgcnn", "cg")


def test_nan_positions_raise_naming_the_index():
    model = models.build("dgcnn", "pca", **SMALL["dgcnn"])
    batch = _batch()
    batch.pos[17, 1] = float("nan")
    with pytest.raises(ValueError, match="index 17"):
        model(batch)


def test_pca_normals_exact_on_a_clean_sphere():
    gen = torch.Generator().manual_seed(0)
    pos = torch.nn.functional.normalize(torch.randn(2000, 3, generator=gen, dtype=torch.float64),
                                        dim=-1)
    n = models.pca_normals(Data(pos=pos), k=12)
    err = torch.rad2deg(torch.acos((n * pos).sum(-1).abs().clamp(max=1)))
    assert err.mean() < 4.0  # curvature and sampling only (a wrong axis would give ~57 degrees)


def test_pca_frame_models_start_at_the_pca_estimate():
    """The head is initialised to the frame's third axis: an untrained PCA-frame model is close
    to the PCA estimate (so training learns corrections)."""
    torch.manual_seed(0)
    batch = _batch()
    model = models.build("dgcnn", "pca", **SMALL["dgcnn"])
    with torch.no_grad():
        for p in model.head[-1].parameters():
            p.zero_()
        model.head[-1].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    out = model(batch)
    ref = tf.frames.pca(batch.pos, k=8, batch=batch.batch).matrices[:, 2]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("product", ["cg", "gaunt"])
def test_tp_baseline_is_o3_equivariant(product):
    torch.manual_seed(0)
    model = models.build("tp", product, hidden="4x0e+2x1o+1x2e", k=8).double()
    batch = _batch(n=48)
    out = _as_fn(model, batch)(batch.pos.double())
    assert out.shape == (batch.pos.shape[0], 3)
    report = assert_equivariant(_as_fn(model, batch), (batch.pos,), (POSITIONS,), "1x1o",
                                n_samples=2)
    assert report["output[0]"] < 1e-10


def test_pca_arch_is_the_parameter_free_pca_estimate():
    model = models.build("pca", "pca", k=8)
    assert "pca" in models.ARCHS and isinstance(model, models.PCABaseline)
    assert sum(p.numel() for p in model.parameters()) == 0
    assert (model.arch, model.flavour, model.options, model.augment) == ("pca", "pca", {"k": 8},
                                                                         False)
    batch = _batch()
    torch.testing.assert_close(model(batch), models.pca_normals(batch, k=8), rtol=0, atol=0)
    assert not torch.allclose(model(batch), models.build("pca", "pca", k=24)(batch))
    with pytest.raises(ValueError, match="unknown flavour"):
        models.build("pca", "plain")


def test_load_rebuilds_a_normals_checkpoint(tmp_path):
    from examples._normals_io import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    options = {"hidden": "4x0n+2x1n+1x2n", "width": 16, "k": 8, "num_layers": 2}
    trained = models.build("dgcnn", "pca", **options)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not the initialisation of a fresh build
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "dgcnn", "flavour": "pca",
                "options": options, "model": trained.state_dict(), "epoch": 3}, path)
    torch.manual_seed(1)
    model = models.load(str(path))
    # build stores the message type and the frame update next to the options it was given
    assert (model.arch, model.flavour, model.options) == (
        "dgcnn", "pca", {**options, "messages": "tensor", "update_frames": False})
    assert not model.training
    batch = _batch()
    torch.testing.assert_close(model(batch), trained.eval()(batch), rtol=0, atol=0)

    torch.save({"format": "something else", "model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint of the normals example"):
        models.load(str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot be read"):
        models.load(str(tmp_path / "junk.pt"))


@pytest.mark.parametrize("arch, flavour", [("dgcnn", "pca"), ("pointnet2", "plain"),
                                           ("pointnet2", "learned"), ("pca", "pca")])
def test_outputs_do_not_depend_on_position_and_size_of_each_cloud(arch, flavour):
    """Issue 17, reproducer 1 on the models' input path: large or tiny coordinates overflowed
    (NaN) or underflowed; each cloud is now centred and scaled on entry."""
    torch.manual_seed(0)
    model = models.build(arch, flavour, **SMALL.get(arch, {"k": 8}))
    batch = _batch()
    out0 = model(batch).detach()
    for e in (-100, -40, 40, 100):  # a power of two only changes exponents: bit for bit
        out = model(Batch(pos=batch.pos * 2.0 ** e, batch=batch.batch, ptr=batch.ptr))
        assert torch.equal(out.detach(), out0), e
    shift = torch.tensor([[1.0, -2.0, 0.5]])
    per_cloud = torch.tensor([1e-30, 1e13, 1e20, 1e37])
    for s0, s1 in ((0, 1), (2, 3), (1, 2)):  # two clouds of different sizes in one batch
        s = torch.tensor([per_cloud[s0], per_cloud[s1]])[batch.batch, None]
        out = model(Batch(pos=(batch.pos + shift) * s, batch=batch.batch, ptr=batch.ptr))
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.detach(), out0, atol=2e-3, rtol=0)


def test_check_batch_normalises_each_cloud():
    from models._normalize import check_batch

    batch = _batch()
    pos, b = check_batch(Batch(pos=batch.pos * 1e30 + 3e30, batch=batch.batch, ptr=batch.ptr))
    for c in (0, 1):
        p = pos[b == c].double()
        torch.testing.assert_close(p.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6,
                                   rtol=0)
        assert abs(float(p.norm(dim=1).max()) - 1.0) < 1e-6
    with pytest.raises(TypeError, match="floating point"):
        check_batch(Data(pos=torch.ones(4, 3, dtype=torch.long)))
