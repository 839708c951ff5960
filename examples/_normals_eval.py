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

__all__ = [
    "check_prediction",
    "evaluate",
    "files_table",
    "flatten_metrics",
    "metrics_table",
    "per_cloud",
    "progress_bar",
]


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
    """``iterable``, wrapped in a tqdm progress bar on stderr when ``enabled``.

    The bar is left in place when it finishes (its line ends with a newline), so whatever is
    printed next, on stdout or stderr, starts on a line of its own."""
    if not enabled:
        return iterable
    from tqdm import tqdm  # optional: only needed when progress bars are shown

    return tqdm(iterable, leave=True, dynamic_ncols=True, file=sys.stderr, **kw)


def per_cloud(errors: dict, sizes: Sequence[int], names: Sequence[str]) -> list[dict]:
    """One row per cloud from the per-point ``errors`` of :func:`evaluate` (clouds in dataset
    order with ``sizes`` points each): ``name``, ``points`` and the mean errors in degrees
    (``given_unoriented``, ``given_oriented``, and ``rotated_unoriented`` /
    ``equivariance_error`` when evaluated under random O(3))."""
    keys = {
        "given_unoriented": "given_unoriented",
        "given_oriented": "given_oriented",
        "rotated_unoriented": "rotated_unoriented",
        "equivariance_error": "equivariance",
    }
    total = int(sum(sizes))
    parts = {
        k: torch.split(errors[src], list(sizes))
        for k, src in keys.items()
        if src in errors and len(errors[src]) == total
    }
    if "given_unoriented" not in parts or len(names) != len(sizes):
        raise ValueError(
            f"per_cloud: {len(names)} names, {len(sizes)} clouds with {total} points and "
            f"{len(errors.get('given_unoriented', []))} per-point errors do not match"
        )
    rows = []
    for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
        row: dict[str, Any] = {"name": name, "points": int(n)}
        for k, chunks in parts.items():
            row[f"{k}_mean"] = float(chunks[i].double().mean())
        rows.append(row)
    return rows


def metrics_table(m: dict) -> str:
    """A small markdown table of the metrics returned by ``evaluate``."""
    rows = [
        "| test set | unoriented mean | unoriented median | oriented mean | oriented median |",
        "|---|---:|---:|---:|---:|",
    ]
    for split in ("given", "rotated"):
        if split in m:
            u, o = m[split]["unoriented"], m[split]["oriented"]
            label = "as given" if split == "given" else "random O(3)"
            rows.append(
                f"| {label} | {u['mean']:.2f} | {u['median']:.2f} | {o['mean']:.2f} | "
                f"{o['median']:.2f} |"
            )
    if "gap" in m:
        rows.append(
            f"\nequivariance gap (rotated - given, mean): unoriented "
            f"{m['gap']['unoriented']:+.3f} deg, oriented {m['gap']['oriented']:+.3f} deg; "
            f"|model(Qx) - Q model(x)|: {m['equivariance_error']:.3g} deg"
        )
    return "\n".join(rows)


def files_table(rows: list[dict]) -> str:
    """A markdown table of :func:`per_cloud` rows: the files tested and their errors."""
    lines = [
        "| file | points | unoriented mean | oriented mean | random O(3) unoriented | "
        "equivariance error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rot = r.get("rotated_unoriented_mean", float("nan"))
        eq = r.get("equivariance_error_mean", float("nan"))
        lines.append(
            f"| {r['name']} | {r['points']} | {r['given_unoriented_mean']:.2f} | "
            f"{r['given_oriented_mean']:.2f} | {rot:.2f} | {eq:.3g} |"
        )
    return "\n".join(lines)
