"""``read_points`` / ``write_ply``: every format, round trips and malformed files."""

import numpy as np
import pytest
import torch

from tensorframes.data import POINT_EXTENSIONS, _pointio, read_points, write_ply

RNG = np.random.default_rng(7)
PTS = RNG.normal(size=(37, 3)) * np.array([3.0, 0.5, 100.0])
NRM = RNG.normal(size=(37, 3))
NRM /= np.linalg.norm(NRM, axis=1, keepdims=True)
# a unit cube (quads, counter-clockwise from outside; vertex index = 4x + 2y + z)
CUBE_V = np.array([[x, y, z] for x in (0, 1.0) for y in (0, 1.0) for z in (0, 1.0)])
CUBE_F = np.array(
    [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
)


def parse_ply_independent(path):
    """A minimal PLY reader written for the tests (vertex element of scalar properties only)."""
    blob = path.read_bytes()
    end = blob.index(b"end_header\n") + len(b"end_header\n")
    header = blob[:end].decode("ascii").splitlines()
    assert header[0] == "ply"
    fmt = header[1].split()[1]
    props, n = [], None
    for ln in header:
        t = ln.split()
        if t[0] == "element":
            assert t[1] == "vertex"
            n = int(t[2])
        elif t[0] == "property":
            props.append((t[2], {"float": "f4", "double": "f8"}[t[1]]))
    if fmt == "ascii":
        rows = [list(map(float, ln.split())) for ln in blob[end:].decode().splitlines() if ln]
        arr = np.array(rows).reshape(n, len(props))  # each value rounded to its declared type
        return {p: arr[:, i].astype(t).astype(np.float64) for i, (p, t) in enumerate(props)}
    e = {"binary_little_endian": "<", "binary_big_endian": ">"}[fmt]
    dt = np.dtype([(p, e + t) for p, t in props])
    assert len(blob) - end == n * dt.itemsize
    arr = np.frombuffer(blob[end:], dtype=dt, count=n)
    return {p: arr[p].astype(np.float64) for p, _ in props}


def _ply_bytes(v, fmt, extra_props=(), faces=None, vtype="float"):
    e = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
    head = f"ply\nformat {fmt} 1.0\ncomment c\nelement vertex {len(v)}\n"
    head += "".join(f"property {vtype} {p}\n" for p in ("x", "y", "z", *extra_props))
    if faces is not None:
        head += f"element face {len(faces)}\nproperty list uchar int vertex_indices\n"
    head += "end_header\n"
    cols = np.concatenate([v, np.full((len(v), len(extra_props)), 0.25)], 1)
    if e is None:
        body = "".join(" ".join(repr(float(x)) for x in r) + "\n" for r in cols)
        if faces is not None:
            body += "".join(f"{len(f)} " + " ".join(map(str, f)) + "\n" for f in faces)
        return head.encode() + body.encode()
    t = {"float": "f4", "double": "f8"}[vtype]
    body = np.asarray(cols, e + t).tobytes()
    if faces is not None:
        body += b"".join(
            np.uint8(len(f)).tobytes() + np.asarray(f, e + "i4").tobytes() for f in faces
        )
    return head.encode() + body


# ============================================================================= writer
@pytest.mark.parametrize("binary", [True, False])
def test_write_ply_parsed_by_independent_reader(tmp_path, binary):
    path = tmp_path / "out.ply"
    write_ply(path, PTS, NRM, binary=binary)
    got = parse_ply_independent(path)
    assert list(got) == ["x", "y", "z", "nx", "ny", "nz"]
    np.testing.assert_array_equal(
        np.stack([got[k] for k in "xyz"], 1), PTS.astype(np.float32).astype(np.float64)
    )
    np.testing.assert_array_equal(
        np.stack([got[k] for k in ("nx", "ny", "nz")], 1), NRM.astype(np.float32)
    )
    if binary:
        assert b"format binary_little_endian 1.0" in path.read_bytes()


@pytest.mark.parametrize("binary", [True, False])
def test_write_read_round_trip(tmp_path, binary):
    path = tmp_path / "rt.ply"
    write_ply(path, torch.from_numpy(PTS), None, binary=binary)
    got = read_points(path)
    assert got.dtype == np.float64 and got.shape == PTS.shape
    # binary: the float32 values exactly; ascii: 9 digits, which round back to them exactly
    np.testing.assert_array_equal(got.astype(np.float32), PTS.astype(np.float32))
    write_ply(path, PTS, NRM, binary=binary)  # normals present: still just the points
    np.testing.assert_array_equal(read_points(path).astype(np.float32), PTS.astype(np.float32))


def test_write_ply_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"pos must have shape \(N, 3\), got \(4, 2\)"):
        write_ply(tmp_path / "a.ply", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"normals must have shape \(4, 3\), got \(3, 3\)"):
        write_ply(tmp_path / "a.ply", np.zeros((4, 3)), np.zeros((3, 3)))
    with pytest.raises(TypeError, match="numpy array or torch tensor, got list"):
        write_ply(tmp_path / "a.ply", [[0, 0, 0]])
    assert not list(tmp_path.iterdir())  # nothing half-written


