"""Loss and angular-error metrics for normal regression (used by ``examples/normals.py``).

Conventions:

* A prediction is any ``(N, 3)`` vector field; only its direction counts (it is normalised).
* **Unoriented** error: the angle between the lines spanned by prediction and target,
  ``min(angle(p, n), angle(p, -n))`` in ``[0, 90]`` degrees. The normal of a point cloud has no
  intrinsic sign, so this is the main metric (and the training loss is unoriented too).
* **Oriented** error: the plain angle ``angle(p, n)`` in ``[0, 180]`` degrees; ``-n`` scores
  180. It measures whether a model also recovers the dataset's orientation convention
  (outward for closed synthetic shapes).
* **Equivariance gap**: mean error on randomly rotated/reflected test clouds minus mean error
  on the clouds as given. An O(3)-equivariant model has gap ~0 (up to float error); a plain
  network trained without augmentation typically has a large positive gap.

Angles are computed as ``atan2(|p x n|, p . n)`` in float64, which is accurate near 0 and 180
degrees (``acos`` of a clamped cosine is not).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "angular_error",
    "summarize",
    "unoriented_cosine_loss",
]


def unoriented_cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Mean of ``1 - |cos(pred, target)|`` over points (the training loss).

    Zero when every prediction is parallel or anti-parallel to its target, 1 when orthogonal.
    Invariant to the sign of either argument and to the length of ``pred``.
    """
    _check_pair(pred, target)
    cos = torch.nn.functional.cosine_similarity(pred, target.to(pred.dtype), dim=-1, eps=1e-8)
    return (1.0 - cos.abs()).mean()


def angular_error(
    pred: torch.Tensor, target: torch.Tensor, *, oriented: bool = False
) -> torch.Tensor:
    """Per-point angle in degrees between ``pred`` and ``target`` (float64, shape ``(N,)``).

    ``oriented=False`` gives the unoriented error in ``[0, 90]`` (``n`` and ``-n`` are the same
    answer); ``oriented=True`` the plain angle in ``[0, 180]``. A zero prediction has an
    undefined direction and scores 90 degrees in both conventions.
    """
    _check_pair(pred, target)
    p = pred.detach().to(torch.float64)
    n = target.detach().to(device=p.device, dtype=torch.float64)
    dot = (p * n).sum(-1)
    cross = torch.linalg.cross(p, n, dim=-1).norm(dim=-1)
    if not oriented:
        dot = dot.abs()
    angle = torch.rad2deg(torch.atan2(cross, dot))
    # atan2(0, 0) = 0: a zero prediction must not count as perfect
    return torch.where(p.norm(dim=-1) > 0, angle, torch.full_like(angle, 90.0))


def summarize(errors: torch.Tensor) -> dict[str, float]:
    """``{"mean": ..., "median": ...}`` of a 1-d tensor of errors in degrees (NaN if empty)."""
    if errors.numel() == 0:
        return {"mean": math.nan, "median": math.nan}
    e = errors.to(torch.float64)
    # torch.median returns the lower of the two middle values; use the usual definition.
    return {"mean": float(e.mean()), "median": float(torch.quantile(e, 0.5))}


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.dim() != 2 or pred.size(-1) != 3 or target.shape != pred.shape:
        raise ValueError(
            f"expected prediction and target of the same shape (N, 3), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
