"""Representations of O(d): Cartesian tensors (:class:`TensorReps`) and irreps (:class:`Irreps`)."""

from .base import Reps
from .irreps import Irrep, Irreps
from .tensorreps import TensorReps

__all__ = ["Irrep", "Irreps", "Reps", "TensorReps"]
