import pytest

from tensorframes.o3 import (
    FullyConnectedTensorProduct,
    GauntTensorProduct,
    VectorGauntTensorProduct,
    expressivity,
    interactions,
)
from tensorframes.o3._expressivity import LocalFrameBilinear


def _sh(L):
    return "+".join(f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L + 1))


def _out(L):
    return "+".join(f"{l}e+{l}o" for l in range(2 * L + 1))


def _unordered(inter):
    return {(min(a, b), max(a, b), c) for a, b, c in inter}


def _allowed(L):
    return {(a, b, c) for a in range(L + 1) for b in range(L + 1)
            for c in range(abs(a - b), a + b + 1)}


@pytest.mark.parametrize("L,n_paths,n_unordered", [(1, 6, 5), (2, 19, 14)])
def test_cg_realises_every_path(L, n_paths, n_unordered):
    op = FullyConnectedTensorProduct(_sh(L), _sh(L), _out(L))
    assert expressivity(op) == n_paths == len(_allowed(L))
    inter = interactions(op)
    assert {(a.l, b.l, c.l) for a, b, c in inter} == _allowed(L)
    assert len(_unordered(inter)) == n_unordered  # the 5 / 14 / 30 count


@pytest.mark.parametrize("L", [1, 2])
def test_gaunt_only_even_paths_and_vector_gaunt_recovers_odd(L):
    g = GauntTensorProduct(_sh(L), _sh(L), _out(L), channels=1)
    inter = {(a.l, b.l, c.l) for a, b, c in interactions(g)}
    assert inter == {t for t in _allowed(L) if sum(t) % 2 == 0}
    assert expressivity(g) == 4 * L + 1  # linear in L: bounded by the linear-layer parameters
    vg = VectorGauntTensorProduct(_sh(L), _sh(L), _out(L), channels=1)
    assert {(a.l, b.l, c.l) for a, b, c in interactions(vg)} == _allowed(L)
    assert expressivity(g) < expressivity(vg) <= expressivity(
        FullyConnectedTensorProduct(_sh(L), _sh(L), _out(L)))


@pytest.mark.slow
def test_cg_L3():
    op = FullyConnectedTensorProduct(_sh(3), _sh(3), _out(3))
    assert expressivity(op) == 44
    assert len(_unordered(interactions(op))) == 30


def test_local_frame_bilinear_realises_everything():
    op = LocalFrameBilinear("0e+1o", "0e+1o", "0e+1o+1e")
    assert expressivity(op) == 4 * 4 * 7
    assert len(interactions(op)) == 2 * 2 * 3  # includes 0e x 0e -> 1o, forbidden for CG
