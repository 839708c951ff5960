r"""Frames refined between layers: :class:`FrameUpdate` predicts a local orthogonal update."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import compiling
from ..reps._parse import as_reps
from ..reps.base import Reps
from ._frames import Frames
from ._gram_schmidt import _bump, _safe_norm, gram_schmidt

__all__ = ["FrameUpdate", "METHODS"]

#: The parameterisations of the local update ``U_i``.
METHODS = ("gram_schmidt", "quaternion", "axis_angle")

#: Below this squared angle the axis-angle coefficients use their Taylor series (error under
#: ``t**4 / 362880``, far below float64 round-off).
_SMALL_ANGLE_SQ = 1e-3


def _quaternion_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` of unit quaternions ``q = (w, x, y, z)`` ``(N, 4)``."""
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).view(*q.shape[:-1], 3, 3)


def _axis_angle_matrix(w: torch.Tensor) -> torch.Tensor:
    r"""``exp([w]_x)`` ``(N, 3, 3)`` for rotation vectors ``w`` ``(N, 3)`` (Rodrigues):
    ``I + sinc(t) K + c(t) K^2`` with ``K = [w]_x``, ``t = |w|``, ``c(t) = (1 - cos t) / t^2``;
    Taylor series below ``t^2 = 1e-3``, so ``w = 0`` gives ``I`` exactly, with finite
    gradients."""
    t2 = (w * w).sum(-1)
    small = t2 < _SMALL_ANGLE_SQ
    t = torch.where(small, torch.ones_like(t2), t2).sqrt()
    a = torch.where(small, 1 - t2 / 6 * (1 - t2 / 20 * (1 - t2 / 42)), torch.sin(t) / t)
    half = torch.sin(t / 2) / t  # (1 - cos t) / t^2 = 2 sin^2(t/2) / t^2, no cancellation
    b = torch.where(small, 0.5 - t2 / 24 * (1 - t2 / 30 * (1 - t2 / 56)), 2 * half * half)
    x, y, z = w.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return eye + a[:, None, None] * K + b[:, None, None] * (K @ K)


def _unit_quaternion(q: torch.Tensor, eps: float) -> torch.Tensor:
    """``q / |q|``, deterministic and NaN-free near ``q = 0`` (the rule of ``gram_schmidt``'s
    first vector): ``q`` is blended with ``eps (1 - |q|/eps)^2 (1, 0, 0, 0)`` for
    ``|q| < eps``, and the identity quaternion is used where the blend cancels."""
    one = torch.zeros_like(q)
    one[:, 0] = 1.0
    n = _safe_norm(q)
    q2 = q + eps * _bump(n / eps) * one
    n2 = _safe_norm(q2)
    ok = (n2 > eps * 1e-3) & (q2 != 0).any(-1, keepdim=True)
    return torch.where(ok, q2 / torch.where(ok, n2, torch.ones_like(n2)), one)


