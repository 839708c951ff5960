import os

import numpy as np
import pytest
import torch

from tensorframes.data import CacheWarning, ModelNet40Normals, default_cache_dir


def write_cloud(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in rows))


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The default cache (``$XDG_CACHE_HOME/tensorframes``) outside the data folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path.parent / (tmp_path.name + "_xdg")))
    return tmp_path.parent / (tmp_path.name + "_xdg") / "tensorframes"


@pytest.fixture
def tree(tmp_path):
    """2 classes, 3 shapes: train = airplane_0001, chair_0001; test = airplane_0002."""
    g = np.random.default_rng(0)
    (tmp_path / "modelnet40_shape_names.txt").write_text("airplane\nchair\n")
    (tmp_path / "modelnet40_train.txt").write_text("airplane_0001\nchair_0001\n")
    (tmp_path / "modelnet40_test.txt").write_text("airplane_0002\n")
    rows = {}
    for sid in ("airplane_0001", "chair_0001", "airplane_0002"):
        r = g.normal(size=(5, 6))
        r[:, 3:] *= 2.5  # not unit: must be normalised
        write_cloud(tmp_path / sid.rsplit("_", 1)[0] / f"{sid}.txt", r)
        rows[sid] = np.round(r, 6)
    return tmp_path, rows


def test_load_train_and_test(tree):
    root, rows = tree
    tr = ModelNet40Normals(root, "train")
    te = ModelNet40Normals(root, split="test")
    assert len(tr) == 2 and len(te) == 1
    assert tr.shape_ids == ["airplane_0001", "chair_0001"] and tr.num_classes == 2
    assert [int(d.y) for d in tr] == [0, 1] and int(te[0].y) == 0
    for ds in (tr, te):
        for sid, d in zip(ds.shape_ids, ds):
            r = rows[sid]
            assert d.pos.dtype == torch.float32 and d.pos.shape == (5, 3)
            np.testing.assert_allclose(d.pos.numpy(), r[:, :3], rtol=0, atol=1e-6)
            n = r[:, 3:] / np.linalg.norm(r[:, 3:], axis=1, keepdims=True)
            np.testing.assert_allclose(d.normal.numpy(), n, rtol=0, atol=1e-6)
            assert (d.normal.double().norm(dim=1) - 1).abs().max() < 1e-5


def test_num_points_and_classes(tree):
    root, rows = tree
    ds = ModelNet40Normals(root, "train", num_points=3, classes=["chair"])
    assert len(ds) == 1 and int(ds[0].y) == 1  # index in the full class list
    np.testing.assert_allclose(ds[0].pos.numpy(), rows["chair_0001"][:3, :3], atol=1e-6)
    with pytest.raises(ValueError, match="fewer than num_points"):
        ModelNet40Normals(root, "train", num_points=6)
    with pytest.raises(ValueError, match="unknown classes"):
        ModelNet40Normals(root, "train", classes=["table"])


def test_options_have_their_own_cache(tree):
    root, _ = tree
    names = {
        ModelNet40Normals(root, "train").processed_file_names[0],
        ModelNet40Normals(root, "test").processed_file_names[0],
        ModelNet40Normals(root, "train", num_points=2).processed_file_names[0],
        ModelNet40Normals(root, "train", classes=["chair"]).processed_file_names[0],
    }
    assert len(names) == 4


def test_edited_raw_file_invalidates_cache(tree):
    root, rows = tree
    a = ModelNet40Normals(root, "test")
    f = root / "airplane" / "airplane_0002.txt"
    write_cloud(f, np.ones((4, 6)))
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.warns(CacheWarning, match="different raw files"):
        b = ModelNet40Normals(root, "test")
    assert a[0].pos.shape == (5, 3) and b[0].pos.shape == (4, 3)
    assert torch.equal(b[0].pos, torch.ones(4, 3))


@pytest.mark.parametrize(
    "name", ["modelnet40_shape_names.txt", "modelnet40_train.txt", "chair/chair_0001.txt"]
)
def test_missing_file_names_path_and_layout(tree, name):
    root, _ = tree
    (root / name).unlink()
    with pytest.raises(FileNotFoundError) as err:
        ModelNet40Normals(root, "train")
    msg = str(err.value)
    assert str(root / name) in msg
    assert "modelnet40_shape_names.txt" in msg and "x,y,z,nx,ny,nz" in msg  # the layout


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("1,2,3,4,5", "expected 6"),  # truncated: 5 fields
        ("1,2,3,4", "expected 6"),  # 4 fields
        ("1,2,3,4,5,6,7", "expected 6"),
        ("1 2 3 4 5 6", "expected 6"),
        ("1,2,abc,0,0,1", "non-numeric"),
        ("1,2,,0,0,1", "non-numeric"),
        ("1,2,nan,0,0,1", "non-finite"),
        ("1,2,3,inf,0,1", "non-finite"),
        ("1,2,3,0,0,0", "zero-length normal"),
    ],
)
def test_malformed_line(tree, line, what):
    root, _ = tree
    f = root / "chair" / "chair_0001.txt"
    lines = f.read_text().splitlines()
    lines[2] = line
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        ModelNet40Normals(root, "train")
    msg = str(err.value)
    assert str(f) in msg and "line 3" in msg and what in msg


def test_blank_lines_keep_line_numbers(tree):
    root, _ = tree
    f = root / "chair" / "chair_0001.txt"
    lines = f.read_text().splitlines()
    f.write_text(lines[0] + "\n\n" + lines[1] + "\n1,2\n")
    with pytest.raises(ValueError, match="line 4"):
        ModelNet40Normals(root, "train")


def test_bad_split_file_entries(tree):
    root, _ = tree
    (root / "modelnet40_train.txt").write_text("table_0001\n")
    with pytest.raises(ValueError, match="table"):
        ModelNet40Normals(root, "train")
    with pytest.raises(ValueError, match="split"):
        ModelNet40Normals(root, "val")


def test_cache_outside_the_data_folder(tree, user_cache, tmp_path):
    root, _ = tree
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    ds = ModelNet40Normals(root, "train")
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    assert after == before and not (root / "processed").exists()
    assert ds.processed_dir == default_cache_dir("modelnet40normals", root)
    assert any(user_cache.rglob("modelnet40normals_train_*.pt"))
    mine = tmp_path.parent / (tmp_path.name + "_mine")
    ModelNet40Normals(root, "test", cache_dir=mine)
    assert [p.name.startswith("modelnet40normals_test_") for p in mine.iterdir()] == [True]
