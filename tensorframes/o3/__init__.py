"""Spherical harmonics, Wigner matrices and tensor products, with e3nn's names and conventions.

What an e3nn user reaches for: :class:`Irreps` / :class:`Irrep` (the library's
:mod:`tensorframes.reps` types), :class:`Linear`, :class:`SphericalHarmonics` and
:func:`spherical_harmonics`, :func:`wigner_3j`, :func:`wigner_D_from_matrix`, the
Clebsch-Gordan products (:class:`TensorProduct`, :class:`FullyConnectedTensorProduct`,
:class:`FullTensorProduct`), the Gaunt products (:class:`GauntTensorProduct`,
:class:`VectorGauntTensorProduct`, :func:`gaunt_coefficients`) and the expressivity measures
(:func:`expressivity`, :func:`interactions`). Everything else lives in private modules.
"""

from ..reps import Irrep, Irreps, wigner_D_from_matrix
from ._expressivity import expressivity, interactions
from ._gaunt import GauntTensorProduct, VectorGauntTensorProduct, gaunt_coefficients
from ._linear import Linear
from ._spherical_harmonics import SphericalHarmonics, spherical_harmonics
from ._tensor_product import FullTensorProduct, FullyConnectedTensorProduct, TensorProduct
from ._wigner_3j import wigner_3j

__all__ = [
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "GauntTensorProduct",
    "Irrep",
    "Irreps",
    "Linear",
    "SphericalHarmonics",
    "TensorProduct",
    "VectorGauntTensorProduct",
    "expressivity",
    "gaunt_coefficients",
    "interactions",
    "spherical_harmonics",
    "wigner_3j",
    "wigner_D_from_matrix",
]
