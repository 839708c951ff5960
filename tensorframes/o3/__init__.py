"""Spherical harmonics, Wigner matrices and tensor products (e3nn-compatible)."""

from ..reps._wigner import wigner_D_from_matrix
from ._spherical_harmonics import spherical_harmonics

__all__ = ["spherical_harmonics", "wigner_D_from_matrix"]
