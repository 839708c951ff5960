"""The :class:`Frames` container: one orthogonal matrix per node."""

from __future__ import annotations

from typing import Any

import torch

from ..reps.base import check_matrices

__all__ = ["Frames"]

#: Default orthogonality tolerance of :meth:`Frames.validate` per dtype (max |R R^T - I|).
VALIDATE_ATOL = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 1e-4,
                 torch.float64: 1e-10}


def _det(m: torch.Tensor) -> torch.Tensor:
    """Determinant of a batch of ``(N, d, d)`` matrices; closed form for d <= 3."""
    d = m.shape[-1]
    if d == 1:
        return m[..., 0, 0]
    if d == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if d == 3:
        # det = row0 . (row1 x row2)
        return (torch.linalg.cross(m[..., 1, :], m[..., 2, :], dim=-1) * m[..., 0, :]).sum(-1)
    return torch.linalg.det(m)


class Frames:
    r"""A batch of local frames: ``N`` orthogonal ``(d, d)`` matrices, one per node.

    Convention (``docs/design.md``): row ``a`` of ``R_i`` is the ``a``-th local axis of node
    ``i`` written in world coordinates, so a world vector ``v`` has local coordinates
    ``R_i @ v``; under a global ``x -> g x`` (``g`` in O(d)) frames transform as
    ``R_i -> R_i g^T``. Determinants may be ``-1`` (reflections are allowed).

    The container is cheap: construction neither copies nor synchronises the device (the
    tensor is stored as given; orthogonality is only checked when ``validate=True`` or
    :meth:`validate` is called), and :attr:`det` is computed lazily and cached.

    Args:
        matrices (Tensor): floating tensor of shape ``(N, d, d)``.
        validate (bool, optional): check orthogonality and finiteness now (one device sync).
            (default: :obj:`False`)
        atol (float, optional): tolerance for ``validate``; see :meth:`validate`.

    Operations:
        - ``frames_a @ frames_b`` -> :class:`Frames` with ``R_a R_b`` (batched; ``N`` must match
          or one side has length 1),
        - ``frames @ v`` for ``v`` of shape ``(N, d)`` -> ``(N, d)``, the local coordinates
          ``R_i v_i``; for ``v`` of shape ``(N, d, m)`` -> ``R_i @ v_i`` (matrices),
        - ``t @ frames`` for ``t`` of shape ``(N, m, d)`` -> ``t_i @ R_i``,
        - ``frames[idx]`` with an int, slice, bool mask or index tensor -> :class:`Frames`
          (an int keeps the leading axis: length 1).
    """

    __slots__ = ("_matrices", "_det")

    def __init__(self, matrices: torch.Tensor, *, validate: bool = False,
                 atol: float | None = None) -> None:
        if isinstance(matrices, Frames):
            matrices = matrices.matrices
        if not isinstance(matrices, torch.Tensor):
            raise TypeError(f"Frames expects a torch.Tensor of shape (N, d, d), "
                            f"got {type(matrices).__name__}")
        if matrices.dim() != 3:
            raise ValueError(f"Frames expects a tensor of shape (N, d, d), "
                             f"got shape {tuple(matrices.shape)}")
        check_matrices(matrices, matrices.shape[-1], name="matrices")
        self._matrices = matrices
        self._det: torch.Tensor | None = None
        if validate:
            self.validate(atol=atol)

    # ------------------------------------------------------------------ properties
    @property
    def matrices(self) -> torch.Tensor:
        """The ``(N, d, d)`` tensor of frames (rows: local axes in world coordinates)."""
        return self._matrices

    @property
    def det(self) -> torch.Tensor:
        """``(N,)`` determinants (``+1`` or ``-1`` for orthogonal frames); cached."""
        if self._det is None:
            self._det = _det(self._matrices)
        return self._det

    @property
    def inv(self) -> Frames:
        """The inverse frames ``R_i^T`` (a view; no copy)."""
        out = Frames(self._matrices.transpose(-1, -2))
        out._det = self._det
        return out

    @property
    def spatial_dim(self) -> int:
        """The ``d`` of O(d)."""
        return self._matrices.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self._matrices.dtype

    @property
    def device(self) -> torch.device:
        return self._matrices.device

    @property
    def shape(self) -> torch.Size:
        return self._matrices.shape

    def __len__(self) -> int:
        return self._matrices.shape[0]

    # ------------------------------------------------------------------ indexing / moving
    def index_select(self, index: torch.Tensor) -> Frames:
        """Frames ``R_index[k]`` for a 1-d long ``index`` (e.g. ``edge_index[0]``)."""
        out = Frames(self._matrices.index_select(0, index))
        if self._det is not None:
            out._det = self._det.index_select(0, index)
        return out

    def __getitem__(self, index: Any) -> Frames:
        if isinstance(index, int):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"frame index {index} out of range for {n} frames")
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, tuple):
            raise TypeError("Frames support a single index (int, slice, mask or index "
                            "tensor) over the node axis, got a tuple")
        out = Frames(self._matrices[index])
        if self._det is not None:
            out._det = self._det[index]
        return out

    def to(self, *args: Any, **kwargs: Any) -> Frames:
        """Like :meth:`torch.Tensor.to`; returns ``self`` when nothing changes."""
        m = self._matrices.to(*args, **kwargs)
        if m is self._matrices:
            return self
        out = Frames(m)
        if self._det is not None:
            out._det = self._det.to(device=m.device, dtype=m.dtype)
        return out

    def detach(self) -> Frames:
        return Frames(self._matrices.detach())

    # ------------------------------------------------------------------ algebra
    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, Frames):
            if other.spatial_dim != self.spatial_dim:
                raise ValueError(f"cannot compose frames of O({self.spatial_dim}) and "
                                 f"O({other.spatial_dim})")
            self._check_len(len(other), "other frames")
            out = Frames(self._matrices @ other._matrices)
            if self._det is not None and other._det is not None:
                out._det = self._det * other._det
            return out
        if isinstance(other, torch.Tensor):
            d = self.spatial_dim
            if other.dim() == 2:
                if other.shape[-1] != d:
                    raise ValueError(f"vectors must have shape (N, {d}), "
                                     f"got {tuple(other.shape)}")
                self._check_len(other.shape[0], "vectors")
                return (self._matrices @ other.unsqueeze(-1)).squeeze(-1)
            if other.dim() == 3:
                if other.shape[-2] != d:
                    raise ValueError(f"matrices must have shape (N, {d}, m), "
                                     f"got {tuple(other.shape)}")
                self._check_len(other.shape[0], "matrices")
                return self._matrices @ other
            raise ValueError(f"frames @ tensor expects shape (N, {d}) or (N, {d}, m), "
                             f"got {tuple(other.shape)}")
        return NotImplemented

    def __rmatmul__(self, other: Any) -> Any:
        if isinstance(other, torch.Tensor):
            d = self.spatial_dim
            if other.dim() != 3 or other.shape[-1] != d:
                raise ValueError(f"tensor @ frames expects shape (N, m, {d}), "
                                 f"got {tuple(other.shape)}")
            self._check_len(other.shape[0], "matrices")
            return other @ self._matrices
        return NotImplemented

    def _check_len(self, n: int, what: str) -> None:
        if n != len(self) and n != 1 and len(self) != 1:
            raise ValueError(f"batch size mismatch: {len(self)} frames but {n} {what}")

    # ------------------------------------------------------------------ checks
    def validate(self, atol: float | None = None) -> Frames:
        """Check that every frame is finite and orthogonal; return ``self``.

        Raises :class:`ValueError` naming the first offending index. ``atol`` bounds
        ``max |R R^T - I|`` (default: ``1e-4`` for float32, ``1e-10`` for float64, see
        ``VALIDATE_ATOL``). This synchronises the device.
        """
        m = self._matrices
        if atol is None:
            atol = VALIDATE_ATOL.get(m.dtype, 1e-4)
        if len(self) == 0:
            return self
        finite = torch.isfinite(m).flatten(1).all(1)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0, 0])
            raise ValueError(f"frame {i} has non-finite entries: {m[i].tolist()}")
        eye = torch.eye(self.spatial_dim, dtype=m.dtype, device=m.device)
        err = (m @ m.transpose(-1, -2) - eye).abs().flatten(1).amax(1)
        bad = err > atol
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"frame {i} is not orthogonal: max |R R^T - I| = "
                             f"{float(err[i]):.3g} > atol={atol:g}; R = {m[i].tolist()}")
        return self

    def __repr__(self) -> str:
        m = self._matrices
        extra = ", requires_grad=True" if m.requires_grad else ""
        return (f"Frames(n={len(self)}, d={self.spatial_dim}, dtype={m.dtype}, "
                f"device={m.device}{extra})")
