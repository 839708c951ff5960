"""``python -m examples.normals predict``: normals for a user's own point clouds and meshes.

Reads every input file (``.ply`` with or without faces, ``.off``, ``.obj``, ``.stl``,
``.xyz`` / ``.txt`` / ``.pts``, ``.npy``; see :func:`tensorframes.data.read_points`), or every
such file under an input folder (recursively, sorted; hidden files and the output folder
skipped), predicts a unit normal per point and writes ``<output>/<input stem>.ply``: the
points as read (float32) with ``nx ny nz`` (``binary_little_endian``, or ``--ascii``). A mesh
gives its vertices, or with ``--sample N`` ``N`` points drawn area-uniformly from its faces
(seeded by ``--seed``).

The model is a checkpoint of ``train`` / ``compare`` (``--checkpoint``, read by
:func:`models.load`; the architecture comes from the checkpoint) or the parameter-free PCA
estimate (``--arch pca [--k K]``), run by :func:`models._predict.predict_normals`: each cloud
is centred and scaled to unit radius in float64 first (as in training), so coordinates in any
unit and placement work, and a cloud above ``--tile-points`` points is cut into spatial tiles
with a k-NN halo (bounded memory). The sign of a normal is the model's own and carries no
meaning (unoriented normals).

Per file it prints the points, the prediction time and points per second; a tqdm bar over the
files goes to stderr. Output files are never an input (a name collision or an output that would
overwrite an input is refused before anything is written). A malformed input file is reported
(``error:`` naming the file and line) and skipped; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Batch, Data

import models
from models._predict import DEFAULT_TILE_POINTS, predict_normals
from tensorframes.data import POINT_EXTENSIONS, read_points, write_ply

from ._normals_dist import resolve_device
from ._normals_eval import progress_bar
from ._normals_io import load_checkpoint, load_model_state
from ._normals_model import build_model

#: The ``predict -h`` text (the module docstring without markup).
DESCRIPTION = """\
Predict a unit normal for every point of your own files and write <output>/<input stem>.ply
(the points as read, float32, with nx ny nz; binary little-endian PLY, or --ascii).

Inputs: .ply (ascii or binary, with or without faces; other vertex properties are ignored),
.off (also COFF / NOFF), .obj, .stl (binary or ASCII), .xyz / .txt / .pts (whitespace or comma
separated, 3 or more columns, first three used; '#' and '//' comment lines and one header line
allowed), .npy (N, >=3); or folders of them (recursively; the output folder is skipped).
A mesh gives its vertices, or with --sample N N points drawn area-uniformly from its faces.
Each cloud is centred and scaled to unit radius first, so any units and placement work;
clouds above --tile-points points are predicted in spatial tiles with a halo (bounded
memory). The sign of a normal carries no meaning.

