"""Reading a representation from a user's specification: :func:`as_reps`."""

from __future__ import annotations

from .base import Reps, check_ascii
from .irreps import Irreps
from .tensorreps import TensorReps

__all__ = ["as_reps"]


def as_reps(spec: Reps | str, spatial_dim: int = 3) -> Reps:
    """A :class:`Reps` from a Reps or a string.

    ``"...n"``/``"...p"`` tokens parse as :class:`TensorReps` (in ``spatial_dim``),
    ``"...e"``/``"...o"`` as :class:`Irreps`; a :class:`Reps` is returned as it is.

    Raises:
        TypeError: ``spec`` is neither a Reps nor a string.
        ValueError: the string parses as neither kind, or is not ASCII.
    """
    if isinstance(spec, Reps):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"expected a Reps or a reps string, got {type(spec).__name__}")
    check_ascii(spec, "reps")
    try:
        return TensorReps(spec, spatial_dim=spatial_dim)
    except ValueError:
        try:
            return Irreps(spec)
        except ValueError:
            raise ValueError(
                f"cannot parse {spec!r} as TensorReps ('16x0n + 8x1p') or Irreps ('16x0e + 8x1o')"
            ) from None
