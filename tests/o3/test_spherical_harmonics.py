"""tensorframes.o3.spherical_harmonics and SphericalHarmonics vs e3nn: values, normalizations,
gradients, equivariance."""

from __future__ import annotations

import math

import pytest
import torch

from tensorframes import Irreps
from tensorframes.o3 import SphericalHarmonics, spherical_harmonics
from tensorframes.testing import tolerance

o3 = pytest.importorskip("e3nn.o3")

LMAX = 10
LS = list(range(LMAX + 1))
NORMALIZATIONS = ["component", "norm", "integral"]


def _vectors(n: int, seed: int) -> torch.Tensor:
    """Random vectors with norms spread over [0.3, 2], plus axis-aligned and zero-ish ones."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * (0.3 + 1.7 * torch.rand(n, 1, generator=g,
                                                                      dtype=torch.float64))
    axes = torch.cat([torch.eye(3), -torch.eye(3), torch.eye(3) * 1e-3]).double()
    return torch.cat([v, axes])


@pytest.fixture(scope="module")
def vecs():
    return _vectors(500, seed=11)


def _scale(vec: torch.Tensor, ls, normalize: bool) -> torch.Tensor:
    """Tolerance scale per entry: max(1, |x|^l) when the input is not normalized."""
    if normalize:
        return torch.ones(1, dtype=torch.float64)
    r = vec.norm(dim=-1, keepdim=True)
    powers = torch.cat([r.expand(-1, 2 * l + 1) ** l for l in ls], dim=-1)
    return powers.clamp(min=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_matches_e3nn(normalization, normalize, dtype, vecs):
    ref = o3.spherical_harmonics(LS, vecs, normalize, normalization=normalization)
    ours = spherical_harmonics(LS, vecs.to(dtype), normalize, normalization=normalization)
    assert ours.dtype == dtype and ours.shape == (vecs.shape[0], (LMAX + 1) ** 2)
    # float32: relative to values of order 1 (component-normalized harmonics reach ~sqrt(2l+1))
    scale = _scale(vecs, LS, normalize) * ref.abs().clamp(min=1.0)
    err = (ours.double() - ref).abs() / scale
    assert err.max().item() <= tolerance(dtype)


@pytest.mark.parametrize(
    "l",
    [0, 3, 10, [2, 0, 2], [1, 5], "1x0e+1x1o+1x2e", "0e + 2x1o + 3o", "1e + 2e + 3e",
     Irreps("2x0e + 1x4e")],
)
def test_l_argument_forms(l, vecs):
    e3nn_l = o3.Irreps(str(l)) if isinstance(l, Irreps) else l
    ref = o3.spherical_harmonics(e3nn_l, vecs, True, normalization="norm")
    ours = spherical_harmonics(l, vecs, True, normalization="norm")
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    ref_e3nn_obj = spherical_harmonics(o3.Irreps("1x0e+1x1o"), vecs, False)
    torch.testing.assert_close(ref_e3nn_obj, spherical_harmonics([0, 1], vecs, False))


def test_default_normalization_is_component(vecs):
    Y = spherical_harmonics(LS, vecs, normalize=True)
    for l in LS:
        norms = Y[:, l * l : (l + 1) ** 2].pow(2).sum(-1)
        torch.testing.assert_close(norms, torch.full_like(norms, 2 * l + 1), atol=1e-10, rtol=0)


def test_l1_is_sqrt3_x_and_batch_shapes():
    v = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(spherical_harmonics(1, v, False), math.sqrt(3) * v)
    assert spherical_harmonics([0, 1, 2], v, True).shape == (2, 3, 4, 9)
    assert spherical_harmonics(4, torch.zeros(0, 3), True).shape == (0, 9)


def test_equivariance_with_reflections(vecs):
    """Y(R x) = D(R) Y(x) for R in O(3) (D of parity (-1)^l), and Y(-x) = (-1)^l Y(x)."""
    g = torch.Generator().manual_seed(3)
    q = torch.linalg.qr(torch.randn(8, 3, 3, generator=g, dtype=torch.float64))[0]
    R = torch.cat([q, -q, torch.eye(3, dtype=torch.float64)[None], -torch.eye(3)[None].double()])
    irreps = Irreps.spherical_harmonics(LMAX)
    Y = spherical_harmonics(LS, vecs, normalize=False)
    Rx = torch.einsum("rij,nj->rni", R, vecs)
    torch.testing.assert_close(
        spherical_harmonics(LS, Rx, normalize=False),
        irreps.transform(Y[None].expand(R.shape[0], -1, -1), R[:, None]),
        atol=1e-9, rtol=1e-10,
    )
    sign = torch.cat([torch.full((2 * l + 1,), (-1.0) ** l) for l in LS]).double()
    torch.testing.assert_close(spherical_harmonics(LS, -vecs, False), Y * sign, atol=0, rtol=0)


def test_high_l_beyond_e3nn():
    """l = 14 (e3nn stops at 11): unit norm per component normalization, equivariant."""
    v = _vectors(50, seed=5)
    Y = spherical_harmonics(14, v, normalize=True)
    torch.testing.assert_close(Y.pow(2).sum(-1), torch.full((v.shape[0],), 29.0).double())
    R = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    torch.testing.assert_close(
        spherical_harmonics(14, v @ R.T, normalize=True),
        Y @ Irreps("14e").D_from_matrix(R).T, atol=1e-10, rtol=0,
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_gradients_match_e3nn(normalize, vecs):
    x = torch.cat([vecs[:100], torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]).double()])
    if not normalize:
        x = torch.cat([x, torch.zeros(1, 3, dtype=torch.float64)])  # polynomial: finite at 0
    w = torch.randn((LMAX + 1) ** 2, dtype=torch.float64)
    grads = []
    for fn in (spherical_harmonics, o3.spherical_harmonics):
        xi = x.clone().requires_grad_(True)
        (fn(LS, xi, normalize, normalization="integral") * w).sum().backward()
        grads.append(xi.grad)
    assert torch.isfinite(grads[0]).all()
    scale = 1.0 if normalize else x.norm(dim=-1, keepdim=True).clamp(min=1) ** LMAX
    assert ((grads[0] - grads[1]).abs() / scale).max() <= 1e-9


def test_gradcheck():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: spherical_harmonics([0, 2, 5], v, True), (x,))


def test_bad_arguments():
    v = torch.randn(5, 3)
    with pytest.raises(ValueError, match="normalization must be one of"):
        spherical_harmonics(2, v, True, normalization="bogus")
    with pytest.raises(ValueError, match=r"vec must have shape \(\.\.\., 3\)"):
        spherical_harmonics(2, torch.randn(5, 4), True)
    with pytest.raises(ValueError, match="not spherical harmonics irreps"):
        spherical_harmonics("1x1o + 1x1e", v, True)
    with pytest.raises(ValueError, match="l must be >= 0"):
        spherical_harmonics([1, -1], v, True)
    with pytest.raises(ValueError, match="at least one degree"):
        spherical_harmonics([], v, True)
    with pytest.raises(TypeError):
        spherical_harmonics(1.5, v, True)
    with pytest.raises(TypeError, match="floating point"):
        spherical_harmonics(1, torch.ones(5, 3, dtype=torch.long), True)


# (irreps_out, irreps_in) of the module, as e3nn takes them
MODULE_CASES = [
    ("1x0e+1x1o+1x2e", None), (4, None), ([2, 0, 2], None), ("0e + 2x1o + 3o", None),
    ("1e + 2e + 3e", None), ([0, 1, 2], "1x1e"), (3, "1e"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("case", range(len(MODULE_CASES)))
def test_module_matches_e3nn(case, normalization, normalize, dtype, vecs):
    irreps_out, irreps_in = MODULE_CASES[case]
    ref_mod = o3.SphericalHarmonics(irreps_out, normalize, normalization, irreps_in=irreps_in)
    mod = SphericalHarmonics(irreps_out, normalize, normalization, irreps_in=irreps_in)
    assert isinstance(mod, torch.nn.Module)
    assert mod.irreps_out == Irreps(str(ref_mod.irreps_out))
    assert mod.irreps_in == Irreps(str(ref_mod.irreps_in))
    ref = ref_mod(vecs)
    ours = mod(vecs.to(dtype))
    assert ours.dtype == dtype and ours.shape == ref.shape == (vecs.shape[0], mod.irreps_out.dim)
    ls = [ir.l for mul, ir in mod.irreps_out for _ in range(mul)]
    scale = _scale(vecs, ls, normalize) * ref.abs().clamp(min=1.0)
    assert ((ours.double() - ref).abs() / scale).max().item() <= tolerance(dtype)


def test_module_defaults_and_repr_as_e3nn(vecs):
    """Defaults as e3nn's module: "integral" normalization (the function's is "component")."""
    mod, ref_mod = SphericalHarmonics([0, 1, 2], True), o3.SphericalHarmonics([0, 1, 2], True)
    assert mod.normalization == ref_mod.normalization == "integral"
    torch.testing.assert_close(mod(vecs), ref_mod(vecs), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        mod(vecs), spherical_harmonics([0, 1, 2], vecs, True) / math.sqrt(4 * math.pi))
    text = repr(SphericalHarmonics("0e+1o+2e", normalize=False, normalization="norm"))
    assert text == ("SphericalHarmonics(1x1o -> 1x0e+1x1o+1x2e, normalize=False, "
                    "normalization='norm')")
    assert SphericalHarmonics(2, True)(torch.zeros(2, 5, 3)).shape == (2, 5, 5)


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="normalization must be one of"):
        SphericalHarmonics(2, True, normalization="bogus")
    with pytest.raises(ValueError, match="vector"):
        SphericalHarmonics(2, True, irreps_in="2x1o")
    with pytest.raises(ValueError, match="inconsistent"):
        SphericalHarmonics("1o + 2e", True, irreps_in="1e")
    with pytest.raises(ValueError, match="at least one degree"):
        SphericalHarmonics([], True)
    with pytest.raises(ValueError, match=r"vec must have shape \(\.\.\., 3\)"):
        SphericalHarmonics(1, True)(torch.randn(4, 2))
