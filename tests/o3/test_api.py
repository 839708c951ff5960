"""The public surface of tensorframes.o3: what an e3nn user reaches for, and nothing internal."""

import tensorframes as tf
from tensorframes import o3

PUBLIC = {
    "FullTensorProduct", "FullyConnectedTensorProduct", "GauntTensorProduct", "Irrep", "Irreps",
    "Linear", "SphericalHarmonics", "TensorProduct", "VectorGauntTensorProduct", "expressivity",
    "gaunt_coefficients", "interactions", "spherical_harmonics", "wigner_3j",
    "wigner_D_from_matrix",
}
INTERNAL = {"describe_tensor_product", "TensorProductDescription", "tensor_product_reference",
            "gaunt_product", "LocalFrameBilinear"}


def test_exports_what_an_e3nn_user_reaches_for():
    assert set(o3.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(o3, name) is not None
    assert o3.Irreps is tf.Irreps and o3.Irrep is tf.reps.Irrep
    assert o3.Irreps("2x0e + 1x1o").dim == 5


def test_internals_stay_private():
    public_names = {n for n in vars(o3) if not n.startswith("_")}
    assert not INTERNAL & public_names
    assert not INTERNAL & set(o3.__all__)
