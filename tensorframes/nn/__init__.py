"""Frame-aware message passing: make any PyG layer equivariant, and the pieces around it."""

from ._base import TFMessagePassing
from ._frame_ops import EdgeFrames, to_global, to_local
from ._pool import ToGlobal, ToLocal, global_pool, knn_interpolate
from ._tpconv import TensorProductFactory, TPConv
from ._wrap import FrameWrapped, wrap

__all__ = [
    "EdgeFrames",
    "FrameWrapped",
    "TFMessagePassing",
    "TPConv",
    "TensorProductFactory",
    "ToGlobal",
    "ToLocal",
    "global_pool",
    "knn_interpolate",
    "to_global",
    "to_local",
    "wrap",
]
