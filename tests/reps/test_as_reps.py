"""as_reps: a Reps from a Reps or a string, exported from tensorframes.reps."""

import pytest

from tensorframes.reps import Irreps, Reps, TensorReps, as_reps


def test_strings_parse_by_their_parity_letters():
    assert as_reps("2x0n + 1x1p") == TensorReps("2x0n + 1x1p")
    assert as_reps("2x1n", spatial_dim=2) == TensorReps("2x1n", spatial_dim=2)
    assert as_reps("2x1n", spatial_dim=2).dim == 4
    assert as_reps("4x0e + 1x1o") == Irreps("4x0e + 1x1o")
    assert isinstance(as_reps("1o"), Irreps)


def test_reps_pass_through_unchanged():
    r = TensorReps("1x2n")
    assert as_reps(r) is r
    i = Irreps("1x2e")
    assert as_reps(i, spatial_dim=2) is i and isinstance(i, Reps)


@pytest.mark.parametrize("spec, err, match", [
    ("1x1q", ValueError, "cannot parse"),
    ("1x1n + 1x1o", ValueError, "cannot parse"),
    (3, TypeError, "expected a Reps or a reps string"),
    (None, TypeError, "expected a Reps or a reps string"),
])
def test_bad_specs(spec, err, match):
    with pytest.raises(err, match=match):
        as_reps(spec)
