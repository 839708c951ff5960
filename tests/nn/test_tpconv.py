import pytest
import torch

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
    pytest.importorskip("e3nn")
    pos, ei = _graph()
    ours = TPConv(IN, OUT, cutoff=3.0).double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its CG buffers in the default dtype
    try:
        ref = TPConv(IN, OUT, product="e3nn", cutoff=3.0).double()
    finally:
        torch.set_default_dtype(default)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    # only the static buffers of the two product implementations differ
    assert not [k for k in missing + unexpected if not k.startswith("tp.")]
    x = torch.randn(pos.shape[0], ours.irreps_in.dim, dtype=torch.float64)
    pos = pos.double()
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
