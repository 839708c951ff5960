"""The training loop of the normal-regression runner (``python -m examples.normals train``).

Determinism and exact resumption (CPU): every source of randomness is seeded from
``Config.seed`` (model initialisation, shuffling, augmentation) or ``Config.eval_seed``
(the random O(3) test transforms; evaluation runs under :func:`torch.random.fork_rng`, so it
never perturbs training). A checkpoint is written after every epoch and holds the model,
optimizer and scheduler states, the epoch, the metric history and the state of every random
number generator (torch, numpy, python and the shuffling / augmentation generators, for every
rank). Resuming therefore continues bit-identically at the next epoch boundary on the same
machine with the same number of threads and processes.
"""

from __future__ import annotations

import dataclasses
import os
import os.path as osp
import sys
import time
import warnings

import torch
from torch import nn
from torch.utils.data import RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader

from ._normals_config import Config, describe_model
from ._normals_data import build_datasets, random_o3, rotate_batch, split_batch
from ._normals_dist import (
    DistInfo,
    capture_rng,
    configure_threads,
    derive_seed,
    init_distributed,
    restore_rng,
)
from ._normals_eval import check_prediction, evaluate, progress_bar
from ._normals_io import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    atomic_write_text,
    check_model_identity,
    check_run_identity,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    write_csv,
    write_json,
)
from ._normals_metrics import unoriented_cosine_loss
from ._normals_model import build_model, count_parameters, parameter_hash

__all__ = ["checkpoint_path", "format_epoch", "train"]


def checkpoint_path(cfg: Config) -> str:
    """``<cfg.out>/checkpoint.pt``."""
    return osp.join(cfg.out, CHECKPOINT_NAME)


def _log(dist: DistInfo, msg: str) -> None:
    if dist.main:
        print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Run:
    """The mutable state of a run: what a checkpoint saves and restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generators: dict[str, torch.Generator]
    n_params: int
    history: list[dict] = dataclasses.field(default_factory=list)
    start_epoch: int = 0
    train_time: float = 0.0
    final: dict | None = None


def train(cfg: Config, *, datasets: tuple[Dataset, Dataset] | None = None) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the final record.

    Writes, on rank 0 only, into ``cfg.out``: ``checkpoint.pt`` (after every epoch, atomically),
    ``metrics.json`` / ``metrics.csv`` (one entry per epoch), ``config.json`` and, once the last
    epoch is done, ``final.json`` (full test metrics, as given and under random O(3)).
    """
    dist = init_distributed(cfg)
    try:
        return _train(cfg, dist, datasets)
    finally:
        if dist.initialised:
            torch.distributed.destroy_process_group()


def _open_checkpoint(cfg: Config, dist: DistInfo, path: str) -> dict | None:
    """The checkpoint to resume (checked against ``cfg``), or ``None`` for a fresh run."""
    if not cfg.resume:
        if osp.exists(path):
            raise ValueError(
                f"{path} already exists; pass --resume to continue that run, or choose another "
                "--out (nothing was overwritten)"
            )
        return None
    ckpt = load_checkpoint(path)
    check_model_identity(ckpt, cfg.model_identity(), path)
    check_run_identity(ckpt, cfg, path)
    if ckpt.get("world_size", 1) != dist.world:
        warnings.warn(
            f"resuming a {ckpt.get('world_size', 1)}-process run with {dist.world} "
            "processes: results will not match an uninterrupted run exactly",
            stacklevel=3,
        )
    return ckpt


