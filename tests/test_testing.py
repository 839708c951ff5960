import pytest
import torch

from tensorframes import TensorReps
from tensorframes.testing import POSITIONS, assert_equivariant, random_orthogonal, tolerance


def _cloud(n=20, dtype=torch.float32):
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, generator=gen, dtype=dtype), torch.randn(n, 6, generator=gen,
                                                                      dtype=dtype)


def _cross(pos, x):
    return torch.linalg.cross(x[:, :3], x[:, 3:])


def test_random_orthogonal_is_orthogonal_with_both_dets():
    gen = torch.Generator().manual_seed(0)
    Q = random_orthogonal(200, 4, generator=gen)
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(Q @ Q.transpose(1, 2), eye.expand(200, 4, 4), rtol=0, atol=1e-12)
    det = torch.linalg.det(Q)
    assert 60 < (det < 0).sum() < 140
    assert (torch.linalg.det(random_orthogonal(50, 3, det=-1, generator=gen)) < 0).all()
    assert (torch.linalg.det(random_orthogonal(50, 3, det=1, generator=gen)) > 0).all()


def test_random_orthogonal_is_the_seeded_qr_draw():
    """Same numbers for the same generator as the QR algorithm (first row flipped for ``det``)."""

    def reference(n, d, det, seed):
        a = torch.randn(n, d, d, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        if det is not None:
            wrong = torch.linalg.det(q).sign() != det
            q[wrong, 0] = -q[wrong, 0]
        return q

    for n, d, det, seed in [(9, 3, None, 0), (9, 3, 1, 1), (9, 3, -1, 2), (5, 2, -1, 3),
                            (6, 5, 1, 4)]:
        Q = random_orthogonal(n, d, det=det, generator=torch.Generator().manual_seed(seed))
        assert Q.dtype == torch.float64 and Q.shape == (n, d, d)
        torch.testing.assert_close(Q, reference(n, d, det, seed), rtol=0, atol=1e-14)
    Q32 = random_orthogonal(4, det=-1, generator=torch.Generator().manual_seed(2),
                            dtype=torch.float32, device="cpu")
    assert Q32.dtype == torch.float32
    torch.testing.assert_close(Q32, reference(4, 3, -1, 2).float())
    with pytest.raises(ValueError, match="det must be None, 1 or -1"):
        random_orthogonal(2, det=0)


def test_public_names():
    import tensorframes.testing as tt

    assert sorted(tt.__all__) == sorted(
        ["POSITIONS", "TOLERANCES", "assert_equivariant", "random_orthogonal", "tolerance"]
    )


def test_passes_for_equivariant_function():
    pos, x = _cloud()

    def fn(pos, x):
        centred = pos - pos.mean(0)
        scale = (centred**2).sum(-1, keepdim=True)
        return x * scale, pos.mean(0, keepdim=True), scale

    report = assert_equivariant(fn, (pos, x), (POSITIONS, "2x1n"), ("2x1n", POSITIONS, None))
    assert set(report) == {"output[0]", "output[1]", "output[2]"}
    assert max(report.values()) < tolerance(torch.float64)


def test_catches_pseudovector_declared_as_vector():
    """A cross product is SO(3)- but not O(3)-equivariant as a vector: reflections catch it."""
    pos, x = _cloud()
    with pytest.raises(AssertionError, match=r"output\[0\]"):
        assert_equivariant(_cross, (pos, x), (POSITIONS, "2x1n"), "1x1n")
    assert_equivariant(_cross, (pos, x), (POSITIONS, "2x1n"), "1x1p")


def test_catches_translation_dependence_and_broken_functions():
    pos, x = _cloud()
    with pytest.raises(AssertionError):
        assert_equivariant(lambda pos: pos, (pos,), (POSITIONS,), "1x1n")
    assert_equivariant(lambda pos: pos, (pos,), (POSITIONS,), "1x1n", translations=False)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda x: x + 1.0, (x,), ("2x1n",), "2x1n")


def test_keyword_arguments_and_modules_compared_in_float64():
    pos, x = _cloud()
    lin = torch.nn.Linear(2, 2, bias=False)

    class Mixer(torch.nn.Module):  # mixes the two vectors channel-wise: equivariant
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x.unflatten(-1, (2, 3)).transpose(-1, -2)).transpose(-1, -2).flatten(-2)

    module = Mixer()
    report = assert_equivariant(module, {"x": x}, {"x": TensorReps("2x1n")}, "2x1n")
    assert report["output[0]"] < 1e-12  # float64: far below float32 rounding
    assert module.lin.weight.dtype == torch.float32  # the caller's module is untouched


def test_argument_mismatch_is_a_value_error():
    pos, x = _cloud()
    with pytest.raises(ValueError, match="reps_in"):
        assert_equivariant(_cross, (pos, x), (POSITIONS,), "1x1p")
    with pytest.raises(ValueError, match="cannot parse"):
        assert_equivariant(_cross, (pos, x), (POSITIONS, "2x1q"), "1x1p")
