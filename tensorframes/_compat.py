"""Every use of PyTorch Geometric (and ``torch.nn.Module``) internals, in one place.

The library relies on a handful of private attributes and methods of PyG. Each such use goes
through one small function or class here, whose comment names the internal it relies on and the
PyG versions it was checked against, and ``tests/nn/test_compat.py`` exercises each entry point
directly, so that a PyG upgrade that moves one of them breaks a named test instead of silently
changing results. ``pyproject.toml`` pins ``torch-geometric`` to the range checked here.

This is a layer-0 module: it imports only torch, torch_geometric and the standard library,
nothing from ``tensorframes``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch_geometric.data import InMemoryDataset
from torch_geometric.nn import MessagePassing

__all__ = [
    "CHECKED_PYG_VERSIONS",
    "CollectHookMessagePassing",
    "ProcessAlwaysInMemoryDataset",
    "keep_inherited_propagate",
    "message_arg_names",
    "set_collated_storage",
    "share_module_state",
    "shortcut_gathers",
]

#: The torch-geometric versions the internals below were checked against.
CHECKED_PYG_VERSIONS = "2.8.x (2.8.1)"


# ----------------------------------------------------------------------------- MessagePassing


def keep_inherited_propagate(cls: type[MessagePassing]) -> None:
    """Make ``cls`` keep the ``propagate`` it inherits instead of a PyG-generated one.

    Call it from ``__init_subclass__`` of a ``MessagePassing`` subclass that defines its own
    ``propagate``: without it, every further subclass gets a code-generated ``propagate`` that
    bypasses the base class's.
    """
    # PyG internal: MessagePassing._set_jittable_templates (run by MessagePassing.__init__)
    # replaces cls.propagate by one generated from propagate.jinja unless 'propagate' is in
    # cls.__dict__ and differs from MessagePassing.propagate. Checked: torch-geometric 2.8.x.
    if "propagate" not in cls.__dict__:
        cls.propagate = cls.propagate  # the one resolved through the MRO, pinned on cls


def message_arg_names(layer: MessagePassing) -> frozenset[str]:
    """The argument names that ``message``, ``aggregate`` and ``update`` of ``layer`` ask for
    (``x_j``, ``pos_i``, ``frames_i``, ...), PyG's special arguments excluded."""
    # PyG internal: MessagePassing._user_args, set in __init__ from the inspector (and by the
    # `explain` setter). Checked: torch-geometric 2.8.x.
    return frozenset(layer._user_args)


class CollectHookMessagePassing(MessagePassing):
    """A ``MessagePassing`` whose :meth:`after_collect` sees the per-edge arguments PyG collected.

    Subclasses override :meth:`after_collect` to post-process the dictionary (``x_j``, ``x_i``,
    ``index``, ``size_i``, ...) that PyG builds before calling ``message``; it only runs with the
    non-generated ``propagate`` (see :func:`keep_inherited_propagate`).
    """

    def after_collect(self, collected: dict[str, Any]) -> dict[str, Any]:
        """Post-process PyG's collected arguments (identity by default)."""
        return collected

    # PyG internal: MessagePassing._collect(args, edge_index, size, kwargs), called by the
    # non-generated MessagePassing.propagate to build message()'s keyword arguments (lifting
    # `<name>_i` / `<name>_j` along node_dim). Checked: torch-geometric 2.8.x.
    def _collect(
        self, args: Any, edge_index: Any, size: Any, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        return self.after_collect(super()._collect(args, edge_index, size, kwargs))


@contextmanager
def shortcut_gathers(layer: MessagePassing, index: torch.Tensor,
                     results: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Within the block, ``layer`` gathering ``src`` along the very tensor ``index`` (same
    storage, offset, shape and stride: ``edge_index[0]`` of the ``edge_index`` the caller passed)
    gets the given result instead of a new copy, for every ``(src, result)`` pair (``src``
    compared by identity); any other gather runs as usual. The caller guarantees that ``result``
    equals ``src.index_select(0, index)``. Whatever the instance held before is restored, also on
    errors. Not thread-safe for one layer called from two threads at once.
    """
    # PyG internal: MessagePassing._index_select(src, index), through which the generated and
    # the inherited propagate (collect.jinja, MessagePassing._lift) gather every `<name>_j` /
    # `<name>_i` argument of a dense edge_index. Checked: torch-geometric 2.8.x.
    base = layer._index_select
    pairs = [(s, r) for s, r in results if s is not None]

    def index_select(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if (isinstance(idx, torch.Tensor) and idx.data_ptr() == index.data_ptr()
                and idx.shape == index.shape and idx.stride() == index.stride()
                and layer.node_dim in (0, -2) and src.dim() == 2):
            for s, r in pairs:
                if src is s:
                    return r
        return base(src, idx)

    missing = object()
    previous = layer.__dict__.get("_index_select", missing)
    layer.__dict__["_index_select"] = index_select
    try:
        yield
    finally:
        if previous is missing:
            layer.__dict__.pop("_index_select", None)
        else:
            layer.__dict__["_index_select"] = previous


# ----------------------------------------------------------------------------- nn.Module


def share_module_state(owner: nn.Module, source: nn.Module) -> None:
    """Make ``owner`` hold ``source``'s very parameter, buffer and submodule dictionaries.

    Afterwards ``owner.state_dict()``, ``owner.parameters()``, ``owner.to(...)`` and
    ``owner.load_state_dict(...)`` act on ``source``'s tensors under identical keys.
    """
    # torch internal (used by PyG layers as well): nn.Module keeps its registry in the
    # _parameters / _buffers / _modules dicts, read by state_dict, named_parameters, _apply.
    # Checked: torch 2.x with torch-geometric 2.8.x.
    object.__setattr__(owner, "_parameters", source._parameters)
    object.__setattr__(owner, "_buffers", source._buffers)
    object.__setattr__(owner, "_modules", source._modules)


# ----------------------------------------------------------------------------- datasets


class ProcessAlwaysInMemoryDataset(InMemoryDataset):
    """An ``InMemoryDataset`` whose :meth:`process` runs on every construction.

    PyG calls ``process()`` only when a processed file is missing (and merely warns when
    ``pre_transform`` changed); a subclass of this class decides in ``process()`` itself whether
    its processed file is valid, and loads or regenerates it.
    """

    # PyG internal: Dataset._process, called by Dataset.__init__ when the class overrides
    # `process`; it checks files_exist(processed_paths) and writes pre_transform.pt /
    # pre_filter.pt. Replaced here by an unconditional call. Checked: torch-geometric 2.8.x.
    def _process(self) -> None:
        self.process()


def set_collated_storage(dataset: InMemoryDataset, data: Any, slices: dict | None) -> None:
    """Install collated ``(data, slices)`` (from ``InMemoryDataset.collate``) as ``dataset``'s
    storage, without the warning PyG's public ``data`` property emits."""
    # PyG internal: InMemoryDataset._data (the collated storage behind `data`, `get`, `len`).
    # Checked: torch-geometric 2.8.x.
    dataset._data = data
    dataset.slices = slices
