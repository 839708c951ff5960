r"""Learned frames: a small equivariant message-passing network followed by Gram-Schmidt."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_edge_index
from ..graph import check_finite, knn_graph, radius_graph
from ._frames import Frames
from ._gram_schmidt import gram_schmidt
from ._scaling import global_exponent, ldexp, scaled_radius

__all__ = ["LearnedFrames"]


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, o))


class LearnedFrames(nn.Module):
    r"""Predicts an equivariant frame per node from positions (and optional invariant features).

    Two invariant message-passing steps, then equivariant vectors and :func:`gram_schmidt`:

    .. math::
        h_i = \frac{1}{|N(i)|}\sum_j \phi_1\big(\mathrm{rbf}(\hat r_{ij}), x_j\big)\,
            c(\hat r_{ij}),
        \qquad
        v^{(a)}_i = \sum_j \big(\phi_2(h_i, h_j, \mathrm{rbf}(\hat r_{ij}), \cos_{ij})_a
        - \overline{\phi_2}_{i,a}\big)\,
        c(\hat r_{ij})\,\frac{p_j - p_i}{s_i},\quad a = 1, 2\,(, 3)

    where :math:`\cos_{ij}` (and its square) is the cosine between :math:`p_j - p_i` and the
    node's mean neighbour offset (an invariant that tells neighbours apart by direction) and
    :math:`\overline{\phi_2}_i` is the mean of :math:`\phi_2` over the neighbours of ``i``
    (removes the direction shared by all channels, so the vectors are far from parallel),
    with :math:`\hat r_{ij} = |p_j - p_i| / s_i`, :math:`s_i` the root-mean-square neighbour
    distance of node ``i`` (so frames are scale-invariant; with ``r`` given, :math:`s_i = r`), a
    Gaussian radial basis on ``[0, cutoff]`` and the cosine envelope
    :math:`c(t) = \tfrac12(\cos(\pi t / \text{cutoff}) + 1)` for ``t < cutoff``. Frames are
    ``gram_schmidt(v1, v2)`` (SO(3), ``o3=False``) or ``gram_schmidt(v1, v2, v3)`` (O(3),
    ``o3=True``: the third vector sets the handedness). Everything is differentiable (also with
    respect to ``pos``; the neighbour graph is chosen without gradient).

    **Magnitudes**: a cloud whose extent lies outside ``[2**-16, 2**16]`` is multiplied by a
    power of two (exact) that brings its extent to ``[0.5, 1)`` before the graph and the
    offsets are formed (``r`` is rescaled with it), so large or tiny coordinates give the frames
    of unit-scale ones (to round-off; no overflow of squared distances).

    **Dtypes**: like any PyTorch module, it computes in the dtype of its parameters: ``pos``
    (and ``x``) must have that dtype, else :class:`TypeError` names both and suggests
    ``model.to(dtype)`` or ``pos.to(dtype)`` (a float16 input on a float32 module included).
    ``edge_index`` is checked with ``tensorframes._checks.check_edge_index`` and ``pos`` must be
    finite (:class:`ValueError` naming the index).

    Args:
        in_channels (int): width of the optional invariant node features ``x`` (0: none).
        hidden_channels (int): MLP width (default 32).
        k (int): neighbours per node when no ``edge_index`` is passed (default 16).
        r (float, optional): use a radius graph of radius ``r`` instead of ``k``-nn.
        o3 (bool): O(3) frames (default) or SO(3) frames.
        num_rbf (int): number of Gaussian radial basis functions (default 8).
        cutoff (float): envelope cutoff in units of ``s_i`` (default 2.5; 1.0 with ``r``).
        eps (float): :func:`gram_schmidt` fallback scale (default 1e-6).

    Shapes:
        - input: ``pos (N, 3)``, ``batch (N,)``, ``x (N, in_channels)``, ``edge_index (2, E)``
        - output: :class:`Frames` ``(N, 3, 3)``
    """

    def __init__(self, in_channels: int = 0, hidden_channels: int = 32, *, k: int = 16,
                 r: float | None = None, o3: bool = True, num_rbf: int = 8,
                 cutoff: float | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        if in_channels < 0 or hidden_channels < 1 or num_rbf < 1 or k < 1:
            raise ValueError("in_channels >= 0, hidden_channels >= 1, num_rbf >= 1, k >= 1 "
                             "required")
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.k, self.r, self.o3, self.num_rbf, self.eps = k, r, o3, num_rbf, eps
        self.cutoff = float(cutoff if cutoff is not None else (1.0 if r is not None else 2.5))
        self.register_buffer("centers", torch.linspace(0.0, self.cutoff, num_rbf))
        self.width = self.cutoff / num_rbf
        self.num_vectors = 3 if o3 else 2
        self.phi1 = _mlp(num_rbf + in_channels, hidden_channels, hidden_channels)
        self.phi2 = _mlp(2 * hidden_channels + num_rbf + 2, hidden_channels, self.num_vectors)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, pos: torch.Tensor, batch: torch.Tensor | None = None,
                x: torch.Tensor | None = None,
                edge_index: torch.Tensor | None = None) -> Frames:
        if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
            raise ValueError(f"pos must have shape (N, 3), got "
                             f"{getattr(pos, 'shape', type(pos).__name__)}")
        dtype = self.phi1[0].weight.dtype
        for name, t in (("pos", pos), ("x", x)):
            if t is not None and t.dtype != dtype:
                raise TypeError(
                    f"{type(self).__name__} has {dtype} parameters but {name} is {t.dtype}: "
                    f"convert one of them, e.g. model.to({t.dtype}) or {name}.to({dtype})")
        if self.in_channels and (x is None or x.shape != (pos.shape[0], self.in_channels)):
            raise ValueError(f"x must have shape ({pos.shape[0]}, {self.in_channels}), got "
                             f"{None if x is None else tuple(x.shape)}")
        check_finite(pos, "pos")
        n = pos.shape[0]
        e0, _ = global_exponent(pos)
        pos = ldexp(pos, -e0)
        r = None if self.r is None else scaled_radius(self.r, e0)
        if edge_index is None:
            with torch.no_grad():
                if r is not None:
                    edge_index = radius_graph(pos.detach(), r, batch, loop=False)
                else:
                    edge_index = knn_graph(pos.detach(), self.k, batch, loop=False)
        else:
            check_edge_index(edge_index, n)
            edge_index = edge_index.long()
        j, i = edge_index[0], edge_index[1]
        d = pos.index_select(0, j) - pos.index_select(0, i)
        d2 = (d * d).sum(-1)
        cnt = pos.new_zeros(n).index_add(0, i, torch.ones_like(d2)).clamp_min(1)
        if r is not None:
            s = torch.full_like(cnt, r)
        else:
            s2 = pos.new_zeros(n).index_add(0, i, d2) / cnt
            s = s2.clamp_min(torch.finfo(pos.dtype).tiny).sqrt()
        s_e = s.index_select(0, i)
        rhat = (d2 + torch.finfo(pos.dtype).tiny).sqrt() / s_e
        rbf = torch.exp(-0.5 * ((rhat[:, None] - self.centers) / self.width) ** 2)
        env = torch.where(rhat < self.cutoff,
                          0.5 * (torch.cos(math.pi * rhat / self.cutoff) + 1),
                          torch.zeros_like(rhat))
        feat = rbf if not self.in_channels else torch.cat([rbf, x.index_select(0, j)], -1)
        h = pos.new_zeros(n, self.hidden_channels).index_add(
            0, i, self.phi1(feat) * env[:, None]) / cnt[:, None]
        # Directional invariant: cosine between the edge and the neighbourhood's mean offset
        # (an equivariant vector), so the weights can tell neighbours apart by direction.
        rel = d / s_e[:, None]
        mean = pos.new_zeros(n, 3).index_add(0, i, rel * env[:, None]) / cnt[:, None]
        me = mean.index_select(0, i)
        tiny = torch.finfo(pos.dtype).tiny
        cos = (rel * me).sum(-1) / ((rel * rel).sum(-1) * (me * me).sum(-1) + tiny).sqrt()
        ang = torch.stack([cos, cos * cos], -1)
        wts = self.phi2(torch.cat([h.index_select(0, i), h.index_select(0, j), rbf, ang], -1))
        # Centre the weights over each neighbourhood: removes the direction shared by all
        # channels (the neighbourhood centroid), so the vectors are far from parallel.
        wts = wts - (pos.new_zeros(n, self.num_vectors).index_add(0, i, wts)
                     / cnt[:, None]).index_select(0, i)
        wts = wts * env[:, None]
        vec = pos.new_zeros(n, self.num_vectors, 3).index_add(
            0, i, wts[:, :, None] * rel[:, None, :])
        w = vec[:, 2] if self.o3 else None
        return gram_schmidt(vec[:, 0], vec[:, 1], w, eps=self.eps)

    def __repr__(self) -> str:
        nb = f"r={self.r}" if self.r is not None else f"k={self.k}"
        return (f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, {nb}, "
                f"o3={self.o3}, num_rbf={self.num_rbf})")
