import itertools
import math

import pytest
import torch

from tensorframes import TensorReps
from tensorframes.reps._tensor_power import tensor_power_matrix
from tensorframes.testing import random_orthogonal, tolerance

DIMS = (2, 3, 4)
DTYPES = (torch.float32, torch.float64)
REPS = "2x0n + 1x0p + 3x1n + 2x1p + 2x2n + 1x2p + 1x3n + 1x4p"


def _rand_O(n, d, dtype=torch.float64, seed=0, det=None):
    gen = torch.Generator().manual_seed(seed)
    return random_orthogonal(n, d, det=det, generator=gen, dtype=dtype)


# --- parsing and value semantics -----------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, dim3",
    [
        ("16x0n + 8x1n + 2x1p + 4x2n", 16 + 24 + 6 + 36),
        ("0n", 1),
        ("1p", 3),
        ("3x3n", 81),
        ("", 0),
        ("0x1n+2x0p", 2),
    ],
)
def test_parse_dim_and_repr_round_trip(spec, dim3):
    reps = TensorReps(spec)
    assert reps.dim == dim3
    assert eval(repr(reps), {"TensorReps": TensorReps}) == reps
    assert TensorReps(str(reps)) == reps
    assert hash(TensorReps(str(reps))) == hash(reps)


def test_repr_keeps_spatial_dim():
    reps = TensorReps("2x1n+1x2p", spatial_dim=4)
    assert repr(reps) == "TensorReps('2x1n+1x2p', spatial_dim=4)"
    assert eval(repr(reps), {"TensorReps": TensorReps}) == reps
    assert reps.dim == 2 * 4 + 16
    assert reps != TensorReps("2x1n+1x2p")  # same string, other d


@pytest.mark.parametrize("bad", ["3x1q", "x1n", "-1x0n", "1x-1n", "2y1n", "1n +", "1.5x1n"])
def test_malformed_strings_name_the_token(bad):
    token = next(t.strip() for t in bad.split("+") if not _ok(t.strip()))
    with pytest.raises(ValueError, match=f"'{_escape(token)}'"):
        TensorReps(bad)


def _ok(token):
    try:
        TensorReps(token)
        return token != ""
    except ValueError:
        return False


def _escape(s):
    import re

    return re.escape(s)


def test_bad_spatial_dim():
    with pytest.raises(ValueError, match="spatial_dim"):
        TensorReps("1x1n", spatial_dim=1)


def test_immutable():
    reps = TensorReps("1x1n")
    with pytest.raises(AttributeError):
        reps._d = 4


def test_add_mul_simplify_sort_count_slices():
    a, b = TensorReps("2x1n+1x0n"), TensorReps("1x0n+3x2p")
    assert a + b == TensorReps("2x1n+1x0n+1x0n+3x2p")
    assert (a + b).simplify() == TensorReps("2x1n+2x0n+3x2p")
    assert "1x0n" + a == TensorReps("1x0n+2x1n+1x0n")
    assert 2 * a == TensorReps("2x1n+1x0n+2x1n+1x0n")
    assert TensorReps("0x1n+1x1n+2x1n").simplify() == TensorReps("3x1n")
    reps = TensorReps("1x2p+1x1n+2x0p+1x0n+3x2n")
    s = reps.sort()
    assert s.reps == TensorReps("1x0n+2x0p+1x1n+3x2n+1x2p")
    assert [reps[i] for i in s.inv] == list(s.reps)
    assert all(s.reps[s.p[i]] == reps[i] for i in range(len(reps)))
    assert reps.count("2p") == 1 and reps.count("0p") == 2 and reps.count("3n") == 0
    assert reps.slices() == [slice(0, 9), slice(9, 12), slice(12, 14), slice(14, 15),
                             slice(15, 42)]
    with pytest.raises(ValueError, match="spatial_dim"):
        a + TensorReps("1x1n", spatial_dim=2)


def test_construct_from_tuples():
    assert TensorReps([(2, (1, "n")), (1, "0p"), "3x2n"]) == TensorReps("2x1n+1x0p+3x2n")
    with pytest.raises(ValueError):
        TensorReps([(1, (1, "q"))])
    with pytest.raises(TypeError):
        TensorReps(5)


# --- the action ----------------------------------------------------------------------------------


def _reference_matrix(reps, R):
    """Dense rho(R) built independently: Kronecker powers via torch.kron, block by block."""
    blocks = []
    for mul, rep in reps:
        M = torch.ones(1, 1, dtype=R.dtype)
        for _ in range(rep.order):
            M = torch.kron(M, R)
        if rep.parity == "p":
            M = M * torch.linalg.det(R)
        blocks += [M] * mul
    return torch.block_diag(*blocks)


@pytest.mark.parametrize("d", DIMS)
def test_matrix_equals_kronecker_reference(d):
    reps = TensorReps(REPS, spatial_dim=d)
    R = _rand_O(4, d)
    dense = reps.matrix(R)
    for i in range(4):
        torch.testing.assert_close(dense[i], _reference_matrix(reps, R[i]), rtol=0, atol=1e-12)


