"""Validation shared by the datasets: finite positions and unit normals."""

from __future__ import annotations

import numpy as np

#: Normals handed out by every dataset are unit length to this tolerance (float32).
NORMAL_TOL = 1e-5


def check_points(pos: np.ndarray, normal: np.ndarray, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``pos`` is finite ``(N, 3)`` and ``normal``
    ``(N, 3)`` is finite with unit rows to :data:`NORMAL_TOL` once cast to float32."""
    pos = np.asarray(pos)
    normal = np.asarray(normal)
    if pos.ndim != 2 or pos.shape[1] != 3 or normal.shape != pos.shape:
        raise ValueError(
            f"{where}: expected pos and normal of shape (N, 3), got {pos.shape} and {normal.shape}"
        )
    if pos.shape[0] == 0:
        raise ValueError(f"{where}: no points")
    bad = ~np.isfinite(pos).all(1)
    if bad.any():
        raise ValueError(f"{where}: non-finite (NaN/inf) position at point {int(bad.argmax())}")
    bad = ~np.isfinite(normal).all(1)
    if bad.any():
        raise ValueError(f"{where}: non-finite (NaN/inf) normal at point {int(bad.argmax())}")
    norms = np.linalg.norm(normal.astype(np.float32).astype(np.float64), axis=1)
    bad = np.abs(norms - 1.0) > NORMAL_TOL
    if bad.any():
        i = int(bad.argmax())
        raise ValueError(f"{where}: normal at point {i} has length {norms[i]}, expected 1")
