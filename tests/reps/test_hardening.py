"""Issue 17, reproducer 10: orthogonality validation, shape errors, mixed kinds, parsing."""

import pytest
import torch

from tensorframes.reps import Irrep, Irreps, TensorReps, as_reps, base, wigner_D_from_matrix
from tensorframes.reps.base import MAX_DIM, ORTHOGONALITY_ATOL, check_orthogonal

IRREPS = Irreps("16x0e + 8x1o + 4x2e")
CART = TensorReps("16x0n + 8x1n + 4x2n")


def _rand_o3(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.ones(n, 1, 1, dtype=torch.float64)
    flip[::2] = -1
    return (q * flip).to(dtype)


def _bad_matrices(R):
    shear = torch.eye(3, dtype=R.dtype).clone()
    shear[0, 1] = 0.5
    return {"2R": 2 * R, "shear": R @ shear, "zero": torch.zeros_like(R),
            "nan": R.clone().index_fill_(0, torch.tensor([3]), float("nan"))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reps", [IRREPS, CART], ids=["irreps", "tensorreps"])
@pytest.mark.parametrize("kind", ["2R", "shear", "zero", "nan"])
def test_transform_validate_refuses_non_orthogonal(reps, dtype, kind):
    R = _rand_o3(8, dtype)
    x = torch.randn(8, reps.dim, dtype=dtype, generator=torch.Generator().manual_seed(1))
    bad = _bad_matrices(R)[kind]
    tol = ORTHOGONALITY_ATOL[dtype]
    with pytest.raises(ValueError, match=rf"max \|R R\^T - I\| = .* > tolerance {tol:g} for "
                                         rf"{dtype}"):
        reps.transform(x, bad, validate=True)
    with pytest.raises(ValueError, match="not orthogonal"):  # dense matrices: on by default
        reps.matrix(bad)
    # good matrices pass, with the same numbers as without the check
    assert torch.equal(reps.transform(x, R, validate=True), reps.transform(x, R))
    assert torch.equal(reps.matrix(R), reps.matrix(R, validate=False))
    # the hot path is unchecked by default (the check costs more than 2% there)
    assert reps.transform(x, bad).shape == x.shape


def test_deviation_and_offending_index_are_named():
    R = _rand_o3(10).reshape(2, 5, 3, 3).clone()
    R[1, 3] *= 2
    with pytest.raises(ValueError, match=r"R\[1, 3\] is not orthogonal: max \|R R\^T - I\| = 3 "):
        check_orthogonal(R)
    R[1, 3] /= 2
    R[0, 2, 0, 1] += 1e-3  # max |R R^T - I| ~ 1e-3 > 1e-4
    with pytest.raises(ValueError, match=r"R\[0, 2\]"):
        check_orthogonal(R)
    check_orthogonal(R, atol=1e-2)


def test_tolerances_accept_float32_products_casts_and_gradcheck_steps():
    R = _rand_o3(1000, torch.float32)
    check_orthogonal(R @ R.flip(0).mT)  # products of float32 frames
    check_orthogonal(R.double())  # float32 frames cast to float64
    P = _rand_o3(4).clone()
    P[2, 1, 1] += 1e-6  # a finite-difference step of gradcheck
    check_orthogonal(P)
    check_orthogonal(_rand_o3(16, torch.float16).float().half())
    with pytest.raises(ValueError, match=r"tolerance 0.01 for torch.float16"):
        check_orthogonal(2 * _rand_o3(4, torch.float16))


def test_D_from_matrix_entries_validate():
    """Dense reps matrices validate by default (the check is 0.1-0.2% of them); one irrep's
    D (as cheap as the check for small l) and the transform on request."""
    R = _rand_o3(6)
    for bad in _bad_matrices(R).values():
        for call in (lambda M: IRREPS.D_from_matrix(M), lambda M: IRREPS.matrix(M),
                     lambda M: CART.matrix(M),
                     lambda M: Irrep("2e").D_from_matrix(M, validate=True),
                     lambda M: Irrep("1o").D_from_matrix(M, validate=True),
                     lambda M: wigner_D_from_matrix(3, M, validate=True)):
            with pytest.raises(ValueError, match="not orthogonal"):
                call(bad)
    zero = torch.zeros(3, 3, dtype=torch.float64)
    assert IRREPS.D_from_matrix(zero, validate=False).shape == (IRREPS.dim, IRREPS.dim)
    assert torch.equal(wigner_D_from_matrix(1, zero), zero)
    assert torch.equal(Irrep("1o").D_from_matrix(zero), zero)


def test_validation_is_skipped_while_compiling(monkeypatch):
    monkeypatch.setattr(base, "compiling", lambda: True)
    zero = torch.zeros(2, 3, 3)
    assert IRREPS.matrix(zero).shape == (2, IRREPS.dim, IRREPS.dim)
    IRREPS.transform(torch.ones(2, IRREPS.dim), zero, validate=True)


def test_gradients_flow_with_validation():
    R = _rand_o3(3).requires_grad_(True)
    x = torch.randn(3, IRREPS.dim, dtype=torch.float64, requires_grad=True)
    IRREPS.transform(x, R, validate=True).sum().backward()
    assert R.grad is not None and x.grad is not None


@pytest.mark.parametrize("reps", [Irreps("1x0e + 1x1o + 2x2e"), TensorReps("2x0n+1x1n+1x2n")],
                         ids=["irreps", "tensorreps"])
def test_shape_mismatch_names_both_shapes(reps):
    assert reps.dim == 14
    x = torch.randn(4, 14)
    R = torch.eye(3).expand(3, 3, 3)
    with pytest.raises(ValueError, match=r"x of shape \(4, 14\) and R of shape \(3, 3, 3\) do "
                                         r"not broadcast"):
        reps.transform(x, R)
    assert reps.transform(x[:3], R).shape == (3, 14)


_MIXED = [
    (lambda: TensorReps("1x0n") + Irreps("1x0e")),
    (lambda: Irreps("1x0e") + TensorReps("1x0n")),
    (lambda: TensorReps("1x0n") + "1x0e"),
    (lambda: "1x0e + 2x1o" + TensorReps("1x0n")),
    (lambda: Irreps("1x0e") + "1x0n"),
    (lambda: "2x1n" + Irreps("1x0e")),
    (lambda: Irrep("1e") + TensorReps("1x0n")),
    (lambda: TensorReps("1x0n") + Irrep("1e")),
    (lambda: Irrep("1o") + "1x1p"),
]


@pytest.mark.parametrize("add", _MIXED)
def test_cartesian_and_spherical_do_not_add(add):
    with pytest.raises(TypeError, match=r"do not add.*to_irreps\(\)"):
        add()


def test_same_kind_still_adds_and_conversions_refused():
    assert TensorReps("1x1n") + "2x0n" == TensorReps("1x1n+2x0n")
    assert "2x0p" + TensorReps("1x1n") == TensorReps("2x0p+1x1n")
    assert "1x0e" + Irreps("1o") == Irreps("1x0e+1x1o")
    assert Irrep("1e") + "1o" == Irreps("1e+1o")
    with pytest.raises(TypeError, match="to_irreps"):
        Irreps(TensorReps("1x1n"))
    with pytest.raises(TypeError, match="to_irreps"):
        TensorReps(Irreps("1x1o"))


@pytest.mark.parametrize("make", [TensorReps, Irreps, as_reps])
@pytest.mark.parametrize("spec", ["１x1n", "1x１n", "٣x1o", "1x0e\u2009+ 1x1o", "1x1e＋1x0e"])
def test_parsing_is_ascii_only(make, spec):
    with pytest.raises(ValueError, match="must be ASCII"):
        make(spec)


def test_irrep_parsing_is_ascii_only():
    with pytest.raises(ValueError, match="must be ASCII"):
        Irrep("１o")


@pytest.mark.parametrize("spec, shown", [
    ("1000000000000x1n", "dim 3000000000000"),
    ("1x99n", r"1\.72e\+47"),
    ("1x20n", "3486784401"),
    ("0x99n", r"1\.72e\+47"),  # the tensor type itself is too large
    ("1x1000000000000000n", "3\\*\\*1000000000000000"),
    ("1" * 40 + "x1n", "more than 30 digits"),
    ("1x" + "9" * 5000 + "n", "more than 30 digits"),
])
def test_tensorreps_dim_bound_at_parse_time(spec, shown):
    with pytest.raises(ValueError, match=rf"{shown}.*(2147483647|MAX_DIM)"):
        TensorReps(spec)


@pytest.mark.parametrize("spec, shown", [
    ("1000000000000x1o", "dim 3000000000000"),
    ("1x1073741824e", "dim 2147483649"),
    ("2x1073741823e", "dim 4294967294"),
    ("1x" + "9" * 40 + "e", "more than 30 digits"),
])
def test_irreps_dim_bound_at_parse_time(spec, shown):
    with pytest.raises(ValueError, match=rf"{shown}.*(2147483647|MAX_DIM)"):
        Irreps(spec)


def test_dim_bound_edges_and_repetition():
    assert MAX_DIM == 2**31 - 1
    assert TensorReps("1x19n").dim == 3**19
    assert TensorReps("1x30n", spatial_dim=2).dim == 2**30
    with pytest.raises(ValueError, match="2147483648"):
        TensorReps("1x31n", spatial_dim=2)
    assert Irrep("1073741823e").dim == MAX_DIM
    with pytest.raises(ValueError, match="2147483647"):
        Irrep(1073741824, 1)
    with pytest.raises(ValueError, match="dim 30000000000"):
        TensorReps("1x1n") * 10**10
    with pytest.raises(ValueError, match="dim 30000000000"):
        10**10 * Irreps("1x1o")
    with pytest.raises(ValueError, match="dim"):
        TensorReps([(10**12, "1n")])
    with pytest.raises(ValueError, match="dim"):
        Irreps([(10**12, "1o")])


@pytest.mark.parametrize("spec", ["16x0n + 8x1n + 2x1p + 4x2n", "0x3p", ""])
def test_repr_round_trip_unchanged(spec):
    r = TensorReps(spec)
    assert eval(repr(r)) == r and repr(r) == f"TensorReps('{r}')"
    i = Irreps("16x0e + 8x1o + 4x2e")
    assert eval(repr(i)) == i and repr(i) == "Irreps('16x0e+8x1o+4x2e')"
