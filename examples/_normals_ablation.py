"""Rows over several seeds: the ``ablation`` preset of ``python -m examples.normals compare``.

Every (row, seed) is an ordinary ``train`` run in ``<out>/<row key>/seed<k>/`` with the preset's
data and schedule and ``seed=k`` (initialisation, shuffling, augmentation; the data and the
test transforms are the same for every seed). ``--resume`` therefore reuses every finished run
without retraining (its checkpoint's final record is read back, after checking that the
checkpoint belongs to this row and configuration) and continues an interrupted one from its
last epoch; a row that could not be built earlier is trained once it can. A row whose model
cannot be built is *skipped* (all seeds, with the reason); a (row, seed) that fails while
training is *failed*; the others are aggregated either way and the exit status is 1 if any
run failed. The PCA estimate has no parameters and no seed: it is evaluated once.

Aggregates: mean and sample standard deviation (``n - 1``) over the seeds that finished.
Outputs in ``--out``, rewritten after every row: ``table.md`` (the printed table), ``results.csv``
(one line per (row, seed), then a ``mean`` and a ``std`` line per row), ``results.json``;
at the end ``ablation.png`` (bars: mean error as given and rotated, error bars: std over seeds,
one panel per architecture).

Also the helpers shared with :mod:`examples._normals_compare` (machine description, formats).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import math
import os
import os.path as osp
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch_geometric.data import Dataset

from ._normals_config import Config
from ._normals_data import build_datasets
from ._normals_dist import resolve_device
from ._normals_eval import evaluate
from ._normals_io import (
    CHECKPOINT_NAME,
    atomic_write_bytes,
    atomic_write_text,
    check_model_identity,
    check_run_identity,
    load_checkpoint,
    write_csv,
    write_json,
)
from ._normals_loop import train
from ._normals_model import build_model, count_parameters
from ._normals_report import fmt_time, machine_info, md

__all__ = ["METRICS", "SPREAD_LIMIT", "AblationRow", "SeedRun", "aggregate", "parameter_spread",
           "plot_ablation", "render_ablation_table", "run_ablation", "seed_dir"]

#: Exceptions that mean "this model is not available" (row skipped) rather than "it failed".
UNAVAILABLE = (ImportError, NotImplementedError, AttributeError)
#: Raised while *building* a model, these skip the row too (an option or a flavour that this
#: checkout's ``models`` does not take yet); raised while training, they fail the run.
UNBUILDABLE = (*UNAVAILABLE, ValueError, TypeError)

#: aggregated quantities: name -> path into a run's final record
METRICS = {
    "train_time_s": ("train_time_s",),
    "given": ("given", "unoriented", "mean"),
    "rotated": ("rotated", "unoriented", "mean"),
    "given_oriented": ("given", "oriented", "mean"),
    "rotated_oriented": ("rotated", "oriented", "mean"),
    "equivariance_error": ("equivariance_error",),
}
#: largest accepted relative spread of the parameter counts of one group (message types)
SPREAD_LIMIT = 0.02


@dataclasses.dataclass
class SeedRun:
    """One (row, seed): its status, final record (``metrics``) and whether it was reused."""

    seed: int | None
    status: str = "ok"  # ok | failed
    reason: str = ""
    parameters: int | None = None
    train_time_s: float | None = None
    metrics: dict | None = None
    reused: bool = False

    def value(self, name: str) -> float | None:
        """The quantity ``name`` of :data:`METRICS` (``None`` if the run has none)."""
        v: object = self.metrics
        for part in METRICS[name]:
            if not isinstance(v, Mapping) or part not in v:
                return None
            v = v[part]
        return float(v)  # type: ignore[arg-type]


@dataclasses.dataclass
class AblationRow:
    """A row over its seeds; ``aggregate`` maps each of :data:`METRICS` to mean, std, n."""

    key: str
    label: str
    arch: str
    flavour: str
    options: dict
    status: str = "ok"  # ok | skipped (not buildable) | failed (every seed failed)
    reason: str = ""
    parameters: int | None = None
    runs: list[SeedRun] = dataclasses.field(default_factory=list)
    aggregate: dict = dataclasses.field(default_factory=dict)

    @property
    def ok_runs(self) -> list[SeedRun]:
        return [r for r in self.runs if r.status == "ok"]


def seed_dir(out: str, key: str, seed: int) -> str:
    """``<out>/<key>/seed<seed>``: the folder of one (row, seed) run."""
    return osp.join(out, key, f"seed{seed}")


def aggregate(values: Sequence[float]) -> dict:
    """``{"mean", "std", "n"}``; ``std`` is the sample standard deviation (``n - 1``), 0 for one
    value; ``mean`` and ``std`` are ``None`` for none."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": n}