# ============================================================================= readers
@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("vtype", ["float", "double"])
def test_ply_point_cloud_all_encodings(tmp_path, fmt, vtype):
    path = tmp_path / "c.ply"
    path.write_bytes(_ply_bytes(PTS, fmt, extra_props=("nx", "red", "quality"), vtype=vtype))
    want = PTS.astype(np.float32) if vtype == "float" and fmt != "ascii" else PTS
    np.testing.assert_allclose(read_points(path), want, rtol=1e-6 if fmt == "ascii" else 0)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_mesh_vertices_and_sampling(tmp_path, fmt):
    path = tmp_path / "cube.ply"
    path.write_bytes(_ply_bytes(CUBE_V, fmt, faces=CUBE_F))
    np.testing.assert_array_equal(read_points(path), CUBE_V)
    s = read_points(path, sample=3000, seed=3)
    assert s.shape == (3000, 3)
    # every sample on the cube's surface: one coordinate at 0 or 1, the others inside
    on_face = np.isclose(s, 0, atol=1e-12) | np.isclose(s, 1, atol=1e-12)
    assert on_face.any(1).all() and (s >= -1e-12).all() and (s <= 1 + 1e-12).all()
    # area-uniform: each of the 6 unit faces gets 1/6 of the points (5 sigma)
    axis = on_face.argmax(1)
    face = 2 * axis + np.isclose(s[np.arange(3000), axis], 1)
    counts = np.bincount(face, minlength=6)
    assert np.all(np.abs(counts / 3000 - 1 / 6) < 5 * np.sqrt(1 / 6 * 5 / 6 / 3000))
    np.testing.assert_array_equal(s, read_points(path, sample=3000, seed=3))
    assert not np.array_equal(s, read_points(path, sample=3000, seed=4))


def test_off_mesh_and_point_cloud(tmp_path):
    mesh = tmp_path / "cube.off"
    mesh.write_text(
        "OFF\n# a comment\n8 6 0\n"
        + "".join(" ".join(map(str, v)) + "\n" for v in CUBE_V)
        + "".join("4 " + " ".join(map(str, f)) + "\n" for f in CUBE_F)
    )
    np.testing.assert_array_equal(read_points(mesh), CUBE_V)
    assert read_points(mesh, sample=100).shape == (100, 3)
    cloud = tmp_path / "cloud.off"
    cloud.write_text("OFF\n3 0 0\n0 0 0\n1 2 3\n4 5 6.5\n")
    np.testing.assert_array_equal(read_points(cloud), [[0, 0, 0], [1, 2, 3], [4, 5, 6.5]])
    with pytest.raises(ValueError, match=r"cloud\.off: sample=10 needs a mesh.*no faces"):
        read_points(cloud, sample=10)


@pytest.mark.parametrize("ext", [".xyz", ".txt", ".pts"])
@pytest.mark.parametrize("sep", [" ", "\t", ",", ", "])
def test_text_formats(tmp_path, ext, sep):
    path = tmp_path / f"c{ext}"
    extra = np.concatenate([PTS, NRM], 1)
    path.write_text("".join(sep.join(repr(float(x)) for x in r) + "\n" for r in extra))
    np.testing.assert_array_equal(read_points(path), PTS)
    # the fast path (numpy.loadtxt) and the checked line-by-line reader agree
    np.testing.assert_array_equal(_pointio._read_text_checked(str(path)), PTS)


@pytest.mark.parametrize(
    "head",
    ["# comment\n// another\n\n", "x y z nx ny nz\n", "37\n", "# c\nX,Y,Z,NX,NY,NZ\n"],
)
def test_text_headers_and_comments(tmp_path, head):
    path = tmp_path / "c.pts"
    body = "".join(" ".join(repr(float(x)) for x in r) + " 1 2 3\n" for r in PTS)
    path.write_text(head + body + "\n# trailing comment\n")
    np.testing.assert_array_equal(read_points(path), PTS)
    np.testing.assert_array_equal(_pointio._read_text_checked(str(path)), PTS)