def test_order_one_and_two_meaning():
    """A vector maps to R v, a matrix to R X R^T, a pseudo-vector to det(R) R v."""
    R = _rand_O(3, 3, det=-1)
    v = torch.randn(3, 3, dtype=torch.float64)
    X = torch.randn(3, 3, 3, dtype=torch.float64)
    reps = TensorReps("1x1n+1x2n+1x1p")
    x = torch.cat([v, X.flatten(-2), v], -1)
    y = reps.transform(x, R)
    Rv = torch.einsum("nij,nj->ni", R, v)
    torch.testing.assert_close(y[:, :3], Rv, rtol=0, atol=1e-12)
    torch.testing.assert_close(y[:, 3:12], (R @ X @ R.transpose(1, 2)).flatten(-2), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(y[:, 12:], -Rv, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d, dtype", list(itertools.product(DIMS, DTYPES)))
def test_transform_equals_matrix(d, dtype):
    reps = TensorReps(REPS, spatial_dim=d)
    R = _rand_O(64, d, dtype=dtype)
    x = torch.randn(64, reps.dim, dtype=dtype)
    expected = torch.einsum("nij,nj->ni", reps.matrix(R.double()), x.double())
    y = reps.transform(x, R)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=tolerance(dtype) * 10)


@pytest.mark.parametrize("d, dtype", list(itertools.product(DIMS, DTYPES)))
def test_homomorphism_and_transpose(d, dtype):
    """rho(AB) = rho(A) rho(B) and rho(R^T) = rho(R)^T, with det -1 included."""
    reps = TensorReps(REPS, spatial_dim=d)
    A, B = _rand_O(32, d, dtype, seed=1), _rand_O(32, d, dtype, seed=2)
    assert (torch.linalg.det(A.double()) < 0).any() and (torch.linalg.det(A.double()) > 0).any()
    x = torch.randn(32, reps.dim, dtype=dtype)
    tol = tolerance(dtype) * 10
    lhs = reps.transform(x, A @ B)
    rhs = reps.transform(reps.transform(x, B), A)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=tol)
    M = reps.matrix(A)
    torch.testing.assert_close(reps.matrix(A.transpose(-1, -2)), M.transpose(-1, -2), rtol=0,
                               atol=tol)
    # orthogonality of the representation: rho(R^T) undoes rho(R)
    back = reps.transform(reps.transform(x, A), A.transpose(-1, -2))
    torch.testing.assert_close(back, x, rtol=0, atol=tol)


def test_broadcasting_leading_shapes():
    reps = TensorReps("2x0n+1x1n+1x2p")
    R = _rand_O(5, 3)
    x = torch.randn(7, 1, reps.dim, dtype=torch.float64)
    y = reps.transform(x, R)  # (7, 1) against (5,) -> (7, 5)
    assert y.shape == (7, 5, reps.dim)
    for i, j in [(0, 0), (3, 4), (6, 2)]:
        torch.testing.assert_close(y[i, j], reps.matrix(R[j]) @ x[i, 0], rtol=0, atol=1e-12)
    # one matrix for all features
    y1 = reps.transform(x[:, 0], R[0])
    torch.testing.assert_close(y1, x[:, 0] @ reps.matrix(R[0]).T, rtol=0, atol=1e-12)


def test_scalars_only_and_empty():
    R = _rand_O(4, 3, det=-1)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(TensorReps("3x0n").transform(x, R), x)
    torch.testing.assert_close(TensorReps("3x0p").transform(x, R), -x)
    assert TensorReps("").transform(torch.zeros(4, 0, dtype=torch.float64), R).shape == (4, 0)


def test_differentiable():
    reps = TensorReps("1x1n+1x2p")
    R = _rand_O(3, 3).requires_grad_(True)
    x = torch.randn(3, reps.dim, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, R: reps.transform(x, R), (x, R))
    # gradient to x only: order 2 takes the R (x) R matmul path
    assert torch.autograd.gradcheck(lambda x: reps.transform(x, R.detach()), (x,))


def test_order2_paths_agree():
    """Order 2 runs two contractions when R needs a gradient, one R (x) R matmul otherwise."""
    reps = TensorReps("3x2n+2x2p")
    R = _rand_O(5, 3)
    x = torch.randn(5, reps.dim, dtype=torch.float64)
    with_grad = reps.transform(x, R.clone().requires_grad_(True))
    without = reps.transform(x, R)
    torch.testing.assert_close(with_grad.detach(), without, atol=1e-12, rtol=0)
    torch.testing.assert_close(without, (reps.matrix(R) @ x[..., None])[..., 0], atol=1e-12,
                               rtol=0)


def test_tensor_power_matrix_dims():
    R = _rand_O(2, 3)
    assert tensor_power_matrix(R, 0).shape == (2, 1, 1)
    assert tensor_power_matrix(R, 3).shape == (2, 27, 27)
    assert math.isclose(torch.linalg.det(tensor_power_matrix(R, 2)[0]).abs().item(), 1.0)


# --- bad input -----------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    reps = TensorReps("2x1n")
    R = _rand_O(4, 3)
    with pytest.raises(ValueError, match="feature width mismatch.*dim 6"):
        reps.transform(torch.randn(4, 5, dtype=torch.float64), R)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        reps.transform(torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        reps.matrix(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        reps.transform(torch.randn(4, 6), R)
    with pytest.raises(TypeError, match="torch.Tensor"):
        reps.transform([1.0] * 6, R)
