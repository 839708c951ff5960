"""The interface shared by every representation type (Cartesian and spherical)."""

from __future__ import annotations

import abc
import re

import torch

from .._checks import compiling

__all__ = ["MAX_DIM", "ORTHOGONALITY_ATOL", "Reps", "check_ascii", "check_dim", "check_matrices",
           "check_orthogonal", "is_cartesian_spec", "is_spherical_spec", "kinds_do_not_add"]

#: Largest ``dim`` a reps (or a single irrep) may have, checked when it is built or parsed:
#: ``2**31 - 1`` components per feature vector (a feature vector of that size alone is 8 GiB
#: in float32). ``"1000000000000x1n"`` or ``"1x99n"`` (``3**99`` components) are refused.
MAX_DIM = 2**31 - 1

#: Tolerance of :func:`check_orthogonal` per dtype: the largest accepted ``max |R R^T - I|``.
#: Meant to catch matrices that are not orthogonal at all (scaled, sheared, zero, the wrong
#: tensor); wide enough for matrices computed in float32 and then cast to float64, and for
#: gradcheck's finite differences. Other dtypes: ``1e-4``.
ORTHOGONALITY_ATOL = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 1e-4,
                      torch.float64: 1e-4}

_CARTESIAN_TOKEN = re.compile(r"(?:[0-9]+x)?[0-9]+[np]")
_SPHERICAL_TOKEN = re.compile(r"(?:[0-9]+\s*x\s*)?[0-9]+[eoy]")


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
    def transform(self, x: torch.Tensor, R: torch.Tensor, *,
                  validate: bool = False) -> torch.Tensor:
        """Return ``rho(R) x``; ``x``: ``(..., dim)``, ``R``: ``(..., d, d)``.

        ``validate=True`` checks that ``R`` is orthogonal (:func:`check_orthogonal`); off by
        default on this hot path (measured 5-8% of the transform on 320,000 matrices, CPU).
        """

    @abc.abstractmethod
    def matrix(self, R: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Return the dense block-diagonal ``rho(R)`` of shape ``(..., dim, dim)``.

        ``validate`` (default on: the dense matrix costs far more, the check is 0.1-0.2% of
        it) checks that ``R`` is orthogonal (:func:`check_orthogonal`).
        """

    @abc.abstractmethod
    def simplify(self) -> Reps:
        """Merge neighbouring blocks of the same type."""

    @abc.abstractmethod
    def __add__(self, other: Reps) -> Reps: ...

    def _check_transform_args(self, x: torch.Tensor, R: torch.Tensor,
                              validate: bool = False) -> torch.Size:
        """Raise a clear ``TypeError``/``ValueError`` for bad ``transform`` arguments.

        Returns the broadcast leading shape of ``x`` and ``R``; with ``validate`` also checks
        that ``R`` is orthogonal (:func:`check_orthogonal`).
        """
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
        try:
            lead = torch.broadcast_shapes(x.shape[:-1], R.shape[:-2])
        except RuntimeError:
            raise ValueError(
                f"x of shape {tuple(x.shape)} and R of shape {tuple(R.shape)} do not broadcast: "
                f"the leading shapes {tuple(x.shape[:-1])} (x without its last axis) and "
                f"{tuple(R.shape[:-2])} (R without its last two axes) must broadcast"
            ) from None
        if validate:
            check_orthogonal(R)
        return lead


def check_matrices(R: torch.Tensor, d: int, *, name: str = "R") -> None:
    """Check that ``R`` is a floating tensor of shape ``(..., d, d)``.

    Orthogonality is not checked here (it would cost a pass over the data);
    :func:`check_orthogonal` and :meth:`tensorframes.Frames.validate` do that on request.
    """
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.dim() < 2 or R.shape[-2:] != (d, d):
        raise ValueError(
            f"{name} must have shape (..., {d}, {d}) for O({d}), got {tuple(R.shape)}"
        )
    if not R.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {R.dtype}")


def check_orthogonal(R: torch.Tensor, *, atol: float | None = None, name: str = "R") -> None:
    """Raise :class:`ValueError` unless every matrix of ``R`` ``(..., d, d)`` is orthogonal.

    Checks ``max |R R^T - I| <= atol`` over all matrices (default tolerance per dtype:
    :data:`ORTHOGONALITY_ATOL`); NaN or inf entries fail too. The message names the first
    offending matrix, its deviation, the tolerance and the dtype. One batched product and one
    reduction; half-precision matrices are checked in float32. Synchronises the device; skipped
    while ``torch.compile`` traces (:func:`tensorframes._checks.compiling`).
    """
    if R.numel() == 0 or compiling():
        return
    tol = ORTHOGONALITY_ATOL.get(R.dtype, 1e-4) if atol is None else float(atol)
    d = R.shape[-1]
    M = R.detach().reshape(-1, d, d)
    if M.dtype not in (torch.float32, torch.float64):
        M = M.float()
    # bmm against a contiguous transpose: the transposed view takes a slow strided path on CPU
    dev = torch.bmm(M, M.transpose(1, 2).contiguous())
    dev.diagonal(dim1=1, dim2=2).sub_(1.0)
    worst = float(torch.linalg.vector_norm(dev, float("inf")))
    if worst <= tol:
        return
    err = dev.abs().flatten(1).amax(1)
    bad = ~(err <= tol)  # NaN counts as bad
    i = int(bad.nonzero()[0, 0])
    index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), R.shape[:-2]))
    where = f"{name}[{', '.join(map(str, index))}]" if index else name
    raise ValueError(
        f"{where} is not orthogonal: max |R R^T - I| = {float(err[i]):.3g} > tolerance "
        f"{tol:g} for {R.dtype} (the deviation over all of {name} is {worst:.3g}); "
        f"{where} = {R.detach()[index].tolist()}. Pass an orthogonal matrix (a frame, an "
        "element of O(d)), or validate=False to skip this check"
    )


def check_dim(dim: int, what: str) -> None:
    """Raise :class:`ValueError` if ``dim`` exceeds :data:`MAX_DIM`."""
    if dim > MAX_DIM:
        shown = f"{dim}" if dim < 10**30 else f"{dim:.3g}"
        raise ValueError(f"{what} has dim {shown}, above the bound MAX_DIM = {MAX_DIM} "
                         "(2**31 - 1) components")


def check_ascii(spec: str, kind: str) -> None:
    """Raise :class:`ValueError` unless ``spec`` is ASCII (full-width digits, Unicode minus
    signs or spaces would otherwise parse silently or confusingly)."""
    if not spec.isascii():
        i, ch = next((i, c) for i, c in enumerate(spec) if not c.isascii())
        raise ValueError(f"{kind} strings must be ASCII, got {spec!r} with {ch!r} "
                         f"(U+{ord(ch):04X}) at position {i}; write digits and letters as "
                         "ASCII, e.g. '16x0n + 8x1n' or '16x0e + 8x1o'")


def _tokens_match(spec: object, token: re.Pattern) -> bool:
    if not isinstance(spec, str) or not spec.isascii() or spec.strip() == "":
        return False
    return all(token.fullmatch(t.strip()) for t in spec.split("+"))


def is_cartesian_spec(spec: object) -> bool:
    """True if ``spec`` is a non-empty string of Cartesian tokens (``"2x1n + 1x0p"``)."""
    return _tokens_match(spec, _CARTESIAN_TOKEN)


def is_spherical_spec(spec: object) -> bool:
    """True if ``spec`` is a non-empty string of irreps tokens (``"2x1o + 0e"``)."""
    return _tokens_match(spec, _SPHERICAL_TOKEN)


def kinds_do_not_add(left: object, right: object) -> TypeError:
    """The error for ``TensorReps + Irreps`` (either order, or with a string of the other kind)."""
    return TypeError(
        f"cannot add {left!r} and {right!r}: Cartesian (TensorReps, 'n'/'p') and spherical "
        "(Irreps, 'e'/'o') reps do not add. Convert the Cartesian side first: "
        "irreps, Q = tensor_reps.to_irreps() (features: x_irreps = x_cart @ Q.T)"
    )
