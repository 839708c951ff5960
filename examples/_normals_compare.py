"""``python -m examples.normals compare``: train and evaluate every model of a preset, one table.

Rows of the ``quick`` and ``long`` presets (same data, same epochs, same seed for every model):

* PCA normal estimate (no learning: ``models.pca_normals``),
* PointNet++ plain, plain + random O(3) augmentation, PCA frames, PCA frames with scalar
  messages (local canonicalization), learned frames,
* the tensor-product baseline ``models.build("tp", "cg")``.

Each trained row is an ordinary ``train`` run in ``<out>/<row key>/`` (so ``--resume`` reuses
finished rows and continues interrupted ones). A row whose model cannot be built (a layer, an
option or a flavour this checkout does not have) is reported as *skipped* with the reason; a
row that fails while training is reported as *failed* (and the exit status is 1); the table is
printed either way. The ``ablation`` preset (several seeds per row, mean and spread) is run by
:mod:`examples._normals_ablation`.

Outputs in ``--out``: ``table.md`` (the printed table), ``results.csv``, ``results.json`` (all
metrics, the configuration and the machine) and ``errors.png`` (cumulative distributions of
the per-point angular errors of every row, as given and under random O(3)).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import os
import os.path as osp
import sys
import time
import traceback

import torch
from torch_geometric.data import Dataset

from ._normals_ablation import UNBUILDABLE, run_ablation
from ._normals_config import Config
from ._normals_data import build_datasets
from ._normals_dist import resolve_device
from ._normals_eval import evaluate, flatten_metrics
from ._normals_io import (
    CHECKPOINT_NAME,
    atomic_write_bytes,
    atomic_write_text,
    check_model_identity,
    check_run_identity,
    load_checkpoint,
    load_model_state,
    write_csv,
    write_json,
)
from ._normals_loop import train
from ._normals_model import build_model, count_parameters
from ._normals_report import fmt_time, machine_info, md

#: A row: ``(key, label, arch, flavour, options)``; ``options`` go to ``models.build`` on top
#: of the preset's options for the arch.
Row = tuple[str, str, str, str, dict]

SCALAR_LABEL = "scalar messages (canonicalization)"
ROWS: tuple[Row, ...] = (
    ("pca", "PCA normal estimate (no learning)", "pca", "pca", {}),
    ("pointnet2_plain", "PointNet++ plain", "pointnet2", "plain", {}),
    ("pointnet2_augment", "PointNet++ plain + O(3) augmentation", "pointnet2", "augment", {}),
    ("pointnet2_pca", "PointNet++ PCA frames", "pointnet2", "pca", {}),
    (
        "pointnet2_pca_scalar",
        f"PointNet++ PCA frames, {SCALAR_LABEL}",
        "pointnet2",
        "pca",
        {"messages": "scalar"},
    ),
    ("pointnet2_learned", "PointNet++ learned frames", "pointnet2", "learned", {}),
    ("tp_cg", "TP baseline (Clebsch-Gordan)", "tp", "cg", {}),
)


def ablation_rows() -> tuple[Row, ...]:
    """The rows of the ``ablation`` preset: per architecture (PointNet++, DGCNN) PCA frames with
    scalar, vector, tensor and irreps messages, learned frames, frames refined between layers
    (PCA and learned start), three-nearest-neighbour frames, random frames (control), plain and
    augmented; first the PCA estimate. Tensor messages and fixed frames are the models' defaults
    and are not passed as options."""
    rows: list[Row] = [ROWS[0]]
    for arch, name in (("pointnet2", "PointNet++"), ("dgcnn", "DGCNN")):
        rows += [
            (f"{arch}_pca_scalar", f"{name} PCA frames, {SCALAR_LABEL}", arch, "pca",
             {"messages": "scalar"}),
            (f"{arch}_pca_vector", f"{name} PCA frames, vector messages", arch, "pca",
             {"messages": "vector"}),
            (f"{arch}_pca", f"{name} PCA frames, tensor messages", arch, "pca", {}),
            (f"{arch}_pca_irreps", f"{name} PCA frames, irreps messages", arch, "pca",
             {"messages": "irreps"}),
            (f"{arch}_learned", f"{name} learned frames", arch, "learned", {}),
            (f"{arch}_pca_refined", f"{name} PCA frames, refined between layers", arch, "pca",
             {"update_frames": True}),
            (f"{arch}_learned_refined", f"{name} learned frames, refined between layers", arch,
             "learned", {"update_frames": True}),
            (f"{arch}_three_nn", f"{name} three-nearest-neighbour frames", arch, "three_nn", {}),
            (f"{arch}_random", f"{name} random frames (control)", arch, "random", {}),
            (f"{arch}_plain", f"{name} plain", arch, "plain", {}),
            (f"{arch}_augment", f"{name} plain + O(3) augmentation", arch, "augment", {}),
        ]
    return tuple(rows)


ABLATION_ROWS = ablation_rows()
#: the message-type rows of one architecture, whose parameter counts must agree within 2%
MESSAGE_ROWS = {
    arch: tuple(f"{arch}_{m}" for m in ("pca_scalar", "pca_vector", "pca", "pca_irreps"))
    for arch in ("pointnet2", "dgcnn")
}

_QUICK_DATA = dict(
    data="synthetic",
    num_shapes=256,
    num_test_shapes=64,
    num_points=256,
    noise=0.01,
    pose="canonical",
    batch_size=8,
    lr=3e-3,
    seed=0,
    eval_seed=1234,
)
_TINY_DATA = dict(
    data="synthetic",
    num_shapes=4,
    num_test_shapes=2,
    num_points=48,
    noise=0.01,
    epochs=1,
    batch_size=2,
    lr=1e-3,
    seed=0,
    eval_seed=1234,
)
_TINY_OPTIONS = {
    "pca": {"k": 8},
    "pointnet2": {"width": 8, "k": 6},
    "dgcnn": {"width": 8, "k": 6, "num_layers": 2},
    "tp": {"hidden": "2x0e+1x1o", "num_layers": 2, "k": 6, "irreps_sh": "0e+1o"},
}

#: ``config``: :class:`Config` fields shared by every row; ``options``: per-arch model options;
#: ``rows``: the preset's rows; ``seeds`` (ablation presets): every row is trained once per seed.
PRESETS = {
    "quick": {
        "description": "7-9 minutes on a 2-core CPU",
        "config": dict(_QUICK_DATA, epochs=16),
        "options": {"pca": {"k": 16}, "pointnet2": {}, "tp": {}},
        "rows": ROWS,
    },
    "long": {
        "description": "about 20-30 minutes on a 2-core CPU",
        "config": dict(_QUICK_DATA, num_shapes=512, num_test_shapes=128, num_points=512,
                       epochs=10, lr=2e-3),
        "options": {"pca": {"k": 16}, "pointnet2": {}, "tp": {}},
        "rows": ROWS,
    },
    # 22 trained rows x 3 seeds = 66 runs on the quick preset's data, evaluated after the last
    # epoch only: DGCNN 5 epochs (160 steps), PointNet++ 10 (it costs ~1/3 of DGCNN per epoch).
    # Estimated 45-60 minutes on 2 idle cores: one epoch of every model timed single-threaded
    # (CPU time, 64 clouds), scaled by the PCA-frame PointNet++'s measured 2-thread epoch in the
    # quick preset (2.5-3.2 s).
    "ablation": {
        "description": "message types, frame refinement and controls, 3 seeds; 45-60 minutes",
        "config": dict(_QUICK_DATA, epochs=5, eval_every=5),
        "per_arch": {"pointnet2": {"epochs": 10, "eval_every": 10}},
        "options": {"pca": {"k": 16}},
        "rows": ABLATION_ROWS,
        "seeds": (0, 1, 2),
    },
    # hidden: for tests (seconds)
    "tiny": {
        "description": "smoke test",
        "config": _TINY_DATA,
        "options": _TINY_OPTIONS,
        "rows": ROWS,
    },
    "ablation_tiny": {
        "description": "smoke test of the ablation (two rows, two seeds)",
        "config": _TINY_DATA,
        "options": _TINY_OPTIONS,
        "rows": (ROWS[0], ROWS[3], ROWS[4]),
        "seeds": (0, 1),
    },
}
#: the presets listed in ``-h`` (the others are for tests)
PUBLIC_PRESETS = ("quick", "long", "ablation")



@dataclasses.dataclass
class RowResult:
    """One row of the comparison: the model, its metrics, or why it was skipped or failed."""

    key: str
    label: str
    arch: str
    flavour: str
    options: dict
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    parameters: int | None = None
    train_time_s: float | None = None
    metrics: dict | None = None
    errors: dict | None = None

    def summary(self) -> dict:
        """Everything but the per-point errors (for ``results.json``)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("errors", "metrics")}
        d["metrics"] = self.metrics
        return d