Examples:
  python -m examples.normals predict --arch pca --input scans/ --output normals/
  python -m examples.normals predict --checkpoint runs/compare_quick/pointnet2_pca/checkpoint.pt \\
      --input part.off --sample 20000 --output normals/"""

__all__ = [
    "DESCRIPTION",
    "collect_inputs",
    "load_predict_model",
    "predict_cloud",
    "register",
    "run",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "predict",
        help="normals for your own point clouds / meshes -> PLY with nx ny nz",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint.pt of train / compare")
    src.add_argument("--arch", choices=("pca",), help="pca: the PCA estimate (no checkpoint)")
    p.add_argument("--k", type=int, default=16, help="--arch pca: neighbours (default 16)")
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="FILE_OR_DIR",
        help=f"files or folders ({' '.join(POINT_EXTENSIONS)})",
    )
    p.add_argument("--output", required=True, help="folder for <input stem>.ply (created)")
    p.add_argument(
        "--sample",
        type=int,
        help="meshes: N points area-uniform from the faces (default: the vertices)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--ascii", action="store_true", help="write ASCII PLY (default binary LE)")
    p.add_argument(
        "--tile-points",
        type=int,
        default=DEFAULT_TILE_POINTS,
        help="core points per tile: larger clouds are cut into spatial tiles with a halo "
        f"(default {DEFAULT_TILE_POINTS}; less memory with fewer)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tqdm progress bar on stderr (default on)",
    )


def load_predict_model(checkpoint: str | None, arch: str | None, k: int = 16) -> nn.Module:
    """The model of ``--checkpoint`` (:func:`models.load`; an ``"module:factory"`` arch of the
    tests through the runner's own loader) or of ``--arch pca`` with ``k`` neighbours."""
    if checkpoint is None:
        if arch != "pca":
            raise ValueError(f"predict needs --checkpoint or --arch pca, got arch {arch!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 3:
            raise ValueError(f"--k must be an integer >= 3, got {k!r}")
        return models.build("pca", "pca", k=k).eval()
    ckpt = load_checkpoint(checkpoint)  # clear errors for missing / foreign files
    if ckpt.get("arch") in models.ARCHS:
        return models.load(checkpoint)
    model = build_model(ckpt["arch"], ckpt["flavour"], ckpt.get("options") or {})
    load_model_state(model, ckpt, checkpoint)
    return model.eval()


def collect_inputs(inputs: list[str], output: str) -> list[tuple[str, str]]:
    """``[(input file, output file)]`` for the ``--input`` arguments, in order (folders
    expanded recursively and sorted). ``ValueError`` for a missing input, a file of an unknown
    type, two inputs with one output name, or an output that would replace an input."""
    out_abs = osp.abspath(output)
    files: list[str] = []
    for item in inputs:
        if osp.isdir(item):
            found = []
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames[:] = sorted(
                    d
                    for d in dirnames
                    if not d.startswith(".") and osp.abspath(osp.join(dirpath, d)) != out_abs
                )
                found += [
                    osp.join(dirpath, f)
                    for f in filenames
                    if not f.startswith(".") and osp.splitext(f)[1].lower() in POINT_EXTENSIONS
                ]
            if not found:
                raise ValueError(
                    f"--input {item}: no {'/'.join(POINT_EXTENSIONS)} files in this folder"
                )
            files += sorted(found)
        elif osp.isfile(item):
            if osp.splitext(item)[1].lower() not in POINT_EXTENSIONS:
                raise ValueError(
                    f"--input {item}: unknown point-cloud extension; expected one of "
                    f"{', '.join(POINT_EXTENSIONS)}"
                )
            files.append(item)
        else:
            raise FileNotFoundError(f"--input {item}: no such file or folder")
    pairs, seen = [], {}
    for f in files:
        target = osp.join(output, osp.splitext(osp.basename(f))[0] + ".ply")
        if target in seen:
            raise ValueError(
                f"--input: {seen[target]} and {f} would both be written to {target}; "
                "predict them into different --output folders"
            )
        if osp.exists(target) and osp.samefile(target, f):
            raise ValueError(f"--output {output}: writing {target} would overwrite the input {f}")
        seen[target] = f
        pairs.append((f, target))
    return pairs


@torch.no_grad()
def predict_cloud(
    model: nn.Module,
    pos: np.ndarray,
    device: torch.device,
    *,
    tile_points: int = DEFAULT_TILE_POINTS,
    progress: bool = False,
) -> np.ndarray:
    """Unit normals ``(N, 3)`` (float64) of one cloud ``pos`` ``(N, 3)``.

    A model of :func:`models.build` / :func:`models.load` runs through
    :func:`models._predict.predict_normals` (the cloud normalised in float64, then spatial
    tiles of ``tile_points`` core points with a halo when it is larger). Any other model (an
    ``"module:factory"`` arch) runs in one piece on the cloud centred and scaled to unit radius
    in float64. A zero prediction stays zero."""
    p = torch.as_tensor(pos, dtype=torch.float64)
    if getattr(model, "arch", None) in models.ARCHS:
        out = predict_normals(model, p.to(device), tile_points=tile_points, progress=progress)
        return out.to("cpu", torch.float64).numpy()
    center = p.mean(0, keepdim=True)
    radius = (p - center).norm(dim=-1).max()
    p = (p - center) / (radius if radius > 0 else 1.0)
    batch = Batch.from_data_list([Data(pos=p.to(torch.float32))]).to(device)
    out = model(batch)
    if not isinstance(out, torch.Tensor) or out.shape != (len(pos), 3):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return (N, 3) normals, got {shape} for N={len(pos)}")
    out = out.detach().to("cpu", torch.float64)
    out = out / out.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return out.numpy()


def run(args: argparse.Namespace) -> int:
    """The ``predict`` command; 0 on success, 2 if some input file could not be read."""
    if args.sample is not None and args.sample < 1:
        raise ValueError(f"--sample must be a positive integer, got {args.sample}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.tile_points < 1:
        raise ValueError(f"--tile-points must be a positive integer, got {args.tile_points}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, 0)
    model = load_predict_model(args.checkpoint, args.arch, args.k).to(device)
    pairs = collect_inputs(args.input, args.output)
    os.makedirs(args.output, exist_ok=True)
    source = args.checkpoint or f"PCA estimate (k={args.k})"
    print(f"{source}: {len(pairs)} file(s) -> {args.output}", flush=True)
    failed = []
    bar = progress_bar(pairs, args.progress, desc="predict", unit="file")
    for src, dst in bar:
        try:
            pos = read_points(src, sample=args.sample, seed=args.seed)
        except ValueError as err:
            failed.append(src)
            _print_line(bar, f"error: {err}", sys.stderr)
            continue
        t0 = time.perf_counter()
        normals = predict_cloud(
            model, pos, device, tile_points=args.tile_points, progress=args.progress
        )
        dt = time.perf_counter() - t0
        write_ply(dst, pos, normals, binary=not args.ascii)
        _print_line(
            bar, f"{src}: {len(pos)} points, {dt:.2f} s, {len(pos) / max(dt, 1e-9):,.0f} "
            f"points/s -> {dst}", sys.stdout,
        )  # fmt: skip
    if failed:
        print(f"{len(failed)} of {len(pairs)} file(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def _print_line(bar: object, msg: str, file: object) -> None:
    """Print ``msg`` on its own line, above the progress bar when there is one."""
    write = getattr(bar, "write", None)
    if write is not None:
        write(msg, file=file)
        getattr(file, "flush", lambda: None)()
    else:
        print(msg, file=file, flush=True)