def parameter_spread(counts: Mapping[str, int]) -> float | None:
    """``(max - min) / min`` of the parameter counts (``None`` for fewer than two)."""
    values = [int(v) for v in counts.values()]
    if len(values) < 2 or min(values) <= 0:
        return None
    return (max(values) - min(values)) / min(values)


def run_ablation(
    base: dict,
    rows: Sequence[tuple[str, str, str, str, dict]],
    seeds: Sequence[int],
    *,
    out: str,
    resume: bool = False,
    preset: str = "custom",
    groups: Mapping[str, Sequence[str]] | None = None,
    per_arch: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Train every row once per seed on the data of ``base``; write and print the table.

    ``per_arch`` overrides :class:`Config` fields of ``base`` for the rows of one architecture
    (e.g. more epochs for the cheaper one); rows are compared within an architecture.

    ``groups`` names rows whose parameter counts should agree (printed with their relative
    spread, a warning above :data:`SPREAD_LIMIT`). Returns 1 if a (row, seed) failed, else 0.
    """
    t_start = time.perf_counter()
    seeds = [int(s) for s in seeds]
    per_arch = {arch: dict(fields) for arch, fields in (per_arch or {}).items()}
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    base_cfg = Config(**base)
    if not resume:
        existing = [
            osp.relpath(seed_dir(out, r[0], s), out)
            for r in rows
            for s in seeds
            if osp.exists(osp.join(seed_dir(out, r[0], s), CHECKPOINT_NAME))
        ]
        if existing:
            raise ValueError(
                f"{out} already holds checkpoints for {existing}; pass --resume to reuse them "
                "(finished runs are read back, unfinished ones continued) or choose another "
                "--out (nothing was overwritten)"
            )
    datasets = build_datasets(base_cfg)
    device = resolve_device(base_cfg.device, 0)
    _log(
        f"ablation (preset {preset}): {len(rows)} rows x seeds {seeds}; {base_cfg.data} data, "
        f"{len(datasets[0])} training / {len(datasets[1])} test clouds of "
        f"{base_cfg.num_points} points, noise {base_cfg.noise}, {base_cfg.epochs} epochs, "
        f"batch {base_cfg.batch_size}; runs in {out}/<row>/seed<k>/"
    )
    results: list[AblationRow] = []
    for key, label, arch, flavour, options in rows:
        row = AblationRow(key, label, arch, flavour, dict(options))
        _log(f"\n== {label} ({arch}/{flavour}, options {options})")
        try:
            model = build_model(arch, flavour, row.options)
        except UNBUILDABLE as err:
            row.status, row.reason = "skipped", f"{type(err).__name__}: {err}"
            _log(f"   SKIPPED (not buildable in this checkout): {row.reason}")
            results.append(row)
            _write(out, preset, base_cfg, seeds, results, groups, t_start, datasets, per_arch)
            continue
        row.parameters = count_parameters(model)
        _log(f"   {row.parameters:,} parameters")
        if row.parameters == 0:  # the PCA estimate: deterministic, evaluated once
            row.runs.append(_evaluate_once(model, base_cfg, datasets[1], device))
        else:
            for seed in seeds:
                row.runs.append(_run_seed(row, seed, {**base, **per_arch.get(row.arch, {})},
                                          out, resume, datasets))
        _aggregate_row(row)
        results.append(row)
        _write(out, preset, base_cfg, seeds, results, groups, t_start, datasets, per_arch)
    header, table, notes = _write(out, preset, base_cfg, seeds, results, groups, t_start,
                                  datasets, per_arch)
    wall = time.perf_counter() - t_start
    print(f"\n{header}\n\n{table}\n\n{notes}\ntotal wall time {wall:.0f} s")
    plot_ablation(results, osp.join(out, "ablation.png"), title=f"preset {preset}")
    _log(f"wrote {out}/table.md, results.csv, results.json, ablation.png")
    return 1 if any(r.status == "failed" for row in results for r in row.runs) else 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _evaluate_once(
    model: torch.nn.Module, cfg: Config, test_set: Dataset, device: torch.device
) -> SeedRun:
    ev = evaluate(model.to(device), test_set, batch_size=cfg.batch_size,
                  eval_seed=cfg.eval_seed, device=device)
    return SeedRun(None, parameters=0, train_time_s=0.0, metrics=ev["metrics"])


def _run_seed(
    row: AblationRow,
    seed: int,
    base: dict,
    out: str,
    resume: bool,
    datasets: tuple[Dataset, Dataset],
) -> SeedRun:
    """Train (or continue, or read back) one (row, seed); failures are caught and reported."""
    run_out = seed_dir(out, row.key, seed)
    ckpt_path = osp.join(run_out, CHECKPOINT_NAME)
    run = SeedRun(seed)
    try:
        resume_run = resume and osp.exists(ckpt_path)
        cfg = Config(**{**base, "arch": row.arch, "flavour": row.flavour, "options": row.options,
                        "seed": seed, "out": run_out, "resume": resume_run})
        ckpt = load_checkpoint(ckpt_path) if cfg.resume else None
        if ckpt is not None and ckpt.get("final") is not None and ckpt["epoch"] >= cfg.epochs:
            check_model_identity(ckpt, cfg.model_identity(), ckpt_path)
            check_run_identity(ckpt, cfg, ckpt_path)
            final, run.reused = ckpt["final"], True
            _log(f"   seed {seed}: reused {ckpt_path} (finished, epoch {ckpt['epoch']})")
        else:
            _log(f"   seed {seed}: {'continuing' if ckpt else 'training'} in {run_out}")
            final = train(cfg, datasets=datasets)["final"]
            if final is None:
                raise RuntimeError(f"{run_out}: training ended without a final evaluation")
        run.metrics = final
        run.parameters = int(final["parameters"])
        run.train_time_s = float(final["train_time_s"])
        _log(
            f"   seed {seed}: {run.value('given'):.2f} deg as given, "
            f"{run.value('rotated'):.2f} rotated, {fmt_time(run.train_time_s)} training"
        )
    except Exception as err:  # report the run as failed and go on with the others
        run.status, run.reason = "failed", f"{type(err).__name__}: {err}"
        traceback.print_exc(file=sys.stderr)
        _log(f"   seed {seed}: FAILED: {run.reason}")
    return run


def _aggregate_row(row: AblationRow) -> None:
    ok = row.ok_runs
    row.aggregate = {
        name: aggregate([v for r in ok if (v := r.value(name)) is not None]) for name in METRICS
    }
    counts = {r.parameters for r in ok if r.parameters is not None}
    if len(counts) > 1:
        raise RuntimeError(f"{row.key}: seeds disagree on the parameter count {sorted(counts)}")
    if not ok:
        row.status = "failed"
        row.reason = "; ".join(f"seed {r.seed}: {r.reason}" for r in row.runs)


# =============================================================================== output
COLUMNS = ("model", "parameters", "seeds", "training time (mean)", "unoriented mean, as given",
           "unoriented mean, rotated", "equivariance error (mean)")


def _pm(agg: dict, digits: int = 2) -> str:
    if agg.get("mean") is None:
        return ""
    if agg["n"] < 2:
        return f"{agg['mean']:.{digits}f}"
    return f"{agg['mean']:.{digits}f} ± {agg['std']:.{digits}f}"


def render_ablation_table(results: Sequence[AblationRow]) -> str:
    """Markdown: per row its parameters, seeds, mean training time, errors (mean ± std)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for row in results:
        if row.status != "ok":
            cells = [row.label, f"{row.status}: {md(row.reason)}"] + [""] * (len(COLUMNS) - 2)
        else:
            a = row.aggregate
            ok = row.ok_runs
            if row.parameters == 0:
                seeds, time_cell = "- (no learning)", "none"
            else:
                seeds = f"{len(ok)}/{len(row.runs)}"
                failed = [str(r.seed) for r in row.runs if r.status != "ok"]
                if failed:
                    seeds += f" (failed: seed {', '.join(failed)})"
                time_cell = fmt_time(a["train_time_s"]["mean"])
            eq = a["equivariance_error"]["mean"]
            cells = [row.label, f"{row.parameters:,}", seeds, time_cell, _pm(a["given"]),
                     _pm(a["rotated"]), "" if eq is None else f"{eq:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spreads(
    results: Sequence[AblationRow], groups: Mapping[str, Sequence[str]] | None
) -> dict[str, dict]:
    by_key = {r.key: r for r in results}
    spreads = {}
    for name, keys in (groups or {}).items():
        counts = {k: by_key[k].parameters for k in keys if k in by_key and by_key[k].parameters}
        spreads[name] = {"parameters": counts, "relative_spread": parameter_spread(counts)}
    return spreads


def _notes(results: Sequence[AblationRow], spreads: Mapping[str, dict]) -> str:
    lines = []
    for name, s in spreads.items():
        spread, counts = s["relative_spread"], s["parameters"]
        if spread is None:
            continue
        listed = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        lines.append(f"Parameters of the message-type rows of {name}: {listed}; max relative "
                     f"spread {100 * spread:.2f}%.")
        if spread > SPREAD_LIMIT:
            lines.append(f"**WARNING: {name}'s message-type rows differ by {100 * spread:.1f}% "
                         f"in parameters (more than {100 * SPREAD_LIMIT:.0f}%): their errors are "
                         "not compared at matched size.**")
    for row in results:
        if row.status == "skipped":
            lines.append(f"Skipped: {row.label}: {md(row.reason, 300)}")
        for r in row.runs:
            if r.status != "ok":
                lines.append(f"Failed: {row.label}, seed {r.seed}: {md(r.reason, 300)}")
    return "\n".join(lines) + ("\n" if lines else "")


def _write(
    out: str,
    preset: str,
    cfg: Config,
    seeds: Sequence[int],
    results: Sequence[AblationRow],
    groups: Mapping[str, Sequence[str]] | None,
    t_start: float,
    datasets: tuple[Dataset, Dataset],
    per_arch: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str, str, str]:
    """Write ``table.md``, ``results.csv`` and ``results.json`` for the rows done so far."""
    header = (
        f"Normal regression ablation, preset `{preset}`: {cfg.data} data ({len(datasets[0])} "
        f"train / {len(datasets[1])} test clouds, {cfg.num_points} points, noise {cfg.noise}), "
        f"{cfg.epochs} epochs{_per_arch_text(per_arch)}, batch {cfg.batch_size}, lr {cfg.lr}, "
        "seeds "
        f"{', '.join(map(str, seeds))}. Errors: unoriented mean angle in degrees, mean ± sample "
        f"standard deviation over the seeds; rotated = one random O(3) element per test cloud "
        f"(reflections included, eval seed {cfg.eval_seed}); equivariance error = mean angle "
        "between f(Qx) and Q f(x), mean over the seeds; training time excludes evaluation."
    )
    table = render_ablation_table(results)
    spreads = _spreads(results, groups)
    notes = _notes(results, spreads)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(osp.join(out, "table.md"), f"{header}\n\n{table}\n\n{notes}")
    write_csv(osp.join(out, "results.csv"), _csv_rows(results))
    write_json(
        osp.join(out, "results.json"),
        {
            "preset": preset,
            "config": cfg.to_dict(),
            "seeds": list(seeds),
            "per_arch": {k: dict(v) for k, v in (per_arch or {}).items()},
            "rows": [dataclasses.asdict(r) for r in results],
            "parameter_spread": spreads,
            "wall_time_s": time.perf_counter() - t_start,
            "machine": machine_info(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return header, table, notes


def _per_arch_text(per_arch: Mapping[str, Mapping[str, Any]] | None) -> str:
    parts = [
        f"{arch}: " + ", ".join(f"{k} {v}" for k, v in fields.items())
        for arch, fields in (per_arch or {}).items() if fields
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def _csv_rows(results: Sequence[AblationRow]) -> list[dict]:
    lines = []
    for row in results:
        common = {"key": row.key, "model": row.label, "arch": row.arch, "flavour": row.flavour,
                  "options": repr(row.options)}
        if row.status == "skipped":
            lines.append({**common, "seed": "", "status": "skipped", "reason": row.reason})
            continue
        for r in row.runs:
            lines.append({**common, "seed": "" if r.seed is None else r.seed, "status": r.status,
                          "reason": r.reason, "parameters": r.parameters, "n": 1,
                          **{name: r.value(name) for name in METRICS}})
        for stat in ("mean", "std"):
            lines.append({**common, "seed": stat, "status": row.status, "reason": "",
                          "parameters": row.parameters,
                          "n": row.aggregate.get("given", {}).get("n", 0),
                          **{name: row.aggregate[name][stat] for name in METRICS}})
    return lines


def plot_ablation(results: Sequence[AblationRow], path: str, title: str = "") -> None:
    """Bars of the mean unoriented error, as given and rotated, with the standard deviation over
    seeds as error bars; one panel per architecture; the PCA estimate as a dashed line."""
    import matplotlib  # optional, and slow to import: only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r.arch for r in results if r.parameters != 0))
    reference = [r for r in results if r.parameters == 0 and r.aggregate.get("given")]
    n_max = max([sum(r.arch == a for r in results) for a in archs] or [1])
    fig, axes = plt.subplots(
        1, max(len(archs), 1), figsize=(6.5 * max(len(archs), 1), 1.2 + 0.42 * n_max),
        squeeze=False, sharex=True,
    )
    for ax, arch in zip(axes[0], archs):
        rows = [r for r in results if r.arch == arch]
        ys = torch.arange(len(rows), dtype=torch.float64).numpy()
        for offset, name, color, text in ((-0.2, "given", "C0", "as given"),
                                          (0.2, "rotated", "C1", "rotated (random O(3))")):
            means = [r.aggregate.get(name, {}).get("mean") or 0.0 for r in rows]
            stds = [r.aggregate.get(name, {}).get("std") or 0.0 for r in rows]
            ax.barh(ys + offset, means, height=0.38, xerr=stds, color=color, label=text,
                    capsize=2, error_kw={"lw": 0.8})
        for r in reference:
            ax.axvline(r.aggregate["given"]["mean"], color="k", ls="--", lw=1, label=r.label)
        labels = [_short(r) for r in rows]
        ax.set_yticks(ys, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("unoriented mean angular error (degrees), mean ± std over seeds")
        name = {"pointnet2": "PointNet++", "dgcnn": "DGCNN"}.get(arch, arch)
        ax.set_title(f"{name} ({title})" if title else name)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue()))


def _short(row: AblationRow) -> str:
    label = row.label
    for prefix in ("PointNet++ ", "DGCNN "):
        label = label.removeprefix(prefix)
    return label if row.status == "ok" else f"{label} [{row.status}]"