def preset_rows(preset: dict, only: str | None) -> list[Row]:
    """``(key, label, arch, flavour, options)`` of the preset's rows named in ``only`` (default
    all); ``options`` = the preset's options for the arch, updated by the row's own."""
    keys = [r[0] for r in preset["rows"]]
    wanted = keys if not only else [k.strip() for k in only.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        raise ValueError(f"--rows: unknown row(s) {unknown}; known: {keys}")
    return [
        (key, label, arch, flavour, {**preset["options"].get(arch, {}), **options})
        for key, label, arch, flavour, options in preset["rows"]
        if key in wanted
    ]


def run_compare(args: argparse.Namespace) -> int:
    """The ``compare`` command: the preset's rows, with the flags' overrides."""
    if args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {PUBLIC_PRESETS}, got {args.preset!r}")
    preset = PRESETS[args.preset]
    out = args.out or osp.join("runs", f"compare_{args.preset}")
    base = dict(preset["config"])
    for name in ("data", "root", "epochs", "device", "threads", "progress", "cache"):
        value = getattr(args, name, None)
        if value is not None:
            base[name] = value
    rows = preset_rows(preset, getattr(args, "rows", None))
    if "seeds" in preset:
        return run_ablation(
            base,
            rows,
            preset["seeds"],
            out=out,
            resume=bool(args.resume),
            preset=args.preset,
            groups=MESSAGE_ROWS,
            # an explicit --epochs applies to every architecture
            per_arch=None if getattr(args, "epochs", None) is not None else preset.get("per_arch"),
        )
    return compare(base, rows, out=out, resume=bool(args.resume), preset=args.preset)


def compare(
    base: dict, rows: list[tuple], *, out: str, resume: bool = False, preset: str = "custom"
) -> int:
    """Run every row on the data of ``base`` (a :class:`Config` dict); write and print the table.

    Returns the exit status: 0, or 1 if a row failed (skipped rows are not failures)."""
    t_start = time.perf_counter()
    base_cfg = Config(**base)
    if not resume:
        existing = [r[0] for r in rows if osp.exists(osp.join(out, r[0], CHECKPOINT_NAME))]
        if existing:
            raise ValueError(
                f"{out} already holds checkpoints for rows {existing}; pass --resume to reuse "
                "them (finished rows are re-evaluated, unfinished ones continued) or choose "
                "another --out (nothing was overwritten)"
            )
    datasets = build_datasets(base_cfg)
    device = resolve_device(base_cfg.device, 0)
    print(
        f"compare (preset {preset}): {base_cfg.data} data, {len(datasets[0])} training / "
        f"{len(datasets[1])} test clouds of {base_cfg.num_points} points, noise "
        f"{base_cfg.noise}, {base_cfg.epochs} epochs, batch {base_cfg.batch_size}",
        file=sys.stderr,
        flush=True,
    )
    results = []
    for key, label, arch, flavour, options in rows:
        res = RowResult(key, label, arch, flavour, options)
        print(f"\n== {label} ({arch}/{flavour}, options {options})", file=sys.stderr, flush=True)
        try:
            model = build_model(arch, flavour, options)
        except UNBUILDABLE as err:
            res.status, res.reason = "skipped", f"{type(err).__name__}: {err}"
            print(f"   skipped: {res.reason}", file=sys.stderr, flush=True)
            results.append(res)
            continue
        try:
            if count_parameters(model) == 0:  # PCA: nothing to train
                t0 = time.perf_counter()
                ev = evaluate(
                    model.to(device),
                    datasets[1],
                    batch_size=base_cfg.batch_size,
                    eval_seed=base_cfg.eval_seed,
                    device=device,
                )
                res.parameters, res.train_time_s = 0, 0.0
                res.metrics = {**ev["metrics"], "eval_time_s": time.perf_counter() - t0}
                res.errors = ev["errors"]
            else:
                _train_row(res, base, out, resume, datasets, device)
        except Exception as err:  # report the row as failed and go on with the table
            res.status, res.reason = "failed", f"{type(err).__name__}: {err}"
            traceback.print_exc(file=sys.stderr)
        results.append(res)
    wall = time.perf_counter() - t_start
    table = render_table(results)
    header = (
        f"Normal regression, preset `{preset}`: {base_cfg.data} data "
        f"({len(datasets[0])} train / {len(datasets[1])} test clouds, {base_cfg.num_points} "
        f"points, noise {base_cfg.noise}), {base_cfg.epochs} epochs, batch {base_cfg.batch_size}, "
        f"lr {base_cfg.lr}, seed {base_cfg.seed}. Errors in degrees; rotated = one random O(3) "
        f"element per test cloud (reflections included, eval seed {base_cfg.eval_seed}); "
        f"gap = unoriented mean rotated - as given; equivariance error = mean angle between "
        "f(Qx) and Q f(x)."
    )
    print(f"\n{header}\n\n{table}\n\ntotal wall time {wall:.0f} s")
    os.makedirs(out, exist_ok=True)
    atomic_write_text(osp.join(out, "table.md"), f"{header}\n\n{table}\n")
    write_csv(osp.join(out, "results.csv"), [_csv_row(r) for r in results])
    write_json(
        osp.join(out, "results.json"),
        {
            "preset": preset,
            "config": base_cfg.to_dict(),
            "rows": [r.summary() for r in results],
            "wall_time_s": wall,
            "machine": machine_info(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    plot_errors(results, osp.join(out, "errors.png"), title=f"preset {preset}")
    print(f"wrote {out}/table.md, results.csv, results.json, errors.png", file=sys.stderr)
    return 1 if any(r.status == "failed" for r in results) else 0


def _train_row(
    res: RowResult,
    base: dict,
    out: str,
    resume: bool,
    datasets: tuple[Dataset, Dataset],
    device: torch.device,
) -> None:
    row_out = osp.join(out, res.key)
    ckpt_path = osp.join(row_out, CHECKPOINT_NAME)
    cfg = Config(
        **{
            **base,
            "arch": res.arch,
            "flavour": res.flavour,
            "options": res.options,
            "out": row_out,
            "resume": resume and osp.exists(ckpt_path),
        }
    )
    ckpt = load_checkpoint(ckpt_path) if cfg.resume else None
    if ckpt is not None and ckpt.get("final") is not None and ckpt["epoch"] >= cfg.epochs:
        # finished earlier: re-evaluate (deterministic) for the per-point errors of the plot
        check_model_identity(ckpt, cfg.model_identity(), ckpt_path)
        check_run_identity(ckpt, cfg, ckpt_path)
        model = build_model(res.arch, res.flavour, res.options)
        load_model_state(model, ckpt, ckpt_path)
        ev = evaluate(
            model.to(device),
            datasets[1],
            batch_size=cfg.batch_size,
            eval_seed=cfg.eval_seed,
            device=device,
        )
        final, errors = ckpt["final"], ev["errors"]
        print(f"   reused {ckpt_path} (finished, epoch {ckpt['epoch']})", file=sys.stderr)
    else:
        result = train(cfg, datasets=datasets)
        final, errors = result["final"], result["errors"]
    res.parameters = int(final["parameters"])
    res.train_time_s = float(final["train_time_s"])
    res.metrics = final
    res.errors = errors


# =============================================================================== output
COLUMNS = (
    "model",
    "parameters",
    "training time",
    "unoriented mean, as given",
    "unoriented mean, rotated",
    "oriented mean, as given",
    "oriented mean, rotated",
    "equivariance gap",
    "equivariance error",
)


def render_table(results: list[RowResult]) -> str:
    """The comparison as one markdown table (errors in degrees)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r in results:
        if r.status != "ok":
            cells = [r.label, f"{r.status}: {md(r.reason)}"] + [""] * (len(COLUMNS) - 2)
        else:
            m = r.metrics
            train_time = "none (no learning)" if r.parameters == 0 else fmt_time(r.train_time_s)
            cells = [
                r.label,
                f"{r.parameters:,}",
                train_time,
                f"{m['given']['unoriented']['mean']:.2f}",
                f"{m['rotated']['unoriented']['mean']:.2f}",
                f"{m['given']['oriented']['mean']:.2f}",
                f"{m['rotated']['oriented']['mean']:.2f}",
                f"{round(m['gap']['unoriented'], 2) + 0.0:+.2f}",
                f"{m['equivariance_error']:.2g}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_row(r: RowResult) -> dict:
    row = {
        "key": r.key,
        "model": r.label,
        "arch": r.arch,
        "flavour": r.flavour,
        "status": r.status,
        "reason": r.reason,
        "parameters": r.parameters,
        "train_time_s": r.train_time_s,
    }
    if r.metrics:
        row.update(
            flatten_metrics(
                {
                    k: v
                    for k, v in r.metrics.items()
                    if k in ("given", "rotated", "gap", "equivariance_error")
                }
            )
        )
    return row


def plot_errors(results: list[RowResult], path: str, title: str = "") -> None:
    """Cumulative distributions of per-point errors: unoriented (left) and oriented (right);
    solid = test clouds as given, dashed = under random O(3)."""
    import matplotlib  # optional, and slow to import: only for the plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(x for x in results if x.errors):
        c = colors[i % len(colors)]
        for ax, kind in zip(axes, ("unoriented", "oriented")):
            for split, style in (("given", "-"), ("rotated", "--")):
                e = r.errors.get(f"{split}_{kind}")
                if e is None or e.numel() == 0:
                    continue
                x = torch.sort(e.double()).values.numpy()
                y = (torch.arange(1, len(x) + 1, dtype=torch.float64) / len(x)).numpy()
                ax.plot(
                    x,
                    y,
                    style,
                    color=c,
                    lw=1.4,
                    label=f"{r.label} ({'as given' if split == 'given' else 'rotated'})",
                )
    for ax, kind, xmax in zip(axes, ("unoriented", "oriented"), (90, 180)):
        ax.set_xlim(0, xmax)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"{kind} angular error (degrees)")
        ax.set_ylabel("fraction of test points")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"unoriented error CDF ({title})")
    axes[1].set_title("oriented error CDF")
    skipped = [f"{r.label}: {r.status}" for r in results if not r.errors]
    if skipped:
        fig.text(0.01, 0.01, "not shown: " + "; ".join(skipped), fontsize=7)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue()))
