"""Representations of O(d): Cartesian tensors (:class:`TensorReps`) and irreps (:class:`Irreps`).

Also the functional Wigner-D matrix of an irrep (:func:`wigner_D_from_matrix`) and
:func:`as_reps`, which reads a Reps from a string such as ``"8x0n + 4x1n"`` or ``"8x0e + 4x1o"``.
"""

from ._parse import as_reps
from ._wigner import wigner_D_from_matrix
from .base import Reps
from .irreps import Irrep, Irreps
from .tensorreps import TensorReps

__all__ = ["Irrep", "Irreps", "Reps", "TensorReps", "as_reps", "wigner_D_from_matrix"]
