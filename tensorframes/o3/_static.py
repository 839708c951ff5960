"""Static float64 buffers that follow ``.to(device/dtype)`` without losing precision."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["StaticBuffers"]


class StaticBuffers(torch.nn.Module):
    """Module mixin: buffers derived from float64 master copies.

    :meth:`register_static` stores a float64 CPU master of a constant (CG coefficients, index
    maps, grids) and registers a buffer cast to the default dtype. Whenever the module is moved or
    cast (``.to``, ``.double()``, ``.cuda()``), every floating static buffer is re-derived from its
    float64 master, so ``float32 -> float64`` round trips do not lose precision. Integer buffers
    (index maps) keep their dtype and only follow the device.
    """

    def __init__(self) -> None:
        super().__init__()
        self._static_masters: dict[str, torch.Tensor] = {}

    def register_static(self, name: str, value: torch.Tensor) -> None:
        value = value.detach()
        if value.is_floating_point():
            master = value.to(dtype=torch.float64, device="cpu")
            self._static_masters[name] = master
            value = master.to(torch.get_default_dtype())
        self.register_buffer(name, value, persistent=False)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
               ) -> StaticBuffers:
        out = super()._apply(fn, recurse)
        for name, master in self._static_masters.items():
            buf = getattr(self, name)
            setattr(self, name, master.to(dtype=buf.dtype, device=buf.device, copy=True))
        return out
