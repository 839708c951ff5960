"""Testing helpers for users and for the library's own suite.

The main entry point is :func:`assert_equivariant`, which checks a function or module under
seeded random elements of O(d), reflections included, and translations where positions enter.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._math import haar_orthogonal
from .reps import Reps, as_reps

__all__ = ["POSITIONS", "TOLERANCES", "assert_equivariant", "random_orthogonal", "tolerance"]

#: Absolute tolerances per dtype used throughout the tests (docs/design.md: 1e-5 / 1e-10).
TOLERANCES = {torch.float32: 1e-5, torch.float64: 1e-10}

#: Marker for arguments/outputs that are positions: they transform as ``x -> g x + t``.
POSITIONS = "positions"


def tolerance(dtype: torch.dtype) -> float:
    """Named absolute tolerance for ``dtype`` (``float32``: 1e-5, ``float64``: 1e-10)."""
    try:
        return TOLERANCES[dtype]
    except KeyError:
        raise ValueError(
            f"no tolerance defined for dtype {dtype}; expected one of {list(TOLERANCES)}"
        ) from None


def random_orthogonal(
    n: int,
    d: int = 3,
    *,
    det: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Haar-random elements of O(d) as an ``(n, d, d)`` tensor.

    Args:
        det: ``+1`` for rotations only, ``-1`` for reflections only, ``None`` for both (each
            sign with probability 1/2).
        generator: a seeded ``torch.Generator`` for reproducible draws (drawn on its device).
        dtype, device: of the result (drawn in float64, then cast).

    The algorithm is :func:`tensorframes._math.haar_orthogonal`'s (QR of a Gaussian matrix);
    the same generator state gives the same matrices.
    """
    return haar_orthogonal(n, d, det=det, generator=generator).to(dtype=dtype, device=device)


def _as_reps(spec: Reps | str | None, d: int) -> Reps | str | None:
    """Interpret an entry of ``reps_in``/``reps_out``: Reps, reps string, POSITIONS or None."""
    if spec is None or _is_positions(spec):
        return spec
    if not isinstance(spec, (str, Reps)):
        raise TypeError(f"expected a Reps, a reps string, {POSITIONS!r} or None, got {spec!r}")
    return as_reps(spec, d)


def _act(value: Any, spec: Reps | str | None, g: torch.Tensor, t: torch.Tensor) -> Any:
    if spec is None:
        return value
    if _is_positions(spec):
        return value @ g.transpose(-1, -2) + t
    return spec.transform(value, g)


def _is_positions(spec: object) -> bool:
    return isinstance(spec, str) and spec == POSITIONS


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def assert_equivariant(
    fn: Callable[..., Any],
    args: Sequence[Any] | Mapping[str, Any],
    reps_in: Sequence[Any] | Mapping[str, Any],
    reps_out: Any | Sequence[Any],
    *,
    spatial_dim: int = 3,
    n_samples: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    tol: float | None = None,
    translations: bool = True,
) -> dict[str, float]:
    """Check that ``fn`` is O(d)-equivariant (reflections included) and report the error.

    For ``n_samples`` seeded random ``g`` in O(d) (alternately improper and proper, so half are
    reflections) and translations ``t``, compares ``fn(g . args)`` with ``g . fn(args)``, where
    ``g`` acts on each argument and output according to its entry in ``reps_in`` / ``reps_out``:

    * a :class:`~tensorframes.Reps` (or a reps string): ``x -> rho(g) x`` on the last axis;
    * ``"positions"`` (:data:`POSITIONS`): ``x -> g x + t`` (``t = 0`` if ``translations`` is off);
    * ``None``: left unchanged (indices, batch vectors, invariant inputs and outputs).

    Floating inputs are cast to ``dtype`` (float64 by default) and an ``nn.Module`` ``fn`` is
    copied, cast and put in eval mode (no dropout), so the comparison is not limited by float32
    rounding or noise. A plain function is called as it is.

    Args:
        fn: the function or module under test.
        args: its positional arguments (a sequence) or keyword arguments (a mapping).
        reps_in: one entry per argument, same container type as ``args``.
        reps_out: one entry for a single output tensor, or a sequence for a tuple of outputs.
        spatial_dim: the ``d`` of O(d).
        n_samples: number of random group elements.
        seed: seed of the generator drawing ``g`` and ``t``.
        dtype: the floating dtype of the comparison.
        tol: largest allowed error, relative to ``max(1, max |output|)``; defaults to
            :func:`tolerance` of ``dtype``.
        translations: whether positions are also translated.

    Returns:
        ``{"output[i]": error}``: the largest relative error over samples for each output.

    Raises:
        AssertionError: naming every output whose error exceeds ``tol``.
    """
    gen = torch.Generator().manual_seed(seed)
    tol = tolerance(dtype) if tol is None else tol
    if isinstance(fn, torch.nn.Module):
        fn = copy.deepcopy(fn).to(dtype).eval()  # no dropout noise in the comparison
    mapping = isinstance(args, Mapping)
    if mapping != isinstance(reps_in, Mapping) or len(args) != len(reps_in):
        raise ValueError("reps_in must match args: one entry per argument, same container type")
    keys = list(args) if mapping else list(range(len(args)))
    if mapping and set(keys) != set(reps_in):
        raise ValueError(f"reps_in keys {sorted(reps_in)} do not match args keys {sorted(keys)}")
    specs_in = {k: _as_reps(reps_in[k], spatial_dim) for k in keys}
    values = {k: _cast(args[k], dtype) for k in keys}
    single = not isinstance(reps_out, (list, tuple))
    specs_out = [_as_reps(s, spatial_dim) for s in ([reps_out] if single else reps_out)]

    def call(vals):
        out = fn(**vals) if mapping else fn(*(vals[k] for k in keys))
        out = [out] if single else list(out)
        if len(out) != len(specs_out):
            raise ValueError(f"fn returned {len(out)} outputs, reps_out describes {len(specs_out)}")
        return out

    with torch.no_grad():
        base = call(values)
    errors = [0.0] * len(specs_out)
    for s in range(n_samples):
        det = -1 if s % 2 == 0 else 1
        g = random_orthogonal(1, spatial_dim, det=det, generator=gen, dtype=dtype)[0]
        t = torch.randn(spatial_dim, generator=gen, dtype=torch.float64).to(dtype)
        if not translations:
            t = torch.zeros_like(t)
        moved = {k: _act(values[k], specs_in[k], g.to(_device(values[k])), t) for k in keys}
        with torch.no_grad():
            out_moved = call(moved)
        for i, (a, b, spec) in enumerate(zip(out_moved, base, specs_out)):
            expected = _act(b, spec, g.to(b.device), t.to(b.device))
            scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
            err = (a - expected).abs().max().item() / scale if expected.numel() else 0.0
            errors[i] = max(errors[i], err)
    report = {f"output[{i}]": e for i, e in enumerate(errors)}
    bad = {k: e for k, e in report.items() if not e <= tol}
    if bad:
        raise AssertionError(
            f"not equivariant under O({spatial_dim}) (tolerance {tol:g}, relative): "
            + ", ".join(f"{k}: error {e:.3g}" for k, e in bad.items())
        )
    return report


def _device(value: Any) -> torch.device:
    return value.device if isinstance(value, torch.Tensor) else torch.device("cpu")
