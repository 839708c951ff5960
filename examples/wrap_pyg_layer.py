"""Wrap stock PyG layers (PointNetConv, GATConv) so that they become O(3)-equivariant.

Run from a checkout: ``python examples/wrap_pyg_layer.py``. Prints, for each layer, the
equivariance error (random rotations *and* reflections, translations, float64) of the wrapped
layer next to the error of the same layer used without frames.
"""

import torch
from torch import nn
from torch_geometric.nn import GATConv, PointNetConv

import tensorframes as tf
from tensorframes.nn import to_global, to_local, wrap
from tensorframes.testing import POSITIONS, assert_equivariant

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # the check compares in float64; layers are built so too
reps = tf.TensorReps("8x0n + 4x1n + 2x2n")  # hidden features: scalars, vectors, matrices
C = reps.dim

# 1. Stock layers, unmodified.
pointnet = PointNetConv(nn.Sequential(nn.Linear(C + 3, 64), nn.ReLU(), nn.Linear(64, C)))
gat = GATConv(C, C, heads=1)

# 2. Wrapped: x holds local features, pos is given in world coordinates.
pointnet_tf = wrap(pointnet, local={"x": reps}, world={"pos": "1x1n"})
gat_tf = wrap(gat, local={"x": reps})


def equivariant_model(x_world: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """World in, world out: PCA frames from the cloud, features carried between frames."""
    edge_index = tf.graph.knn_graph(pos, k=12)
    frames = tf.frames.pca(pos, edge_index=edge_index)
    h = to_local(x_world, frames, reps)
    h = pointnet_tf(h, pos, edge_index, frames=frames)
    h = gat_tf(h, edge_index, frames=frames)
    return to_global(h, frames, reps)


def plain_model(x_world: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The same layers used directly on world-frame features: not equivariant."""
    edge_index = tf.graph.knn_graph(pos, k=12)
    return gat(pointnet(x_world, pos, edge_index), edge_index)


# A skewed, anisotropic cloud (PCA frames are well defined) and world-frame input features.
gen = torch.Generator().manual_seed(1)
pos = torch.randn(256, 3, generator=gen) * torch.tensor([2.0, 1.0, 0.5])
pos = pos + 0.2 * pos[:, :1] ** 2
x = torch.randn(256, C, generator=gen)

print(f"{'model':<32} {'equivariance error (relative, float64)':>40}")
for name, fn in [("wrapped PointNetConv + GATConv", equivariant_model),
                 ("plain PointNetConv + GATConv", plain_model)]:
    report = assert_equivariant(fn, (x, pos), (reps, POSITIONS), reps, tol=float("inf"))
    print(f"{name:<32} {report['output[0]']:>40.3e}")

# The wrapped model must pass at float64 precision; the plain one fails by orders of magnitude.
assert_equivariant(equivariant_model, (x, pos), (reps, POSITIONS), reps)
