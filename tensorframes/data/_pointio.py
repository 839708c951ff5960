"""Point clouds from users' files: :func:`read_points` and the PLY writer :func:`write_ply`.

Formats read (by file extension, case-insensitive):

* ``.ply``: ``ascii``, ``binary_little_endian`` or ``binary_big_endian``; a ``vertex`` element
  with ``x, y, z`` (other vertex properties such as normals or colours are ignored), with or
  without a ``face`` element (the strict parser of :mod:`tensorframes.data._mesh`).
* ``.off``: a mesh, or a point cloud written as an OFF file with ``0`` faces (also ``COFF`` /
  ``NOFF`` / ``STOFF``).
* ``.obj``: Wavefront OBJ (``v`` and ``f`` statements; a file without ``f`` is a point cloud).
* ``.stl``: binary or ASCII STL (corners shared by triangles merged into one vertex).
* ``.xyz`` / ``.txt`` / ``.pts``: one point per line, values separated by whitespace or commas,
  3 or more columns (the first three are ``x y z``), the same number of columns on every line.
  Blank lines and lines starting with ``#`` or ``//`` are skipped. One header line is accepted
  as the first non-comment line: a single integer (a point count, as in many ``.pts`` files; it
  must equal the number of points) or a line without any number (column names such as
  ``x y z nx ny nz``). Anything else that is not a number is an error naming the line.
* ``.npy``: a numeric array of shape ``(N, 3)`` or ``(N, C)`` with ``C >= 3`` (first three
  columns used); pickled object arrays are refused.

A mesh (faces present) gives its vertices, or with ``sample=N`` ``N`` points drawn
area-uniformly from its faces (:func:`~tensorframes.data._mesh.sample_triangles`, seeded).
Every reader returns a finite ``(N, 3)`` float64 array; malformed files raise ``ValueError``
naming the file and, for text formats, the 1-based line.

:func:`write_ply` writes ``x y z`` and optionally ``nx ny nz`` as ``float`` (float32)
properties, ``binary_little_endian`` by default or ``ascii``, atomically (temporary file +
``os.replace``).
"""

from __future__ import annotations

import os
import os.path as osp
import tempfile
import warnings
from typing import Any

import numpy as np

from ._mesh import _read_obj, _read_off, _read_ply, read_stl, sample_triangles

__all__ = ["POINT_EXTENSIONS", "read_points", "write_ply"]

#: The file extensions :func:`read_points` understands.
POINT_EXTENSIONS = (".ply", ".off", ".obj", ".stl", ".xyz", ".txt", ".pts", ".npy")


