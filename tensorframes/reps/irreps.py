"""e3nn-compatible irreducible representations of O(3): :class:`Irrep` and :class:`Irreps`.

Long module: :class:`Irrep` and :class:`Irreps` build each other (``3 * Irrep("1e")`` and
``Irrep + Irrep`` are Irreps, an Irreps parses into Irrep blocks), so they share one module,
as in e3nn's ``o3/_irreps.py``; the Wigner-D matrices live in :mod:`._wigner`.
"""

from __future__ import annotations

import itertools
import operator
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, NoReturn

import torch

from .._math import det_sign
from ._wigner import wigner_D_from_matrix, wigner_D_polynomials
from .base import (
    MAX_DIM,
    Reps,
    check_ascii,
    check_dim,
    check_matrices,
    check_orthogonal,
    is_cartesian_spec,
    kinds_do_not_add,
)

__all__ = ["Irrep", "Irreps", "MulIr"]

_IR_TOKEN = re.compile(r"([0-9]+)([eoy])")
_MULIR_TOKEN = re.compile(r"(?:([0-9]+)\s*x\s*)?([0-9]+)([eoy])")
_PARITY = {"e": 1, "o": -1}
#: Longer numbers exceed MAX_DIM: refused before int() (see tensorreps._MAX_DIGITS).
_MAX_DIGITS = 30
#: Largest degree: an irrep has 2l + 1 <= MAX_DIM components.
MAX_L = (MAX_DIM - 1) // 2


def _check_digits(m: re.Match, token: str, spec: str) -> None:
    if any(g is not None and len(g.lstrip("0")) > _MAX_DIGITS for g in m.groups()[:-1]):
        raise ValueError(f"Irreps token {token!r} in {spec!r} has a number of more than "
                         f"{_MAX_DIGITS} digits: its dim exceeds the bound MAX_DIM = {MAX_DIM}")


def _parity(l: int, letter: str) -> int:
    return (-1) ** l if letter == "y" else _PARITY[letter]


def _foreign(obj, name: str) -> bool:
    """``obj`` is an instance of e3nn's ``o3.<name>`` (checked only if e3nn is imported)."""
    mod = sys.modules.get("e3nn.o3")
    return mod is not None and isinstance(obj, getattr(mod, name, ()))


def _as_mul(mul) -> int:
    if isinstance(mul, bool):
        raise ValueError(f"multiplicity must be a non-negative int, got {mul!r}")
    try:
        mul = operator.index(mul)
    except TypeError:
        raise ValueError(f"multiplicity must be a non-negative int, got {mul!r}") from None
    if mul < 0:
        raise ValueError(f"multiplicity must be a non-negative int, got {mul!r}")
    return mul


