"""Normal regression on point clouds: train, evaluate and compare equivariant models.

Run from a checkout (models/ and examples/ are not installed):

    python -m examples.normals train --arch pointnet2 --flavour pca --epochs 20 --out runs/pn2_pca
    python -m examples.normals train --out runs/pn2_pca --resume          # continue after a kill
    python -m examples.normals eval --checkpoint runs/pn2_pca/checkpoint.pt
    python -m examples.normals eval --arch pca --data synthetic           # no-learning baseline
    python -m examples.normals eval --checkpoint runs/pn2_pca/checkpoint.pt \\
        --data meshes --root my_meshes/ --split all                       # every mesh of a folder
    python -m examples.normals predict --checkpoint runs/pn2_pca/checkpoint.pt \\
        --input scans/ --output normals/                                  # normals for your files
    python -m examples.normals compare --preset quick                     # the comparison table
    python -m examples.normals density runs/compare_quick                 # error vs points/cloud
    torchrun --nproc_per_node 2 -m examples.normals train ...             # data parallel (DDP)

Task: predict the surface normal of every point of a cloud (SyntheticShapes with noise,
ModelNet40Normals or a MeshFolder of .off / .ply / .obj / .stl meshes). Clouds are centred
and scaled to unit radius.

Loss (unoriented): mean(1 - |cos(pred, normal)|) over points; the sign of a predicted normal is
meaningless. Metrics (degrees, on the test set): unoriented error min(angle(p, n), angle(p, -n))
and oriented error angle(p, n), mean and median, once on the clouds as given and once with one
seeded random O(3) element per cloud (reflections included); the equivariance gap is the
rotated mean minus the given mean.

Outputs in --out: checkpoint.pt (after every epoch, written atomically), metrics.json /
metrics.csv (per epoch), config.json, final.json (after the last epoch); eval writes eval.json,
eval.csv and, for mesh folders and ModelNet, eval_files.csv (one row per file). --resume
continues a run exactly (same numbers as an uninterrupted run, on the same machine and thread
count). With torchrun only rank 0 writes files. train, eval and compare lock their --out folder
(<out>/.lock): a second command into a folder in use is refused.

Caches: MeshFolder and ModelNet40Normals keep their processed files in --cache DIR, by default
$XDG_CACHE_HOME/tensorframes or ~/.cache/tensorframes, never in the data folder; synthetic
clouds are generated into --root (default data/).

Exit status: 0 on success, 2 for bad input (corrupted data, wrong checkpoint, bad flags, an
--out folder in use), with a one-line "error:" message on stderr; existing checkpoints and
caches are never modified by a failing command.
"""

from __future__ import annotations

import argparse
import ast
import os
import os.path as osp
import sys

import torch

from ._normals_compare import run_compare
from ._normals_config import (
    DATA_ONLY_FLAGS,
    EVAL_DATA_FIELDS,
    MODEL_KEYS,
    Config,
    check_applicable_flags,
)
from ._normals_data import build_datasets, cloud_names
from ._normals_density import register as register_density
from ._normals_density import run as run_density
from ._normals_dist import resolve_device
from ._normals_eval import evaluate, files_table, flatten_metrics, metrics_table, per_cloud
from ._normals_io import (
    CHECKPOINT_NAME,
    CheckpointMismatchError,
    OutFolderBusyError,
    check_model_identity,
    load_checkpoint,
    load_model_state,
    out_lock,
    write_csv,
    write_json,
)
from ._normals_loop import train
from ._normals_model import build_model, count_parameters
from ._normals_predict import register as register_predict
from ._normals_predict import run as run_predict

__all__ = ["build_parser", "main", "metrics_table", "parse_model_options"]

#: Flags that only affect this invocation: never taken from a checkpoint on --resume.
RUNTIME_KEYS = (
    "out",
    "resume",
    "stop_after",
    "device",
    "threads",
    "progress",
    "param_hash",
    "cache",
)


def parse_model_options(items: list[str] | None) -> dict | None:
    """``["k=16", "hidden=[32, 64]", "act=relu"]`` -> ``{"k": 16, "hidden": [32, 64], ...}``.

    Values are Python literals where they parse as one (numbers, lists, ``True``), otherwise
    strings; ``true`` / ``false`` / ``none`` are accepted in lower case."""
    if items is None:
        return None
    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-option expects key=value, got {item!r}")
        raw = raw.strip()
        lowered = {"true": True, "false": False, "none": None}
        if raw.lower() in lowered:
            value = lowered[raw.lower()]
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        options[key] = value
    return options