def _start(cfg: Config, dist: DistInfo, ckpt: dict | None, path: str) -> _Run:
    """Seeded model, optimizer, scheduler and generators; restored from ``ckpt`` if given."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, cfg.flavour, cfg.options).to(dist.device)
    n_params = count_parameters(model)
    if n_params == 0:
        raise ValueError(
            f"{describe_model(cfg.model_identity())} has no trainable parameters; evaluate it "
            "with `eval` instead of training it"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    generators = {
        "shuffle": torch.Generator().manual_seed(cfg.seed),
        "augment": torch.Generator().manual_seed(derive_seed(cfg.seed, "augment", dist.rank)),
    }
    run = _Run(model, optimizer, scheduler, generators, n_params)
    if ckpt is not None:
        load_model_state(model, ckpt, path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scheduler.T_max = cfg.epochs  # a longer run stretches the cosine schedule
        rng = ckpt["rng"]
        restore_rng(rng[dist.rank % len(rng)], generators)
        run.history = list(ckpt["history"])
        run.start_epoch, run.train_time = int(ckpt["epoch"]), float(ckpt["train_time_s"])
        run.final = ckpt.get("final")
        _log(dist, f"resuming {path} after epoch {run.start_epoch}")
    return run


def _train(cfg: Config, dist: DistInfo, datasets: tuple[Dataset, Dataset] | None) -> dict:
    configure_threads(cfg, dist)
    path = checkpoint_path(cfg)
    ckpt = _open_checkpoint(cfg, dist, path)

    # data (rank 0 first, so that only it writes caches)
    if datasets is None:
        if dist.main:
            datasets = build_datasets(cfg)
        dist.barrier()
        if not dist.main:
            datasets = build_datasets(cfg)
    train_set, test_set = datasets

    run = _start(cfg, dist, ckpt, path)
    model = run.model
    ddp = model
    sampler: Sampler
    if dist.world > 1:
        ddp = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters,
        )
        sampler = DistributedSampler(
            train_set, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.seed
        )
    else:
        sampler = RandomSampler(train_set, generator=run.generators["shuffle"])
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler)

    _log(
        dist,
        f"{describe_model(cfg.model_identity())}: {run.n_params} parameters, "
        f"{len(train_set)} training / {len(test_set)} test clouds, "
        f"{dist.world} process(es)",
    )

    final_errors = None
    stop = cfg.epochs
    if cfg.stop_after is not None:
        stop = min(cfg.epochs, run.start_epoch + cfg.stop_after)
    for epoch in range(run.start_epoch, stop):
        if dist.world > 1:
            sampler.set_epoch(epoch)
        record = _train_epoch(cfg, dist, run, ddp, loader, epoch, path)
        last = epoch + 1 == cfg.epochs
        if dist.main and ((epoch + 1) % cfg.eval_every == 0 or last):
            res = evaluate(
                model,
                test_set,
                batch_size=cfg.batch_size,
                eval_seed=cfg.eval_seed,
                device=dist.device,
                rotated=last,
                progress=False,
            )
            m = res["metrics"]
            record.update(
                {
                    "test_loss": m["given"]["loss"],
                    "test_unoriented_mean": m["given"]["unoriented"]["mean"],
                    "test_unoriented_median": m["given"]["unoriented"]["median"],
                    "test_oriented_mean": m["given"]["oriented"]["mean"],
                    "test_oriented_median": m["given"]["oriented"]["median"],
                }
            )
            if last:
                run.final = {**m, "parameters": run.n_params, "train_time_s": run.train_time}
                final_errors = res["errors"]
        run.history.append(record)
        _save_epoch(cfg, dist, run, epoch, path)
        _log(dist, format_epoch(record))
        dist.barrier()
    if cfg.param_hash:  # every rank: lets tests check that DDP kept the ranks in sync
        os.makedirs(cfg.out, exist_ok=True)
        atomic_write_text(
            osp.join(cfg.out, f"param_hash.rank{dist.rank}.txt"), parameter_hash(model) + "\n"
        )
    return {
        "epoch": len(run.history),
        "history": run.history,
        "final": run.final,
        "parameters": run.n_params,
        "model": model,
        "checkpoint": path,
        "errors": final_errors,
    }


def _train_epoch(
    cfg: Config,
    dist: DistInfo,
    run: _Run,
    ddp: nn.Module,
    loader: DataLoader,
    epoch: int,
    path: str,
) -> dict:
    """One pass over the training set; returns the epoch's record (loss, lr, times)."""
    ddp.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=dist.device)
    batches = progress_bar(
        loader, cfg.progress and dist.main, desc=f"epoch {epoch + 1}/{cfg.epochs}"
    )
    for step, batch in enumerate(batches):
        inp, target = split_batch(batch, dist.device)
        if run.model.augment:
            target = rotate_batch(inp, target, random_o3(inp.num_graphs, run.generators["augment"]))
        pred = ddp(inp)
        check_prediction(pred, target)
        loss = unoriented_cosine_loss(pred, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss at epoch {epoch + 1}, batch {step + 1} (NaN/inf "
                f"in the data or a diverging model); {path} was left as it was after "
                f"epoch {epoch}"
            )
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        loss_sum += torch.stack(
            [
                loss.detach().double() * len(target),
                torch.tensor(float(len(target)), dtype=torch.float64, device=dist.device),
            ]
        )
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    if dist.world > 1:
        torch.distributed.all_reduce(loss_sum)
    epoch_time = time.perf_counter() - t0
    run.train_time += epoch_time
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": float(loss_sum[0] / loss_sum[1]),
        "epoch_time_s": epoch_time,
        "train_time_s": run.train_time,
    }


def _save_epoch(cfg: Config, dist: DistInfo, run: _Run, epoch: int, path: str) -> None:
    """Gather every rank's RNG state; rank 0 writes the checkpoint and the metric files."""
    rng_states = [capture_rng(run.generators)]
    if dist.world > 1:
        rng_states = [None] * dist.world
        torch.distributed.all_gather_object(rng_states, capture_rng(run.generators))
    if not dist.main:
        return
    payload = {
        "format": CHECKPOINT_FORMAT,
        **cfg.model_identity(),
        "config": {k: v for k, v in cfg.to_dict().items() if k != "resume"},
        "epoch": epoch + 1,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng_states,
        "history": run.history,
        "train_time_s": run.train_time,
        "parameters": run.n_params,
        "world_size": dist.world,
        "threads": torch.get_num_threads(),
        "final": run.final,
        "torch_version": str(torch.__version__),
    }
    save_checkpoint(path, payload)
    write_json(osp.join(cfg.out, "config.json"), payload["config"])
    write_json(osp.join(cfg.out, "metrics.json"), run.history)
    write_csv(osp.join(cfg.out, "metrics.csv"), run.history)
    if run.final is not None:
        write_json(osp.join(cfg.out, "final.json"), run.final)


def format_epoch(r: dict) -> str:
    """One log line for an epoch's record."""
    s = f"epoch {r['epoch']:>3}  lr {r['lr']:.2e}  train loss {r['train_loss']:.4f}"
    if "test_unoriented_mean" in r:
        s += (
            f"  test unoriented {r['test_unoriented_mean']:6.2f} deg (median "
            f"{r['test_unoriented_median']:.2f})  oriented {r['test_oriented_mean']:6.2f}"
        )
    return s + f"  [{r['epoch_time_s']:.1f} s]"
