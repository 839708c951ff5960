"""Learn surface normals of point clouds with an O(3)-equivariant network: copy and change me.

Run from a checkout (about a minute on 2 CPU cores)::

    python -m examples.train_normals
    python examples/train_normals.py --epochs 20 --points 512 --frames none

The data are ``SyntheticShapes`` (analytic surfaces with exact normals), centred and scaled by
PyG transforms; the training clouds keep each shape's canonical orientation. The model is two
stock PyG ``PointNetConv`` layers made equivariant with :func:`tensorframes.nn.wrap`: every point
gets a PCA frame of its neighbourhood, neighbours are seen in that frame, and the predicted
vector is turned back into world coordinates. The test error is printed for the test clouds as
given and under random rotations and reflections (``RandomO3``): with PCA frames both agree;
with ``--frames none`` (the same network without frames) the rotated error is far larger.

The loss is unoriented, ``1 - |cos(pred, normal)|``: a normal's sign has no meaning on a cloud.
The resumable, data-parallel runner with more models and metrics is ``python -m
examples.normals``.
"""

from __future__ import annotations

import argparse
import os.path as osp

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.nn import PointNetConv
from torch_geometric.transforms import Compose

import tensorframes as tf
from tensorframes.data import CenterScale, RandomO3, SyntheticShapes
from tensorframes.nn import to_global, wrap

VECTOR = tf.TensorReps("1x1n")  # one vector: positions and the predicted normal


def mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class NormalNet(nn.Module):
    """Two wrapped ``PointNetConv`` layers on the k-NN graph, one vector per point."""

    def __init__(self, frames: str = "pca", k: int = 16, width: int = 64) -> None:
        super().__init__()
        self.frames, self.k = frames, k
        self.reps = tf.TensorReps("8x0n + 4x1n + 2x2n")  # hidden: scalars, vectors, matrices
        c = self.reps.dim
        pos = {"pos": VECTOR}  # positions are world coordinates; wrap moves them into frames
        self.conv1 = wrap(PointNetConv(mlp(3, width, c)), local={"x": self.reps}, world=pos)
        self.conv2 = wrap(PointNetConv(mlp(c + 3, width, c)), local={"x": self.reps}, world=pos)
        self.head = mlp(c, width, VECTOR.dim)

    def forward(self, data: Batch) -> torch.Tensor:
        edge_index = tf.graph.knn_graph(data.pos, self.k, data.batch)
        if self.frames == "pca":
            frames = tf.frames.pca(data.pos, edge_index=edge_index, batch=data.batch)
        else:  # identity frames: the ordinary, non-equivariant network
            frames = tf.frames.identity(len(data.pos), dtype=data.pos.dtype)
        h = self.conv1(None, data.pos, edge_index, frames=frames).relu()
        h = self.conv2(h, data.pos, edge_index, frames=frames).relu()
        return to_global(self.head(h), frames, VECTOR)  # local vector -> world coordinates


def unoriented_cosine_loss(pred: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    return (1 - nn.functional.cosine_similarity(pred, normal, dim=-1).abs()).mean()


def unoriented_error(pred: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between the lines of ``pred`` and ``normal``, in [0, 90]."""
    cos = nn.functional.cosine_similarity(pred.double(), normal.double(), dim=-1).abs()
    return torch.rad2deg(torch.acos(cos.clamp(max=1.0)))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: SyntheticShapes) -> float:
    """Mean unoriented error (degrees) over every point of ``dataset``."""
    model.eval()
    errors = [unoriented_error(model(b), b.normal) for b in DataLoader(dataset, batch_size=8)]
    return float(torch.cat(errors).mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--points", type=int, default=256, help="points per cloud")
    p.add_argument("--shapes", type=int, default=64, help="training clouds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", choices=("pca", "none"), default="pca")
    p.add_argument("--root", default=osp.join("data", "train_normals"), help="data cache")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    def shapes(split: str, n: int, transform: Compose) -> SyntheticShapes:
        return SyntheticShapes(args.root, split=split, num_shapes=n, num_points=args.points,
                               noise=0.01, rotate=False, seed=args.seed, transform=transform)

    train_set = shapes("train", args.shapes, Compose([CenterScale()]))
    test_set = shapes("test", max(8, args.shapes // 4), Compose([CenterScale()]))
    # the same test clouds under one random O(3) element each (rotations and reflections)
    rotated = Compose([CenterScale(), RandomO3(seed=args.seed + 1)])
    test_rotated = shapes("test", len(test_set), rotated)

    model = NormalNet(frames=args.frames)
    untrained = evaluate(model, test_set)
    print(f"untrained model: {untrained:.2f} deg on the test clouds as given")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(train_set, batch_size=8, shuffle=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        total = 0.0
        for batch in loader:
            loss = unoriented_cosine_loss(model(batch), batch.normal)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.num_graphs
        print(f"epoch {epoch:>2}: train loss {total / len(train_set):.4f}")

    given, under_o3 = evaluate(model, test_set), evaluate(model, test_rotated)
    print(f"test error as given:     {given:.2f} deg")
    print(f"test error random O(3):  {under_o3:.2f} deg")
    return {"untrained": untrained, "given": given, "rotated": under_o3}


if __name__ == "__main__":
    main()
