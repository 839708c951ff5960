"""``MeshFolder``: point clouds with exact face normals sampled from mesh files.

Long module: the strict readers of the four mesh formats (OFF, PLY, OBJ, STL) sit next to the
area-uniform sampler and the dataset that use them; each reader is short and self-contained.
"""

from __future__ import annotations

import os
import os.path as osp
import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from ._cache import CachedInMemoryDataset, default_cache_dir, file_fingerprint
from ._validate import check_points


class MeshFolder(CachedInMemoryDataset):
    r"""Every ``.off`` / ``.ply`` / ``.obj`` / ``.stl`` mesh under ``root`` (recursively),
    sampled to a point cloud.

    Points are sampled area-uniformly from the triangles (polygons are fan-triangulated,
    zero-area triangles never chosen) with a seeded sampler: file ``f`` uses the stream
    ``(seed, crc32(relative path of f))``, so results are deterministic and do not depend on
    which other files are present. The normal of a point is its face's unit normal
    ``(b - a) x (c - a)``, i.e. oriented by the face winding (counter-clockwise seen from the
    side the normal points to). Files are read by this module's own strict parsers (OFF; PLY
    ``ascii``, ``binary_little_endian`` and ``binary_big_endian``); a malformed file raises
    ``ValueError`` naming it (and the line, for text formats).

    Labels: ``y`` is the index of the file's top-level sub-folder in :attr:`classes` (sorted
    names; files directly in ``root`` get class ``"."``). :attr:`files` lists the relative paths
    in dataset order (sorted). The processed cache goes to ``cache_dir``, by default
    ``default_cache_dir("meshfolder", root)`` (``~/.cache/tensorframes/meshfolder/<folder
    name>-<digest>``, honouring ``XDG_CACHE_HOME``), so nothing is written into ``root``; it is
    rebuilt when files are added, removed or modified. A ``processed`` folder directly under
    ``root`` (the cache of older versions) is never scanned for meshes.

    Args:
        root: folder to scan.
        num_points: points per mesh.
        seed: non-negative integer.
        extensions: file suffixes to pick up (case-insensitive).
        transform, pre_transform, force_reload: as in PyG.
        cache_dir: folder of the processed file (default: see above).
    """

    def __init__(
        self,
        root: str,
        *,
        num_points: int = 1024,
        seed: int = 0,
        extensions: Sequence[str] = (".off", ".ply", ".obj", ".stl"),
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points must be a positive integer, got {num_points!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        root = osp.expanduser(os.fspath(root))
        if not osp.isdir(root):
            raise FileNotFoundError(f"MeshFolder: {root} is not a directory")
        self._root = root
        self.num_points, self.seed = num_points, seed
        self.extensions = tuple(sorted({e.lower() for e in extensions}))
        self.files = _scan(root, self.extensions)
        if not self.files:
            raise FileNotFoundError(
                f"MeshFolder: no {'/'.join(self.extensions)} files found under {root}"
            )
        self.classes = sorted({_top(f) for f in self.files})
        if cache_dir is None:
            cache_dir = default_cache_dir("meshfolder", root)
        super().__init__(root, transform, pre_transform, force_reload, cache_dir=cache_dir)

    @property
    def raw_dir(self) -> str:
        return self._root

    def _cache_prefix(self) -> str:
        return f"meshfolder_{self.num_points}"

    def _cache_key(self) -> dict:
        return {"num_points": self.num_points, "seed": self.seed, "files": self.files}

    def _fingerprint(self) -> str:
        return file_fingerprint(self._root, self.files)

    def _generate(self) -> tuple[list[Data], dict]:
        data_list = []
        for rel in self.files:
            path = osp.join(self._root, rel)
            vertices, faces = read_mesh(path)
            rng = np.random.default_rng(
                np.random.SeedSequence([self.seed, zlib.crc32(rel.replace(os.sep, "/").encode())])
            )
            pos, normal = sample_triangles(vertices, faces, self.num_points, rng, where=path)
            check_points(pos, normal, path)
            data_list.append(
                Data(
                    pos=torch.from_numpy(pos.astype(np.float32)),
                    normal=torch.from_numpy(normal.astype(np.float32)),
                    y=torch.tensor([self.classes.index(_top(rel))]),
                )
            )
        return data_list, {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)}, num_points={self.num_points})"


def _top(rel: str) -> str:
    parts = rel.replace(os.sep, "/").split("/")
    return parts[0] if len(parts) > 1 else "."


