import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tensorframes.data import MeshFolder, default_cache_dir, read_off, read_ply

TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # counter-clockwise from outside
CUBE_V = np.array([[x, y, z] for x in (0, 2.0) for y in (0, 1.0) for z in (0, 0.5)])
# quads, counter-clockwise seen from outside (vertex index = 4x + 2y + z)
CUBE_F = np.array(
    [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
)


def write_off(path, v, f, header="OFF\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header + f"{len(v)} {len(f)} 0"]
    lines += [" ".join(map(str, x)) for x in v]
    lines += [f"{len(x)} " + " ".join(map(str, x)) for x in f]
    path.write_text("\n".join(lines) + "\n")


def write_ply(path, v, f, binary=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "binary_little_endian" if binary else "ascii"
    head = (
        f"ply\nformat {fmt} 1.0\ncomment test\nelement vertex {len(v)}\nproperty float x\n"
        f"property float y\nproperty float z\nelement face {len(f)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    if binary:
        body = np.asarray(v, "<f4").tobytes()
        body += b"".join(np.uint8(len(x)).tobytes() + np.asarray(x, "<i4").tobytes() for x in f)
        path.write_bytes(head.encode() + body)
    else:
        rows = [" ".join(map(str, x)) for x in v] + [
            f"{len(x)} " + " ".join(map(str, x)) for x in f
        ]
        path.write_text(head + "\n".join(rows) + "\n")


def outward_face_normals(v, faces):
    c = v.mean(0)
    out = []
    for f in faces:
        n = np.cross(v[f[1]] - v[f[0]], v[f[2]] - v[f[0]])
        n /= np.linalg.norm(n)
        assert n @ (v[f[0]] - c) > 0  # the test meshes are wound outward
        out.append((n, n @ v[f[0]]))
    return out


def check_on_faces(data, v, faces, expected_face_areas=None):
    planes = outward_face_normals(v, faces)
    pos, nrm = data.pos.double().numpy(), data.normal.double().numpy()
    dist = np.stack([np.abs(pos @ n - d) for n, d in planes], 1)
    face = dist.argmin(1)
    assert dist.min(1).max() < 1e-5
    want = np.stack([planes[k][0] for k in face])
    np.testing.assert_allclose(nrm, want, atol=1e-6)  # the (outward, by winding) face normal
    if expected_face_areas is not None:
        p = np.asarray(expected_face_areas) / np.sum(expected_face_areas)
        counts = np.bincount(face, minlength=len(faces)) / len(face)
        assert np.all(np.abs(counts - p) < 5 * np.sqrt(p * (1 - p) / len(face)))


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The default cache (``$XDG_CACHE_HOME/tensorframes``) inside the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "tensorframes"


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "meshes"
    write_off(root / "tets" / "tet.off", TET_V, TET_F)
    write_ply(root / "cubes" / "cube.ply", CUBE_V, CUBE_F)
    write_ply(root / "cubes" / "deep" / "cube_bin.ply", CUBE_V, CUBE_F, binary=True)
    return root


def test_samples_lie_on_faces_with_face_normals(folder):
    ds = MeshFolder(folder, num_points=6000)
    assert ds.files == ["cubes/cube.ply", "cubes/deep/cube_bin.ply", "tets/tet.off"]
    assert ds.classes == ["cubes", "tets"] and [int(d.y) for d in ds] == [0, 0, 1]
    for d in ds:
        assert d.pos.shape == (6000, 3) and d.pos.dtype == torch.float32
    cube_areas = [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]  # faces x=0, x=2 (1 x 0.5), y (2 x 0.5), z (2 x 1)
    check_on_faces(ds[0], CUBE_V, [f[:3] for f in CUBE_F], cube_areas)
    check_on_faces(ds[1], CUBE_V, [f[:3] for f in CUBE_F], cube_areas)
    tet_areas = [0.5, 0.5, 0.5, np.sqrt(3) / 2]
    check_on_faces(ds[2], TET_V, TET_F, tet_areas)
    # inside each quad, not just on its plane
    assert (ds[0].pos >= -1e-6).all() and (ds[0].pos <= torch.tensor([2, 1, 0.5]) + 1e-6).all()


def test_reversed_winding_flips_normals(tmp_path):
    write_off(tmp_path / "t.off", TET_V, TET_F[:, ::-1])
    d = MeshFolder(tmp_path, num_points=500)[0]
    assert ((d.pos - torch.tensor(TET_V.mean(0)).float()) * d.normal).sum(1).max() < 0


def test_deterministic_and_seeded(folder, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("processed"))
    a, b = MeshFolder(folder, num_points=100), MeshFolder(other, num_points=100)
    for x, y in zip(a, b):
        assert torch.equal(x.pos, y.pos) and torch.equal(x.normal, y.normal)
    c = MeshFolder(folder, num_points=100, seed=1)
    assert not torch.equal(a[0].pos, c[0].pos)
    assert a.processed_file_names != c.processed_file_names
    # the binary and ascii cubes differ only in path -> different streams
    assert not torch.equal(a[0].pos, a[1].pos)


def test_new_file_invalidates_cache(folder):
    a = MeshFolder(folder, num_points=50)
    write_off(folder / "tets" / "tet2.off", TET_V, TET_F)
    b = MeshFolder(folder, num_points=50)
    assert len(a) == 3 and len(b) == 4


def test_readers_agree(folder):
    v1, f1 = read_ply(str(folder / "cubes" / "cube.ply"))
    v2, f2 = read_ply(str(folder / "cubes" / "deep" / "cube_bin.ply"))
    np.testing.assert_allclose(v1, CUBE_V)
    np.testing.assert_allclose(v2, CUBE_V)
    assert f1.shape == (12, 3) and np.array_equal(f1, f2)
    write_off(folder / "glued.off", TET_V, TET_F, header="OFF")  # "OFF4 4 0", as in ModelNet
    v, f = read_off(str(folder / "glued.off"))
    np.testing.assert_array_equal(v, TET_V)
    np.testing.assert_array_equal(f, TET_F)


BAD_OFF = {
    "no_header": "4 4 0\n0 0 0\n",
    "bad_counts": "OFF\n4 x 0\n",
    "truncated": "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n",
    "bad_vertex": "OFF\n4 1 0\n0 0 0\n1 0\n0 1 0\n0 0 1\n3 0 1 2\n",
    "nan_vertex": "OFF\n3 1 0\n0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n",
    "bad_index": "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
    "short_face": "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n",
    "degenerate": "OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n",
}


@pytest.mark.parametrize("name", sorted(BAD_OFF))
def test_malformed_off_names_file(tmp_path, name):
    f = tmp_path / f"{name}.off"
    f.write_text(BAD_OFF[name])
    with pytest.raises(ValueError, match=str(f)):
        MeshFolder(tmp_path, num_points=10)


def test_malformed_ply_names_file(tmp_path):
    f = tmp_path / "bad.ply"
    write_ply(f, CUBE_V, CUBE_F)
    f.write_text(f.read_text().replace("4 0 1 3 2", "4 0 1 3"))
    with pytest.raises(ValueError, match=rf"{f}.*line"):
        MeshFolder(tmp_path, num_points=10)
    g = tmp_path / "trunc.ply"
    write_ply(g, CUBE_V, CUBE_F, binary=True)
    g.write_bytes(g.read_bytes()[:-7])
    with pytest.raises(ValueError, match=str(g)):
        read_ply(str(g))


def test_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .obj/.off/.ply/.stl files"):
        MeshFolder(tmp_path)


def test_cache_never_written_into_the_data_folder(folder, tmp_path, user_cache):
    before = _snapshot(folder)
    a = MeshFolder(folder, num_points=40)
    assert _snapshot(folder) == before  # byte for byte, mtimes included
    assert a.processed_dir == default_cache_dir("meshfolder", folder)
    assert a.processed_dir.startswith(str(user_cache))
    assert len(list(user_cache.rglob("meshfolder_40_*.pt"))) == 1
    # a folder of the same name elsewhere gets its own cache
    other = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, other)
    assert MeshFolder(other, num_points=40).processed_dir != a.processed_dir
    # an explicit cache_dir is used as given
    b = MeshFolder(folder, num_points=40, cache_dir=tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == [Path(b.processed_paths[0]).name]
    for x, y in zip(a, b):
        assert torch.equal(x.pos, y.pos)
    assert _snapshot(folder) == before


def test_default_cache_dir_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == str(tmp_path / "x" / "tensorframes")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the spec: absolute paths only
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == str(tmp_path / "home" / ".cache" / "tensorframes")
    d = default_cache_dir("meshfolder", "some/data dir", base=tmp_path / "b")
    assert d.startswith(str(tmp_path / "b" / "meshfolder" / "data_dir-"))
    write_off(tmp_path / "t" / "tet.off", TET_V, TET_F)
    with pytest.raises(TypeError, match="cache_dir must be a path or None, got int"):
        MeshFolder(tmp_path / "t", cache_dir=3)


def test_obj_and_stl_meshes_in_a_folder(tmp_path):
    from tensorframes.data._mesh import triangulate
    from tests.data.test_pointio import write_obj, write_stl

    root = tmp_path / "m"
    root.mkdir()
    write_obj(root / "cube.obj", CUBE_V, CUBE_F, "slashes")
    write_stl(root / "tet.stl", TET_V, TET_F, binary=True)
    write_stl(root / "tet_ascii.stl", TET_V, TET_F, binary=False)
    ds = MeshFolder(root, num_points=3000)
    assert ds.files == ["cube.obj", "tet.stl", "tet_ascii.stl"]
    areas = [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]  # CUBE_V is a 2 x 1 x 0.5 box
    check_on_faces(ds[0], CUBE_V, CUBE_F, areas)
    check_on_faces(ds[1], TET_V, TET_F)
    check_on_faces(ds[2], TET_V, TET_F)
    assert len(triangulate(list(CUBE_F))) == 12