class Irrep(tuple):
    """An irreducible representation of O(3): degree ``l >= 0`` and parity ``p = +1 | -1``.

    As e3nn's ``o3.Irrep``: ``Irrep(1, -1)``, ``Irrep("1o")``, ``Irrep("2e")``, ``Irrep("1y")``
    (parity ``(-1)^l``, the parity of the spherical harmonics), ``Irrep((l, p))``. A tuple
    ``(l, p)``: immutable, hashable, ordered like e3nn's (by ``l``, then ``p``).

    Example:
        >>> Irrep("1o").dim
        3
    """

    __slots__ = ()

    def __new__(cls, l: int | str | tuple[int, int], p: int | None = None) -> Irrep:
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, str):
                check_ascii(l, "Irrep")
                name = l.strip()
                m = _IR_TOKEN.fullmatch(name)
                if m is not None:
                    _check_digits(m, name, l)
                if m is None:
                    raise ValueError(
                        f"malformed irrep {l!r}: expected '<l><p>' with an integer l >= 0 and "
                        "parity p one of 'e' (even), 'o' (odd), 'y' ((-1)^l), e.g. '1o' or '2e'"
                    )
                l = int(m.group(1))
                p = _parity(l, m.group(2))
            elif isinstance(l, tuple) and tuple.__len__(l) == 2:  # e3nn's Irrep forbids len()
                l, p = tuple.__getitem__(l, 0), tuple.__getitem__(l, 1)
            else:
                raise ValueError(
                    f"cannot interpret {l!r} as an Irrep: expected e.g. '1o' or (1, -1)"
                )
        if isinstance(l, bool) or not hasattr(l, "__index__"):
            raise ValueError(f"the degree l of an Irrep must be an int >= 0, got {l!r}")
        l = operator.index(l)
        if l < 0:
            raise ValueError(f"the degree l of an Irrep must be an int >= 0, got {l}")
        if l > MAX_L:
            check_dim(2 * l + 1, f"Irrep of degree l={l}")
        if isinstance(p, bool) or p not in (-1, 1):
            raise ValueError(f"the parity p of an Irrep must be 1 or -1, got {p!r}")
        return super().__new__(cls, (int(l), int(p)))

    @property
    def l(self) -> int:  # noqa: E743
        """The degree ``l``."""
        return self[0]

    @property
    def p(self) -> int:
        """The parity ``p`` (+1 even, -1 odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """``2l + 1``."""
        return 2 * self[0] + 1

    def is_scalar(self) -> bool:
        """``l == 0 and p == 1``."""
        return self[0] == 0 and self[1] == 1

    def __str__(self) -> str:
        return f"{self[0]}{'e' if self[1] == 1 else 'o'}"

    def __repr__(self) -> str:
        return f"Irrep('{self}')"

    def __getnewargs__(self):
        return (tuple(self),)

    @classmethod
    def iterator(cls, lmax: int | None = None) -> Iterator[Irrep]:
        """All irreps ``0e, 0o, 1o, 1e, 2e, 2o, ...`` (up to ``lmax`` if given), as e3nn."""
        for l in itertools.count():
            yield Irrep(l, (-1) ** l)
            yield Irrep(l, -((-1) ** l))
            if l == lmax:
                break

    def __mul__(self, other):
        """The irreps in the tensor product ``self (x) other`` (a generator, as e3nn)."""
        other = Irrep(other)
        p = self.p * other.p
        return (Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1))

    def __rmul__(self, mul) -> Irreps:
        """``3 * Irrep('1e')`` is ``Irreps('3x1e')``."""
        if isinstance(mul, bool) or not isinstance(mul, int):
            return NotImplemented
        return Irreps([(mul, self)])

    def __add__(self, other) -> Irreps:
        return Irreps(self).__add__(other)

    def __radd__(self, other) -> Irreps:
        return Irreps(self).__radd__(other)

    def count(self, _value: object) -> NoReturn:  # tuple methods make no sense (as e3nn)
        raise NotImplementedError

    def index(self, _value: object) -> NoReturn:
        raise NotImplementedError

    def _sign_is_det(self) -> bool:
        """True when ``rho(R) = det(R) D^l(R)`` (parity differs from ``(-1)^l``)."""
        return self.p != (-1) ** self.l

    def D_from_matrix(self, R: torch.Tensor, *, validate: bool = False) -> torch.Tensor:
        """``p^k D^l(det(R) R)`` with ``k = (1 - det R)/2``, shape ``(..., 2l+1, 2l+1)``.

        Identical to e3nn's ``Irrep.D_from_matrix`` for orthogonal ``R`` (any det), without
        Euler angles (see :mod:`tensorframes.reps._wigner`). ``validate`` as in
        :func:`~tensorframes.reps.wigner_D_from_matrix`.
        """
        return wigner_D_from_matrix(self.l, R, self.p, validate=validate)


class MulIr(NamedTuple):
    """A block of :class:`Irreps`: ``mul`` copies of the irrep ``ir``."""

    mul: int
    ir: Irrep

    @property
    def dim(self) -> int:
        """``mul * (2l + 1)``."""
        return self.mul * self.ir.dim

    def __str__(self) -> str:
        return f"{self.mul}x{self.ir}"

    def __repr__(self) -> str:
        return f"MulIr({self.mul}, {self.ir!r})"


class SortResult(NamedTuple):
    """Result of :meth:`Irreps.sort`: ``p[i]`` is the new position of block ``i``; ``inv``."""

    irreps: Irreps
    p: tuple[int, ...]
    inv: tuple[int, ...]


def _parse(spec: str) -> list[MulIr]:
    check_ascii(spec, "Irreps")
    if spec.strip() == "":
        return []
    out = []
    for raw in spec.split("+"):
        token = raw.strip()
        m = _MULIR_TOKEN.fullmatch(token)
        if m is not None:
            _check_digits(m, token, spec)
        if m is None:
            raise ValueError(
                f"malformed Irreps token {token!r} in {spec!r}: expected '<mul>x<l><p>' or "
                "'<l><p>' with integers mul >= 0, l >= 0 and parity p one of 'e', 'o', 'y', "
                "e.g. '16x0e + 8x1o + 4x2e'"
            )
        mul = int(m.group(1)) if m.group(1) is not None else 1
        l = int(m.group(2))
        out.append(MulIr(mul, Irrep(l, _parity(l, m.group(3)))))
    return out


def _coerce_block(item) -> MulIr:
    if isinstance(item, MulIr):
        return item
    if isinstance(item, Irrep) or _foreign(item, "Irrep"):
        return MulIr(1, Irrep(tuple.__getitem__(item, 0), tuple.__getitem__(item, 1)))
    if isinstance(item, str):
        blocks = _parse(item)
        if len(blocks) != 1:
            raise ValueError(f"expected a single irreps block such as '4x1o', got {item!r}")
        return blocks[0]
    if isinstance(item, tuple) and tuple.__len__(item) == 2:
        mul, ir = tuple.__getitem__(item, 0), tuple.__getitem__(item, 1)
        if isinstance(ir, int):  # (l, p) is an irrep, not (mul, ir)
            raise ValueError(
                f"cannot interpret {item!r} as an irreps block: expected (mul, (l, p)), "
                "(mul, '1o'), (mul, Irrep) or an Irrep"
            )
        if not isinstance(ir, (str, tuple)):
            raise ValueError(f"cannot interpret {ir!r} in {item!r} as an Irrep")
        return MulIr(_as_mul(mul), Irrep(ir))
    raise ValueError(
        f"cannot interpret {item!r} as an irreps block: expected (mul, (l, p)), (mul, '1o'), "
        "(mul, Irrep), an Irrep or a string such as '4x1o'"
    )


class Irreps(tuple, Reps):
    r"""Direct sum of O(3) irreps, identical to e3nn's ``o3.Irreps``: ``Irreps("16x0e + 8x1o")``.

    A tuple of :class:`MulIr` ``(mul, ir)`` blocks (immutable, hashable, ``==`` compares blocks).
    Features are laid out as e3nn's: blocks in order, each block mul-major (``(mul, 2l+1)``
    flattened), each irrep in e3nn's real basis (``l = 1`` is ``(x, y, z)``).

    Args:
        irreps: a string (``"16x0e + 8x1o + 4x2e"``, ``"0e"``, ``"1y"``, ``""``), another
            :class:`Irreps` (or an e3nn ``Irreps``), an :class:`Irrep`, or a sequence of
            ``(mul, (l, p))`` / ``(mul, Irrep)`` / ``(mul, "1o")`` / ``Irrep`` / ``"4x1o"`` items.

    The representation: ``rho(R) = p^k D^l(det(R) R)`` per irrep, ``k = (1 - det R)/2``.
    :meth:`transform` applies it without building the dense matrix.

    Example:
        >>> Irreps("16x0e+8x1o+4x2e").dim
        60
    """

    def __new__(cls, irreps: str | Irrep | Iterable[Any] | None = None) -> Irreps:
        if isinstance(irreps, Irreps):
            return super().__new__(cls, tuple(irreps))
        if isinstance(irreps, Reps):
            raise TypeError(
                f"cannot build Irreps from {irreps!r}: Cartesian tensors are not irreps; "
                "convert with irreps, Q = tensor_reps.to_irreps()"
            )
        if irreps is None:
            blocks = []
        elif isinstance(irreps, str):
            blocks = _parse(irreps)
        elif isinstance(irreps, (Irrep, MulIr)) or _foreign(irreps, "Irrep"):
            blocks = [_coerce_block(irreps)]
        else:
            try:
                items = list(irreps)
            except TypeError:
                raise TypeError(
                    "Irreps expects a string, Irreps, Irrep or a sequence of (mul, ir) blocks, "
                    f"got {type(irreps).__name__}"
                ) from None
            blocks = [_coerce_block(item) for item in items]
        check_dim(sum(b.mul * b.ir.dim for b in blocks),
                  f"Irreps '{'+'.join(str(b) for b in blocks)}'")
        return super().__new__(cls, blocks)

    def __setattr__(self, name, value):
        raise AttributeError("Irreps is immutable")

    def __getnewargs__(self):
        return (tuple(self),)

    # -- conversion -----------------------------------------------------------------------------
    @classmethod
    def from_e3nn(cls, irreps: Any) -> Irreps:
        """Convert an e3nn ``o3.Irreps`` (or anything e3nn's ``Irreps`` accepts) to ours."""
        e3nn_o3 = _import_e3nn_o3()
        return cls(tuple(e3nn_o3.Irreps(irreps)))

    def to_e3nn(self) -> Any:
        """The equal e3nn ``o3.Irreps`` (needs e3nn installed)."""
        return _import_e3nn_o3().Irreps(str(self))

    # -- value semantics ------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Irreps(other)
            except ValueError:
                return False
        return tuple.__eq__(self, other)

    def __ne__(self, other) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__

    def __str__(self) -> str:
        return "+".join(str(b) for b in self)

    def __repr__(self) -> str:
        return f"Irreps('{self}')"

    def __getitem__(self, i):
        out = tuple.__getitem__(self, i)
        if isinstance(i, slice):
            return Irreps(out)
        return out

    def __contains__(self, ir) -> bool:
        ir = Irrep(ir)
        return any(b.ir == ir for b in self)

    def count(self, ir: Irrep | str | tuple[int, int]) -> int:
        """Total multiplicity of the irrep ``ir``."""
        ir = Irrep(ir)
        return sum(b.mul for b in self if b.ir == ir)

    def index(self, _value: object) -> NoReturn:
        raise NotImplementedError

    def __add__(self, other) -> Irreps:
        if (isinstance(other, Reps) and not isinstance(other, Irreps)) or is_cartesian_spec(other):
            raise kinds_do_not_add(self, other)
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other) -> Irreps:
        if (isinstance(other, Reps) and not isinstance(other, Irreps)) or is_cartesian_spec(other):
            raise kinds_do_not_add(other, self)
        return Irreps(tuple(Irreps(other)) + tuple(self))

    def __mul__(self, n) -> Irreps:
        if isinstance(n, bool) or not isinstance(n, int):
            return NotImplemented
        check_dim(self.dim * n, f"{n} * Irreps('{self}')")
        return Irreps(tuple(self) * n)

    __rmul__ = __mul__

    # -- description ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Total number of components ``sum mul * (2l+1)``."""
        return sum(b.mul * b.ir.dim for b in self)

    @property
    def spatial_dim(self) -> int:
        """3: irreps of O(3)."""
        return 3

    @property
    def num_irreps(self) -> int:
        """Sum of the multiplicities."""
        return sum(b.mul for b in self)

    @property
    def ls(self) -> list[int]:
        """The degree of every irrep, repeated by multiplicity."""
        return [b.ir.l for b in self for _ in range(b.mul)]

    @property
    def lmax(self) -> int:
        """Largest ``l`` (``ValueError`` if empty, as e3nn)."""
        if len(self) == 0:
            raise ValueError("Cannot get lmax of empty Irreps")
        return max(self.ls)

    def slices(self) -> list[slice]:
        """The slice of the feature axis occupied by each block."""
        out, start = [], 0
        for b in self:
            out.append(slice(start, start + b.dim))
            start += b.dim
        return out

    def simplify(self) -> Irreps:
        """Merge neighbouring blocks of the same irrep and drop empty ones (does not sort)."""
        out: list[tuple[int, Irrep]] = []
        for mul, ir in self:
            if out and out[-1][1] == ir:
                out[-1] = (out[-1][0] + mul, ir)
            elif mul > 0:
                out.append((mul, ir))
        return Irreps(out)

    def remove_zero_multiplicities(self) -> Irreps:
        """Drop blocks of multiplicity 0."""
        return Irreps([b for b in self if b.mul > 0])

    def sort(self) -> SortResult:
        """Sort the blocks by irrep (stable): ``(irreps, p, inv)`` as e3nn's ``Irreps.sort``."""
        order = sorted(range(len(self)), key=lambda i: (self[i].ir, i))
        inv = tuple(order)
        p = [0] * len(inv)
        for new, old in enumerate(inv):
            p[old] = new
        return SortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def regroup(self) -> Irreps:
        """:meth:`sort` then :meth:`simplify`."""
        return self.sort().irreps.simplify()

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> Irreps:
        """Irreps of the spherical harmonics ``Y^0 .. Y^lmax``: ``1x0e+1x1o+1x2e+...``."""
        return Irreps([(1, (l, p**l)) for l in range(lmax + 1)])

    def randn(self, *size: int, normalization: str = "component", requires_grad: bool = False,
              dtype: torch.dtype | None = None, device: torch.device | str | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Random features; ``size`` contains one ``-1`` replaced by ``dim`` (as e3nn).

        ``normalization="component"``: standard normal components; ``"norm"``: every irrep
        has unit norm.
        """
        if size.count(-1) != 1:
            raise ValueError(f"size must contain exactly one -1 (the feature axis), got {size}")
        di = size.index(-1)
        shape = (*size[:di], self.dim, *size[di + 1:])
        kw = dict(dtype=dtype, device=device, generator=generator)
        if normalization == "component":
            x = torch.randn(shape, **kw)
        elif normalization == "norm":
            parts = []
            for mul, ir in self:
                r = torch.randn((*size[:di], mul, ir.dim, *size[di + 1:]), **kw)
                r = r / r.norm(dim=di + 1, keepdim=True)
                parts.append(r.reshape(*size[:di], mul * ir.dim, *size[di + 1:]))
            x = torch.cat(parts, dim=di) if parts else torch.zeros(shape, **kw)
        else:
            raise ValueError(f"normalization must be 'component' or 'norm', got {normalization!r}")
        return x.requires_grad_(requires_grad)

    # -- the representation ---------------------------------------------------------------------
    def _distinct_ls(self) -> list[int]:
        return sorted({ir.l for mul, ir in self if mul > 0})

    def D_from_matrix(self, R: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Dense block-diagonal ``rho(R)``: ``(..., dim, dim)``, identical to e3nn's.

        Per block ``p^k D^l(det(R) R)``, ``k = (1 - det R)/2``; exact for every orthogonal ``R``
        (no Euler angles). For tests and small sizes; :meth:`transform` is the fast path.
        ``validate`` (default on: 0.2% of this call for ``16x0e+8x1o+4x2e``) raises
        :class:`ValueError` for a non-orthogonal ``R`` (:func:`~.base.check_orthogonal`).
        """
        check_matrices(R, 3, name="R")
        if validate:
            check_orthogonal(R)
        batch = R.shape[:-2]
        out = R.new_zeros(*batch, self.dim, self.dim)
        Ds = wigner_D_polynomials(self._distinct_ls(), R)
        sign = det_sign(R)[..., None, None] if any(ir._sign_is_det() for _, ir in self) else None
        for (mul, ir), s in zip(self, self.slices()):
            if mul == 0:
                continue
            D = Ds[ir.l] * sign if ir._sign_is_det() else Ds[ir.l]
            eye = torch.eye(mul, dtype=R.dtype, device=R.device)
            block = (eye[:, None, :, None] * D[..., None, :, None, :]).reshape(
                *batch, mul * ir.dim, mul * ir.dim
            )
            out[..., s, s] = block
        return out

    def matrix(self, R: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
        """Same as :meth:`D_from_matrix`."""
        return self.D_from_matrix(R, validate=validate)

    def transform(self, x: torch.Tensor, R: torch.Tensor, *,
                  validate: bool = False) -> torch.Tensor:
        """``rho(R) x`` for ``x``: ``(..., dim)`` and ``R``: ``(..., 3, 3)`` (broadcast).

        Computes ``D^l(R)`` once per distinct ``l`` (closed forms for ``l <= 2``), applies parity
        as a sign ``det(R)`` where the irrep's parity is not ``(-1)^l``, and contracts each
        block's ``(..., mul, 2l+1)`` view: ``y[..., u, i] = sum_j D[..., i, j] x[..., u, j]``.
        Never builds the dense matrix. Differentiable in ``x`` and ``R``. ``validate=True``
        first checks that ``R`` is orthogonal (off by default: it costs more than 2% of this
        transform, see :class:`~tensorframes.TensorReps.transform`).
        """
        batch = self._check_transform_args(x, R, validate)
        if x.shape[:-1] != batch:
            x = x.expand(*batch, self.dim)
        ls = [l for l in self._distinct_ls() if l > 0]
        Ds = wigner_D_polynomials(ls, R)
        need_sign = any(mul > 0 and ir._sign_is_det() for mul, ir in self)
        det = det_sign(R) if need_sign else None
        signed: dict[int, torch.Tensor] = {}
        pieces = []
        aliased = False  # a piece that is a view of the input x
        # split (not slicing): its backward is one cat, where slices would zero-fill a full
        # gradient per block
        for (mul, ir), xb in zip(self, x.split([b.dim for b in self], dim=-1)):
            if mul == 0:
                continue
            if ir.l == 0:
                y = xb * det.expand(batch)[..., None] if ir.p == -1 else xb
                aliased = aliased or ir.p == 1
            else:
                if ir._sign_is_det():
                    if ir.l not in signed:
                        signed[ir.l] = Ds[ir.l] * det[..., None, None]
                    D = signed[ir.l]
                else:
                    D = Ds[ir.l]
                y = torch.einsum("...ij,...uj->...ui", D, xb.reshape(*batch, mul, ir.dim))
                y = y.reshape(*batch, mul * ir.dim)
            pieces.append(y)
        if not pieces:
            return x.new_zeros(*batch, 0) if self.dim == 0 else x.clone()
        if len(pieces) == 1:
            return pieces[0].clone() if aliased else pieces[0]
        return torch.cat(pieces, dim=-1)


def _import_e3nn_o3():
    try:
        from e3nn import o3
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this conversion needs e3nn, which is not installed: pip install 'e3nn>=0.6,<0.7'"
        ) from err
    return o3
