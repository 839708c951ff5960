"""The interface shared by every representation type (Cartesian and spherical)."""

from __future__ import annotations

import abc

import torch


class Reps(abc.ABC):
    """A finite-dimensional representation of O(d) acting on the last axis of a tensor.

    Subclasses (:class:`~tensorframes.TensorReps`, :class:`~tensorframes.Irreps`) are immutable,
    hashable and parse from strings; ``repr`` parses back to an equal object.

    Conventions (``docs/design.md``): ``transform(x, R)`` returns ``rho(R) x`` for ``x`` of shape
    ``(..., dim)`` and ``R`` of shape ``(..., d, d)``; the leading shapes broadcast against each
    other. ``matrix(R)`` returns the dense block-diagonal ``(..., dim, dim)`` matrix ``rho(R)``;
    it is meant for tests and small sizes, the hot path never builds it.
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Number of components of one feature vector."""

    @property
    @abc.abstractmethod
    def spatial_dim(self) -> int:
        """The ``d`` of the group O(d) that acts."""

    @abc.abstractmethod
    def transform(self, x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """Return ``rho(R) x``; ``x``: ``(..., dim)``, ``R``: ``(..., d, d)``."""

    @abc.abstractmethod
    def matrix(self, R: torch.Tensor) -> torch.Tensor:
        """Return the dense block-diagonal ``rho(R)`` of shape ``(..., dim, dim)``."""

    @abc.abstractmethod
    def simplify(self) -> Reps:
        """Merge neighbouring blocks of the same type."""

    @abc.abstractmethod
    def __add__(self, other: Reps) -> Reps: ...

    def _check_transform_args(self, x: torch.Tensor, R: torch.Tensor) -> None:
        """Raise a clear ``TypeError``/``ValueError`` for bad ``transform`` arguments."""
        check_matrices(R, self.spatial_dim, name="R")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"feature width mismatch: {self!r} has dim {self.dim}, "
                f"but x has shape {tuple(x.shape)} (last axis must be {self.dim})"
            )
        if x.dtype != R.dtype:
            raise TypeError(f"x and R must share a dtype, got x: {x.dtype} and R: {R.dtype}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating point tensor, got {x.dtype}")


def check_matrices(R: torch.Tensor, d: int, *, name: str = "R") -> None:
    """Check that ``R`` is a floating tensor of shape ``(..., d, d)``.

    Orthogonality is not checked here (it would cost a pass over the data);
    :meth:`tensorframes.Frames.validate` does that on request.
    """
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.dim() < 2 or R.shape[-2:] != (d, d):
        raise ValueError(
            f"{name} must have shape (..., {d}, {d}) for O({d}), got {tuple(R.shape)}"
        )
    if not R.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {R.dtype}")
