"""Input checks shared by every package: one cheap pass each, clear errors naming the argument.

Layer 0 of the dependency order (imports only torch). Each check raises :class:`TypeError` for a
wrong type or dtype and :class:`ValueError` for a wrong shape or value, naming the argument, the
offending value and the valid range. Checks that read tensor values synchronise the device;
under ``torch.compile`` they are skipped (:func:`compiling`), so a compiled graph has no
data-dependent branch.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["check_edge_index", "check_weights", "compiling"]


def compiling() -> bool:
    """True while ``torch.compile`` traces (value checks are skipped there)."""
    return bool(torch.compiler.is_compiling())


def check_edge_index(
    edge_index: object,
    num_nodes: int | tuple[int, int],
    *,
    name: str = "edge_index",
) -> None:
    """Check that ``edge_index`` is an integer ``(2, E)`` tensor of valid node indices.

    Args:
        edge_index: the graph, row 0 sources ``j``, row 1 targets ``i``.
        num_nodes: ``N`` (both rows index ``[0, N)``) or ``(N_src, N_dst)`` for a bipartite
            graph (row 0 indexes ``[0, N_src)``, row 1 ``[0, N_dst)``).
        name: the argument's name in the error message.

    Raises:
        TypeError: not a tensor, or not of an integer dtype.
        ValueError: not of shape ``(2, E)``, or an entry outside its valid range (the message
            names the first offending entry and the range).
    """
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (2, E), got "
                        f"{type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must have dtype torch.int64 (or int32), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.shape[1] == 0 or compiling():
        return
    n_src, n_dst = ((num_nodes, num_nodes) if isinstance(num_nodes, numbers.Integral)
                    else num_nodes)
    lo, hi = torch.aminmax(edge_index, dim=1)
    bounds = torch.tensor([n_src, n_dst], device=edge_index.device)
    bad = (lo < 0) | (hi >= bounds)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        n = (n_src, n_dst)[row]
        values = edge_index[row]
        col = int(((values < 0) | (values >= n)).nonzero()[0, 0])
        role = "source" if row == 0 else "target"
        raise ValueError(
            f"{name}[{row}, {col}] = {int(values[col])} is not a valid {role} node index: "
            f"expected 0 <= index < {n}"
        )


def check_weights(weight: object, n: int, *, name: str = "weight") -> None:
    """Check that ``weight`` is a finite, non-negative floating tensor of shape ``(n,)``.

    Raises:
        TypeError: not a floating tensor.
        ValueError: wrong shape, or an entry that is NaN, infinite or negative (named).
    """
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        got = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise TypeError(f"{name} must be a floating point tensor of shape ({n},), got {got}")
    if weight.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(weight.shape)}")
    if n == 0 or compiling():
        return
    bad = ~torch.isfinite(weight) | (weight < 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name}[{k}] = {float(weight[k])}: weights must be finite and >= 0"
        )
