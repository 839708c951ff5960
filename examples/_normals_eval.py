"""Evaluation of the normal-regression runner: angular errors as given and under random O(3).

Metrics and loss are those of :mod:`examples._normals_metrics`; :func:`evaluate` runs under
:func:`torch.random.fork_rng` seeded with the evaluation seed, so it is deterministic and never
perturbs the training run around it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch_geometric.data import Data, Dataset
from torch_geometric.loader import DataLoader

from ._normals_data import random_o3, rotate_batch, split_batch
from ._normals_metrics import angular_error, summarize, unoriented_cosine_loss
from ._normals_model import unwrap

__all__ = ["check_prediction", "evaluate", "flatten_metrics", "progress_bar"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset | Sequence[Data],
    *,
    batch_size: int,
    eval_seed: int,
    device: torch.device,
    rotated: bool = True,
    progress: bool = False,
) -> dict:
    """Angular errors of ``model`` on ``dataset``, as given and (``rotated=True``) under one
    seeded random O(3) element per cloud (reflections included).

    Returns ``{"metrics": {...}, "errors": {...}}``: ``metrics`` holds, for ``given`` and
    ``rotated``, the ``unoriented`` and ``oriented`` mean/median errors in degrees, the test
    ``loss``, the equivariance ``gap`` (rotated minus given mean, both conventions) and
    ``equivariance_error`` (mean oriented angle between ``model(Q x)`` and ``Q model(x)``);
    ``errors`` the per-point error tensors (for plots). Runs under ``fork_rng`` seeded with
    ``eval_seed``, so it is deterministic and leaves the caller's RNG state unchanged.
    """
    model = unwrap(model)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    Qs = random_o3(len(dataset), torch.Generator().manual_seed(eval_seed)) if rotated else None
    errs: dict[str, list[torch.Tensor]] = {}
    loss_sum = {"given": 0.0, "rotated": 0.0}
    n_points, offset = 0, 0

    def add(key: str, value: torch.Tensor) -> None:
        errs.setdefault(key, []).append(value)

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(eval_seed)
            for batch in progress_bar(loader, progress, desc="eval"):
                inp, target = split_batch(batch, device)
                B = inp.num_graphs
                pred = model(inp)
                check_prediction(pred, target)
                n_points += len(target)
                loss_sum["given"] += float(unoriented_cosine_loss(pred, target)) * len(target)
                add("given_unoriented", angular_error(pred, target))
                add("given_oriented", angular_error(pred, target, oriented=True))
                if rotated:
                    Q = Qs[offset : offset + B]
                    target_r = rotate_batch(inp, target, Q)
                    pred_r = model(inp)
                    check_prediction(pred_r, target_r)
                    loss_r = float(unoriented_cosine_loss(pred_r, target_r))
                    loss_sum["rotated"] += loss_r * len(target_r)
                    add("rotated_unoriented", angular_error(pred_r, target_r))
                    add("rotated_oriented", angular_error(pred_r, target_r, oriented=True))
                    pred_q = torch.einsum(
                        "nij,nj->ni", Q.to(pred.device)[inp.batch], pred.to(torch.float64)
                    )
                    add("equivariance", angular_error(pred_r, pred_q, oriented=True))
                offset += B
    finally:
        model.train(was_training)
    errors = {k: torch.cat(v).cpu() for k, v in errs.items()}
    metrics: dict[str, Any] = {"num_clouds": len(dataset), "num_points": n_points}
    for split in ("given", "rotated") if rotated else ("given",):
        metrics[split] = {
            "unoriented": summarize(errors[f"{split}_unoriented"]),
            "oriented": summarize(errors[f"{split}_oriented"]),
            "loss": loss_sum[split] / max(1, n_points),
        }
    if rotated:
        metrics["gap"] = {
            o: metrics["rotated"][o]["mean"] - metrics["given"][o]["mean"]
            for o in ("unoriented", "oriented")
        }
        metrics["equivariance_error"] = summarize(errors["equivariance"])["mean"]
    return {"metrics": metrics, "errors": errors}


def flatten_metrics(metrics: dict, prefix: str = "") -> dict:
    """``{"given": {"unoriented": {"mean": x}}}`` -> ``{"given_unoriented_mean": x}``."""
    flat = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_metrics(v, key + "_"))
        else:
            flat[key] = v
    return flat


def check_prediction(pred: Any, target: torch.Tensor) -> None:
    """``ValueError`` unless ``pred`` is a tensor of the target's shape ``(N, 3)``."""
    if not isinstance(pred, torch.Tensor) or pred.shape != target.shape:
        shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"the model must return (N, 3) normals, got {shape} for N={len(target)}")


def progress_bar(iterable: Iterable, enabled: bool, **kw: Any) -> Iterable:
    """``iterable``, wrapped in a tqdm progress bar on stderr when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm import tqdm  # optional: only needed when progress bars are shown

    return tqdm(iterable, leave=False, dynamic_ncols=True, file=sys.stderr, **kw)