# =============================================================================== parser
def _add_model_flags(p: argparse.ArgumentParser, command: str = "train") -> None:
    g = p.add_argument_group("model")
    if command == "train":
        g.add_argument("--arch", help="pointnet2 | dgcnn | tp (default pointnet2)")
        g.add_argument(
            "--flavour", help="plain | augment | pca | learned; cg | gaunt for tp (default pca)"
        )
    else:
        g.add_argument(
            "--arch",
            help="pca: the PCA estimate, no checkpoint; with --checkpoint: must match it "
            "(default: the checkpoint's)",
        )
        g.add_argument("--flavour", help="must match the checkpoint (default: the checkpoint's)")
    g.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="keyword argument for models.build (repeatable)",
    )


def _add_data_flags(p: argparse.ArgumentParser, command: str = "train") -> None:
    """The data flags; ``command="eval"`` states the defaults of an evaluation (a checkpoint's
    own values, else those of ``train``)."""
    ev = command == "eval"

    def dflt(train_default: str) -> str:
        if not ev:
            return f"default {train_default}"
        return f"default: the checkpoint's; {train_default} with --arch pca"

    g = p.add_argument_group(
        "data",
        "defaults of eval: the values the checkpoint was trained with (its root, test size "
        "and synthetic settings only when --data is the checkpoint's; --split all tests every "
        "file), else (--arch pca) those of train"
        if ev
        else None,
    )
    g.add_argument(
        "--data",
        choices=("synthetic", "modelnet", "meshes"),
        help=f"data set ({dflt('synthetic')})",
    )
    g.add_argument(
        "--root",
        help="data folder (synthetic: where its clouds are generated, default data/; modelnet: "
        "default data/modelnet40_normal_resampled; meshes: required)"
        + ("; default: the checkpoint's" if ev else ""),
    )
    g.add_argument(
        "--cache",
        metavar="DIR",
        help="meshes / modelnet: folder for the processed cache (default "
        "$XDG_CACHE_HOME/tensorframes, else ~/.cache/tensorframes; never the data folder)",
    )
    if not ev:
        g.add_argument(
            "--num-shapes",
            type=int,
            help="training clouds (synthetic default 256; others: all, or a seeded subset)",
        )
    g.add_argument(
        "--num-test-shapes",
        type=int,
        help="test clouds (synthetic: default 64; others: all, or a seeded subset)"
        + ("; default: the checkpoint's" if ev else ""),
    )
    g.add_argument("--num-points", type=int, help=f"points per cloud ({dflt('512')})")
    g.add_argument(
        "--noise",
        type=float,
        help=f"synthetic only: noise, relative to the cloud radius ({dflt('0.01')})",
    )
    g.add_argument(
        "--density",
        choices=("uniform", "nonuniform"),
        help=f"synthetic only: sampling ({dflt('uniform')})",
    )
    g.add_argument("--outliers", type=float, help=f"synthetic only: outlier fraction ({dflt('0')})")
    g.add_argument(
        "--pose",
        choices=("random", "canonical"),
        help="synthetic only: orientation, a random rotation per cloud or every shape in its "
        "canonical orientation (then a plain network can exploit orientation and random "
        f"O(3) at test time exposes it) ({dflt('random')})",
    )
    g.add_argument("--data-seed", type=int, help=f"seed of the data set ({dflt('0')})")
    g.add_argument(
        "--test-fraction",
        type=float,
        help="meshes only: share of the meshes in the test set, in (0, 1]"
        + ("; 1 = every mesh, as --split all" if ev else "")
        + f" ({dflt('0.2')})",
    )
    if ev:
        g.add_argument(
            "--split",
            choices=("test", "all"),
            default="test",
            help="test: the data set's test split (default); all: every file of a --data "
            "meshes folder (also a folder with one mesh), with per-file errors",
        )


