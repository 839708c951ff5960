import pytest
import torch

from tensorframes import Irreps
from tensorframes.o3 import FullTensorProduct, FullyConnectedTensorProduct, TensorProduct
from tensorframes.o3._tp_description import tensor_product_reference
from tensorframes.testing import assert_equivariant

o3 = pytest.importorskip("e3nn.o3")

IN1, IN2 = "2x0e+3x1o+2x2e", "2x0e+1x1o+2x2o"
OUT = "3x0e+2x1o+2x1e+3x2e+2x2o+2x3o"


def _fc_instructions(i1, i2, io, mode="uvw"):
    i1, i2, io = Irreps(i1), Irreps(i2), Irreps(io)
    return [(a, b, c, mode, True) for a, (_, r1) in enumerate(i1) for b, (_, r2) in enumerate(i2)
            for c, (_, ro) in enumerate(io) if ro in list(r1 * r2)]


CASES = {
    "uvw": (IN1, IN2, OUT, _fc_instructions(IN1, IN2, OUT)),
    "uvu": ("3x0e+3x1o", "2x0e+2x1o", "3x0e+3x1o+3x1e",
            [(0, 0, 0, "uvu", True), (1, 1, 0, "uvu", True), (1, 1, 2, "uvu", False),
             (0, 1, 1, "uvu", True), (1, 0, 1, "uvu", True, 0.5)]),
    "uuu": ("3x0e+3x1o", "3x0e+3x1o", "3x0e+3x1o+3x1e",
            [(0, 0, 0, "uuu", True), (1, 1, 2, "uuu", False), (0, 1, 1, "uuu", True),
             (1, 1, 0, "uuu", False)]),
    "uvuv": ("3x0e+3x1o", "2x0e+2x1o", "6x0e+6x1o+6x1e",
             [(0, 0, 0, "uvuv", True), (1, 1, 2, "uvuv", False), (0, 1, 1, "uvuv", True)]),
    "uvv": ("3x0e+3x1o", "2x0e+2x1o", "2x0e+2x1o+2x1e",
            [(0, 0, 0, "uvv", True), (1, 1, 2, "uvv", False), (0, 1, 1, "uvv", True)]),
    "uuw": ("3x0e+3x1o", "3x0e+3x1o", "2x0e+2x1o+1x1e",
            [(0, 0, 0, "uuw", True), (1, 1, 2, "uuw", False), (0, 1, 1, "uuw", True)]),
    "mul1": ("0e+1o+2e", "0e+1o+2e", "0e+1o+1e+2e",
             [(1, 1, 2, "uvw", True), (2, 2, 0, "uvw", True), (0, 1, 1, "uvu", False),
              (2, 1, 1, "uvw", True)]),
}
NORMS = [("component", "element"), ("norm", "path"), ("none", "none")]


def _e3nn(i1, i2, io, instr, **kw):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn's CG buffers in float64 from the start
    try:
        return o3.TensorProduct(i1, i2, io, instr, internal_weights=False, **kw)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_equals_e3nn_float64(case, shared, method):
    i1, i2, io, instr = CASES[case]
    ref_mod = _e3nn(i1, i2, io, instr, shared_weights=shared)
    ours = TensorProduct(i1, i2, io, instr, shared_weights=shared, internal_weights=False,
                         method=method).double()
    assert ours.weight_numel == ref_mod.weight_numel
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(5, ours.irreps_in1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, ours.irreps_in2.dim, generator=g, dtype=torch.float64)
    shape = (ours.weight_numel,) if shared else (5, ours.weight_numel)
    w = torch.randn(*shape, generator=g, dtype=torch.float64)
    expected = ref_mod(x1, x2, w)
    assert (ours(x1, x2, w) - expected).abs().max() < 1e-10
    ref = tensor_product_reference(ours.description, x1, x2, w)
    assert (ref - expected).abs().max() < 1e-10


