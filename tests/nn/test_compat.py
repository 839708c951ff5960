"""Every entry point of ``tensorframes._compat``, exercised directly.

Each test names the PyG (or torch) internal its entry point relies on; a PyG upgrade that moves
one of them fails here by name. The "control" assertions check that the PyG behaviour the shim
works around still exists (if one fails, the shim may have become unnecessary or wrong).
"""

import os
import warnings

import torch
import torch_geometric
from torch import nn
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.nn import MessagePassing

from tensorframes._compat import (
    CHECKED_PYG_VERSIONS,
    CollectHookMessagePassing,
    ProcessAlwaysInMemoryDataset,
    keep_inherited_propagate,
    message_arg_names,
    set_collated_storage,
    share_module_state,
    shortcut_gathers,
)


def test_installed_pyg_is_a_checked_version():
    """The internals below were checked against these versions only (pyproject pins them)."""
    major_minor = ".".join(torch_geometric.__version__.split(".")[:2])
    assert CHECKED_PYG_VERSIONS.startswith(f"{major_minor}.x"), (
        f"torch-geometric {torch_geometric.__version__} is not among the checked versions "
        f"{CHECKED_PYG_VERSIONS}: re-check every entry point of tensorframes._compat"
    )


def _graph():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=gen)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, 2]])
    return x, edge_index


class _CountingBase(MessagePassing):
    """A base with its own ``propagate``, which counts its calls."""

    calls = 0

    def __init__(self):
        super().__init__(aggr="add")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        keep_inherited_propagate(cls)

    def propagate(self, edge_index, size=None, **kwargs):
        type(self).calls += 1
        return MessagePassing.propagate(self, edge_index, size=size, **kwargs)

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)


class _Child(_CountingBase):
    def message(self, x_j):
        return 2 * x_j


def test_keep_inherited_propagate():
    """PyG internal: MessagePassing._set_jittable_templates replacing ``cls.propagate``."""
    x, edge_index = _graph()
    layer = _Child()
    assert _Child.__dict__["propagate"] is _CountingBase.propagate
    _Child.calls = 0
    out = layer(x, edge_index)
    assert _Child.calls == 1  # the inherited propagate ran, not a generated one
    ref = torch.zeros_like(x).index_add_(0, edge_index[1], 2 * x[edge_index[0]])
    torch.testing.assert_close(out, ref)


def test_control_pyg_generates_propagate_for_subclasses():
    """Control: without the shim, PyG 2.8 gives a subclass a generated ``propagate``."""

    class Base(MessagePassing):
        def propagate(self, edge_index, size=None, **kwargs):
            return MessagePassing.propagate(self, edge_index, size=size, **kwargs)

    class Child(Base):
        def message(self, x_j):
            return x_j

    Child()
    assert Child.propagate is not Base.propagate


def test_message_arg_names():
    """PyG internal: MessagePassing._user_args."""

    class Layer(MessagePassing):
        def message(self, x_j, pos_i, edge_weight):
            return x_j

        def update(self, inputs, extra):
            return inputs

    assert message_arg_names(Layer()) == {"x_j", "pos_i", "edge_weight", "extra"}


def test_collect_hook_sees_and_changes_collected_arguments():
    """PyG internal: MessagePassing._collect (called by the non-generated propagate)."""
    seen = []

    class Hooked(CollectHookMessagePassing):
        def propagate(self, edge_index, size=None, **kwargs):
            return MessagePassing.propagate(self, edge_index, size=size, **kwargs)

        def after_collect(self, collected):
            seen.append(set(collected))
            collected["x_j"] = 3 * collected["x_j"]
            return collected

        def message(self, x_j, x_i):
            return x_j + 0 * x_i

    x, edge_index = _graph()
    out = Hooked(aggr="add").propagate(edge_index, x=x)
    assert seen and {"x_j", "x_i", "index", "size_i", "edge_index"} <= seen[0]
    ref = torch.zeros_like(x).index_add_(0, edge_index[1], 3 * x[edge_index[0]])
    torch.testing.assert_close(out, ref)
    assert CollectHookMessagePassing.after_collect(None, {"a": 1}) == {"a": 1}


