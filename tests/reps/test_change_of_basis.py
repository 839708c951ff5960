import pytest
import torch

from tensorframes import Irreps, TensorReps
from tensorframes.reps.change_of_basis import order_decomposition
from tensorframes.testing import random_orthogonal

EXPECTED_LS = {
    0: (0,),
    1: (1,),
    2: (0, 1, 2),
    3: (0, 1, 1, 1, 2, 2, 3),
    4: (0, 0, 0) + (1,) * 6 + (2,) * 6 + (3,) * 3 + (4,),
}


@pytest.mark.parametrize("k", sorted(EXPECTED_LS))
def test_order_decomposition_is_orthogonal_with_the_right_irreps(k):
    ls, Q = order_decomposition(k)
    assert ls == EXPECTED_LS[k]
    torch.testing.assert_close(Q @ Q.T, torch.eye(3**k, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", sorted(EXPECTED_LS))
@pytest.mark.parametrize("parity", ["n", "p"])
def test_cartesian_equals_conjugated_irreps(k, parity):
    """rho_cart(R) = Q^T rho_irr(R) Q for R in O(3), det -1 included, orders 0..4."""
    reps = TensorReps(f"2x{k}{parity}")
    irreps, Q = reps.to_irreps()
    sign = (-1) ** k * (1 if parity == "n" else -1)
    assert all(ir.p == sign for _, ir in irreps)
    assert irreps.dim == reps.dim
    R = random_orthogonal(16, 3, generator=torch.Generator().manual_seed(k))
    assert (torch.linalg.det(R) < 0).any()
    lhs = reps.matrix(R)
    rhs = Q.T @ irreps.D_from_matrix(R) @ Q
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-10)


def test_examples_from_the_docs():
    irreps, Q = TensorReps("1x2n").to_irreps()
    assert irreps == Irreps("1x0e+1x1e+1x2e")
    assert TensorReps("1x2p").to_irreps()[0] == Irreps("1x0o+1x1o+1x2o")
    irreps, Q = TensorReps("3x1n").to_irreps()
    assert irreps == Irreps("3x1o")
    # e3nn's l=1 basis is (x, y, z): vectors need no change of basis at all
    torch.testing.assert_close(Q, torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-12)


def test_order_two_meaning():
    """0e is the trace, 1e the antisymmetric part, 2e the symmetric traceless part."""
    _, Q = TensorReps("1x2n").to_irreps()
    eye = torch.eye(3, dtype=torch.float64).flatten()
    A = torch.randn(3, 3, dtype=torch.float64)
    sym, anti = (A + A.T).flatten(), (A - A.T).flatten()
    torch.testing.assert_close((Q @ eye)[1:], torch.zeros(8, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close((Q @ eye)[0], torch.tensor(3**0.5, dtype=torch.float64))
    torch.testing.assert_close((Q @ sym)[1:4], torch.zeros(3, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    torch.testing.assert_close((Q @ anti)[[0, 4, 5, 6, 7, 8]],
                               torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)


def test_mixed_reps_transform_through_irreps():
    reps = TensorReps("2x0n+1x1p+2x2n+1x2p+1x3n")
    irreps, Q = reps.to_irreps()
    R = random_orthogonal(8, 3, generator=torch.Generator().manual_seed(9))
    x = torch.randn(8, reps.dim, dtype=torch.float64)
    via_irreps = irreps.transform(x @ Q.T, R) @ Q
    torch.testing.assert_close(via_irreps, reps.transform(x, R), rtol=0, atol=1e-10)


def test_only_in_three_dimensions():
    with pytest.raises(ValueError, match="spatial_dim=3"):
        TensorReps("1x2n", spatial_dim=2).to_irreps()
