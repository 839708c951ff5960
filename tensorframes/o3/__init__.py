"""Spherical harmonics, Wigner matrices and tensor products (e3nn-compatible)."""

from ..reps._wigner import wigner_D_from_matrix
from ._expressivity import LocalFrameBilinear, expressivity, interactions
from ._gaunt import (
    GauntTensorProduct,
    VectorGauntTensorProduct,
    gaunt_coefficients,
    gaunt_product,
)
from ._spherical_harmonics import spherical_harmonics
from ._tensor_product import (
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
    TensorProductDescription,
    describe_tensor_product,
    tensor_product_reference,
)
from ._wigner_3j import wigner_3j

__all__ = [
    "spherical_harmonics",
    "wigner_D_from_matrix",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "GauntTensorProduct",
    "LocalFrameBilinear",
    "TensorProduct",
    "TensorProductDescription",
    "VectorGauntTensorProduct",
    "describe_tensor_product",
    "expressivity",
    "gaunt_coefficients",
    "gaunt_product",
    "interactions",
    "tensor_product_reference",
    "wigner_3j",
]
