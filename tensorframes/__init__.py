"""tensorframes: equivariant message passing through local frames ("tensor frames")."""

from . import data, frames, graph, nn, o3, reps, testing
from .frames import Frames
from .reps import Irrep, Irreps, Reps, TensorReps

__all__ = [
    "Frames",
    "Irrep",
    "Irreps",
    "Reps",
    "TensorReps",
    "data",
    "frames",
    "graph",
    "nn",
    "o3",
    "reps",
    "testing",
]

__version__ = "0.1.0"
