"""Backend selection for the neighbour search: per call or by a context manager.

torch-cluster is detected once, at import (:data:`WITH_TORCH_CLUSTER`). The backend of a call is
its ``backend=`` keyword when given, else the innermost active :func:`use_backend`, else
``"auto"``. The setting lives in a :class:`contextvars.ContextVar`, so it is local to the
current thread and asyncio task, nests, and is restored on exit (also when an exception leaves
the block). There is no module-global mutable state.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from types import ModuleType

try:  # pragma: no cover - depends on the environment
    import torch_cluster as _torch_cluster

    WITH_TORCH_CLUSTER = True
except (ImportError, OSError):  # pragma: no cover
    _torch_cluster = None
    WITH_TORCH_CLUSTER = False

__all__ = ["BACKENDS", "WITH_TORCH_CLUSTER", "cluster_for", "get_backend", "use_backend"]

#: The accepted backend names.
BACKENDS = ("auto", "torch", "cluster")

_backend: contextvars.ContextVar[str] = contextvars.ContextVar(
    "tensorframes_graph_backend", default="auto"
)


def _validate(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cluster" and not WITH_TORCH_CLUSTER:
        raise RuntimeError("backend='cluster' requested but torch_cluster does not import")
    return backend


def get_backend() -> str:
    """The backend of the innermost active :func:`use_backend` block (``"auto"`` outside)."""
    return _backend.get()


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[str]:
    """Run the block with ``backend`` as the default of every neighbour-search call.

    ``"auto"`` (torch-cluster if it imports, else pure torch), ``"torch"`` or ``"cluster"``
    (:class:`RuntimeError` at entry if torch-cluster does not import). A call's own
    ``backend=`` keyword still wins. Thread- and async-safe (a :class:`~contextvars.ContextVar`),
    nests, and restores the previous setting on exit, also after an exception. Yields the name.

    Example::

        with tensorframes.graph.use_backend("torch"):
            edge_index = tensorframes.graph.knn_graph(pos, k=16, batch=batch)
    """
    token = _backend.set(_validate(backend))
    try:
        yield backend
    finally:
        _backend.reset(token)


def cluster_for(backend: str | None) -> ModuleType | None:
    """The ``torch_cluster`` module if ``backend`` (``None``: :func:`get_backend`) selects it,
    else ``None`` (pure torch). Raises for an unknown name or an unavailable ``"cluster"``."""
    b = _validate(_backend.get() if backend is None else backend)
    if b == "cluster" or (b == "auto" and WITH_TORCH_CLUSTER):
        return _torch_cluster
    return None
