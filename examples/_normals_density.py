"""The ``density`` command: error against points per cloud, for trained models and the PCA row.

``python -m examples.normals density runs/compare_quick [more runs ...] --out DIR``

Each RUN is a folder written by ``compare`` (``<row>/checkpoint.pt`` per trained row, and
``results.json`` naming the PCA row and its options) or by ``train`` (``checkpoint.pt``). Every
model is evaluated on the test split of the data it was trained on (the same shapes, the same
seeds), sampled with each of ``--points`` points per cloud (default 64 ... 2048), and the
unoriented mean error (degrees, clouds as given) is tabulated: rows = models, columns = points
per cloud. Writes ``density.json``, ``density.md`` and ``density.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import os.path as osp
import sys
import time
from typing import Any

import torch
from torch import nn

from ._normals_config import Config
from ._normals_data import build_datasets
from ._normals_dist import resolve_device
from ._normals_eval import evaluate
from ._normals_io import CHECKPOINT_NAME, atomic_write_bytes, atomic_write_text, write_json

__all__ = ["DEFAULT_POINTS", "find_models", "register", "run"]

DEFAULT_POINTS = (64, 128, 256, 512, 1024, 2048)


def _points(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--points expects comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 4 for v in values):
        raise argparse.ArgumentTypeError(f"--points needs integers >= 4, got {text!r}")
    return sorted(set(values))


def register(subparsers: Any) -> None:
    """Add the ``density`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "density",
        help="error against points per cloud for trained runs",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="compare or train output folders (with checkpoint.pt files)")
    p.add_argument("--points", type=_points, default=list(DEFAULT_POINTS),
                   help="points per cloud, comma-separated (default "
                   + ",".join(map(str, DEFAULT_POINTS)) + ")")
    p.add_argument("--out", help="output folder (default: RUN/density for the first RUN)")
    p.add_argument("--num-test-shapes", type=int,
                   help="evaluate this many test clouds (default: the run's test split)")
    p.add_argument("--batch-size", type=int, help="clouds per batch (default: the run's)")
    p.add_argument("--no-pca", action="store_true", help="leave out the PCA estimate row")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.set_defaults(func=run)


# =============================================================================== models
def find_models(run_dir: str, with_pca: bool = True) -> list[dict]:
    """The models of one run folder: ``{"key", "label", "checkpoint" | "arch"/"flavour"/
    "options", "config"}`` per row (checkpoint rows first, in ``results.json`` order when
    present). ``FileNotFoundError`` if the folder holds no checkpoint and no PCA row."""
    if not osp.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    results = None
    rpath = osp.join(run_dir, "results.json")
    if osp.isfile(rpath):
        with open(rpath) as fh:
            results = json.load(fh)
    found: list[dict] = []
    if osp.isfile(osp.join(run_dir, CHECKPOINT_NAME)):  # a train folder
        found.append({"key": osp.basename(osp.normpath(run_dir)), "label": None,
                      "checkpoint": osp.join(run_dir, CHECKPOINT_NAME)})
    rows = results.get("rows", []) if results else []
    labels = {r.get("key"): r.get("label") for r in rows}
    keys = [r.get("key") for r in rows if r.get("key")]
    for name in sorted(os.listdir(run_dir)):
        if name not in keys and osp.isfile(osp.join(run_dir, name, CHECKPOINT_NAME)):
            keys.append(name)
    for key in keys:
        ckpt = osp.join(run_dir, key, CHECKPOINT_NAME)
        if osp.isfile(ckpt):
            found.append({"key": key, "label": labels.get(key), "checkpoint": ckpt})
    if with_pca and results is not None:
        for r in rows:
            if r.get("arch") == "pca":
                found.append({"key": r["key"], "label": r.get("label"), "arch": "pca",
                              "flavour": r.get("flavour", "pca"),
                              "options": r.get("options") or {},
                              "config": results.get("config")})
    if not found:
        raise FileNotFoundError(
            f"{run_dir} holds no {CHECKPOINT_NAME} (neither directly nor in row folders) and no "
            "results.json with a PCA row"
        )
    return found


def _load(entry: dict) -> tuple[nn.Module, dict]:
    """The model and its training config of one :func:`find_models` entry."""
    import models  # the checkout's models package (examples run from a checkout)

    if "checkpoint" in entry:
        ckpt = torch.load(entry["checkpoint"], map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "config" not in ckpt:
            raise ValueError(f"{entry['checkpoint']} is not a normals checkpoint (no config)")
        entry.setdefault("label", None)
        entry["label"] = entry["label"] or f"{ckpt['arch']}/{ckpt['flavour']}"
        return models.load(entry["checkpoint"]), dict(ckpt["config"])
    if entry.get("config") is None:
        raise ValueError(f"row {entry['key']}: no data config (results.json has no 'config')")
    model = models.build(entry["arch"], entry["flavour"], **entry["options"])
    return model.eval(), dict(entry["config"])


# =============================================================================== command
def run(args: argparse.Namespace) -> int:
    """The ``density`` command; returns the exit status (0, or 1 if a model failed)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("num_test_shapes", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    points = list(args.points)
    device = resolve_device(args.device, 0)
    entries = []
    for run_dir in args.runs:
        for e in find_models(run_dir, with_pca=not args.no_pca):
            e["run"] = run_dir
            entries.append(e)
    out = args.out or osp.join(args.runs[0], "density")
    rows, failed = [], False
    datasets: dict[tuple, Any] = {}
    for e in entries:
        row = {"key": e["key"], "run": e["run"], "label": e.get("label"), "errors": {},
               "seconds": {}}
        try:
            model, cfg_dict = _load(e)
            row["label"] = e["label"] or e["key"]
            model = model.to(device)
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
            print(f"{e['run']}/{e['key']}: {row['error']}", file=sys.stderr)
            rows.append(row)
            failed = True
            continue
        for n in points:
            cfg = Config.from_dict({**cfg_dict, "num_points": n, "out": out, "resume": False,
                                    "device": args.device, "progress": False})
            if args.num_test_shapes is not None:
                cfg.num_test_shapes = min(args.num_test_shapes, cfg.num_test_shapes or 10**9)
            key = (cfg.data, cfg.data_root, cfg.noise, cfg.density, cfg.outliers, cfg.pose,
                   cfg.data_seed, cfg.num_shapes, cfg.num_test_shapes, cfg.test_fraction, n)
            if key not in datasets:
                datasets[key] = build_datasets(cfg)[1]
            t0 = time.perf_counter()
            try:
                ev = evaluate(model, datasets[key], batch_size=args.batch_size or cfg.batch_size,
                              eval_seed=cfg.eval_seed, device=device, rotated=False)
            except Exception as err:
                row["errors"][str(n)] = None
                row.setdefault("failures", {})[str(n)] = f"{type(err).__name__}: {err}"
                failed = True
                continue
            row["errors"][str(n)] = ev["metrics"]["given"]["unoriented"]["mean"]
            row["seconds"][str(n)] = time.perf_counter() - t0
            if "checkpoint" in e:  # the PCA row learns nothing: no training count
                row["train_points"] = cfg_dict.get("num_points")
            print(f"{row['label']:<45} {n:>6} points: {row['errors'][str(n)]:6.2f} deg "
                  f"({row['seconds'][str(n)]:.1f} s)", file=sys.stderr, flush=True)
        rows.append(row)
    table = render_table(rows, points)
    print(table)
    write_json(osp.join(out, "density.json"), {"points": points, "rows": rows,
                                               "runs": list(args.runs)})
    header = ("Unoriented mean angular error (degrees, test clouds as given) against points "
              "per cloud; each model trained at the count given in its row.")
    atomic_write_text(osp.join(out, "density.md"), f"{header}\n\n{table}\n")
    try:
        plot_density(rows, points, osp.join(out, "density.png"))
        png = ", density.png"
    except ImportError:
        png = " (no density.png: matplotlib is not installed)"
    print(f"wrote {out}/density.json, density.md{png}", file=sys.stderr)
    return 1 if failed else 0


def render_table(rows: list[dict], points: list[int]) -> str:
    """Markdown: one row per model (its training count in brackets), one column per count."""
    lines = ["| model | " + " | ".join(str(n) for n in points) + " |",
             "|---|" + "---:|" * len(points)]
    for r in rows:
        trained = f" (trained at {r['train_points']})" if r.get("train_points") else ""
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'][:80]} |" + " |" * (len(points) - 1))
            continue
        cells = []
        for n in points:
            v = r["errors"].get(str(n))
            cells.append("failed" if v is None else f"{v:.2f}")
        lines.append(f"| {r['label']}{trained} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_density(rows: list[dict], points: list[int], path: str) -> None:
    """Error against points per cloud (log2 axis), one line per model."""
    import matplotlib  # optional

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        xs = [n for n in points if r["errors"].get(str(n)) is not None]
        if xs:
            ax.plot(xs, [r["errors"][str(n)] for n in xs], "o-", label=r["label"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(points)
    ax.set_xticklabels([str(n) for n in points])
    ax.set_xlabel("points per cloud")
    ax.set_ylabel("unoriented mean error (degrees)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue()))


def main(argv: list[str] | None = None) -> int:
    """``python -m examples._normals_density RUN ...`` (the same as the ``density`` command)."""
    parser = argparse.ArgumentParser(prog="python -m examples._normals_density")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["density", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
