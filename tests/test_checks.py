"""Shared input checks (``tensorframes._checks``): each bad input names what came and what was
expected."""

import pytest
import torch

from tensorframes._checks import check_edge_index, check_weights


def test_edge_index_accepts_valid_graphs():
    check_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)
    check_edge_index(torch.tensor([[0, 4], [1, 0]]), (5, 2))  # bipartite ranges per row
    check_edge_index(torch.empty(2, 0, dtype=torch.long), 0)


@pytest.mark.parametrize(
    "edge_index, n, match",
    [
        (torch.tensor([[0, 15], [1, 0]]), 10, r"edge_index\[0, 1\] = 15 .*source.*< 10"),
        (torch.tensor([[0, 1], [-1, 0]]), 10, r"edge_index\[1, 0\] = -1 .*target"),
        (torch.tensor([[0, 4], [2, 0]]), (5, 2), r"edge_index\[1, 0\] = 2 .*< 2"),
        (torch.tensor([0, 1]), 3, r"shape \(2, E\), got \(2,\)"),
        (torch.zeros(3, 4, dtype=torch.long), 3, r"shape \(2, E\)"),
    ],
)
def test_edge_index_bad_values_name_entry_and_range(edge_index, n, match):
    with pytest.raises(ValueError, match=match):
        check_edge_index(edge_index, n)


def test_edge_index_bad_type():
    with pytest.raises(TypeError, match="int64"):
        check_edge_index(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 2)
    with pytest.raises(TypeError, match="list"):
        check_edge_index([[0, 1], [1, 0]], 2)


def test_weights():
    check_weights(torch.tensor([1.0, 0.0, 2.0]), 3)
    with pytest.raises(ValueError, match=r"weight\[1\] = nan"):
        check_weights(torch.tensor([1.0, float("nan"), 0.0]), 3)
    with pytest.raises(ValueError, match=r"w\[2\] = -1.0.*>= 0"):
        check_weights(torch.tensor([1.0, 0.0, -1.0]), 3, name="w")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        check_weights(torch.ones(2), 3)
    with pytest.raises(TypeError, match="floating"):
        check_weights(torch.ones(3, dtype=torch.long), 3)


def test_edge_index_num_nodes_may_be_a_numpy_integer():
    np = pytest.importorskip("numpy")
    check_edge_index(torch.tensor([[0, 1], [1, 0]]), np.int64(2))
    with pytest.raises(ValueError, match="< 2"):
        check_edge_index(torch.tensor([[0, 2], [1, 0]]), np.int64(2))
