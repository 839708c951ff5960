"""Cartesian tensor representations of O(d): :class:`TensorReps`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch

from ._tensor_power import apply_tensor_power, tensor_power_matrix
from .base import (
    MAX_DIM,
    Reps,
    check_ascii,
    check_dim,
    check_matrices,
    check_orthogonal,
    is_spherical_spec,
    kinds_do_not_add,
)
from .change_of_basis import cartesian_to_irreps
from .irreps import Irreps

_TOKEN = re.compile(r"(?:([0-9]+)x)?([0-9]+)([np])")
#: Numbers in a reps string longer than this are refused before conversion (they exceed
#: MAX_DIM anyway; Python's int() would otherwise spend time or raise its own message).
_MAX_DIGITS = 30


class TensorRep(NamedTuple):
    """One Cartesian tensor type: ``order`` k >= 0 and parity ``"n"`` or ``"p"``.

    ``"n"`` transforms as ``R^{(x)k}``, ``"p"`` additionally by ``det(R)`` (a pseudo-tensor).
    """

    order: int
    parity: str

    def __str__(self) -> str:
        return f"{self.order}{self.parity}"


class MulTensorRep(NamedTuple):
    """A block: ``mul`` copies of one :class:`TensorRep`."""

    mul: int
    rep: TensorRep

    def __str__(self) -> str:
        return f"{self.mul}x{self.rep}"


class SortResult(NamedTuple):
    """Result of :meth:`TensorReps.sort` (as e3nn's ``Irreps.sort``)."""

    reps: TensorReps
    p: tuple[int, ...]
    inv: tuple[int, ...]


def _type_dim(order: int, d: int) -> int:
    """``d**order``, or ``MAX_DIM + 1`` when that is larger (without computing a huge power)."""
    if order > 64:  # d >= 2: d**65 > MAX_DIM
        return MAX_DIM + 1
    return min(d**order, MAX_DIM + 1)


def _check_type(order: int, d: int, text: str) -> None:
    if _type_dim(order, d) > MAX_DIM:
        n = d**order if order <= 10_000 else None
        shown = "" if n is None else f"{n}" if n < 10**30 else f"{n:.3g}"
        size = f"{d}**{order}" if n is None else f"{d}**{order} = {shown}"
        raise ValueError(f"tensor type {text!r} in d={d} has {size} components, "
                         f"above the bound MAX_DIM = {MAX_DIM} (2**31 - 1)")


def _parse(spec: str) -> tuple[MulTensorRep, ...]:
    check_ascii(spec, "TensorReps")
    spec = spec.strip()
    if spec == "":
        return ()
    blocks = []
    for raw in spec.split("+"):
        token = raw.strip()
        m = _TOKEN.fullmatch(token)
        if m is not None and any(g is not None and len(g.lstrip("0")) > _MAX_DIGITS
                                 for g in m.groups()[:2]):
            raise ValueError(f"TensorReps token {token!r} in {spec!r} has a number of more than "
                             f"{_MAX_DIGITS} digits: its dim exceeds the bound MAX_DIM = "
                             f"{MAX_DIM} (2**31 - 1)")
        if m is None:
            raise ValueError(
                f"malformed TensorReps token {token!r} in {spec!r}: expected "
                "'<mul>x<order><parity>' with integers mul >= 0, order >= 0 and parity "
                "'n' or 'p', e.g. '16x0n + 8x1n + 2x1p'"
            )
        mul = int(m.group(1)) if m.group(1) is not None else 1
        blocks.append(MulTensorRep(mul, TensorRep(int(m.group(2)), m.group(3))))
    return tuple(blocks)


def _coerce_block(item) -> MulTensorRep:
    if isinstance(item, MulTensorRep):
        return item
    if isinstance(item, str):
        parsed = _parse(item)
        if len(parsed) != 1:
            raise ValueError(f"expected a single TensorReps block, got {item!r}")
        return parsed[0]
    if isinstance(item, tuple) and len(item) == 2:
        mul, rep = item
        if isinstance(rep, str):
            (block,) = _parse(rep) if _TOKEN.fullmatch(rep.strip()) else (None,)
            if block is None or block.mul != 1:
                raise ValueError(f"malformed tensor type {rep!r}: expected e.g. '1n' or '2p'")
            rep = block.rep
        elif isinstance(rep, tuple) and len(rep) == 2:
            rep = TensorRep(*rep)
        else:
            raise TypeError(f"cannot interpret {rep!r} as a tensor type (order, parity)")
        if isinstance(mul, bool) or not isinstance(mul, int) or mul < 0:
            raise ValueError(f"multiplicity must be a non-negative int, got {mul!r}")
        if (isinstance(rep.order, bool) or not isinstance(rep.order, int) or rep.order < 0
                or rep.parity not in ("n", "p")):
            raise ValueError(f"tensor type must be (order >= 0, 'n' | 'p'), got {tuple(rep)!r}")
        return MulTensorRep(mul, TensorRep(rep.order, rep.parity))
    raise TypeError(f"cannot interpret {item!r} as a TensorReps block")


class TensorReps(Reps):
    """Cartesian tensor representations of O(d), e.g. ``TensorReps("16x0n + 8x1n + 2x1p + 4x2n")``.

    Each block ``<mul>x<order><parity>`` holds ``mul`` tensors of order ``k`` with ``d**k``
    components each (row-major flattened). Parity ``n`` transforms as ``R^{(x)k}``, parity ``p``
    additionally by ``det(R)``. Blocks are stored in the listed order, each block mul-major:
    the layout of ``x[..., block]`` is ``(mul, d, ..., d)`` flattened.

    Args:
        reps: a string such as ``"8x0n + 4x1n"``, another :class:`TensorReps`, or a sequence of
            ``(mul, (order, parity))`` / ``(mul, "1n")`` / ``"4x1n"`` items.
        spatial_dim: the ``d`` of O(d), at least 2 (default 3).

    Example:
        >>> reps = TensorReps("2x0n + 1x1p")
        >>> reps.dim
        5
    """

    __slots__ = ("_blocks", "_d", "_dim", "_hash")

    def __init__(self, reps: str | TensorReps | Iterable[Any] = (),
                 spatial_dim: int = 3) -> None:
        if isinstance(spatial_dim, bool) or not isinstance(spatial_dim, int) or spatial_dim < 2:
            raise ValueError(f"spatial_dim must be an int >= 2, got {spatial_dim!r}")
        if isinstance(reps, Reps) and not isinstance(reps, TensorReps):
            raise TypeError(
                f"cannot build TensorReps from {reps!r}: spherical irreps are not Cartesian "
                "tensors (go the other way with TensorReps.to_irreps())"
            )
        if isinstance(reps, TensorReps):
            if reps.spatial_dim != spatial_dim:
                raise ValueError(
                    f"cannot reinterpret {reps!r} (d={reps.spatial_dim}) with spatial_dim="
                    f"{spatial_dim}"
                )
            blocks = reps._blocks
        elif isinstance(reps, str):
            blocks = _parse(reps)
        else:
            try:
                items = list(reps)
            except TypeError:
                raise TypeError(
                    "TensorReps expects a string or a sequence of blocks, "
                    f"got {type(reps).__name__}"
                ) from None
            blocks = tuple(_coerce_block(item) for item in items)
        for b in blocks:
            _check_type(b.rep.order, spatial_dim, str(b.rep))
        dim = sum(b.mul * spatial_dim**b.rep.order for b in blocks)
        check_dim(dim, f"TensorReps '{'+'.join(str(b) for b in blocks)}'")
        self._blocks: tuple[MulTensorRep, ...] = blocks
        self._d = spatial_dim
        self._dim = dim
        self._hash = hash((blocks, spatial_dim))

    # -- immutable value semantics ------------------------------------------------------------
    def __setattr__(self, name, value):
        if hasattr(self, "_hash"):
            raise AttributeError("TensorReps is immutable")
        object.__setattr__(self, name, value)

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = TensorReps(other, self._d)
            except ValueError:
                return False
        if not isinstance(other, TensorReps):
            return NotImplemented
        return self._blocks == other._blocks and self._d == other._d

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return "+".join(str(b) for b in self._blocks)

    def __repr__(self) -> str:
        d = "" if self._d == 3 else f", spatial_dim={self._d}"
        return f"TensorReps('{self}'{d})"

    def __iter__(self):
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TensorReps(self._blocks[i], self._d)
        return self._blocks[i]

    def __add__(self, other) -> TensorReps:
        if isinstance(other, str):
            if is_spherical_spec(other):
                raise kinds_do_not_add(self, other)
            other = TensorReps(other, self._d)
        if isinstance(other, Reps) and not isinstance(other, TensorReps):
            raise kinds_do_not_add(self, other)
        if not isinstance(other, TensorReps):
            return NotImplemented
        if other._d != self._d:
            raise ValueError(
                f"cannot add TensorReps of different spatial_dim ({self._d} and {other._d})"
            )
        return TensorReps(self._blocks + other._blocks, self._d)

    def __radd__(self, other) -> TensorReps:
        if isinstance(other, str):
            if is_spherical_spec(other):
                raise kinds_do_not_add(other, self)
            return TensorReps(other, self._d) + self
        if isinstance(other, Reps) and not isinstance(other, TensorReps):
            raise kinds_do_not_add(other, self)
        return NotImplemented

    def __mul__(self, n: int) -> TensorReps:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"can only repeat TensorReps a non-negative int times, got {n!r}")
        check_dim(self._dim * n, f"{n} * {self!r}")
        return TensorReps(self._blocks * n, self._d)

    __rmul__ = __mul__

    # -- description ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def spatial_dim(self) -> int:
        return self._d

    @property
    def max_order(self) -> int:
        """Largest tensor order present (-1 when empty)."""
        return max((b.rep.order for b in self._blocks), default=-1)

    @property
    def num_tensors(self) -> int:
        """Total multiplicity: the number of tensors (of any order) in one feature vector."""
        return sum(b.mul for b in self._blocks)

    def slices(self) -> list[slice]:
        """The slice of the feature axis that each block occupies."""
        out, start = [], 0
        for b in self._blocks:
            stop = start + b.mul * self._d**b.rep.order
            out.append(slice(start, stop))
            start = stop
        return out

    def count(self, rep: TensorRep | str | tuple[int, str]) -> int:
        """Total multiplicity of tensor type ``rep`` (``"1n"`` or ``(1, "n")``)."""
        rep = _coerce_block((1, rep)).rep
        return sum(b.mul for b in self._blocks if b.rep == rep)

    def simplify(self) -> TensorReps:
        """Merge neighbouring blocks of the same type and drop empty ones (as e3nn)."""
        out: list[MulTensorRep] = []
        for b in self._blocks:
            if b.mul == 0:
                continue
            if out and out[-1].rep == b.rep:
                out[-1] = MulTensorRep(out[-1].mul + b.mul, b.rep)
            else:
                out.append(b)
        return TensorReps(out, self._d)

    def sort(self) -> SortResult:
        """Sort blocks by (order, parity ``n`` before ``p``); stable.

        Returns ``(reps, p, inv)``: ``p[i]`` is the new position of block ``i`` and ``inv`` its
        inverse, as e3nn's ``Irreps.sort``.
        """
        key = sorted(range(len(self._blocks)), key=lambda i: (self._blocks[i].rep, i))
        inv = tuple(key)
        p = [0] * len(inv)
        for new, old in enumerate(inv):
            p[old] = new
        return SortResult(TensorReps([self._blocks[i] for i in inv], self._d), tuple(p), inv)

    # -- action ---------------------------------------------------------------------------------
    def transform(self, x: torch.Tensor, R: torch.Tensor, *,
                  validate: bool = False) -> torch.Tensor:
        """Return ``rho(R) x`` for ``x`` of shape ``(..., dim)`` and ``R`` of shape ``(..., d, d)``.

        An order-1 block is one batched matmul with ``R``; an order-2 block one matmul with the
        ``d^2 x d^2`` matrix ``R (x) R`` (measured faster on CPU than two contractions with ``R``,
        which need permuted copies), or those two contractions when ``R`` needs a gradient
        (there they are the faster form); higher orders are contracted with ``R`` once per tensor
        index (``k d^(k+1)`` multiply-adds per tensor instead of ``d^(2k)``). Pseudo-tensor
        blocks are multiplied by ``det(R)``. Leading shapes broadcast. No Python loop over
        leading entries or multiplicity.

        ``validate=True`` first checks that ``R`` is orthogonal (max ``|R R^T - I|`` within
        :data:`~tensorframes.reps.base.ORTHOGONALITY_ATOL` of its dtype, else
        :class:`ValueError`). Off by default: on 320,000 float32 matrices it costs 5-8% of
        this transform on CPU (``16x0n+8x1n+4x2n``, ``16x0e+8x1o+4x2e``), above the 2% budget.

        Shapes:
            x: ``(..., dim)``; R: ``(..., d, d)``; returns ``(broadcast(...), dim)``.
        """
        lead = self._check_transform_args(x, R, validate)
        d = self._d
        det = torch.linalg.det(R) if any(b.rep.parity == "p" for b in self._blocks) else None
        out = []
        # split (not slicing): its backward is one cat, where slices would zero-fill a full
        # gradient per block
        sizes = [sl.stop - sl.start for sl in self.slices()]
        for block, xb in zip(self._blocks, x.split(sizes, dim=-1)):
            k = block.rep.order
            if block.mul == 0:
                out.append(xb.expand(*lead, 0))
                continue
            if k == 0:
                yb = xb.expand(*lead, xb.shape[-1])
            else:
                yb = apply_tensor_power(xb.unflatten(-1, (block.mul, d**k)), R, k, d)
                yb = yb.flatten(-2)
            if block.rep.parity == "p":
                yb = yb * det[..., None]
            out.append(yb)
        if not out:
            return x.new_zeros(*lead, 0)
        return torch.cat(out, dim=-1)

    def matrix(self, R: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Dense block-diagonal ``rho(R)`` of shape ``(..., dim, dim)`` (tests, small sizes).

        ``validate`` (default on: 0.1% of this call for ``16x0n+8x1n+4x2n``) checks that ``R``
        is orthogonal (:func:`~tensorframes.reps.base.check_orthogonal`).
        """
        check_matrices(R, self._d, name="R")
        if validate:
            check_orthogonal(R)
        lead = R.shape[:-2]
        out = R.new_zeros(*lead, self._dim, self._dim)
        det = torch.linalg.det(R) if any(b.rep.parity == "p" for b in self._blocks) else None
        for block, sl in zip(self._blocks, self.slices()):
            if block.mul == 0:
                continue
            k = block.rep.order
            M = tensor_power_matrix(R, k)
            if block.rep.parity == "p":
                M = M * det[..., None, None]
            eye = torch.eye(block.mul, dtype=R.dtype, device=R.device)
            n = self._d**k
            dense = torch.einsum("uv,...ij->...uivj", eye, M).reshape(*lead, block.mul * n, -1)
            out[..., sl, sl] = dense
        return out

    # -- change of basis ------------------------------------------------------------------------
    def to_irreps(self) -> tuple[Irreps, torch.Tensor]:
        """Decompose into e3nn irreps: returns ``(irreps, Q)`` with ``Q`` orthogonal.

        ``Q`` has shape ``(dim, dim)`` (float64) and satisfies
        ``self.matrix(R) == Q.T @ irreps.D_from_matrix(R) @ Q`` for every ``R`` in O(3), i.e.
        ``x_irreps = x_cart @ Q.T`` and ``x_cart = x_irreps @ Q``. The irreps are grouped per
        block: block ``mul x k`` becomes ``mul x l`` for each ``l`` in the order-``k``
        decomposition, ascending in ``l`` (e.g. ``"4x2n"`` -> ``"4x0e+4x1e+4x2e"``). Parity of
        ``n`` tensors is ``(-1)^k``, of ``p`` tensors ``(-1)^(k+1)``. Only for ``spatial_dim=3``.
        """
        if self._d != 3:
            raise ValueError(
                f"to_irreps needs spatial_dim=3 (irreps of O(3)), got spatial_dim={self._d}"
            )
        return cartesian_to_irreps((b.mul, b.rep.order, b.rep.parity) for b in self._blocks)