def test_npy(tmp_path):
    np.save(tmp_path / "a.npy", PTS)
    np.testing.assert_array_equal(read_points(tmp_path / "a.npy"), PTS)
    np.save(tmp_path / "b.npy", np.concatenate([PTS, NRM], 1).astype(np.float32))
    np.testing.assert_array_equal(read_points(tmp_path / "b.npy"), PTS.astype(np.float32))
    np.save(tmp_path / "i.npy", np.arange(12).reshape(4, 3))
    np.testing.assert_array_equal(read_points(tmp_path / "i.npy"), np.arange(12).reshape(4, 3))


# ============================================================================= malformed
def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("a.xyz", "0 0 0\n1 1 1\nnan 2 2\n", r"a\.xyz, line 3: non-finite"),
        ("a.xyz", "0 0 0\n1 1 1 1\n2 2 2\n", r"a\.xyz, line 2: expected 3 .*values, got 4"),
        ("a.txt", "0,0\n1,1\n", r"a\.txt, line 1: expected at least 3 values, got 2"),
        ("a.pts", "0 0 0\n\n1 x 1\n", r"a\.pts, line 3: 'x' is not a number"),
        ("a.pts", "5\n0 0 0\n1 1 1\n", r"a\.pts, line 1: header announces 5 points, found 2"),
        ("a.pts", "x y z\na b c\n", r"a\.pts, line 2: 'a' is not a number"),
        ("a.xyz", "# only a comment\n", r"a\.xyz: no points"),
        ("a.xyz", "0 0 inf\n", r"a\.xyz, line 1: non-finite"),
        ("a.off", "OFF\n2 0 0\n0 0 0\n", r"a\.off: truncated"),
        ("a.off", "OFF\n1 0 0\n0 nan 0\n", r"a\.off, line 3: non-finite"),
        ("a.ply", "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n"
         "property float y\nproperty float z\nend_header\n0 0 0\n1 1\n",
         r"a\.ply, line 9: malformed 'vertex'"),
        ("a.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
         "property float y\nproperty float z\nend_header\n0 nan 0\n",
         r"a\.ply: non-finite vertex 0"),
        ("a.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
         "property float y\nend_header\n0 0\n", r"a\.ply: PLY vertex element needs"),
    ],
)  # fmt: skip
def test_malformed_text_files_name_file_and_line(tmp_path, name, text, match):
    with pytest.raises(ValueError, match=match):
        read_points(_write(tmp_path, name, text))


@pytest.mark.parametrize("fmt", ["binary_little_endian", "binary_big_endian"])
def test_truncated_binary_ply(tmp_path, fmt):
    path = tmp_path / "t.ply"
    path.write_bytes(_ply_bytes(PTS, fmt)[:-5])
    with pytest.raises(ValueError, match=r"t\.ply: truncated binary PLY in element 'vertex'"):
        read_points(path)


