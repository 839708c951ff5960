"""Seeded point-cloud transforms (PyG :class:`~torch_geometric.transforms.BaseTransform`).

Randomness never comes from the global RNG: each random transform owns a
:class:`torch.Generator`, created from ``seed`` (default 0) or passed in as ``generator``.
Inside a :class:`~torch.utils.data.DataLoader` worker, a seed-created generator is re-seeded
from ``(seed, worker seed)``, so workers do not repeat each other's draws and every epoch
differs, while a run stays reproducible under ``torch.manual_seed`` (PyTorch derives worker
seeds from it). An explicitly passed ``generator`` is used as is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import scatter

from .._math import haar_orthogonal

__all__ = ["CenterScale", "Jitter", "RandomO3"]


class _Seeded(BaseTransform):
    def __init__(self, seed: int | None, generator: torch.Generator | None) -> None:
        if generator is not None and seed is not None:
            raise ValueError("pass either seed or generator, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator)}")
        if seed is None and generator is None:
            seed = 0
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self._generator = generator
        self._worker_key: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.seed is not None:  # re-created from the seed (and worker) after unpickling
            state["_generator"], state["_worker_key"] = None, None
        return state

    def _gen(self) -> torch.Generator:
        if self.seed is None:
            return self._generator
        info = torch.utils.data.get_worker_info()
        key = -1 if info is None else int(info.seed)
        if self._generator is None or key != self._worker_key:
            entropy = [self.seed] if info is None else [self.seed, key % 2**63]
            state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
            self._generator = torch.Generator().manual_seed((int(state[0]) << 31) ^ int(state[1]))
            self._worker_key = key
        return self._generator


class RandomO3(_Seeded):
    r"""Apply one Haar-random orthogonal matrix ``Q`` to ``pos`` and ``normal`` together.

    ``x -> x Q^T`` for every attribute in ``attrs`` (rotation about the origin). With
    ``reflections=True``, ``Q`` is Haar on O(3), so ``det Q = -1`` half of the time; otherwise
    on SO(3). Normals stay exact: an orthogonal map sends a surface normal to the normal of the
    mapped surface. Computed in float64, cast back to each attribute's dtype.

    Args:
        reflections: include improper ``Q`` (default ``True``).
        attrs: vector attributes to transform, each ``(N, 3)`` (default ``pos``, ``normal``);
            missing ones are skipped.
        store: if ``True``, ``Q`` is stored as ``data.rotation`` ``(1, 3, 3)`` (so that batching
            stacks it to ``(B, 3, 3)``).
        seed, generator: source of randomness (see the module docstring).
    """

    def __init__(
        self,
        reflections: bool = True,
        *,
        attrs: tuple[str, ...] = ("pos", "normal"),
        store: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(seed, generator)
        self.reflections = bool(reflections)
        self.attrs = tuple(attrs)
        self.store = bool(store)

    def forward(self, data: Data) -> Data:
        Q = haar_orthogonal(1, 3, det=None if self.reflections else 1, generator=self._gen())[0]
        for name in self.attrs:
            x = getattr(data, name, None)
            if x is None:
                continue
            if x.dim() != 2 or x.size(-1) != 3:
                raise ValueError(f"RandomO3: data.{name} must be (N, 3), got {tuple(x.shape)}")
            data[name] = (x.to(torch.float64) @ Q.to(x.device).T).to(x.dtype)
        if self.store:
            dtype = data.pos.dtype if getattr(data, "pos", None) is not None else torch.float32
            data.rotation = Q.to(dtype)[None]
        return data

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reflections={self.reflections}, attrs={self.attrs}, "
            f"store={self.store}, seed={self.seed})"
        )


class CenterScale(BaseTransform):
    r"""Centre ``pos`` at its centroid and scale it to unit maximum radius.

    ``pos -> (pos - mean) / max_i |pos_i - mean|``; normals are unchanged (a uniform scaling
    and a translation keep them). Works per graph when ``data.batch`` is present. A cloud whose
    points all coincide is only centred.
    """

    def forward(self, data: Data) -> Data:
        pos = data.pos
        batch = getattr(data, "batch", None)
        if batch is None:
            center = pos.mean(0, keepdim=True)
            radius = (pos - center).norm(dim=-1).max()
            radius = torch.where(radius > 0, radius, torch.ones_like(radius))
            data.pos = (pos - center) / radius
            return data
        center = scatter(pos, batch, dim=0, reduce="mean")
        rel = pos - center[batch]
        radius = scatter(rel.norm(dim=-1), batch, dim=0, reduce="max")
        radius = torch.where(radius > 0, radius, torch.ones_like(radius))
        data.pos = rel / radius[batch, None]
        return data


class Jitter(_Seeded):
    r"""Add clipped Gaussian noise to ``pos``: ``pos + clip(sigma * xi, -clip, clip)``.

    Normals are left unchanged (they remain those of the underlying surface).

    Args:
        sigma: standard deviation of the noise (default 0.01).
        clip: clip bound per coordinate (default 0.05); ``None`` for no clipping.
        seed, generator: source of randomness (see the module docstring).
    """

    def __init__(
        self,
        sigma: float = 0.01,
        clip: float | None = 0.05,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (sigma >= 0) or sigma == float("inf"):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
        if clip is not None and not (clip > 0):
            raise ValueError(f"clip must be None or > 0, got {clip!r}")
        super().__init__(seed, generator)
        self.sigma = float(sigma)
        self.clip = None if clip is None else float(clip)

    def forward(self, data: Data) -> Data:
        pos = data.pos
        noise = torch.randn(pos.shape, generator=self._gen(), dtype=torch.float64)
        noise = self.sigma * noise
        if self.clip is not None:
            noise = noise.clamp(-self.clip, self.clip)
        data.pos = pos + noise.to(device=pos.device, dtype=pos.dtype)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma}, clip={self.clip}, seed={self.seed})"
