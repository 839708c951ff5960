import pytest
import torch

from tensorframes import Irreps
from tensorframes.o3 import wigner_3j
from tensorframes.testing import random_orthogonal

o3 = pytest.importorskip("e3nn.o3")

TRIPLES = [(l1, l2, l3) for l1 in range(4) for l2 in range(4)
           for l3 in range(abs(l1 - l2), l1 + l2 + 1)]


@pytest.mark.parametrize("l1,l2,l3", TRIPLES)
def test_equals_e3nn(l1, l2, l3):
    ours = wigner_3j(l1, l2, l3, dtype=torch.float64)
    ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    assert (ours - ref).abs().max() < 1e-10
    assert abs(ours.norm() - 1) < 1e-12


@pytest.mark.parametrize("l1,l2,l3", [(10, 10, 20), (10, 7, 5), (9, 10, 1)])
def test_high_degrees_match_e3nn(l1, l2, l3):
    ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    assert (wigner_3j(l1, l2, l3, dtype=torch.float64) - ref).abs().max() < 1e-10


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 1), (2, 3, 4), (3, 3, 2)])
def test_invariant_under_o3(l1, l2, l3):
    C = wigner_3j(l1, l2, l3, dtype=torch.float64)
    R = random_orthogonal(3, det=1, generator=torch.Generator().manual_seed(1))
    for r in R:
        D = [Irreps(f"{l}y").D_from_matrix(r) for l in (l1, l2, l3)]
        C2 = torch.einsum("abc,ai,bj,ck->ijk", C, *D)
        assert (C2 - C).abs().max() < 1e-10


def test_cache_not_mutated_and_cast():
    a = wigner_3j(2, 2, 2, dtype=torch.float32)
    a.zero_()
    b = wigner_3j(2, 2, 2, dtype=torch.float64)
    assert b.dtype == torch.float64 and b.abs().max() > 0
    assert wigner_3j(1, 1, 0).dtype == torch.get_default_dtype()


def test_triangle_violation_raises():
    with pytest.raises(ValueError, match="triangle"):
        wigner_3j(0, 1, 3)
    with pytest.raises(ValueError):
        wigner_3j(-1, 1, 1)
