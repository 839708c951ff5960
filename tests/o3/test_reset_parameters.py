"""``reset_parameters()`` re-draws every weight of the o3 modules exactly as construction does."""

import pytest
import torch

from tensorframes import o3

CASES = {
    "TensorProduct": lambda: o3.TensorProduct(
        "2x0e + 2x1o", "1x1o", "2x1o + 2x0e",
        [(0, 0, 0, "uvu", True), (1, 0, 1, "uvu", True)],
    ),
    "FullyConnectedTensorProduct": lambda: o3.FullyConnectedTensorProduct(
        "2x0e + 2x1o", "1x0e + 1x1o", "3x0e + 2x1o"
    ),
    "Linear": lambda: o3.Linear("2x0e + 2x1o", "3x0e + 1x1o"),
    "GauntTensorProduct grid": lambda: o3.GauntTensorProduct(
        "2x0e + 2x1o", "1x0e + 1x1o", "2x0e + 2x1o + 1x2e", method="grid"
    ),
    "GauntTensorProduct fourier": lambda: o3.GauntTensorProduct(
        "2x0e + 2x1o", "1x0e + 1x1o", "2x0e + 2x1o + 1x2e", method="fourier"
    ),
    "VectorGauntTensorProduct": lambda: o3.VectorGauntTensorProduct(
        "2x0e + 2x1o", "1x0e + 1x1o", "2x0e + 2x1o + 1x1e"
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reset_redraws_every_weight_as_construction(name):
    torch.manual_seed(0)
    fresh = CASES[name]()
    module = CASES[name]()  # other draws
    params = dict(module.named_parameters())
    assert params, f"{name} has no parameters to reset"
    before = {k: v.detach().clone() for k, v in params.items()}
    torch.manual_seed(0)
    module.reset_parameters()
    for k, v in module.named_parameters():
        assert v is params[k], "reset must keep the Parameter objects (optimisers hold them)"
        assert not torch.equal(v, before[k]), f"{name}.{k} was not re-drawn"
        assert torch.equal(v, dict(fresh.named_parameters())[k]), f"{name}.{k} differs"


def test_tensor_product_without_internal_weights_resets_nothing():
    tp = o3.TensorProduct("1x1o", "1x1o", "1x0e", [(0, 0, 0, "uuu", True)],
                          shared_weights=False, internal_weights=False)
    tp.reset_parameters()
    assert tp.weight is None