def _scan(root: str, extensions: tuple[str, ...]) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        if osp.samefile(dirpath, root) and "processed" in dirnames:
            dirnames.remove("processed")
        dirnames.sort()
        for fn in filenames:
            if fn.lower().endswith(extensions):
                out.append(osp.relpath(osp.join(dirpath, fn), root))
    return sorted(out, key=lambda r: r.replace(os.sep, "/"))


# ------------------------------------------------------------------------------- sampling
def triangulate(faces: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Fan-triangulate polygons (each a sequence of >= 3 vertex indices) -> ``(T, 3)``."""
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        k = faces.shape[1]
        return (
            np.concatenate([faces[:, [0, j, j + 1]] for j in range(1, k - 1)], axis=0)
            if k > 3
            else faces.astype(np.int64)
        )
    tris = [np.stack([f[[0, j, j + 1]] for j in range(1, len(f) - 1)]) for f in faces]
    return np.concatenate(tris).astype(np.int64) if tris else np.zeros((0, 3), np.int64)


def sample_triangles(
    vertices: np.ndarray,
    faces: list[np.ndarray] | np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    where: str = "mesh",
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points area-uniform on a triangle mesh with the unit face normals (float64).

    ``faces`` is ``(F, 3)`` (or polygons, fan-triangulated). Raises ``ValueError`` naming
    ``where`` if the mesh has no face of positive area."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = triangulate(faces)
    if len(tri) == 0:
        raise ValueError(f"{where}: mesh has no faces")
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    cross = np.cross(b - a, c - a)
    area2 = np.linalg.norm(cross, axis=1)
    total = area2.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"{where}: mesh has no face of positive, finite area")
    face = rng.choice(len(tri), size=n, p=area2 / total)
    u, w = rng.random((2, n))
    flip = u + w > 1.0
    u, w = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - w, w)
    ab, ac = (b - a)[face], (c - a)[face]
    pos = a[face] + u[:, None] * ab + w[:, None] * ac
    normal = cross[face] / area2[face, None]
    return pos, normal


# -------------------------------------------------------------------------------- readers
def read_mesh(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``.off``, ``.ply``, ``.obj`` or ``.stl`` mesh -> ``(vertices (V, 3) float64,
    triangles (T, 3))``."""
    ext = osp.splitext(path)[1].lower()
    readers = {".off": read_off, ".ply": read_ply, ".obj": read_obj, ".stl": read_stl}
    if ext not in readers:
        raise ValueError(
            f"{path}: unsupported mesh format {ext!r} (expected .off, .ply, .obj or .stl)"
        )
    return readers[ext](path)


def read_obj(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Wavefront OBJ reader: ``v x y z`` vertices (extra values such as ``w`` or colours
    ignored) and ``f`` polygons with 1-based or negative (relative) indices in any of the forms
    ``i``, ``i/t``, ``i//n``, ``i/t/n``; every other statement (``vn``, ``vt``, ``g``, ``o``,
    ``usemtl``, ``l``, ...) is skipped. Polygons are fan-triangulated."""
    return _read_obj(path, need_faces=True)


def _read_obj(path: str, need_faces: bool) -> tuple[np.ndarray, np.ndarray]:
    verts: list[list[float]] = []
    faces, face_lines = [], []
    for no, ln in _text_lines(path):
        tok = ln.split()
        if tok[0] == "v":
            try:
                if len(tok) < 4:
                    raise ValueError
                verts.append([float(t) for t in tok[1:4]])
            except ValueError:
                raise ValueError(
                    f"{path}, line {no}: expected a vertex 'v x y z', got {ln!r}"
                ) from None
            if not all(np.isfinite(verts[-1])):
                raise ValueError(f"{path}, line {no}: non-finite vertex {ln!r}")
        elif tok[0] == "f":
            try:
                idx = [int(t.split("/", 1)[0]) for t in tok[1:]]
                if len(idx) < 3 or 0 in idx:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{path}, line {no}: expected a face 'f i j k ...' with >= 3 vertex "
                    f"indices (1-based, or negative), got {ln!r}"
                ) from None
            n = len(verts)
            faces.append(np.array([i - 1 if i > 0 else n + i for i in idx], dtype=np.int64))
            face_lines.append(no)
    if not verts:
        raise ValueError(f"{path}: no vertices ('v x y z' lines)")
    if need_faces and not faces:
        raise ValueError(f"{path}: mesh has no faces ('f' lines)")
    v = np.asarray(verts, dtype=np.float64)
    _check_faces(path, faces, len(v), face_lines)
    return v, triangulate(faces)


def read_stl(path: str) -> tuple[np.ndarray, np.ndarray]:
    """STL reader (binary, or ASCII ``solid ... facet ... vertex x y z ...``). STL stores
    every triangle with its own corners; equal corners are merged into one vertex (exact
    comparison), so ``vertices`` holds each surface point once."""
    with open(path, "rb") as fh:
        blob = fh.read()
    if len(blob) >= 84:
        (n,) = np.frombuffer(blob, "<u4", 1, 80)
        if len(blob) == 84 + 50 * int(n):  # binary: 80-byte header, count, 50 bytes each
            dt = np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")])
            corners = np.frombuffer(blob, dt, int(n), 84)["v"].reshape(-1, 3).astype(np.float64)
            return _merge_corners(path, corners)
    if not blob.lstrip().startswith(b"solid"):
        raise ValueError(
            f"{path}: not an STL file (neither binary with a matching triangle count nor "
            "ASCII starting with 'solid')"
        )
    corners = []
    for no, ln in _text_lines(path):
        tok = ln.split()
        if tok[0] == "vertex":
            try:
                if len(tok) != 4:
                    raise ValueError
                corners.append([float(t) for t in tok[1:]])
            except ValueError:
                raise ValueError(
                    f"{path}, line {no}: expected 'vertex x y z', got {ln!r}"
                ) from None
    if not corners or len(corners) % 3:
        raise ValueError(f"{path}: ASCII STL with {len(corners)} vertices (need 3 per facet)")
    return _merge_corners(path, np.asarray(corners, dtype=np.float64))


def _merge_corners(path: str, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(corners) == 0:
        raise ValueError(f"{path}: STL has no triangles")
    bad = np.flatnonzero(~np.isfinite(corners).all(1))
    if bad.size:
        raise ValueError(f"{path}: non-finite vertex in triangle {int(bad[0]) // 3}")
    verts, inverse = np.unique(corners, axis=0, return_inverse=True)
    return verts, inverse.reshape(-1, 3).astype(np.int64)


def _text_lines(path: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = fh.read().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    out = []
    for i, ln in enumerate(raw, 1):
        ln = ln.split("#", 1)[0].strip()
        if ln:
            out.append((i, ln))
    return out


def _check_faces(
    path: str, faces: list[np.ndarray], num_vertices: int, lines: list[int] | None = None
) -> None:
    for j, f in enumerate(faces):
        if len(f) < 3 or f.min() < 0 or f.max() >= num_vertices:
            where = f"line {lines[j]}" if lines is not None else f"face {j}"
            raise ValueError(
                f"{path}, {where}: face {f.tolist()} needs >= 3 vertex indices in "
                f"[0, {num_vertices})"
            )


def read_off(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Strict OFF reader (``OFF`` header, counts, vertices, faces ``k i_1 .. i_k``; extra
    trailing values such as colours are ignored; ``#`` comments allowed). Also accepts the
    header glued to the counts (``OFF8 6 0``, as in some ModelNet files) and the ``COFF`` /
    ``NOFF`` / ``CNOFF`` / ``STOFF`` variants (per-vertex colours, normals, texture
    coordinates after ``x y z``, ignored)."""
    return _read_off(path, need_faces=True)


def _read_off(path: str, need_faces: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_off`; ``need_faces=False`` allows 0 faces (``(0, 3)`` triangles)."""
    lines = _text_lines(path)
    m = re.match(r"(ST)?C?N?OFF", lines[0][1].upper()) if lines else None
    if m is None:
        raise ValueError(
            f"{path}: not an OFF file (first line must start with OFF, COFF, NOFF or STOFF)"
        )
    no, head = lines[0]
    rest = head[m.end() :].split()
    if rest and rest[0].upper() == "BINARY":
        raise ValueError(f"{path}, line {no}: binary OFF is not supported (only text OFF)")
    body = lines[1:]
    if not rest:
        if not body:
            raise ValueError(f"{path}, line {no}: missing vertex/face counts after 'OFF'")
        no, counts_line = body[0]
        rest = counts_line.split()
        body = body[1:]
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise ValueError(
            f"{path}, line {no}: expected 'num_vertices num_faces num_edges', got {rest}"
        ) from None
    if nv < 1 or nf < int(need_faces):
        what = "vertex and face" if need_faces else "vertex"
        raise ValueError(f"{path}, line {no}: need at least one {what}, got {nv}, {nf}")
    if len(body) < nv + nf:
        raise ValueError(
            f"{path}: truncated: header announces {nv} vertices and {nf} faces, "
            f"found {len(body)} data lines"
        )
    verts = np.empty((nv, 3))
    for j, (ln_no, ln) in enumerate(body[:nv]):
        tok = ln.split()
        try:
            if len(tok) < 3:
                raise ValueError
            verts[j] = [float(t) for t in tok[:3]]
        except ValueError:
            raise ValueError(
                f"{path}, line {ln_no}: expected a vertex 'x y z', got {ln!r}"
            ) from None
        if not np.isfinite(verts[j]).all():
            raise ValueError(f"{path}, line {ln_no}: non-finite vertex {ln!r}")
    faces, face_lines = [], []
    for ln_no, ln in body[nv : nv + nf]:
        tok = ln.split()
        try:
            k = int(tok[0])
            if k < 3 or len(tok) < k + 1:
                raise ValueError
            faces.append(np.array([int(t) for t in tok[1 : k + 1]], dtype=np.int64))
        except (ValueError, IndexError):
            raise ValueError(
                f"{path}, line {ln_no}: expected a face 'k i_1 ... i_k' with k >= 3, got {ln!r}"
            ) from None
        face_lines.append(ln_no)
    _check_faces(path, faces, nv, face_lines)
    return verts, triangulate(faces)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip

#: A PLY header element: ``(name, count, [(property, dtype code, list count dtype or None)])``.
_PlyElement = tuple[str, int, list[tuple[str, str, str | None]]]


def read_ply(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Strict PLY reader: ``vertex`` element with ``x, y, z`` and a ``face`` element with a list
    property ``vertex_indices`` (or ``vertex_index``); other elements/properties are skipped.
    Formats ``ascii``, ``binary_little_endian`` and ``binary_big_endian``."""
    return _read_ply(path, need_faces=True)


def _read_ply(path: str, need_faces: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_ply`; with ``need_faces=False`` a file without a ``face`` element (or with
    zero faces) gives triangles of shape ``(0, 3)``."""
    with open(path, "rb") as fh:
        blob = fh.read()
    m = re.search(rb"end_header[ \t]*\r?\n", blob)
    if not blob.startswith(b"ply") or m is None:
        raise ValueError(f"{path}: not a PLY file (needs 'ply' ... 'end_header')")
    try:
        header = blob[: m.start()].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: PLY header is not ASCII") from None
    fmt, elements = None, []
    for i, ln in enumerate(header, 1):
        tok = ln.split()
        if not tok or tok[0] in ("ply", "comment", "obj_info"):
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] == "element" and len(tok) == 3 and tok[2].isdigit():
            elements.append((tok[1], int(tok[2]), []))
        elif tok[0] == "property" and elements and len(tok) == 3 and tok[1] in _PLY_TYPES:
            elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]], None))
        elif (
            tok[0] == "property"
            and elements
            and len(tok) == 5
            and tok[1] == "list"
            and tok[2] in _PLY_TYPES
            and tok[3] in _PLY_TYPES
        ):
            elements[-1][2].append((tok[4], _PLY_TYPES[tok[3]], _PLY_TYPES[tok[2]]))
        else:
            raise ValueError(f"{path}, line {i}: cannot parse PLY header line {ln!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    names = [e[0] for e in elements]
    if "vertex" not in names or (need_faces and "face" not in names):
        need = "'vertex' and 'face' elements" if need_faces else "a 'vertex' element"
        raise ValueError(f"{path}: PLY needs {need}, found {names}")
    body = blob[m.end() :]
    if fmt == "ascii":
        values = _ply_ascii(path, body, elements, header_lines=len(header) + 1)
    else:
        values = _ply_binary(path, body, elements, "<" if fmt.endswith("little_endian") else ">")
    vprops = values["vertex"]
    if not all(k in vprops for k in "xyz"):
        raise ValueError(f"{path}: PLY vertex element needs properties x, y, z")
    verts = np.stack([np.asarray(vprops[k], dtype=np.float64) for k in "xyz"], -1)
    bad = np.flatnonzero(~np.isfinite(verts).all(1))
    if bad.size:
        raise ValueError(f"{path}: non-finite vertex {int(bad[0])}")
    if not len(verts):
        raise ValueError(f"{path}: PLY has no vertices")
    fprops = values.get("face", {})
    if not need_faces and not len(next(iter(fprops.values()), [])):
        return verts, np.zeros((0, 3), np.int64)  # a point cloud (no or empty face element)
    key = "vertex_indices" if "vertex_indices" in fprops else "vertex_index"
    if key not in fprops:
        raise ValueError(f"{path}: PLY face element needs a list property 'vertex_indices'")
    faces = [np.asarray(f, dtype=np.int64) for f in fprops[key]]
    if not faces:
        raise ValueError(f"{path}: mesh has no faces")
    _check_faces(path, faces, len(verts))
    return verts, triangulate(faces)


def _ply_ascii(
    path: str, body: bytes, elements: list[_PlyElement], header_lines: int
) -> dict[str, dict[str, Any]]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: ASCII PLY body is not ASCII") from None
    lines = text.splitlines()
    del text
    # 0-based indices of the non-blank lines; tokens are split per element, on demand
    rows = [i for i, ln in enumerate(lines) if ln and not ln.isspace()]
    out, pos = {}, 0
    for name, count, props in elements:
        if pos + count > len(rows):
            raise ValueError(
                f"{path}: truncated: element {name!r} announces {count} lines, "
                f"found {len(rows) - pos}"
            )
        chunk = rows[pos : pos + count]
        if count and all(c is None for _, _, c in props):  # fast path: scalar properties only
            arr = _ascii_table(lines, chunk, len(props))
            if arr is not None:
                out[name] = {p[0]: arr[:, j] for j, p in enumerate(props)}
                pos += count
                continue
        vals = {p[0]: [] for p in props}
        for i in chunk:
            tok = lines[i].split()
            t = 0
            try:
                for pname, _typ, count_typ in props:
                    if count_typ is None:
                        vals[pname].append(float(tok[t]))
                        t += 1
                    else:
                        k = int(tok[t])
                        if k < 0:
                            raise ValueError
                        vals[pname].append([int(x) for x in tok[t + 1 : t + 1 + k]])
                        if len(vals[pname][-1]) != k:
                            raise ValueError
                        t += 1 + k
                if t != len(tok):
                    raise ValueError
            except (ValueError, IndexError):
                raise ValueError(
                    f"{path}, line {i + header_lines + 1}: malformed {name!r} entry "
                    f"{' '.join(tok)!r}"
                ) from None
        out[name] = vals
        pos += count
    return out


def _ascii_table(lines: list[str], chunk: list[int], ncols: int) -> np.ndarray | None:
    """``numpy.loadtxt`` of the lines ``chunk`` as a ``(len(chunk), ncols)`` float64 table, or
    ``None`` when they do not all hold ``ncols`` numbers (the caller then names the line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            arr = np.loadtxt((lines[i] for i in chunk), dtype=np.float64, ndmin=2, comments=None)
    except (ValueError, UserWarning):
        return None
    return arr if arr.shape == (len(chunk), ncols) else None


def _ply_binary(
    path: str, body: bytes, elements: list[_PlyElement], endian: str
) -> dict[str, dict[str, Any]]:
    out, off = {}, 0
    for name, count, props in elements:
        if all(c is None for _, _, c in props):
            dt = np.dtype([(p, endian + t) for p, t, _ in props])
            if off + count * dt.itemsize > len(body):
                raise ValueError(f"{path}: truncated binary PLY in element {name!r}")
            arr = np.frombuffer(body, dtype=dt, count=count, offset=off)
            off += count * dt.itemsize
            out[name] = {p: arr[p] for p, _, _ in props}
            continue
        if len(props) == 1 and count > 0:  # fast path: one list property, constant length
            pname, typ, count_typ = props[0]
            cdt = np.dtype(endian + count_typ)
            if off + cdt.itemsize <= len(body):
                k = int(np.frombuffer(body, cdt, 1, off)[0])
                dt = np.dtype([("n", cdt), ("idx", endian + typ, (k,))])
                if k >= 0 and off + count * dt.itemsize <= len(body):
                    arr = np.frombuffer(body, dtype=dt, count=count, offset=off)
                    if np.all(arr["n"] == k):
                        out[name] = {pname: arr["idx"].astype(np.int64)}
                        off += count * dt.itemsize
                        continue
        vals = {p: [] for p, _, _ in props}
        for _ in range(count):
            for pname, typ, count_typ in props:
                if count_typ is None:
                    dt = np.dtype(endian + typ)
                    if off + dt.itemsize > len(body):
                        raise ValueError(f"{path}: truncated binary PLY in element {name!r}")
                    vals[pname].append(np.frombuffer(body, dt, 1, off)[0])
                    off += dt.itemsize
                else:
                    cdt, idt = np.dtype(endian + count_typ), np.dtype(endian + typ)
                    if off + cdt.itemsize > len(body):
                        raise ValueError(f"{path}: truncated binary PLY in element {name!r}")
                    k = int(np.frombuffer(body, cdt, 1, off)[0])
                    off += cdt.itemsize
                    if off + k * idt.itemsize > len(body):
                        raise ValueError(f"{path}: truncated binary PLY in element {name!r}")
                    vals[pname].append(np.frombuffer(body, idt, k, off).astype(np.int64))
                    off += k * idt.itemsize
        out[name] = vals
    return out
