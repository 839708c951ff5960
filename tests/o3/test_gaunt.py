import pytest
import torch

from tensorframes.o3 import (
    GauntTensorProduct,
    VectorGauntTensorProduct,
    gaunt_coefficients,
    wigner_3j,
)
from tensorframes.o3._gaunt import gaunt_product
from tensorframes.o3._gaunt_fourier import _FourierCore
from tensorframes.o3._gaunt_grid import _GridProduct
from tensorframes.testing import assert_equivariant

IN1, IN2 = "2x0e+2x1o+1x2e+1x1e", "1x0e+1x1o+2x2e+1x0o"
OUT = "2x0e+1x0o+2x1o+2x1e+2x2e+1x3o+1x3e"


def _cg_gaunt_reference(x1, x2, L1, L2, Lout):
    """CG contraction over l1+l2+l3 even, weighted by the Gaunt coefficients."""
    out = x1.new_zeros(x1.shape[0], (Lout + 1) ** 2)
    for l1 in range(L1 + 1):
        for l2 in range(L2 + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, Lout) + 1):
                if (l1 + l2 + l3) % 2:
                    continue
                C = wigner_3j(l1, l2, l3, dtype=x1.dtype)
                g = (gaunt_coefficients(l1, l2, l3, dtype=x1.dtype) * C).sum()
                out[:, l3**2:(l3 + 1) ** 2] += g * torch.einsum(
                    "ijk,zi,zj->zk", C, x1[:, l1**2:(l1 + 1) ** 2], x2[:, l2**2:(l2 + 1) ** 2])
    return out


# the grid is sized for D = L1 + L2 + Lout; the cases with Lout < L1 + L2 use the smallest grids
@pytest.mark.parametrize("L1,L2,Lout", [(1, 1, 2), (2, 3, 5), (3, 2, 3), (4, 0, 0), (3, 3, 1),
                                        (1, 4, 2), (0, 0, 0)])
def test_fourier_equals_grid_equals_cg(L1, L2, Lout):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, (L1 + 1) ** 2, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, (L2 + 1) ** 2, generator=g, dtype=torch.float64)
    grid = gaunt_product(x1, x2, L1, L2, Lout, method="grid")
    fourier = gaunt_product(x1, x2, L1, L2, Lout, method="fourier")
    assert (grid - fourier).abs().max() < 1e-10  # constant 1: identical
    assert (grid - _cg_gaunt_reference(x1, x2, L1, L2, Lout)).abs().max() < 1e-10


@pytest.mark.parametrize("method", ["grid", "fourier"])
def test_batch_chunks_match_one_chunk(monkeypatch, method):
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(2, 37, 9, generator=g, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 37, 16, generator=g, dtype=torch.float64)
    one = gaunt_product(x1, x2, 2, 3, 4, method=method)
    (g_one,) = torch.autograd.grad(one.square().sum(), x1)
    core = _GridProduct if method == "grid" else _FourierCore
    monkeypatch.setattr(core, "chunk_values", 1)  # chunks of 32 samples
    stage = "_products" if method == "grid" else "_product"
    calls, inner = [], getattr(core, stage)

    def counted(self, *args, **kwargs):
        calls.append(args[0].shape)
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(core, stage, counted)
    many = gaunt_product(x1, x2, 2, 3, 4, method=method)
    assert len(calls) == 3  # 74 samples in chunks of at most 32 (the grid: 25 each)
    (g_many,) = torch.autograd.grad(many.square().sum(), x1)
    assert many.shape == (2, 37, 25)
    assert (one - many).abs().max() < 1e-12 and (g_one - g_many).abs().max() < 1e-12
    assert (one - _cg_gaunt_reference(x1.reshape(-1, 9), x2.reshape(-1, 16), 2, 3, 4)
            .reshape(2, 37, 25)).abs().max() < 1e-10


@pytest.mark.slow
def test_fourier_equals_grid_large_L():
    x1, x2 = torch.randn(3, 49, dtype=torch.float64), torch.randn(3, 64, dtype=torch.float64)
    a = gaunt_product(x1, x2, 6, 7, 13, method="grid")
    b = gaunt_product(x1, x2, 6, 7, 13, method="fourier")
    assert (a - b).abs().max() < 1e-4 * a.abs().max()