def test_bad_npy_and_extension(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"a\.npy: expected an array of shape \(N, 3\)"):
        read_points(tmp_path / "a.npy")
    x = PTS.copy()
    x[4, 1] = np.nan
    np.save(tmp_path / "b.npy", x)
    with pytest.raises(ValueError, match=r"b\.npy: non-finite .* row 4"):
        read_points(tmp_path / "b.npy")
    np.save(tmp_path / "c.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"c\.npy: not a numeric"):
        read_points(tmp_path / "c.npy")
    (tmp_path / "d.vtk").write_text("# vtk DataFile")
    with pytest.raises(ValueError, match=r"d\.vtk: unknown point-cloud extension '\.vtk'"):
        read_points(tmp_path / "d.vtk")
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        read_points(tmp_path / "nope.xyz")
    with pytest.raises(ValueError, match="sample must be None or a positive integer"):
        read_points(tmp_path / "a.npy", sample=0)
    assert set(POINT_EXTENSIONS) == {".ply", ".off", ".obj", ".stl", ".xyz", ".txt", ".pts", ".npy"}


# ============================================================================= OBJ, STL, COFF
def _cube_tris():
    from tensorframes.data._mesh import triangulate

    return triangulate(list(CUBE_F))  # polygon by polygon, as the readers do


def write_obj(path, v, faces, style="plain"):
    lines = ["# cube", "mtllib x.mtl", "o cube"] + [f"v {x} {y} {z} 1.0" for x, y, z in v]
    lines += ["vt 0 0", "vn 0 0 1", "g side", "usemtl m", "s off"]
    n = len(v)
    for f in faces:
        if style == "plain":
            tok = [str(i + 1) for i in f]
        elif style == "slashes":
            tok = [f"{i + 1}/1/1" if k % 2 else f"{i + 1}//1" for k, i in enumerate(f)]
        else:  # negative (relative) indices
            tok = [str(i - n) for i in f]
        lines.append("f " + " ".join(tok))
    path.write_text("\n".join(lines) + "\n")


def write_stl(path, v, tris, binary=True):
    corners = v[tris]  # (T, 3, 3)
    if binary:
        rec = np.zeros(len(tris), np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
        rec["v"] = corners
        path.write_bytes(b"\0" * 80 + np.uint32(len(tris)).tobytes() + rec.tobytes())
    else:
        out = ["solid cube"]
        for c in corners:
            out += ["facet normal 0 0 0", " outer loop"]
            out += [f"  vertex {x!r} {y!r} {z!r}" for x, y, z in c.tolist()]
            out += [" endloop", "endfacet"]
        path.write_text("\n".join(out + ["endsolid cube"]) + "\n")


@pytest.mark.parametrize("style", ["plain", "slashes", "negative"])
def test_obj_mesh(tmp_path, style):
    from tensorframes.data import read_mesh

    path = tmp_path / "cube.obj"
    write_obj(path, CUBE_V, CUBE_F, style)
    np.testing.assert_array_equal(read_points(path), CUBE_V)
    v, t = read_mesh(str(path))
    np.testing.assert_array_equal(t, _cube_tris())
    s = read_points(path, sample=500, seed=1)
    assert (np.isclose(s, 0) | np.isclose(s, 1)).any(1).all()
    cloud = tmp_path / "cloud.obj"
    cloud.write_text("v 0 0 0\nv 1 2 3\nvn 0 0 1\n")
    np.testing.assert_array_equal(read_points(cloud), [[0, 0, 0], [1, 2, 3]])


@pytest.mark.parametrize("binary", [True, False])
def test_stl_mesh_merges_shared_corners(tmp_path, binary):
    from tensorframes.data import read_mesh

    path = tmp_path / "cube.stl"
    write_stl(path, CUBE_V, _cube_tris(), binary=binary)
    pts = read_points(path)
    assert pts.shape == (8, 3)
    assert {tuple(p) for p in pts} == {tuple(p) for p in CUBE_V}
    v, t = read_mesh(str(path))
    np.testing.assert_array_equal(v[t], CUBE_V[_cube_tris()])  # the same triangles, same winding
    assert read_points(path, sample=300).shape == (300, 3)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("a.obj", "v 0 0 0\nv 1 0\n", r"a\.obj, line 2: expected a vertex"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", r"a\.obj, line 4: expected a face"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", r"a\.obj, line 4: face \[0, 1, 3\]"),
        ("a.obj", "v 0 nan 0\n", r"a\.obj, line 1: non-finite vertex"),
        ("a.obj", "# nothing\n", r"a\.obj: no vertices"),
        ("a.stl", "hello", r"a\.stl: not an STL file"),
        ("a.stl", "solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n",
         r"a\.stl: ASCII STL with 2 vertices"),
        ("a.stl", "solid x\nvertex 0 0\n", r"a\.stl, line 2: expected 'vertex x y z'"),
        ("a.off", "OFF BINARY\n", r"a\.off, line 1: binary OFF is not supported"),
        ("a.off", "PLY\n", r"a\.off: not an OFF file"),
    ],
)  # fmt: skip
def test_malformed_obj_stl_off(tmp_path, name, content, match):
    with pytest.raises(ValueError, match=match):
        read_points(_write(tmp_path, name, content))


def test_truncated_binary_stl_and_coff(tmp_path):
    path = tmp_path / "t.stl"
    write_stl(path, CUBE_V, _cube_tris())
    path.write_bytes(path.read_bytes()[:-7])  # neither a complete binary nor ASCII STL
    with pytest.raises(ValueError, match=r"t\.stl: not an STL file"):
        read_points(path)
    coff = tmp_path / "c.off"
    body = "".join(f"{x} {y} {z} 255 0 0 255\n" for x, y, z in CUBE_V)
    body += "".join("4 " + " ".join(map(str, f)) + " 1 2 3\n" for f in CUBE_F)
    coff.write_text("COFF\n8 6 0\n" + body)
    np.testing.assert_array_equal(read_points(coff), CUBE_V)
    noff = tmp_path / "n.off"
    noff.write_text("NOFF\n8 6 0\n" + body)
    assert read_points(noff, sample=50).shape == (50, 3)