def read_points(path: str | os.PathLike, *, sample: int | None = None, seed: int = 0) -> np.ndarray:
    """The points of a point-cloud or mesh file as a finite ``(N, 3)`` float64 array.

    Args:
        path: a ``.ply``, ``.off``, ``.xyz``, ``.txt``, ``.pts`` or ``.npy`` file (see the
            module docstring for what each may hold).
        sample: ``None`` (default) returns the file's points (a mesh's vertices). An integer
            ``N >= 1`` draws ``N`` points area-uniformly from the faces of a mesh file
            (``ValueError`` for a file without faces).
        seed: seed of the sampler (``numpy.random.default_rng(seed)``); ignored without
            ``sample``.

    Raises:
        ValueError: unknown extension, malformed file (naming the file and line), non-finite
            values, no points, or ``sample`` on a file without faces.
        FileNotFoundError: ``path`` does not exist.
    """
    path = os.fspath(path)
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int | np.integer) or sample < 1
    ):
        raise ValueError(f"sample must be None or a positive integer, got {sample!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ext = osp.splitext(path)[1].lower()
    if ext not in POINT_EXTENSIONS:
        raise ValueError(
            f"{path}: unknown point-cloud extension {ext!r}; expected one of "
            f"{', '.join(POINT_EXTENSIONS)}"
        )
    if not osp.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    faces = np.zeros((0, 3), np.int64)
    if ext == ".ply":
        pos, faces = _read_ply(path, need_faces=False)
    elif ext == ".off":
        pos, faces = _read_off(path, need_faces=False)
    elif ext == ".obj":
        pos, faces = _read_obj(path, need_faces=False)
    elif ext == ".stl":
        pos, faces = read_stl(path)
    elif ext == ".npy":
        pos = _read_npy(path)
    else:
        pos = _read_text(path)
    if sample is not None:
        if len(faces) == 0:
            raise ValueError(
                f"{path}: sample={sample} needs a mesh, but the file has no faces (a point "
                "cloud); read it without sample"
            )
        pos, _ = sample_triangles(pos, faces, int(sample), np.random.default_rng(seed), where=path)
    return np.ascontiguousarray(pos, dtype=np.float64)


def _read_npy(path: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a numeric .npy array ({err})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be read as .npy ({err})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{path}: expected a numeric array, got dtype {kind}")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise ValueError(f"{path}: expected an array of shape (N, 3) or (N, >=3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: no points")
    pos = arr[:, :3].astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(pos).all(1))
    if bad.size:
        raise ValueError(f"{path}: non-finite (NaN/inf) value in row {int(bad[0])}")
    return pos


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_text(path: str) -> np.ndarray:
    """Fast path: find the first data line (skipping comments and one header line), then
    ``numpy.loadtxt`` (C parser, little memory). Anything it refuses, and non-finite values,
    go through :func:`_read_text_checked`, which names the line."""
    skip, header, sep = 0, None, None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                s = line.strip()
                if s and not s.startswith(("#", "//")):
                    tok = s.replace(",", " ").split()
                    is_header = not any(_is_number(t) for t in tok) or (
                        len(tok) == 1 and tok[0].isdigit()
                    )
                    if header is None and is_header:
                        header = tok
                    else:
                        sep = "," if "," in s else None
                        break
                skip += 1
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "empty input" and friends: the slow path names it
            values = np.loadtxt(
                path,
                dtype=np.float64,
                delimiter=sep,
                comments=("#", "//"),
                skiprows=skip,
                ndmin=2,
                encoding="utf-8",
            )
    except (ValueError, UserWarning):
        return _read_text_checked(path)
    if values.shape[0] == 0 or values.shape[1] < 3 or not np.isfinite(values[:, :3]).all():
        return _read_text_checked(path)
    if header is not None and len(header) == 1 and int(header[0]) != len(values):
        return _read_text_checked(path)
    return np.ascontiguousarray(values[:, :3])


def _read_text_checked(path: str) -> np.ndarray:
    """Line-by-line reader with an error naming the line for anything malformed."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    raw = text.replace(",", " ").splitlines()
    numbers: list[int] = []  # 1-based line numbers of the data lines
    rows: list[str] = []
    header: tuple[int, list[str]] | None = None
    for no, line in enumerate(raw, 1):
        s = line.strip()
        if not s or s.startswith(("#", "//")):
            continue
        if not rows and header is None:
            tok = s.split()
            if not any(_is_number(t) for t in tok) or (len(tok) == 1 and tok[0].isdigit()):
                header = (no, tok)
                continue
        numbers.append(no)
        rows.append(s)
    if not rows:
        raise ValueError(f"{path}: no points (no data lines)")
    tokens = " ".join(rows).split()
    ncols = len(rows[0].split())
    if ncols < 3 or len(tokens) != ncols * len(rows):
        counts = np.array([len(r.split()) for r in rows])
        j = 0 if ncols < 3 else int(np.flatnonzero(counts != ncols)[0])
        expected = "at least 3" if ncols < 3 else f"{ncols} (as on line {numbers[0]})"
        raise ValueError(
            f"{path}, line {numbers[j]}: expected {expected} values, got {counts[j]}: "
            f"{raw[numbers[j] - 1].strip()!r}"
        )
    try:
        values = np.array(tokens, dtype=np.float64).reshape(len(rows), ncols)
    except ValueError:
        for no, r in zip(numbers, rows, strict=True):
            bad = [t for t in r.split() if not _is_number(t)]
            if bad:
                raise ValueError(
                    f"{path}, line {no}: {bad[0]!r} is not a number: {raw[no - 1].strip()!r}"
                ) from None
        raise  # pragma: no cover - every token parsed one by one
    if header is not None and len(header[1]) == 1 and header[1][0].isdigit():
        if int(header[1][0]) != len(rows):
            raise ValueError(
                f"{path}, line {header[0]}: header announces {int(header[1][0])} points, "
                f"found {len(rows)}"
            )
    pos = values[:, :3]
    bad = np.flatnonzero(~np.isfinite(pos).all(1))
    if bad.size:
        no = numbers[int(bad[0])]
        raise ValueError(f"{path}, line {no}: non-finite (NaN/inf) value: {raw[no - 1].strip()!r}")
    return pos


def _as_array(name: str, x: Any, n: int | None = None) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"write_ply: {name} must be a numpy array or torch tensor, got {type(x).__name__}"
        )
    if x.ndim != 2 or x.shape[1] != 3 or (n is not None and x.shape[0] != n):
        want = "(N, 3)" if n is None else f"({n}, 3)"
        raise ValueError(f"write_ply: {name} must have shape {want}, got {tuple(x.shape)}")
    if x.dtype.kind not in "iuf":
        raise TypeError(f"write_ply: {name} must be numeric, got dtype {x.dtype}")
    return x.astype(np.float32)


def write_ply(
    path: str | os.PathLike, pos: Any, normals: Any = None, *, binary: bool = True
) -> None:
    """Write a point cloud (and optionally its normals) as a PLY file.

    One ``vertex`` element with ``float`` (float32) properties ``x y z`` and, when ``normals``
    is given, ``nx ny nz``; no faces. ``binary=True`` (default) writes
    ``binary_little_endian``, ``binary=False`` ``ascii`` (``%.9g``, exact for float32). The
    file is written atomically (temporary file in the same folder + ``os.replace``); the folder
    must exist.

    Args:
        path: output file.
        pos: ``(N, 3)`` numpy array or torch tensor.
        normals: ``None`` or ``(N, 3)`` like ``pos``.
        binary: binary little-endian (default) or ASCII.
    """
    path = os.fspath(path)
    p = _as_array("pos", pos)
    cols = [p]
    names = ["x", "y", "z"]
    if normals is not None:
        cols.append(_as_array("normals", normals, n=len(p)))
        names += ["nx", "ny", "nz"]
    data = np.concatenate(cols, axis=1) if len(cols) > 1 else p
    fmt = "binary_little_endian" if binary else "ascii"
    head = f"ply\nformat {fmt} 1.0\ncomment written by tensorframes\nelement vertex {len(p)}\n"
    head += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    folder = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".ply")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(head.encode("ascii"))
            if binary:
                fh.write(np.ascontiguousarray(data, dtype="<f4").tobytes())
            elif len(data):
                np.savetxt(fh, data, fmt="%.9g")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
