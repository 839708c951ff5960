"""The pure-torch frame change every fused path is tested against, and the backward through it.

:func:`frame_change_reference` is the plain composition (gather, relative frames, transform);
:func:`reference_backward` differentiates it for the fused paths' double backward
(``create_graph=True``). Shared by :mod:`._fused` and :mod:`._kernel`.
"""

from __future__ import annotations

import torch

from .base import Reps

__all__ = ["frame_change_reference", "reference_backward"]


def frame_change_reference(reps: Reps, x: torch.Tensor, src: torch.Tensor, *,
                           R_src: torch.Tensor | None = None, R_dst: torch.Tensor | None = None,
                           dst: torch.Tensor | None = None,
                           rel: torch.Tensor | None = None) -> torch.Tensor:
    """The plain composition the fused paths are tested against: gather ``x[src]``, the
    relative frames ``R_dst[dst] @ R_src[src]^T`` (or ``rel``, or ``R_dst[dst]`` without
    ``R_src``), :meth:`Reps.transform`."""
    if rel is None and R_src is None:
        rel = R_dst.index_select(0, dst)
    elif rel is None:
        R_dst = R_src if R_dst is None else R_dst
        rel = R_dst.index_select(0, dst) @ R_src.index_select(0, src).transpose(-1, -2)
    return reps.transform(x.index_select(0, src), rel)


def reference_backward(ctx, g):
    """The backward through :func:`frame_change_reference`, itself differentiable.

    ``ctx`` saved ``(x, R_src, R_dst, rel, src, dst)`` (``None`` where not given, as
    :func:`frame_change_reference` takes them) and holds ``reps``; returns the gradients of the
    four tensors and four ``None``.
    """
    x, R_src, R_dst, rel, src, dst = ctx.saved_tensors
    # the saved inputs keep their history: the gradients below are differentiable in them
    live = [x, R_src, R_dst, rel]
    y = frame_change_reference(ctx.reps, x, src, R_src=R_src, R_dst=R_dst, dst=dst, rel=rel)
    wanted = [t for t, need in zip(live, ctx.needs_input_grad[:4]) if need]
    res = iter(torch.autograd.grad(y, wanted, g, create_graph=True, allow_unused=True))
    out = [next(res) if need else None for need in ctx.needs_input_grad[:4]]
    return (*out, None, None, None, None)
