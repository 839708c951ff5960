import pytest
import torch

import tensorframes as tf
from tensorframes.frames import Frames


def _rand(n, dtype=torch.float64):
    return tf.frames.random(n, generator=torch.Generator().manual_seed(0), dtype=dtype)


def test_exported():
    assert tf.Frames is Frames
    for name in ("pca", "gram_schmidt", "LearnedFrames", "identity", "random", "random_global"):
        assert hasattr(tf.frames, name)
        assert name in tf.frames.__all__


def test_internals_are_private():
    for name in ("eigh3", "GAP_TOL", "SKEW_TOL"):
        assert name not in tf.frames.__all__
        assert not hasattr(tf.frames, name), name


def _qr_haar(n, d, generator):
    """Reference: QR of a Gaussian matrix with the signs of diag(R) moved into Q (float64)."""
    a = torch.randn(n, d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def test_random_frames_follow_the_seeded_haar_draw():
    f = tf.frames.random(7, d=4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    torch.testing.assert_close(f.matrices, _qr_haar(7, 4, torch.Generator().manual_seed(11)),
                               rtol=0, atol=1e-14)
    batch = torch.tensor([0, 0, 2, 1, 2])
    g = tf.frames.random_global(batch, generator=torch.Generator().manual_seed(4),
                                dtype=torch.float64)
    ref = _qr_haar(3, 3, torch.Generator().manual_seed(4))
    torch.testing.assert_close(g.matrices, ref[batch], rtol=0, atol=1e-14)


def test_basic_properties_and_repr():
    f = _rand(5)
    assert len(f) == 5 and f.spatial_dim == 3 and f.dtype == torch.float64
    assert f.device.type == "cpu"
    assert f.matrices.shape == (5, 3, 3)
    r = repr(f)
    assert "n=5" in r and "d=3" in r and "float64" in r


def test_no_copy_and_lazy_det():
    m = _rand(4).matrices
    f = Frames(m)
    assert f.matrices is m
    assert f._det is None
    d = f.det
    assert f._det is d
    torch.testing.assert_close(d, torch.linalg.det(m))
    assert set(d.round().tolist()) <= {1.0, -1.0}


def test_inv_composition_and_apply():
    a, b = _rand(6), tf.frames.random(6, generator=torch.Generator().manual_seed(1),
                                      dtype=torch.float64)
    ab = a @ b
    assert isinstance(ab, Frames)
    torch.testing.assert_close(ab.matrices, torch.bmm(a.matrices, b.matrices))
    eye = (a @ a.inv).matrices
    torch.testing.assert_close(eye, torch.eye(3, dtype=torch.float64).expand(6, 3, 3))
    torch.testing.assert_close(a.inv.det, a.det)
    v = torch.randn(6, 3, dtype=torch.float64)
    out = a @ v
    torch.testing.assert_close(out, torch.einsum("nij,nj->ni", a.matrices, v))
    m = torch.randn(6, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(a @ m, a.matrices @ m)
    mt = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(mt @ a, mt @ a.matrices)
    with pytest.raises(ValueError, match="batch size"):
        a @ torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError):
        a @ torch.randn(6, 4, dtype=torch.float64)


def test_index_select_and_getitem():
    f = _rand(7)
    f.det
    idx = torch.tensor([3, 0, 3])
    g = f.index_select(idx)
    torch.testing.assert_close(g.matrices, f.matrices[idx])
    torch.testing.assert_close(g.det, f.det[idx])
    torch.testing.assert_close(f[idx].matrices, f.matrices[idx])
    torch.testing.assert_close(f[1:4].matrices, f.matrices[1:4])
    mask = torch.tensor([True, False] * 3 + [True])
    assert len(f[mask]) == 4
    assert len(f[2]) == 1 and len(f[-1]) == 1
    torch.testing.assert_close(f[-1].matrices[0], f.matrices[-1])
    with pytest.raises(IndexError):
        f[7]


def test_to():
    f = _rand(3)
    assert f.to(torch.float64) is f
    g = f.to(torch.float32)
    assert g.dtype == torch.float32 and len(g) == 3


def test_validate():
    f = _rand(4)
    assert f.validate() is f
    Frames(f.matrices, validate=True)
    m = f.matrices.clone()
    m[2, 0, 0] += 1e-3
    with pytest.raises(ValueError, match="frame 2 is not orthogonal"):
        Frames(m, validate=True)
    Frames(m, validate=True, atol=1e-2)  # loose tolerance accepts it
    m = f.matrices.clone()
    m[1, 1, 2] = float("nan")
    m[3, 1, 2] = float("inf")
    with pytest.raises(ValueError, match="frame 1 has non-finite"):
        Frames(m).validate()
    # float32 default tolerance
    Frames(f.matrices.float(), validate=True)


def test_bad_inputs():
    with pytest.raises(TypeError):
        Frames([[1.0]])
    with pytest.raises(ValueError):
        Frames(torch.zeros(3, 3))
    with pytest.raises(ValueError):
        Frames(torch.zeros(2, 3, 2))
    with pytest.raises(TypeError):
        Frames(torch.zeros(2, 3, 3, dtype=torch.long))


def test_baselines():
    f = tf.frames.identity(4, dtype=torch.float64)
    torch.testing.assert_close(f.matrices, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    r1 = tf.frames.random(2000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    r2 = tf.frames.random(2000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(r1.matrices, r2.matrices)
    r1.validate()
    dets = r1.det
    frac = (dets < 0).double().mean().item()
    assert 0.4 < frac < 0.6, frac  # reflections half of the time
    # Haar: the mean of a Haar-random orthogonal matrix is zero
    assert r1.matrices.mean(0).abs().max() < 0.06
    r4 = tf.frames.random(10, d=4, dtype=torch.float64)
    r4.validate()
    batch = torch.tensor([0, 0, 1, 1, 1, 2])
    gl = tf.frames.random_global(batch, generator=torch.Generator().manual_seed(0))
    assert len(gl) == 6 and gl.dtype == torch.float32
    gl.validate()
    torch.testing.assert_close(gl.matrices[0], gl.matrices[1])
    torch.testing.assert_close(gl.matrices[2], gl.matrices[4])
    assert (gl.matrices[0] - gl.matrices[2]).abs().max() > 1e-3
