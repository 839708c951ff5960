r"""Neighbour search: k-nearest neighbours, radius graphs and farthest-point sampling.

The functions follow torch-cluster's (and PyG's) argument conventions and output layouts:

- :func:`knn` / :func:`radius` return ``[2, E]`` with row 0 an index into ``y`` (the query)
  and row 1 an index into ``x``;
- :func:`knn_graph` / :func:`radius_graph` return ``edge_index`` with PyG flow semantics
  (``"source_to_target"``: ``edge_index[0]`` = neighbour j, ``edge_index[1]`` = centre i);
- :func:`fps` returns the sampled indices, cloud by cloud, in sampling order.

Every entry point validates its arguments the same way, whatever the backend: ``k`` and
``max_num_neighbors`` ints ``>= 1``, ``r`` finite and ``> 0``, ``ratio`` in ``(0, 1]``,
``chunk_size >= 1``, finite floating positions (:func:`check_finite`), ``x`` and ``y`` of one
dtype, and integer batch vectors of one id per point, non-negative and sorted (PyG's rule;
torch-cluster does not check and silently pairs the wrong points, here it is a
:class:`ValueError`). Batch ids need not be consecutive: only their runs (segments) matter,
and time and memory depend on the number of points, never on the size of the ids.

Backends. ``"cluster"`` calls torch-cluster, ``"torch"`` the library's own pure-torch search,
``"auto"`` (the default) torch-cluster whenever it imports (:data:`WITH_TORCH_CLUSTER`), else
pure torch. Choose per call with the ``backend=`` keyword, or for a block with the context
manager :func:`use_backend` (a :class:`contextvars.ContextVar`: thread- and async-safe, nested,
restored on exit); :func:`get_backend` reads the current setting. There is no global switch.

The pure-torch path is exact and memory-bounded: it loops over batch segments and over chunks
of query points (at most ``chunk_size`` pairwise distances at a time; never an ``N x N`` matrix
over a whole batch) and has no Python loop over points. For float32 clouds in d <= 3 with at
least :data:`GRID_MIN_POINTS` points per segment it searches a uniform grid whose results are
identical to the brute-force search's (see ``tensorframes/graph/_grid.py``). The pure-torch
path searches half-precision inputs in float32 (torch-cluster receives them as given).

Distances are squared Euclidean distances evaluated exactly like torch-cluster's KD-tree
(nanoflann ``L2_Adaptor``: ``((0 + dx*dx) + dy*dy) + dz*dz`` in the input dtype, groups of four
coordinates first for ``d >= 4``), so both backends see bit-identical distances.

How far the two backends agree (torch-cluster's CPU build; what the tests check):

- :func:`knn`: the pure-torch path lists each query's neighbours by increasing
  ``(distance, index)``: among equal distances the **lower index** wins. torch-cluster's KD-tree
  also lists them by increasing distance but keeps, among equal distances, the point it
  *visits* first (nanoflann is compiled without ``NANOFLANN_FIRST_MATCH``): the lower index for
  clouds of at most 10 points (one leaf), tree order otherwise. So the per-query sequence of
  distances is always identical; the neighbour **sets** are identical up to ties at the
  ``k``-th distance (they coincide whenever the ``k``-th and ``(k+1)``-th distances differ);
  the order inside a group of equal distances may differ; and the outputs are equal tensors
  when no query has two equal distances among its ``k + 1`` nearest (generic float data).
  :func:`knn_graph` is ``knn`` with ``k + 1`` when ``loop=False``, so the same holds there.
- :func:`radius`: both keep the points strictly inside the ball (squared distance ``< r * r``
  in the input dtype). Without truncation (no ball holds more than ``max_num_neighbors``
  points) the sets are identical; the pure-torch path lists them by ``(distance, index)``,
  torch-cluster in tree order. With truncation the pure-torch path keeps the nearest ones,
  torch-cluster an arbitrary subset.
- :func:`fps`: identical for ``random_start=False`` (ties of the farthest distance go to the
  lower index in both), duplicates included: once a cloud's distinct positions are exhausted
  every further index is the cloud's first point (``fps(torch.ones(10, 3), ratio=1.0,
  random_start=False)`` is ten zeros, as in torch-cluster). A random start draws from
  ``generator`` in pure torch (always used when a generator is given; one draw per non-empty
  cloud) and from torch-cluster's own draw otherwise, so random starts differ.
"""

from ._backend import WITH_TORCH_CLUSTER, get_backend, use_backend
from ._checks import check_finite
from ._fps import fps
from ._grid import GRID_MIN_POINTS
from ._search import DEFAULT_CHUNK_SIZE, knn, knn_graph, radius, radius_graph

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GRID_MIN_POINTS",
    "WITH_TORCH_CLUSTER",
    "check_finite",
    "fps",
    "get_backend",
    "knn",
    "knn_graph",
    "radius",
    "radius_graph",
    "use_backend",
]
