from functools import partial

import pytest
import torch
from torch_geometric.nn import MessagePassing

import tensorframes as tf
from tensorframes.nn import TPConv
from tensorframes.testing import assert_equivariant

IN, OUT = "4x0e+2x1o+1x2e", "3x0e+2x1o+2x1e+1x2e"


def _graph(n=10, e=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=g) * 1.5
    ei = torch.randint(0, n, (2, e), generator=g)
    return pos, ei[:, ei[0] != ei[1]]


@pytest.mark.parametrize("product", ["cg", "gaunt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivariant_and_translation_invariant(product, dtype):
    pos, ei = _graph()
    conv = TPConv(IN, OUT, product=product, cutoff=3.0, radial_hidden=16)
    x = torch.randn(pos.shape[0], conv.irreps_in.dim)
    assert conv(x, pos, ei).shape == (pos.shape[0], conv.irreps_out.dim)
    assert_equivariant(conv, (x, pos, ei), (IN, "positions", None), OUT, dtype=dtype)


def test_matches_e3nn_product_and_permutation():
    e3nn_o3 = pytest.importorskip("e3nn.o3")
    torch.manual_seed(0)
    pos, ei = _graph()
    ours = TPConv(IN, OUT, cutoff=3.0).double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its CG buffers in the default dtype
    try:
        # e3nn's product enters through the tensor-product factory protocol (as in the benchmark)
        factory = partial(e3nn_o3.TensorProduct, shared_weights=False, internal_weights=False)
        ref = TPConv(IN, OUT, product=factory, cutoff=3.0).double()
    finally:
        torch.set_default_dtype(default)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    # only the static buffers of the two product implementations differ
    assert not [k for k in missing + unexpected if not k.startswith("tp.")]
    x = torch.randn(pos.shape[0], ours.irreps_in.dim, dtype=torch.float64)
    pos = pos.double()
    assert ours(x, pos, ei).abs().max() > 1e-3  # not trivially zero
    assert (ours(x, pos, ei) - ref(x, pos, ei)).abs().max() < 1e-10
    perm = torch.randperm(pos.shape[0])
    inv = torch.argsort(perm)
    out = ours(x[perm], pos[perm], inv[ei])
    assert (out - ours(x, pos, ei)[perm]).abs().max() < 1e-10


def test_cutoff_is_smooth_and_bad_product():
    from tensorframes.nn._tpconv import polynomial_envelope

    r = torch.tensor([0.999, 0.9999, 1.0], dtype=torch.float64, requires_grad=True)
    env = polynomial_envelope(r, 1.0)
    (grad,) = torch.autograd.grad(env.sum(), r)
    assert env[-1] == 0 and env[1] < 1e-10 and env[0] < 1e-6  # vanishes smoothly (order p)
    # the derivative vanishes quadratically at the cutoff: 10x closer -> about 100x smaller
    assert grad[-1] == 0 and grad[1].abs() < grad[0].abs() / 50 and grad[0].abs() < 1e-3
    conv = TPConv("0e", "0e", product="cg", cutoff=1.0)
    pos = torch.tensor([[0.0, 0, 0], [2.0, 0, 0]])
    ei = torch.tensor([[1], [0]])
    assert conv(torch.ones(2, 1), pos, ei).abs().max() == conv(torch.ones(2, 1), pos,
                                                                ei[:, :0]).abs().max()
    with pytest.raises(ValueError):
        TPConv("0e", "0e", product="nope")
    with pytest.raises(ValueError, match="factory"):
        TPConv("0e", "0e", product="e3nn")  # e3nn enters through a factory, not a string
    with pytest.raises(TypeError, match="factory"):
        TPConv("0e", "0e", product=3)


class _RecordingFactory:
    """A tensor-product factory building our CG product, recording what it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, irreps_in1, irreps_in2, irreps_out, instructions):
        self.calls.append((irreps_in1, irreps_in2, irreps_out, list(instructions)))
        return tf.o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions,
                                   shared_weights=False, internal_weights=False)


def test_product_factory_protocol():
    pos, ei = _graph(seed=1)
    pos = pos.double()
    torch.manual_seed(0)
    ours = TPConv(IN, OUT, cutoff=3.0).double()
    factory = _RecordingFactory()
    custom = TPConv(IN, OUT, cutoff=3.0, product=factory).double()
    ((in1, in2, mid, instr),) = factory.calls
    assert isinstance(in1, tf.Irreps) and in1 == tf.Irreps(IN)
    assert in2 == tf.Irreps("0e+1o+2e") and mid == custom.irreps_mid
    assert instr and all(len(ins) == 5 and ins[3] == "uvu" and ins[4] for ins in instr)
    assert custom.radial[-1].out_features == custom.tp.weight_numel
    custom.load_state_dict(ours.state_dict())
    x = torch.randn(pos.shape[0], ours.irreps_in.dim, dtype=torch.float64)
    torch.testing.assert_close(custom(x, pos, ei), ours(x, pos, ei), rtol=0, atol=1e-12)
    assert "_RecordingFactory" in repr(custom)


def test_product_factory_module_is_checked():
    class NoWeights(torch.nn.Module):
        def forward(self, x1, x2, w):
            return x1

    with pytest.raises(TypeError, match="weight_numel"):
        TPConv(IN, OUT, product=lambda *args: NoWeights())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TPConv(IN, OUT, product=lambda *args: "not a module")


def test_reset_parameters_runs_at_construction_and_redraws():
    calls = []

    class Spy(TPConv):
        def reset_parameters(self):
            calls.append(self.lin2 is not None)  # runs after every submodule exists
            super().reset_parameters()

    Spy(IN, OUT)
    assert calls == [True]
    torch.manual_seed(3)
    a = TPConv(IN, OUT)
    torch.manual_seed(3)
    b = TPConv(IN, OUT)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name  # a fixed seed fixes the initialisation
    before = {k: v.clone() for k, v in a.state_dict().items()}
    a.reset_parameters()
    for prefix in ("lin1.", "radial.0.", "radial.2.", "lin2."):
        changed = [k for k in before if k.startswith(prefix)
                   and not torch.equal(before[k], a.state_dict()[k])]
        assert changed, prefix


def test_kwargs_reach_message_passing():
    pos, ei = _graph(seed=2)
    pos = pos.double()
    torch.manual_seed(0)
    add = TPConv(IN, OUT, cutoff=3.0).double()
    x = torch.randn(pos.shape[0], add.irreps_in.dim, dtype=torch.float64)
    # aggr="mean": lin2 is linear without bias, so the output is the sum's over the in-degree
    mean = TPConv(IN, OUT, cutoff=3.0, aggr="mean").double()
    mean.load_state_dict(add.state_dict())
    assert mean.aggr == "mean" and add.aggr == "add"
    deg = torch.bincount(ei[1], minlength=pos.shape[0]).double()[:, None]
    has = deg[:, 0] > 0
    torch.testing.assert_close(mean(x, pos, ei)[has], (add(x, pos, ei) / deg)[has],
                               rtol=0, atol=1e-12)
    assert_equivariant(mean, (x, pos, ei), (IN, "positions", None), OUT, dtype=torch.float64)
    # flow="target_to_source" reads edge_index the other way round
    flipped = TPConv(IN, OUT, cutoff=3.0, flow="target_to_source").double()
    flipped.load_state_dict(add.state_dict())
    torch.testing.assert_close(flipped(x, pos, ei.flip(0)), add(x, pos, ei), rtol=0, atol=1e-12)
    assert isinstance(flipped, MessagePassing) and flipped.flow == "target_to_source"


@pytest.mark.parametrize("kwargs, match", [
    ({"aggr": "max"}, "equivariance"),
    ({"aggr": ["sum", "mean"]}, "aggr"),
    ({"node_dim": 1}, "node_dim"),
    ({"decomposed_layers": 2}, "decomposed_layers"),
])
def test_kwargs_that_make_no_sense_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TPConv(IN, OUT, **kwargs)
    with pytest.raises(TypeError):
        TPConv(IN, OUT, not_an_option=1)
