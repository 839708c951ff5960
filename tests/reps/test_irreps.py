"""Irrep / Irreps: parsing and value semantics vs e3nn, Wigner-D matrices and transform."""

from __future__ import annotations

import contextlib
import math
import pickle
import re
import sys

import pytest
import torch

from tensorframes import Irrep, Irreps
from tensorframes.o3 import spherical_harmonics
from tensorframes.reps import wigner_D_from_matrix
from tensorframes.reps._wigner import coupling, wigner_D_polynomial, wigner_D_recursive
from tensorframes.testing import tolerance

o3 = pytest.importorskip("e3nn.o3")

LMAX = 10
DTYPES = [torch.float32, torch.float64]


@contextlib.contextmanager
def default_dtype(dtype):
    """e3nn builds its generators in the default dtype: float64 for an accurate reference."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def random_o3(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """``n`` random orthogonal matrices, the second half with det -1."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]  # Haar
    q = q * torch.linalg.det(q)[:, None, None]  # all rotations
    q[n // 2 :] = -q[n // 2 :]
    return q.to(dtype)


def axis_rotation(axis: int, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = torch.eye(3, dtype=torch.float64)
    R[i, i] = R[j, j] = c
    R[i, j], R[j, i] = -s, s
    return R


def _special_matrices() -> tuple[torch.Tensor, list[bool]]:
    """Identity, axis rotations (incl. within 1e-7 of 0 and pi), x -I, signed permutations.

    Returns the matrices and whether e3nn is accurate on each (exactly representable angles).
    """
    mats, exact = [], []
    for axis in range(3):
        for angle in [0.0, math.pi / 2, math.pi, -math.pi / 2, 2.0, 1e-7, -1e-7,
                      math.pi - 1e-7, math.pi + 1e-7, 3e-7]:
            R = axis_rotation(axis, angle)
            ok = angle in (0.0, math.pi / 2, math.pi, -math.pi / 2, 2.0)
            mats += [R, -R]
            exact += [ok, ok]
    for perm in [(0, 1, 2), (1, 0, 2), (2, 1, 0), (0, 2, 1), (1, 2, 0), (2, 0, 1)]:
        for signs in [(1, 1, 1), (-1, 1, 1), (1, -1, -1)]:
            P = torch.zeros(3, 3, dtype=torch.float64)
            for row, col in enumerate(perm):
                P[row, col] = signs[row]
            mats.append(P)
            exact.append(False)
    return torch.stack(mats), exact


SPECIAL, SPECIAL_E3NN_OK = _special_matrices()


@pytest.fixture(scope="module")
def mats64():
    return random_o3(1000, seed=1)


@pytest.fixture(scope="module")
def e3nn_D(mats64):
    """e3nn's D^l for both parities on the 1000 random matrices, float64 (computed once).

    Exactly e3nn's ``Irrep(l, p).D_from_matrix``, with the Euler angles and ``wigner_D`` shared
    between the two parities (e3nn is slow at large l).
    """
    with default_dtype(torch.float64):
        d = torch.det(mats64).sign()
        angles = o3.matrix_to_angles(d[:, None, None] * mats64)
        k = (1 - d) / 2
        out = {}
        for l in range(LMAX + 1):
            D = o3.wigner_D(l, *angles)
            for p in (1, -1):
                out[(l, p)] = D * (p**k)[:, None, None]
        assert torch.equal(out[(3, -1)], o3.Irrep(3, -1).D_from_matrix(mats64))
        return out


# -- Wigner D vs e3nn ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l", range(LMAX + 1))
def test_irrep_D_matches_e3nn(l, dtype, mats64, e3nn_D):
    R = mats64.to(dtype)
    for p in (1, -1):
        D = Irrep(l, p).D_from_matrix(R)
        assert D.dtype == dtype and D.shape == (1000, 2 * l + 1, 2 * l + 1)
        torch.testing.assert_close(D.double(), e3nn_D[(l, p)], atol=tolerance(dtype), rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_irreps_D_matches_e3nn(dtype, mats64):
    irreps = "2x0e + 0o + 1o + 2x1e + 2e + 0x3o + 3o + 2o + 4e"
    R = mats64[::50]
    with default_dtype(torch.float64):
        ref = o3.Irreps(irreps).D_from_matrix(R)
    D = Irreps(irreps).D_from_matrix(R.to(dtype))
    torch.testing.assert_close(D.double(), ref, atol=tolerance(dtype), rtol=0)
    torch.testing.assert_close(Irreps(irreps).matrix(R), ref, atol=1e-10, rtol=0)


def test_closed_forms_match_reference_recursion(mats64):
    """The l = 2 closed form and the shared recursion equal the plain coupling recursion."""
    for l in range(LMAX + 1):
        torch.testing.assert_close(
            wigner_D_polynomial(l, mats64), wigner_D_recursive(l, mats64), atol=1e-12, rtol=0
        )


def test_coupling_is_orthonormal_and_cached():
    for l in range(2, LMAX + 1):
        C = coupling(l).reshape(3 * (2 * l - 1), 2 * l + 1)
        torch.testing.assert_close(C.T @ C, torch.eye(2 * l + 1, dtype=torch.float64))
        assert coupling(l) is coupling(l) and coupling(l).dtype == torch.float64


def _homomorphism_checks(D, R_special, generic, l, p):
    """D(S) exact via D(SB) = D(S)D(B), D(BS) = D(B)D(S), D(S^T) = D(S)^T, D D^T = 1."""
    DS = D(R_special)
    eye = torch.eye(2 * l + 1, dtype=torch.float64)
    torch.testing.assert_close(DS @ DS.transpose(-1, -2), eye.expand_as(DS), atol=1e-12, rtol=0)
    torch.testing.assert_close(D(R_special.transpose(-1, -2)), DS.transpose(-1, -2),
                               atol=1e-12, rtol=0)
    for B in generic:
        DB = D(B)
        torch.testing.assert_close(D(R_special @ B), DS @ DB, atol=1e-11, rtol=0)
        torch.testing.assert_close(D(B @ R_special), DB @ DS, atol=1e-11, rtol=0)


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_special_matrices_exact(l):
    generic = random_o3(4, seed=7)
    for p in (1, -1):
        ir = Irrep(l, p)
        _homomorphism_checks(ir.D_from_matrix, SPECIAL, generic, l, p)
        det = torch.linalg.det(SPECIAL)
        if l == 0:
            expected = (p ** ((1 - det) / 2)).round()[:, None, None]
            torch.testing.assert_close(ir.D_from_matrix(SPECIAL), expected, atol=0, rtol=0)
        if l == 1:
            expected = SPECIAL if p == -1 else SPECIAL * det[:, None, None]
            torch.testing.assert_close(ir.D_from_matrix(SPECIAL), expected, atol=1e-15, rtol=0)
    # identity exactly
    torch.testing.assert_close(Irrep(l, 1).D_from_matrix(torch.eye(3, dtype=torch.float64)),
                               torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-13, rtol=0)
    # equivariance of the spherical harmonics: Y(S x) = D(S) Y(x) with parity (-1)^l
    x = torch.randn(20, 3, dtype=torch.float64)
    Y = spherical_harmonics(l, x, normalize=True)
    YS = spherical_harmonics(l, torch.einsum("sij,nj->sni", SPECIAL, x), normalize=True)
    DS = Irrep(l, (-1) ** l).D_from_matrix(SPECIAL)
    torch.testing.assert_close(YS, torch.einsum("sij,nj->sni", DS, Y), atol=1e-11, rtol=0)
    # where e3nn is accurate (exact axis angles), it agrees
    ok = torch.tensor(SPECIAL_E3NN_OK)
    with default_dtype(torch.float64):
        for p in (1, -1):
            ref = o3.Irrep(l, p).D_from_matrix(SPECIAL[ok])
            torch.testing.assert_close(Irrep(l, p).D_from_matrix(SPECIAL[ok]), ref,
                                       atol=1e-10, rtol=0)


def test_special_matrices_float32():
    ours64 = Irreps.spherical_harmonics(LMAX).D_from_matrix(SPECIAL)
    ours32 = Irreps.spherical_harmonics(LMAX).D_from_matrix(SPECIAL.float())
    torch.testing.assert_close(ours32.double(), ours64, atol=1e-5, rtol=0)


def test_beyond_lmax_10():
    """Any l >= 0 works: l = 13 is orthogonal and a homomorphism."""
    A, B = random_o3(2, seed=3)
    ir = Irrep(13, -1)
    torch.testing.assert_close(ir.D_from_matrix(A @ B), ir.D_from_matrix(A) @ ir.D_from_matrix(B),
                               atol=1e-11, rtol=0)
    D = ir.D_from_matrix(A)
    torch.testing.assert_close(D @ D.T, torch.eye(27, dtype=torch.float64), atol=1e-11, rtol=0)


def test_wigner_D_from_matrix_functional(mats64):
    R = mats64[:10]
    torch.testing.assert_close(wigner_D_from_matrix(3, R), Irrep(3, -1).D_from_matrix(R))
    torch.testing.assert_close(wigner_D_from_matrix(3, R, 1), Irrep(3, 1).D_from_matrix(R))
    # the parity is a sign det(R) where it differs from (-1)^l; l = 1 is R itself (a copy)
    det = torch.linalg.det(R)
    torch.testing.assert_close(wigner_D_from_matrix(2, R, -1), wigner_D_from_matrix(2, R)
                               * det[:, None, None], atol=1e-12, rtol=0)
    D1 = wigner_D_from_matrix(1, R)
    assert torch.equal(D1, R) and D1.data_ptr() != R.data_ptr()
    torch.testing.assert_close(wigner_D_from_matrix(0, R), torch.ones(10, 1, 1,
                                                                      dtype=torch.float64))


@pytest.mark.parametrize("l, p, R, err", [
    (-1, None, torch.eye(3), "degree l"),
    (1.0, None, torch.eye(3), "degree l"),
    (True, None, torch.eye(3), "degree l"),
    (1, 0, torch.eye(3), "parity p"),
    (1, True, torch.eye(3), "parity p"),
    (1, None, torch.eye(2), r"\(\.\.\., 3, 3\)"),
])
def test_wigner_D_from_matrix_rejects_bad_input(l, p, R, err):
    with pytest.raises(ValueError, match=err):
        wigner_D_from_matrix(l, R, p)


def test_D_from_matrix_does_not_alias_input():
    R = random_o3(3, seed=0)
    D = Irrep("1o").D_from_matrix(R)
    D.add_(1.0)
    torch.testing.assert_close(R, random_o3(3, seed=0))


# -- transform ----------------------------------------------------------------------------------
TRANSFORM_IRREPS = [
    "16x0e+8x1o+4x2e",
    "3x0o + 2x1e + 0x2e + 1x3o + 2x1o + 2x2o + 1x0e",
    "1x10e + 2x7o",
    "5x0e",
    "",
]


@pytest.mark.parametrize("spec", TRANSFORM_IRREPS)
def test_transform_equals_dense_matrix(spec, mats64):
    irreps = Irreps(spec)
    R = mats64[::25]
    x = torch.randn(R.shape[0], irreps.dim, dtype=torch.float64)
    y = irreps.transform(x, R)
    ref = (irreps.D_from_matrix(R) @ x[..., None])[..., 0]
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref, atol=1e-10, rtol=0)
    # float32 agrees with float64
    y32 = irreps.transform(x.float(), R.float())
    assert y32.dtype == torch.float32
    scale = max(1.0, ref.abs().amax().item()) if ref.numel() else 1.0
    torch.testing.assert_close(y32.double(), ref, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("spec", TRANSFORM_IRREPS[:3])
def test_transform_is_a_representation(spec):
    irreps = Irreps(spec)
    A, B = random_o3(64, seed=5).chunk(2)
    A = A[torch.randperm(32)]  # mix det signs
    x = torch.randn(32, irreps.dim, dtype=torch.float64)
    torch.testing.assert_close(irreps.transform(irreps.transform(x, B), A),
                               irreps.transform(x, A @ B), atol=1e-10, rtol=0)
    torch.testing.assert_close(irreps.transform(irreps.transform(x, A), A.transpose(-1, -2)), x,
                               atol=1e-10, rtol=0)
    # rho(R^T) = rho(R)^T: <rho(R^T) x, z> = <x, rho(R) z>
    z = torch.randn_like(x)
    lhs = (irreps.transform(x, A.transpose(-1, -2)) * z).sum(-1)
    rhs = (x * irreps.transform(z, A)).sum(-1)
    torch.testing.assert_close(lhs, rhs, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("x_batch", "R_batch"),
    [((4, 5), (5,)), ((), (7,)), ((6,), ()), ((2, 1), (1, 3)), ((3,), (1,))],
)
def test_transform_broadcasts(x_batch, R_batch):
    irreps = Irreps("2x0e + 0o + 1o + 1e + 2x2e + 3o")
    x = torch.randn(*x_batch, irreps.dim, dtype=torch.float64)
    R = random_o3(max(1, math.prod(R_batch)), seed=2)[: math.prod(R_batch)].reshape(*R_batch, 3, 3)
    y = irreps.transform(x, R)
    batch = torch.broadcast_shapes(x_batch, R_batch)
    assert y.shape == (*batch, irreps.dim)
    ref = (irreps.D_from_matrix(R.expand(*batch, 3, 3)) @ x.expand(*batch, irreps.dim)[..., None])
    torch.testing.assert_close(y, ref[..., 0], atol=1e-10, rtol=0)


def test_transform_is_differentiable():
    irreps = Irreps("0e + 0o + 1o + 1e + 2e + 3o")
    R = random_o3(3, seed=4).requires_grad_(True)
    x = torch.randn(3, irreps.dim, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(irreps.transform, (x, R))


def test_transform_does_not_touch_or_alias_input():
    irreps = Irreps("3x0e")
    x = torch.randn(4, 3, dtype=torch.float64)
    x0 = x.clone()
    y = irreps.transform(x, random_o3(4, seed=0))
    y.add_(1.0)
    torch.testing.assert_close(x, x0)


def test_transform_bad_input():
    irreps = Irreps("2x0e + 1o")
    R = random_o3(4, seed=0)
    with pytest.raises(ValueError, match=r"feature width mismatch.*dim 5"):
        irreps.transform(torch.randn(4, 6, dtype=torch.float64), R)
    with pytest.raises(ValueError, match=r"R must have shape \(\.\.\., 3, 3\)"):
        irreps.transform(torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match=r"R must have shape"):
        irreps.transform(torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, 4))
    with pytest.raises(TypeError, match="share a dtype"):
        irreps.transform(torch.randn(4, 5), R)
    with pytest.raises(ValueError, match=r"x of shape \(3, 5\) and R of shape \(4, 3, 3\) do "
                       "not broadcast"):  # batch shapes that do not broadcast
        irreps.transform(torch.randn(3, 5, dtype=torch.float64), R)
    with pytest.raises(ValueError, match=r"R must have shape"):
        irreps.D_from_matrix(torch.randn(3, 3, 2))


# -- parsing and value semantics ----------------------------------------------------------------
SPECS = [
    "16x0e+8x1o+4x2e",
    "16x0e + 8x1o + 4x2e",
    "0e",
    "1y + 2y + 3y",
    "1e + 0e + 1e",
    "2o + 1e + 0e + 1e",
    "1e + 1e + 0e + 1e",
    "3x1o + 0x2e + 2x1o + 1x0o + 4x0e",
    "10x10e + 1x10o + 3x7o",
    "",
    "  1x0e  ",
]


@pytest.mark.parametrize("spec", SPECS)
def test_matches_e3nn(spec):
    ours, ref = Irreps(spec), o3.Irreps(spec)
    assert str(ours) == repr(ref)
    assert ours.dim == ref.dim
    assert ours.num_irreps == ref.num_irreps
    assert ours.ls == ref.ls
    assert ours.slices() == ref.slices()
    assert str(ours.simplify()) == repr(ref.simplify())
    assert str(ours.remove_zero_multiplicities()) == repr(ref.remove_zero_multiplicities())
    assert str(ours.regroup()) == repr(ref.regroup())
    s, r = ours.sort(), ref.sort()
    assert (str(s.irreps), s.p, s.inv) == (repr(r.irreps), r.p, r.inv)
    assert s == (s.irreps, s.p, s.inv)
    for ir in ["0e", "0o", "1o", "1e", "2e", "10e"]:
        assert ours.count(ir) == ref.count(ir)
        assert (ir in ours) == (ir in ref)
    if len(ref):
        assert ours.lmax == ref.lmax
    else:
        with pytest.raises(ValueError):
            ours.lmax
    assert ours.spatial_dim == 3
    assert [(m.mul, m.ir.l, m.ir.p, m.dim) for m in ours] == [
        (m.mul, m.ir.l, m.ir.p, m.dim) for m in ref
    ]
    # conversions
    assert Irreps.from_e3nn(ref) == ours
    assert Irreps(ref) == ours
    assert ours.to_e3nn() == ref and isinstance(ours.to_e3nn(), o3.Irreps)


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip(spec):
    irreps = Irreps(spec)
    assert eval(repr(irreps), {"Irreps": Irreps}) == irreps
    assert Irreps(str(irreps)) == irreps
    assert hash(Irreps(str(irreps))) == hash(irreps)
    assert pickle.loads(pickle.dumps(irreps)) == irreps
    for _mul, ir in irreps:
        assert eval(repr(ir), {"Irrep": Irrep}) == ir
        assert Irrep(str(ir)) == ir


def test_repr_and_str():
    irreps = Irreps("16x0e + 8x1o+4x2e")
    assert repr(irreps) == "Irreps('16x0e+8x1o+4x2e')"
    assert str(irreps) == "16x0e+8x1o+4x2e"
    assert repr(Irreps("")) == "Irreps('')" and Irreps("") == Irreps() and len(Irreps("")) == 0
    assert str(Irreps("0e")) == "1x0e"
    assert str(Irreps("1y+2y")) == "1x1o+1x2e"
    assert repr(Irrep(2, -1)) == "Irrep('2o')" and str(Irrep("3y")) == "3o"
    assert irreps == "16x0e+8x1o+4x2e" and irreps != "16x0e" and irreps != "garbage"


@pytest.mark.parametrize(
    ("spec", "token"),
    [("3x1q", "3x1q"), ("x1e", "x1e"), ("-1x0e", "-1x0e"), ("1x-1e", "1x-1e"),
     ("2x0e + 1x1o + 4xe", "4xe"), ("1x0e++1o", ""), ("1.5x0e", "1.5x0e"), ("1x1", "1x1")],
)
def test_malformed_strings_name_the_token(spec, token):
    with pytest.raises(ValueError, match=re.escape(repr(token))):
        Irreps(spec)


@pytest.mark.parametrize("bad", ["1q", "-1e", "e", "", "1x1e"])
def test_malformed_irrep(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        Irrep(bad)


def test_irrep_construction():
    assert Irrep(1, -1) == Irrep("1o") == Irrep((1, -1)) == Irrep(Irrep("1o")) == (1, -1)
    assert Irrep("2y") == Irrep(2, 1) and Irrep("1y").p == -1
    ir = Irrep("3e")
    assert (ir.l, ir.p, ir.dim, ir.is_scalar(), Irrep("0e").is_scalar()) == (3, 1, 7, False, True)
    assert Irrep(o3.Irrep("2o")) == Irrep("2o")
    assert list(Irrep("1o") * Irrep("1o")) == [Irrep("0e"), Irrep("1e"), Irrep("2e")]
    assert 3 * Irrep("1e") == Irreps("3x1e")
    assert Irrep("1e") + Irrep("0e") == Irreps("1e + 0e")
    it = Irrep.iterator()
    assert [next(it) for _ in range(4)] == [Irrep(s) for s in ["0e", "0o", "1o", "1e"]]
    assert list(Irrep.iterator(1)) == list(o3.Irrep.iterator(1))
    assert sorted([Irrep("1e"), Irrep("0e"), Irrep("1o")]) == [Irrep(s) for s in ["0e", "1o", "1e"]]
    for bad_args in [(-1, 1), (1, 0), (1.5, 1), (True, 1), (1, 2)]:
        with pytest.raises(ValueError):
            Irrep(*bad_args)


def test_irreps_construction_forms():
    ref = Irreps("2x0e + 1x1o + 3x2o")
    assert Irreps([(2, (0, 1)), (1, (1, -1)), (3, (2, -1))]) == ref
    assert Irreps([(2, "0e"), (1, Irrep("1o")), "3x2o"]) == ref
    assert Irreps([(2, Irrep("0e")), Irrep("1o"), (3, o3.Irrep("2o"))]) == ref
    assert Irreps(ref) == ref and Irreps(o3.Irreps("2x0e + 1o + 3x2o")) == ref
    assert Irreps(Irrep("1o")) == Irreps("1x1o") == Irreps(o3.Irrep("1o"))
    assert Irreps(ref[0]) == Irreps("2x0e")
    assert Irreps(None) == Irreps("")
    for bad in [[(-1, (0, 1))], [(1, (0, 2))], [(1, 2)], [3], [(1, (1, 1), 3)]]:
        with pytest.raises(ValueError):
            Irreps(bad)
    with pytest.raises(TypeError):
        Irreps(3)


def test_irreps_operations():
    a, b = Irreps("2x0e + 1o"), Irreps("1o + 2e")
    assert a + b == Irreps("2x0e + 1o + 1o + 2e") and (a + b).simplify() == "2x0e+2x1o+1x2e"
    assert a + "3x0o" == "2x0e+1x1o+3x0o" and "3x0o" + a == "3x0o+2x0e+1x1o"
    assert a * 2 == 2 * a == Irreps("2x0e + 1o + 2x0e + 1o")
    assert a[1:] == Irreps("1o") and isinstance(a[1:], Irreps)
    m = a[0]
    assert (m.mul, m.ir, m.dim) == (2, Irrep("0e"), 2) and str(m) == "2x0e"
    assert {a: 1}[Irreps("2x0e+1x1o")] == 1
    assert Irreps.spherical_harmonics(3) == o3.Irreps.spherical_harmonics(3)
    assert Irreps.spherical_harmonics(2, p=1) == Irreps("0e + 1e + 2e")
    assert Irreps("1x15e").dim == 31 and Irreps("1x15e").lmax == 15
    with pytest.raises(AttributeError):
        a.foo = 1
    with pytest.raises(TypeError):
        a * a
    x = Irreps("2x0e + 3x1o").randn(4, -1, normalization="norm", dtype=torch.float64)
    assert x.shape == (4, 11)
    torch.testing.assert_close(x[:, 2:].reshape(4, 3, 3).norm(dim=-1),
                               torch.ones(4, 3, dtype=torch.float64))


def test_e3nn_missing_gives_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "e3nn", None)
    with pytest.raises(ImportError, match="needs e3nn"):
        Irreps("1o").to_e3nn()
    with pytest.raises(ImportError, match="needs e3nn"):
        Irreps.from_e3nn("1o")


def test_wigner_recursion_in_batch_chunks(monkeypatch):
    """l >= 3 run in batch chunks: same values and gradients as in one chunk."""
    import tensorframes.reps._wigner as wigner

    R = random_o3(10, seed=11).reshape(2, 5, 3, 3).requires_grad_(True)
    one = wigner.wigner_D_polynomials([2, 3, 4], R)
    g_one = torch.autograd.grad(sum(D.square().sum() for D in one.values()), R)[0]
    monkeypatch.setattr(wigner, "RECURSION_CHUNK", 3)  # 4 chunks of <= 3 matrices
    many = wigner.wigner_D_polynomials([2, 3, 4], R)
    g_many = torch.autograd.grad(sum(D.square().sum() for D in many.values()), R)[0]
    for l in (2, 3, 4):
        assert many[l].shape == (2, 5, 2 * l + 1, 2 * l + 1)
        assert (many[l] - one[l]).abs().max() < 1e-12
    assert (g_many - g_one).abs().max() < 1e-10
    assert wigner.wigner_D_polynomials([4], R[:0])[4].shape == (0, 5, 9, 9)