class FrameUpdate(nn.Module):
    r"""Refines local frames from the nodes' local features (frames updated between layers, as
    in the tensor frames paper's reference implementation).

    A small MLP reads node ``i``'s local feature ``x_i`` (coordinates in its own frame, hence
    invariant numbers) and predicts a local orthogonal matrix ``U_i``; the node's frame and
    feature are then re-expressed in the refined frame:

    .. math::
        R_i' = U_i R_i, \qquad x_i' = \rho(U_i)\, x_i,

    so the world-frame content is unchanged (``rho(R_i'^T) x_i' = rho(R_i^T) x_i``) and, since
    ``U_i`` depends on invariants only, ``R_i -> R_i g^T`` gives ``R_i' -> R_i' g^T`` and the
    same ``x_i'`` for every ``g`` in O(3): the refined frames are equivariant by construction.

    Parameterisations of ``U_i`` (``m``: the MLP's output, zero at initialisation):

    - ``"gram_schmidt"``: local vectors ``u_a = e_a + m_a`` (three with ``o3=True``, two with
      ``o3=False``), ``U = gram_schmidt(u_1, u_2[, u_3])`` (rows orthonormalised; the third
      vector sets the handedness, so ``det U = -1`` is reachable with ``o3=True``; with
      ``o3=False`` the third row is ``u_1 x u_2`` and ``det U = +1``). Degenerate predictions
      (a zero or parallel vector) take :func:`gram_schmidt`'s deterministic fallback.
    - ``"quaternion"``: ``q = (1, 0, 0, 0) + m_{1:4}``, normalised, and its rotation matrix
      (``q`` and ``-q`` give the same ``U``). A quaternion shorter than ``eps`` is blended
      toward the identity (``q + eps (1 - |q|/eps)^2 (1, 0, 0, 0)``) and the identity itself
      is used where that blend cancels, so ``q = 0`` gives ``U = I``. With ``o3=True`` a fifth
      output gives ``s = 1 + m_5`` and ``U`` is multiplied by ``-1`` (``det U = -1``, a
      rotoinversion) where ``s < 0`` (``+1`` at ``s = 0``).
    - ``"axis_angle"``: a rotation vector ``w = m_{1:3}`` (axis ``w / |w|``, angle ``|w|``),
      ``U = exp([w]_x)`` by Rodrigues' formula (a Taylor series for ``|w|^2 < 1e-3``, so
      ``w = 0`` is exact and smooth); ``o3=True`` adds the sign ``s = 1 + m_4`` as for the
      quaternion.

    The handedness (the sign of ``u_3 . (e_1 x e_2)``, or of ``s``) is a discrete choice and
    has zero gradient, as in :func:`gram_schmidt`: training does not move a node across it by
    gradient (it starts at ``det U = +1`` for every node and changes only when the inputs or the
    shared hidden layers, trained through the other outputs, move the prediction across zero).

    The MLP's last layer is zero-initialised (also by :meth:`reset_parameters`), so at
    initialisation ``U_i = I`` exactly for every method: the module returns its input frames
    and (to round-off of ``rho(I)``, exactly for ``TensorReps``) its input features. Values and
    gradients are finite for every finite input; ``U_i`` is orthogonal to round-off. A NaN or
    infinite entry of ``x`` raises :class:`ValueError` naming the row (one device sync; skipped
    under ``torch.compile``).

    Usage between two wrapped layers (features stay local, ``frames`` are replaced):

    .. code-block:: python

        import torch, torch_geometric.nn as gnn
        import tensorframes as tf

        reps = tf.TensorReps("8x0n + 4x1n")
        pos = torch.randn(64, 3)
        edge_index = tf.graph.knn_graph(pos, k=8)
        frames = tf.frames.pca(pos, edge_index=edge_index)
        conv1 = tf.nn.wrap(gnn.PointNetConv(torch.nn.Linear(3, reps.dim)),
                           local={}, world={"pos": "1x1n"})
        update = tf.frames.FrameUpdate(reps, method="quaternion")
        conv2 = tf.nn.wrap(gnn.PointNetConv(torch.nn.Linear(reps.dim + 3, reps.dim)),
                           local={"x": reps}, world={"pos": "1x1n"})
        h = conv1(None, pos, edge_index, frames=frames)
        h, frames = update(h, frames)          # refined frames from here on
        h = conv2(h, pos, edge_index, frames=frames)
        out = tf.nn.to_global(h, frames, reps)  # world-frame output, O(3)-equivariant

    Args:
        reps (TensorReps | Irreps | str): representation of the local features ``x``
            (``d = 3``; strings as in :func:`tensorframes.reps.as_reps`).
        method (str): ``"gram_schmidt"`` (default), ``"quaternion"`` or ``"axis_angle"``.
        o3 (bool): allow reflections (``det U = -1``; default) or rotations only.
        hidden_channels (int): width of the MLP's two hidden layers (default 32).
        eps (float): degeneracy scale of the normalisations (default ``1e-6``).

    Shapes:
        - input: ``x (N, reps.dim)``, ``frames`` :class:`Frames` ``(N, 3, 3)``
        - output: ``(x' (N, reps.dim), Frames (N, 3, 3))``
    """

    def __init__(self, reps: Reps | str, *, method: str = "gram_schmidt", o3: bool = True,
                 hidden_channels: int = 32, eps: float = 1e-6) -> None:
        super().__init__()
        self.reps = as_reps(reps)
        if self.reps.spatial_dim != 3:
            raise ValueError(f"FrameUpdate needs reps of O(3), got {self.reps!r} in "
                             f"d = {self.reps.spatial_dim}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(hidden_channels, int) or hidden_channels < 1:
            raise ValueError(f"hidden_channels must be a positive int, got {hidden_channels!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.method, self.o3, self.eps = method, bool(o3), eps
        self.hidden_channels = hidden_channels
        self.num_outputs = {"gram_schmidt": 6, "quaternion": 4, "axis_angle": 3}[method]
        self.num_outputs += {"gram_schmidt": 3}.get(method, 1) if self.o3 else 0
        h = hidden_channels
        self.mlp = nn.Sequential(nn.Linear(self.reps.dim, h), nn.SiLU(), nn.Linear(h, h),
                                 nn.SiLU(), nn.Linear(h, self.num_outputs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Hidden layers as ``nn.Linear`` draws them; the last layer zero (``U = I``)."""
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def extra_repr(self) -> str:
        return (f"{self.reps!r}, method={self.method!r}, o3={self.o3}, "
                f"hidden_channels={self.hidden_channels}")

    def local_update(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted local updates ``U_i`` ``(N, 3, 3)`` (rows: the refined axes in the
        old local coordinates) for local features ``x`` ``(N, reps.dim)``."""
        self._check_x(x)
        m = self.mlp(x)
        if self.method == "gram_schmidt":
            eye = torch.eye(3, dtype=m.dtype, device=m.device)
            n = 3 if self.o3 else 2
            u = m.view(-1, n, 3) + eye[:n]
            w = u[:, 2] if self.o3 else None
            return gram_schmidt(u[:, 0], u[:, 1], w, eps=self.eps).matrices
        if self.method == "quaternion":
            one = torch.zeros(4, dtype=m.dtype, device=m.device)
            one[0] = 1.0
            U = _quaternion_matrix(_unit_quaternion(m[:, :4] + one, self.eps))
        else:
            U = _axis_angle_matrix(m[:, :3])
        if self.o3:
            s = 1.0 + m[:, -1]
            U = torch.where((s < 0)[:, None, None], -U, U)
        return U

    def forward(self, x: torch.Tensor, frames: Frames) -> tuple[torch.Tensor, Frames]:
        """``(rho(U_i) x_i, Frames(U_i R_i))``: features and frames after the update."""
        if not isinstance(frames, Frames):
            raise TypeError(f"frames must be a tensorframes.Frames, got {type(frames).__name__}")
        self._check_x(x)
        R = frames.matrices
        if R.shape[-1] != 3:
            raise ValueError(f"FrameUpdate needs frames of O(3), got (N, {R.shape[-1]}, "
                             f"{R.shape[-1]})")
        if len(frames) != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} feature rows but {len(frames)} frames")
        if R.dtype != x.dtype:
            raise TypeError(f"x is {x.dtype} but frames are {R.dtype}: pass both in the "
                            f"module's dtype")
        U = self.local_update(x)
        return self.reps.transform(x, U), Frames(U @ R)

    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (N, {self.reps.dim}), got "
                            f"{type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.reps.dim:
            raise ValueError(f"x must have shape (N, {self.reps.dim}) for {self.reps!r}, got "
                             f"{tuple(x.shape)}")
        dtype = self.mlp[0].weight.dtype
        if x.dtype != dtype:
            raise TypeError(f"{type(self).__name__} has {dtype} parameters but x is {x.dtype}: "
                            f"use module.to({x.dtype}) or x.to({dtype})")
        if x.numel() and not compiling():
            finite = torch.isfinite(x).all(1)
            if not bool(finite.all()):
                i = int((~finite).nonzero()[0, 0])
                raise ValueError(f"x has a non-finite entry in row {i}: {x[i].tolist()}")