def _add_runtime_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", help="auto | cpu | cuda[:i] (default auto)")
    g.add_argument("--threads", type=int, help="torch threads (default: cores / processes)")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bars (default on)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.normals",
        description="Normal regression with tensor-frame and tensor-product models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1].strip(),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model (resumable; torchrun for DDP)")
    _add_model_flags(t, "train")
    _add_data_flags(t, "train")
    g = t.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="total epochs (default 10)")
    g.add_argument("--batch-size", type=int, help="clouds per batch and process (default 8)")
    g.add_argument("--lr", type=float, help="Adam learning rate, cosine schedule (default 0.001)")
    g.add_argument("--weight-decay", type=float, help="Adam weight decay (default 0)")
    g.add_argument(
        "--seed", type=int, help="seed of initialisation, shuffling, augmentation (default 0)"
    )
    g.add_argument(
        "--eval-seed", type=int, help="seed of the random O(3) test transforms (default 1234)"
    )
    g.add_argument("--eval-every", type=int, help="evaluate every N epochs (default 1)")
    g.add_argument("--out", help="output folder (default runs/normals)")
    g.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out from its checkpoint; flags not given are "
        "taken from the checkpoint",
    )
    g.add_argument(
        "--stop-after",
        type=int,
        help="stop after this many epochs in this invocation (resume later with --resume)",
    )
    g.add_argument(
        "--find-unused-parameters",
        action="store_true",
        default=None,
        help="DDP: for models with parameters unused in some steps",
    )
    g.add_argument("--param-hash", action="store_true", default=None, help=argparse.SUPPRESS)
    _add_runtime_flags(t)

    e = sub.add_parser(
        "eval",
        help="evaluate a checkpoint (or --arch pca) on the test set or on every mesh of a folder",
    )
    e.add_argument(
        "--checkpoint",
        help="checkpoint file (default <--out>/checkpoint.pt, --out default runs/normals)",
    )
    e.add_argument(
        "--out",
        help="folder for eval.json / eval.csv / eval_files.csv (default: the checkpoint's "
        "folder; runs/normals with --arch pca)",
    )
    _add_model_flags(e, "eval")
    _add_data_flags(e, "eval")
    e.add_argument("--batch-size", type=int, help="clouds per batch (default: the checkpoint's; 8)")
    e.add_argument(
        "--eval-seed",
        type=int,
        help="seed of the random O(3) test transforms (default: the checkpoint's; 1234)",
    )
    _add_runtime_flags(e)

    c = sub.add_parser("compare", help="train and evaluate every model of a preset; one table")
    c.add_argument("--preset", default="quick",
                   help="quick (the main job, 7-9 min on 2 cores) | long (20-30 min) | "
                        "ablation (22 models x 3 seeds, 45-60 min)")
    c.add_argument("--out", help="output folder (default runs/compare_<preset>)")
    c.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished rows and continue unfinished ones in --out",
    )
    c.add_argument("--rows", help="comma-separated subset of row keys (default: all)")
    c.add_argument("--data", choices=("synthetic", "modelnet", "meshes"), help="override")
    c.add_argument("--root", help="data folder override")
    c.add_argument("--epochs", type=int, help="override the preset's epochs")
    _add_runtime_flags(c)

    register_predict(sub)
    register_density(sub)
    return parser


# =============================================================================== commands
def _explicit(args: argparse.Namespace) -> dict:
    names = set(Config.__dataclass_fields__)
    d = {k: v for k, v in vars(args).items() if k in names and v is not None}
    options = parse_model_options(getattr(args, "model_option", None))
    if options is not None:
        d["options"] = options
    return d


def train_config(args: argparse.Namespace) -> Config:
    """The :class:`Config` of a ``train`` command (on --resume: checkpoint values + flags)."""
    explicit = _explicit(args)
    if not explicit.get("resume"):
        return Config(**explicit)
    out = explicit.get("out", Config.out)
    path = osp.join(out, CHECKPOINT_NAME)
    saved = load_checkpoint(path).get("config", {})
    base = {k: v for k, v in saved.items() if k not in RUNTIME_KEYS}
    return Config.from_dict({**base, **explicit})


