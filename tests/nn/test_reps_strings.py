"""Reps strings are accepted wherever nn takes reps; anything else is a clear TypeError."""

import pytest
import torch
import torch_geometric.nn as gnn

import tensorframes as tf
from tensorframes.nn import (
    TFMessagePassing,
    ToGlobal,
    ToLocal,
    global_pool,
    knn_interpolate,
    to_global,
    to_local,
    wrap,
)
from tensorframes.testing import random_orthogonal

REPS = tf.TensorReps("1x0n + 1x1n + 1x2p")
SPEC = "1x0n + 1x1n + 1x2p"


def _data(n=9, d=3, reps=REPS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    R = random_orthogonal(n, d, generator=gen)  # reflections included
    x = torch.randn(n, reps.dim, generator=gen, dtype=torch.float64)
    return x, tf.Frames(R)


def _calls():
    """(name, f(x, frames, reps)) for every function and module taking reps."""
    pos_x = torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pos_y = pos_x[:4] + 0.1
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    return [
        ("to_local", lambda x, f, r: to_local(x, f, r)),
        ("to_global", lambda x, f, r: to_global(x, f, r)),
        ("ToLocal", lambda x, f, r: ToLocal(r)(x, f)),
        ("ToGlobal", lambda x, f, r: ToGlobal(r)(x, f)),
        ("global_pool", lambda x, f, r: global_pool(x, f, r, batch)),
        ("global_pool out_frames",
         lambda x, f, r: global_pool(x, f, r, batch, out_frames=f.index_select(torch.arange(2)))),
        ("knn_interpolate",
         lambda x, f, r: knn_interpolate(x, pos_x, pos_y, f, f.index_select(torch.arange(4)), r)),
    ]


@pytest.mark.parametrize("name, call", _calls(), ids=[n for n, _ in _calls()])
def test_string_equals_reps_object(name, call):
    x, frames = _data()
    expected = call(x, frames, REPS)
    torch.testing.assert_close(call(x, frames, SPEC), expected, rtol=0, atol=0)
    # the string is parsed, not ignored: another reps of the same width gives other numbers
    other = call(x, frames, "10x0n + 1x1n")
    assert (other - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name, call", _calls(), ids=[n for n, _ in _calls()])
def test_anything_else_is_a_type_error(name, call):
    x, frames = _data()
    with pytest.raises(TypeError, match="reps"):
        call(x, frames, 5)
    with pytest.raises(ValueError, match="cannot parse"):
        call(x, frames, "not reps")


def test_irreps_strings_and_other_dimensions():
    irreps = tf.Irreps("1x0e + 1x1o + 1x2e")
    x, frames = _data(reps=irreps)
    torch.testing.assert_close(to_local(x, frames, "1x0e + 1x1o + 1x2e"),
                               to_local(x, frames, irreps), rtol=0, atol=0)
    # TensorReps strings take the frames' dimension in the functions...
    x2, frames2 = _data(d=2, reps=tf.TensorReps("1x1n + 1x2n", spatial_dim=2))
    reps2 = tf.TensorReps("1x1n + 1x2n", spatial_dim=2)
    torch.testing.assert_close(to_local(x2, frames2, "1x1n + 1x2n"),
                               to_local(x2, frames2, reps2), rtol=0, atol=0)
    # ...and spatial_dim (default 3) in the modules
    assert ToLocal("1x1n + 1x2n", spatial_dim=2).reps == reps2
    assert ToGlobal("1x1n").reps == tf.TensorReps("1x1n")
    torch.testing.assert_close(ToGlobal("1x1n + 1x2n", spatial_dim=2)(x2, frames2),
                               to_global(x2, frames2, reps2), rtol=0, atol=0)


def test_layers_refuse_non_reps_by_argument_name():
    with pytest.raises(TypeError, match="reps of 'x'"):
        wrap(gnn.GATConv(4, 4), local={"x": 4})

    class Layer(TFMessagePassing):
        def __init__(self, reps):
            super().__init__(local={"x": reps})

    assert Layer("2x1n").local_reps["x"] == tf.TensorReps("2x1n")
    with pytest.raises(TypeError, match="reps of 'x'"):
        Layer(3.0)
