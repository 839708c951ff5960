"""``predict_normals``: unit normals of one cloud of any size, by spatial tiles with a halo.

A cloud above ``tile_points`` points is cut into spatial tiles (recursive median splits along
the longest side of the bounding box). Each tile is grown by a *halo*: the points within
``halo_hops`` hops of the tile in the whole cloud's k-NN graph (the model's ``k``). The model runs
on tile + halo and only the tile's own ("core") points keep their outputs. Every tile is
normalised with the whole cloud's centre and scale (``norm_center`` / ``norm_scale``, see
:mod:`models._normalize`), so it sees exactly the coordinates the untiled model would see.

How close the tiled result is to the untiled one depends on the model's receptive field:

* ``arch="pca"``: exact (equal to round-off): a point's ``k`` nearest neighbours in the whole
  cloud lie within one hop, so its neighbourhood in tile + halo is the same (up to ties between
  equidistant neighbours); the halo has two hops, so the two-hop sign rules of
  :func:`tensorframes.frames.pca` see the same points too. Exception: points whose axis signs
  only the *cloud-wide* rules decide (``PCAInfo.sign_rule`` 4-5: exactly symmetric two-hop
  neighbourhoods, on noise-free CAD-like shapes) see the tile + halo as their cloud and may get
  the other sign there (unoriented normals are unaffected; the PCA-frame networks are).
* ``arch="tp"``: exact: ``num_layers`` message-passing hops on the k-NN graph; the halo has as
  many hops.
* ``arch="pointnet2"``: approximate. Farthest-point sampling is global (which points become
  centres depends on the whole cloud), so the sampled levels of a tile differ from the untiled
  ones, near its border and away from it. The halo (8 hops) covers the spatial receptive field
  (k-NN at full resolution, at 1/4 and 1/16 of the points, interpolation back), so the output
  differs only as much as the network depends on *which* points were sampled. Measured with
  the quick preset's PCA-frame checkpoint on a 4,096-point torus (noise 0.005) in 4 tiles:
  mean angle tiled vs untiled 1.64 degrees, median 1.29, max 11.7 (its test error is ~9).
* ``arch="dgcnn"``: approximate: layers after the first build the k-NN graph of features,
  which can reach any point of the cloud; the halo has 4 hops.

An exact tiled PointNet++ would need a local sampling rule (for instance voxel-grid sampling
instead of farthest-point sampling); that changes the architecture and is not done here.
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch_geometric.data import Data

import tensorframes as tf

from ._normalize import normalize_positions

__all__ = ["DEFAULT_TILE_POINTS", "HALO_HOPS", "predict_normals"]

#: Core points per tile by default. Measured (float32, CPU): PCA-frame PointNet++ on 100,000
#: points (2 tiles + halos) peaks at 0.98 GiB RSS for the whole process; the PCA estimate on
#: 1,000,000 points (32 tiles) at 1.25 GiB.
DEFAULT_TILE_POINTS = 50_000
#: k-NN hops of the halo per ``model.arch`` (see the module docstring); ``tp`` uses its layers.
HALO_HOPS = {"pca": 2, "pointnet2": 8, "dgcnn": 4}


def _model_dtype(model: nn.Module, default: torch.dtype) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        return p.dtype, p.device
    return default, torch.device("cpu")


def _halo_hops(model: nn.Module, given: int | None) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 0:
            raise ValueError(f"halo_hops must be an int >= 0, got {given!r}")
        return given
    arch = getattr(model, "arch", None)
    if arch == "tp":
        return len(model.convs)
    if arch in HALO_HOPS:
        return HALO_HOPS[arch]
    raise ValueError(
        f"predict_normals cannot tell the receptive field of a model with arch {arch!r} "
        f"(expected one of pca, pointnet2, dgcnn, tp from models.build); pass halo_hops="
    )


def _tiles(pos: torch.Tensor, max_points: int) -> list[torch.Tensor]:
    """Index sets of spatial tiles with at most ``max_points`` points each: recursive median
    splits along the longest side of each part's bounding box (deterministic: stable sorts)."""
    todo, done = [torch.arange(pos.shape[0], device=pos.device)], []
    while todo:
        idx = todo.pop()
        if idx.numel() <= max_points:
            done.append(idx)
            continue
        p = pos[idx]
        axis = int((p.amax(0) - p.amin(0)).argmax())
        order = torch.sort(p[:, axis], stable=True).indices
        half = idx.numel() // 2
        todo += [idx[order[half:]], idx[order[:half]]]
    return done