def cmd_train(args: argparse.Namespace) -> int:
    cfg = train_config(args)
    check_applicable_flags(_explicit(args), cfg.data)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with out_lock(cfg.out, enabled=rank0):
        result = train(cfg)
    if rank0:
        if result["final"] is not None:
            print(metrics_table(result["final"]))
            print(f"\nwrote {cfg.out}/final.json, metrics.json, metrics.csv, {CHECKPOINT_NAME}")
        else:
            print(
                f"stopped after epoch {result['epoch']} of {cfg.epochs}; continue with "
                f"--out {cfg.out} --resume"
            )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    explicit = _explicit(args)
    requested = {k: explicit[k] for k in MODEL_KEYS if k in explicit}
    if explicit.get("arch") == "pca" and args.checkpoint is None:
        cfg = Config(**{**explicit, "flavour": explicit.get("flavour", "pca")})
        model = build_model("pca", cfg.flavour, cfg.options)
        out = cfg.out
        source = "PCA baseline (no learning)"
    else:
        path = args.checkpoint or osp.join(explicit.get("out", Config.out), CHECKPOINT_NAME)
        ckpt = load_checkpoint(path)
        saved = {k: v for k, v in ckpt.get("config", {}).items() if k not in RUNTIME_KEYS}
        identity = {k: requested.get(k, ckpt.get(k)) for k in MODEL_KEYS}
        if "options" not in requested and requested:
            identity["options"] = ckpt.get("options") or {}
        check_model_identity(ckpt, identity, path)
        overrides = {k: v for k, v in explicit.items() if k not in MODEL_KEYS}
        if overrides.get("data", saved.get("data")) != saved.get("data"):
            # other data than the checkpoint's: its data-specific settings do not carry over
            drop = {*DATA_ONLY_FLAGS, "root", "num_shapes", "num_test_shapes"}
            saved = {k: v for k, v in saved.items() if k not in drop}
        cfg = Config.from_dict({**saved, **overrides})
        out = explicit.get("out") or osp.dirname(osp.abspath(path))
        model = build_model(ckpt["arch"], ckpt["flavour"], ckpt.get("options") or {})
        load_model_state(model, ckpt, path)
        source = f"{path} (epoch {ckpt['epoch']})"
    check_applicable_flags(explicit, cfg.data)
    if args.split == "all":
        if explicit.get("test_fraction") is not None:
            raise ValueError(
                "--test-fraction does not apply with --split all (every mesh is tested)"
            )
        if "num_test_shapes" not in explicit:
            cfg.num_test_shapes = None  # every file, whatever the checkpoint's test size was
    device = resolve_device(cfg.device, 0)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with out_lock(out):
        _, test_set = build_datasets(cfg, split=args.split, need_train=False)
        model.to(device)
        res = evaluate(
            model,
            test_set,
            batch_size=cfg.batch_size,
            eval_seed=cfg.eval_seed,
            device=device,
            rotated=True,
            progress=cfg.progress,
        )
        names = cloud_names(test_set)
        data = {k: getattr(cfg, k) for k in EVAL_DATA_FIELDS[cfg.data]}
        data["split"] = args.split
        metrics = {
            **res["metrics"],
            "parameters": count_parameters(model),
            "source": source,
            "data": data,
            "eval_seed": cfg.eval_seed,
        }
        rows = None
        if names is not None:
            sizes = [test_set[i].num_nodes for i in range(len(test_set))]
            rows = per_cloud(res["errors"], sizes, names)
            metrics["files"] = rows
        write_json(osp.join(out, "eval.json"), metrics)
        write_csv(osp.join(out, "eval.csv"), [flatten_metrics(res["metrics"])])
        if rows is not None:
            write_csv(osp.join(out, "eval_files.csv"), rows)
    what = "meshes" if cfg.data == "meshes" else "test clouds"
    print(f"{source}: {res['metrics']['num_clouds']} {what} of {cfg.data_root}")
    if rows is not None:
        print(files_table(rows) + "\n")
    print(metrics_table(metrics))
    wrote = "eval.json, eval.csv" + (", eval_files.csv" if rows is not None else "")
    print(f"\nwrote {wrote} in {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    args.out = args.out or osp.join("runs", f"compare_{args.preset}")
    with out_lock(args.out):
        return run_compare(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "train": cmd_train,
        "eval": cmd_eval,
        "compare": cmd_compare,
        "predict": run_predict,
        "density": run_density,
    }
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        kind = "error"
        if isinstance(err, CheckpointMismatchError):
            kind = "checkpoint mismatch"
        elif isinstance(err, OutFolderBusyError):
            kind = "folder in use"
        print(f"{parser.prog} {args.command}: {kind}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