def test_shortcut_gathers_hands_over_given_rows_for_the_very_index_only():
    """PyG internal: MessagePassing._index_select, used by the generated propagate's collect."""
    seen = []

    class Gathering(MessagePassing):  # a name no other test uses (PyG caches by name)
        def forward(self, x, edge_index):
            return self.propagate(edge_index, x=x)

        def message(self, x_j, x_i):
            seen.append(x_j)
            return x_j + 0 * x_i

    x, edge_index = _graph()
    layer = Gathering(aggr="add")
    given = 7 * x.index_select(0, edge_index[0])  # deliberately different: visible if used
    ref = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
    with shortcut_gathers(layer, edge_index[0], [(x, given)]):
        out = layer(x, edge_index)
        assert seen[-1] is given  # x_j along edge_index[0] is the given tensor itself
        torch.testing.assert_close(out, 7 * ref)
        # another index tensor with the same values, or another source: the usual gather
        torch.testing.assert_close(layer(x, edge_index.clone()), ref)
        torch.testing.assert_close(layer(x.clone(), edge_index), ref)
    assert "_index_select" not in layer.__dict__  # restored
    torch.testing.assert_close(layer(x, edge_index), ref)
    # restored also on errors, and an instance-level override present before is kept
    own = layer._index_select
    layer.__dict__["_index_select"] = own
    try:
        with shortcut_gathers(layer, edge_index[0], [(x, given)]):
            raise KeyError("boom")
    except KeyError:
        pass
    assert layer.__dict__["_index_select"] is own


def test_share_module_state():
    """torch internal: nn.Module's ``_parameters`` / ``_buffers`` / ``_modules`` dicts."""
    source = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    owner = nn.Module()
    share_module_state(owner, source)
    assert list(owner.state_dict()) == list(source.state_dict())
    assert all(a is b for a, b in zip(owner.parameters(), source.parameters(), strict=True))
    owner.double()
    assert source[0].weight.dtype == torch.float64 and source[1].running_mean.dtype == torch.float64
    state = {k: torch.full_like(v, 0.5) for k, v in source.state_dict().items()}
    owner.load_state_dict(state)
    assert torch.equal(source[0].weight, torch.full((3, 2), 0.5, dtype=torch.float64))


def _items():
    return [Data(x=torch.arange(3.0).reshape(3, 1) + i) for i in range(4)]


class _Always(ProcessAlwaysInMemoryDataset):
    processed = 0

    def __init__(self, root):
        super().__init__(root, log=False)
        # InMemoryDataset.__init__ clears the storage after process(): install it afterwards
        set_collated_storage(self, *self._pending)

    @property
    def raw_file_names(self):
        return []

    @property
    def processed_file_names(self):
        return ["items.pt"]

    def process(self):
        type(self).processed += 1
        data, slices = self.collate(_items())
        os.makedirs(self.processed_dir, exist_ok=True)  # PyG's _process would have made it
        torch.save(1, self.processed_paths[0])
        self._pending = data, slices


class _Plain(InMemoryDataset):
    processed = 0

    @property
    def raw_file_names(self):
        return []

    @property
    def processed_file_names(self):
        return ["items.pt"]

    def process(self):
        type(self).processed += 1
        torch.save(1, self.processed_paths[0])


def test_process_always_and_collated_storage(tmp_path):
    """PyG internals: Dataset._process (skipped when files exist) and InMemoryDataset._data."""
    _Always.processed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # set_collated_storage does not go through `data`
        first = _Always(str(tmp_path / "a"))
        second = _Always(str(tmp_path / "a"))
    assert _Always.processed == 2  # process() ran although the processed file existed
    for ds in (first, second):
        assert len(ds) == 4
        torch.testing.assert_close(ds[2].x, _items()[2].x)
    # control: PyG itself skips process() once the processed file exists
    _Plain.processed = 0
    _Plain(str(tmp_path / "b"), log=False)
    _Plain(str(tmp_path / "b"), log=False)
    assert _Plain.processed == 1