def test_gaunt_coefficients_selection_rule():
    assert gaunt_coefficients(1, 1, 1).abs().max() == 0
    assert gaunt_coefficients(2, 3, 4).abs().max() == 0
    G, C = gaunt_coefficients(2, 3, 3, dtype=torch.float64), wigner_3j(2, 3, 3, torch.float64)
    assert (G - (G * C).sum() * C).abs().max() < 1e-12
    # int Y00 Y_lm Y_lm = 1 / sqrt(4 pi)
    assert abs(gaunt_coefficients(0, 2, 2, dtype=torch.float64)[0, 1, 1] - (4 * torch.pi) ** -0.5
               ) < 1e-12


@pytest.mark.parametrize("method", ["grid", "fourier"])
def test_methods_agree_as_modules(method):
    ref = GauntTensorProduct(IN1, IN2, OUT, method="grid").double()
    tp = GauntTensorProduct(IN1, IN2, OUT, method=method).double()
    tp.load_state_dict(ref.state_dict())
    x1 = torch.randn(3, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(3, tp.irreps_in2.dim, dtype=torch.float64)
    assert (tp(x1, x2) - ref(x1, x2)).abs().max() < 1e-10


@pytest.mark.parametrize("cls,kw", [(GauntTensorProduct, {"method": "grid"}),
                                    (GauntTensorProduct, {"method": "fourier"}),
                                    (VectorGauntTensorProduct, {})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivariant(cls, kw, dtype):
    tp = cls(IN1, IN2, OUT, **kw)
    x1, x2 = torch.randn(5, tp.irreps_in1.dim), torch.randn(5, tp.irreps_in2.dim)
    assert_equivariant(tp, (x1, x2), (IN1, IN2), OUT, dtype=dtype)


def test_cross_product_paths():
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    gaunt = GauntTensorProduct("1o", "1o", "1e").double()
    assert gaunt(x, y).abs().max() == 0
    vg = VectorGauntTensorProduct("1o", "1o", "1e").double()
    out, cross = vg(x, y), torch.cross(x, y, dim=1)
    ratio = out / cross
    assert out.abs().max() > 1e-3
    assert (ratio - ratio[0, 0]).abs().max() < 1e-8  # proportional to the cross product


def test_per_sample_channel_weights_and_bad_input():
    tp = GauntTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o+1x2e", channels=3).double()
    x1, x2 = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    w = torch.randn(4, 3, dtype=torch.float64)
    assert tp(x1, x2, w).shape == (4, tp.irreps_out.dim)
    assert (tp(x1, x2, 2 * w) - 2 * tp(x1, x2, w)).abs().max() < 1e-12
    for method in ("grid", "fourier"):  # an empty batch is a batch
        empty = GauntTensorProduct("0e+1o", "0e+1o", "0e+1o+2e", method=method)
        assert empty(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 1)).shape == (0, 9)
    assert VectorGauntTensorProduct("0e", "1o", "1o")(torch.zeros(0, 1), torch.zeros(0, 3)
                                                      ).shape == (0, 3)
    with pytest.raises(ValueError):
        GauntTensorProduct("0e", "0e", "0e", method="nope")
    with pytest.raises(ValueError):
        tp(torch.randn(4, 5), x2)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_grid_module_matches_fourier_in_chunks_with_gradients(monkeypatch, dense, checkpoint):
    """The grid path folds the linear maps into its Legendre stages (and, for inputs with few
    components, its trigonometric stage too: ``dense``) and runs batch-last in chunks; the
    Fourier path keeps them apart. Values and every gradient must agree."""
    monkeypatch.setattr(_GridProduct, "chunk_values", 1)  # chunks of at most 32 samples
    monkeypatch.setattr(_FourierCore, "chunk_values", 1)
    grid = GauntTensorProduct(IN1, IN2, OUT, method="grid", channels=3,
                              checkpoint=checkpoint).double()
    grid.core.dense = {"1": dense, "2": dense}
    fourier = GauntTensorProduct(IN1, IN2, OUT, method="fourier", channels=3).double()
    fourier.load_state_dict(grid.state_dict())
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(2, 41, grid.irreps_in1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(41, grid.irreps_in2.dim, generator=g, dtype=torch.float64)  # broadcast
    w = torch.randn(2, 41, 3, generator=g, dtype=torch.float64)
    results = []
    for tp in (grid, fourier):
        leaves = [x1.clone().requires_grad_(), x2.clone().requires_grad_(),
                  w.clone().requires_grad_()]
        out = tp(*leaves)
        grads = torch.autograd.grad(out.sin().sum(), leaves + list(tp.parameters()))
        results.append((out, grads))
    (out_g, grads_g), (out_f, grads_f) = results
    assert out_g.shape == (2, 41, grid.irreps_out.dim)
    assert (out_g - out_f).abs().max() < 1e-10
    for a, b in zip(grads_g, grads_f):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.parametrize("dense", [False, True])
def test_grid_backward_gradcheck_and_double_backward(monkeypatch, dense):
    """The grid path's hand-written backward (from the chunks' kept grid values; recomputed
    from the inputs under create_graph) passes gradcheck and gradgradcheck, and its double
    backward equals the Fourier path's (plain autograd)."""
    monkeypatch.setattr(_GridProduct, "chunk_values", 1)  # several chunks
    monkeypatch.setattr(_FourierCore, "chunk_values", 1)
    grid = GauntTensorProduct("0e+1o+1e", "0e+1o", "0e+1o+1e+2e", channels=2).double()
    grid.core.dense = {"1": dense, "2": dense}
    fourier = GauntTensorProduct("0e+1o+1e", "0e+1o", "0e+1o+1e+2e", channels=2,
                                 method="fourier").double()
    fourier.load_state_dict(grid.state_dict())
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(70, 7, generator=g, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(70, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(70, 2, generator=g, dtype=torch.float64, requires_grad=True)
    small = (x1[:34].detach().requires_grad_(), x2[:34].detach().requires_grad_(),
             w[:34].detach().requires_grad_())  # two chunks
    assert torch.autograd.gradcheck(grid, small, fast_mode=True)
    assert torch.autograd.gradgradcheck(grid, small, fast_mode=True)

    def force_like(tp):  # a loss on an input gradient, differentiated again
        (gx2,) = torch.autograd.grad(tp(x1, x2, w).square().sum(), x2, create_graph=True)
        return torch.autograd.grad(gx2.square().sum(), [x1, w, *tp.parameters()])

    for a, b in zip(force_like(grid), force_like(fourier)):
        assert (a - b).abs().max() < 1e-9 * (1 + b.abs().max())


def test_grid_backward_skips_inputs_without_grad():
    tp = GauntTensorProduct("0e+1o", "0e+1o+2e", "0e+1o+2e").double()
    x1 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(5, 9, dtype=torch.float64)  # e.g. edge harmonics: no gradient wanted
    tp(x1, x2).sum().backward()
    assert x1.grad is not None and x2.grad is None
    assert all(p.grad is not None for p in tp.parameters())


def test_grid_checkpoint_saves_only_the_inputs():
    from tensorframes.bench.layers import saved_activation_bytes

    x1 = torch.randn(500, 3 * 9, requires_grad=True)
    x2 = torch.randn(500, 9)
    sizes = {}
    for checkpoint in (False, True):
        tp = GauntTensorProduct("3x0e+3x1o+3x2e", "0e+1o+2e", "3x0e+3x1o+3x2e",
                                checkpoint=checkpoint)
        sizes[checkpoint] = saved_activation_bytes(lambda: tp(x1, x2))  # noqa: B023
    inputs = (x1.numel() + x2.numel()) * 4
    assert sizes[True] < inputs + 2**16 < sizes[False]  # inputs plus the small A matrices
    with pytest.raises(ValueError, match="checkpoint"):
        GauntTensorProduct("0e", "0e", "0e", method="fourier", checkpoint=True)
