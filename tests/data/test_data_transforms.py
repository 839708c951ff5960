import types

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from tensorframes._math import haar_orthogonal
from tensorframes.data import CenterScale, Jitter, RandomO3, SyntheticShapes
from tensorframes.data import _shapes as S

AXES = np.array([1.2, 0.5, 0.8])


def ellipsoid_data(n=500):
    p, nrm, _ = S.Ellipsoid(AXES).sample(np.random.default_rng(0), n)
    return Data(pos=torch.from_numpy(p), normal=torch.from_numpy(nrm))


def test_random_o3_keeps_pos_and_normal_consistent():
    data = ellipsoid_data()
    t = RandomO3(store=True, seed=3)
    dets = []
    for _ in range(16):
        out = t(data)
        Q = out.rotation[0]
        assert torch.allclose(Q @ Q.T, torch.eye(3, dtype=Q.dtype), atol=1e-12)
        dets.append(round(torch.linalg.det(Q).item()))
        p, n = out.pos @ Q, out.normal @ Q  # transform back
        assert torch.allclose(p, data.pos, atol=1e-12)
        F = ((p / torch.from_numpy(AXES)) ** 2).sum(1) - 1
        assert F.abs().max() < 1e-5
        grad = 2 * p / torch.from_numpy(AXES) ** 2
        cos = (n * grad).sum(1) / grad.norm(dim=1)
        assert cos.min() > 1 - 1e-9
        # a transformed normal is still orthogonal to the transformed surface
        assert torch.allclose((out.pos * out.normal).sum(1), (data.pos * data.normal).sum(1))
    assert dets.count(-1) >= 4 and dets.count(1) >= 4
    assert torch.equal(data.pos, ellipsoid_data().pos)  # input untouched


def test_random_o3_rotations_only_and_seeding():
    data = ellipsoid_data(10).to_dict()
    data = Data(**{k: v.float() for k, v in data.items()})
    t = RandomO3(reflections=False, store=True, seed=1)
    assert all(torch.linalg.det(t(data).rotation[0].double()) > 0 for _ in range(20))
    a, b = RandomO3(seed=5), RandomO3(seed=5)
    assert torch.equal(a(data).pos, b(data).pos)
    assert not torch.equal(a(data).pos, RandomO3(seed=6)(data).pos)
    assert a(data).pos.dtype == torch.float32 and not hasattr(a(data), "rotation")
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(RandomO3(generator=g1)(data).pos, RandomO3(generator=g2)(data).pos)
    state = torch.random.get_rng_state()
    RandomO3()(data)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_random_o3_draws_haar_orthogonal_from_its_generator():
    eye = torch.eye(3, dtype=torch.float64)
    for reflections, det in ((True, None), (False, 1)):
        g = torch.Generator().manual_seed(21)
        t = RandomO3(reflections, store=True, generator=torch.Generator().manual_seed(21))
        for _ in range(4):
            q = haar_orthogonal(1, 3, det=det, generator=g)[0]
            out = t(Data(pos=eye.clone()))
            assert torch.equal(out.rotation[0], q) and torch.equal(out.pos, eye @ q.T)


# The first draws of RandomO3(seed=2): one improper, one proper. Pinned, so that a change of
# the sampler, of the seeding or of the generator derivation fails here.
PINNED_O3 = [
    [[0.94604349, 0.01674498, 0.3236067], [-0.32260406, -0.04522974, 0.94545275],
     [-0.03046823, 0.99883628, 0.0373873]],
    [[-0.26934373, -0.8791731, 0.39307582], [-0.3758111, -0.27984634, -0.88343197],
     [0.88669044, -0.38566911, -0.25502816]],
]


def test_random_o3_seeded_draws_are_pinned():
    t = RandomO3(store=True, seed=2)
    got = torch.stack([t(Data(pos=torch.eye(3))).rotation[0] for _ in range(2)])
    torch.testing.assert_close(got, torch.tensor(PINNED_O3), rtol=0, atol=1e-6)
    assert [round(float(torch.linalg.det(q.double()))) for q in got] == [-1, 1]


def test_random_o3_workers_draw_differently(monkeypatch):
    data = ellipsoid_data(10)
    main = RandomO3(seed=0, store=True)(data).rotation
    for wseed in (11, 12):
        info = types.SimpleNamespace(seed=wseed, id=wseed - 11)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        r = RandomO3(seed=0, store=True)(data).rotation
        assert not torch.allclose(r, main)
        assert torch.equal(r, RandomO3(seed=0, store=True)(data).rotation)


def test_center_scale():
    data = ellipsoid_data()
    data.pos = data.pos * 3 + torch.tensor([1.0, -2.0, 5.0], dtype=torch.float64)
    out = CenterScale()(data)
    assert torch.allclose(out.pos.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.isclose(out.pos.norm(dim=1).max(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(out.normal, data.normal)
    # batched: same as per graph
    other = ellipsoid_data(7)
    batch = Data(
        pos=torch.cat([data.pos, other.pos * 0.1]),
        batch=torch.cat([torch.zeros(500), torch.ones(7)]).long(),
    )
    out_b = CenterScale()(batch)
    assert torch.allclose(out_b.pos[:500], out.pos)
    assert torch.allclose(out_b.pos[500:], CenterScale()(Data(pos=other.pos * 0.1)).pos)


def test_jitter():
    data = Data(pos=torch.zeros(5000, 3), normal=torch.eye(3)[[2] * 5000])
    out = Jitter(0.01, clip=0.02, seed=0)(data)
    assert out.pos.abs().max() <= 0.02 and out.pos.std() > 0.008
    assert torch.equal(out.normal, data.normal)
    wide = Jitter(0.01, clip=None, seed=0)(data)
    assert abs(wide.pos.std().item() - 0.01) < 5e-4
    assert torch.equal(Jitter(0.01, seed=2)(data).pos, Jitter(0.01, seed=2)(data).pos)
    with pytest.raises(ValueError):
        Jitter(-1.0)
    with pytest.raises(ValueError):
        Jitter(0.1, clip=0.0)


def test_dataloader_batches(tmp_path):
    ds = SyntheticShapes(
        tmp_path, num_shapes=6, num_points=128, transform=RandomO3(seed=0, store=True)
    )
    loader = DataLoader(ds, batch_size=4, shuffle=False)
    batches = list(loader)
    assert [b.num_graphs for b in batches] == [4, 2]
    b = batches[0]
    assert b.pos.shape == (512, 3) and b.normal.shape == (512, 3)
    assert torch.equal(b.batch, torch.arange(4).repeat_interleave(128))
    assert b.y.shape == (4,) and b.rotation.shape == (4, 3, 3)
    assert b.pose_rotation.shape == (4, 3, 3) and b.is_outlier.shape == (512,)
    assert (b.normal.double().norm(dim=1) - 1).abs().max() < 1e-5