@pytest.mark.parametrize("irrep_normalization,path_normalization", NORMS)
def test_normalizations_equal_e3nn_float32(irrep_normalization, path_normalization):
    i1, i2, io, instr = CASES["uvw"]
    kw = dict(irrep_normalization=irrep_normalization, path_normalization=path_normalization,
              in1_var=[1.0, 2.0, 0.5], out_var=[1.0] * 5 + [3.0])
    ref_mod = o3.TensorProduct(i1, i2, io, instr, internal_weights=False, **kw)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(6, ref_mod.irreps_in1.dim, generator=g)
    x2 = torch.randn(6, ref_mod.irreps_in2.dim, generator=g)
    w = torch.randn(ref_mod.weight_numel, generator=g)
    for method in ("dense", "sparse"):
        ours = TensorProduct(i1, i2, io, instr, internal_weights=False, method=method, **kw)
        assert (ours(x1, x2, w) - ref_mod(x1, x2, w)).abs().max() < 1e-5


def test_fully_connected_and_full_match_e3nn():
    ref = o3.FullyConnectedTensorProduct(IN1, IN2, OUT)
    ours = FullyConnectedTensorProduct(IN1, IN2, OUT)
    assert [tuple(i)[:5] for i in ours.instructions] == [
        (i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight) for i in ref.instructions]
    x1, x2 = torch.randn(4, ref.irreps_in1.dim), torch.randn(4, ref.irreps_in2.dim)
    with torch.no_grad():
        ours.weight.copy_(ref.weight)
    assert (ours(x1, x2) - ref(x1, x2)).abs().max() < 1e-5
    full_ref = o3.FullTensorProduct("2x0e+1x1o+1x2e", "1x1o+2x1e", ["0e", "1e", "2o", "3o"])
    full = FullTensorProduct("2x0e+1x1o+1x2e", "1x1o+2x1e", ["0e", "1e", "2o", "3o"])
    assert str(full.irreps_out) == str(full_ref.irreps_out)
    x1, x2 = torch.randn(4, full.irreps_in1.dim), torch.randn(4, full.irreps_in2.dim)
    assert (full(x1, x2) - full_ref(x1, x2)).abs().max() < 1e-5


def test_cross_product_selection_rule():
    tp = FullTensorProduct("1o", "1o").double()
    assert str(tp.irreps_out) == "1x0e+1x1e+1x2e"
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    out = tp(x, y)[:, 1:4]
    assert (out - torch.cross(x, y, dim=1) / 2**0.5).abs().max() < 1e-12


@pytest.mark.parametrize("method", ["dense", "sparse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivariant(method, dtype):
    i1, i2, io, instr = CASES["uvw"]
    tp = TensorProduct(i1, i2, io, instr, method=method)
    x1, x2 = torch.randn(5, tp.irreps_in1.dim), torch.randn(5, tp.irreps_in2.dim)
    assert_equivariant(tp, (x1, x2), (str(tp.irreps_in1), str(tp.irreps_in2)), str(io),
                       dtype=dtype)


def test_dense_equals_sparse_and_broadcast():
    i1, i2, io, instr = CASES["uvu"]
    d = TensorProduct(i1, i2, io, instr, method="dense").double()
    s = TensorProduct(i1, i2, io, instr, method="sparse").double()
    s.load_state_dict(d.state_dict())
    x1 = torch.randn(2, 3, d.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(3, d.irreps_in2.dim, dtype=torch.float64)
    out = d(x1, x2)
    assert out.shape == (2, 3, d.irreps_out.dim)
    assert (out - s(x1, x2)).abs().max() < 1e-12


def test_buffers_follow_dtype_without_precision_loss():
    tp = FullyConnectedTensorProduct("1o+2e", "1o+2e", "0e+2e")  # float32 buffers
    tp64 = tp.float().double()
    buf = dict(tp64.named_buffers())
    assert all(b.dtype == torch.float64 for b in buf.values() if b.is_floating_point())
    ref = FullyConnectedTensorProduct("1o+2e", "1o+2e", "0e+2e").double()
    ref.load_state_dict(tp64.state_dict())
    x1, x2 = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    assert (tp64(x1, x2) - ref(x1, x2)).abs().max() < 1e-13


def test_bad_input_raises():
    with pytest.raises(ValueError, match="selection"):
        TensorProduct("1o", "1o", "1o", [(0, 0, 0, "uvw", True)])
    with pytest.raises(ValueError, match="mode"):
        TensorProduct("1o", "1o", "1e", [(0, 0, 0, "xyz", True)])
    tp = TensorProduct("1o", "1o", "1e", [(0, 0, 0, "uvw", True)], shared_weights=False)
    with pytest.raises(ValueError, match="weight"):
        tp(torch.randn(2, 3), torch.randn(2, 3))