def _neighbours(pos: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, k')`` neighbour indices of every point in the whole cloud's k-NN graph (``k'`` =
    ``min(k, N - 1)``), as the models build it (``tf.graph.knn_graph``, no self loops)."""
    src, dst = tf.graph.knn_graph(pos, k)
    kk = min(k, pos.shape[0] - 1)
    if src.numel() != pos.shape[0] * kk:
        raise RuntimeError(f"k-NN graph with {src.numel()} edges for {pos.shape[0]} points, k={kk}")
    order = torch.sort(dst, stable=True).indices
    return src[order].view(pos.shape[0], kk)


def _grow(core: torch.Tensor, nbr: torch.Tensor, hops: int, n: int) -> torch.Tensor:
    """Sorted indices of ``core`` and every point within ``hops`` hops of it."""
    mask = torch.zeros(n, dtype=torch.bool, device=core.device)
    mask[core] = True
    frontier = core
    for _ in range(hops):
        cand = nbr[frontier].reshape(-1)
        cand = cand[~mask[cand]].unique()
        if cand.numel() == 0:
            break
        mask[cand] = True
        frontier = cand
    return mask.nonzero().squeeze(1)


def _run(model: nn.Module, pos_n: torch.Tensor) -> torch.Tensor:
    """The model on already normalised positions (centre 0, scale 1 given explicitly)."""
    data = Data(
        pos=pos_n,
        norm_center=pos_n.new_zeros(1, 3),
        norm_scale=pos_n.new_ones(1),
    )
    out = model(data)
    if not isinstance(out, torch.Tensor) or out.shape != pos_n.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return (N, 3) normals, got {shape} for N={len(pos_n)}")
    return out


def predict_normals(
    model: nn.Module,
    pos: torch.Tensor,
    *,
    tile_points: int | None = None,
    halo_hops: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Unit world-frame normals ``(N, 3)`` of ONE cloud ``pos`` ``(N, 3)``, under ``no_grad``.

    Args:
        model: a model of :func:`models.build` (any arch, including ``"pca"``) or
            :func:`models.load`; it is run in eval mode (its mode is restored afterwards).
        pos: positions in any units and placement (the whole cloud is normalised once, and
            every tile with the whole cloud's centre and scale).
        tile_points: most core points per tile (default :data:`DEFAULT_TILE_POINTS`); a cloud
            with at most this many points runs in one piece. Each tile also holds its halo, so
            it runs on more points than this (about 1.5-3x for the defaults).
        halo_hops: k-NN hops of the halo (default by ``model.arch``, :data:`HALO_HOPS`;
            ``num_layers`` for ``tp``). Exact for ``pca`` and ``tp``; see the module docstring
            for PointNet++ and DGCNN, where tiling approximates the untiled result.
        progress: a progress bar over tiles on stderr (needs ``tqdm``).

    Returns:
        ``(N, 3)`` unit vectors in ``pos``'s dtype and device (the sign is the model's: for
        unoriented normals it is meaningless). A zero output vector stays zero.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(pos, torch.Tensor):
        raise TypeError(f"pos must be a torch.Tensor, got {type(pos).__name__}")
    if pos.dim() != 2 or pos.shape[1] != 3 or pos.shape[0] == 0:
        raise ValueError(f"pos must have shape (N, 3) with N >= 1, got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"pos must be a floating point tensor, got {pos.dtype}")
    tf.graph.check_finite(pos, "pos")
    if tile_points is None:
        tile_points = DEFAULT_TILE_POINTS
    if isinstance(tile_points, bool) or not isinstance(tile_points, int) or tile_points < 1:
        raise ValueError(f"tile_points must be an int >= 1, got {tile_points!r}")
    hops = _halo_hops(model, halo_hops)
    dtype, device = _model_dtype(model, pos.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            # the whole cloud's normalisation, in pos's own precision, then the model's dtype
            pos_n = normalize_positions(pos, batch).to(device=device, dtype=dtype)
            if pos.shape[0] <= tile_points:
                out = _run(model, pos_n)
            else:
                out = _tiled(model, pos_n, tile_points, hops, progress)
            out = out / out.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(out.dtype).tiny)
    finally:
        model.train(was_training)
    return out.to(device=pos.device, dtype=pos.dtype)


def _tiled(
    model: nn.Module, pos_n: torch.Tensor, tile_points: int, hops: int, progress: bool
) -> torch.Tensor:
    n = pos_n.shape[0]
    k = int(getattr(model, "k", 16))
    nbr = _neighbours(pos_n, k) if hops > 0 else None
    tiles = _tiles(pos_n, tile_points)
    out = pos_n.new_zeros(n, 3)
    bar = None
    if progress:
        from tqdm import tqdm  # optional: only for progress bars

        bar = tqdm(total=n, unit="pt", leave=False, dynamic_ncols=True, file=sys.stderr,
                   desc=f"{len(tiles)} tiles")
    try:
        for core in tiles:
            core = core.sort().values
            idx = _grow(core, nbr, hops, n) if hops > 0 else core
            local = torch.searchsorted(idx, core)  # core's positions inside idx (both sorted)
            out[core] = _run(model, pos_n[idx])[local]
            if bar is not None:
                bar.update(core.numel())
    finally:
        if bar is not None:
            bar.close()
    return out

