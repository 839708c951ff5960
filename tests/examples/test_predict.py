"""``python -m examples.normals predict``: users' files in, PLY with normals out.

The written PLY files are parsed by a minimal reader written here (not the library's), the
normals compared with calling the model directly, and the PCA estimate with analytic normals.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # models/ and examples/ run from a checkout
    sys.path.insert(0, str(ROOT))

from examples._normals_io import load_checkpoint  # noqa: E402
from examples._normals_model import build_model  # noqa: E402
from examples.normals import main  # noqa: E402

TINY = "tests.examples._normals_tiny:tiny"
CUBE_V = np.array([[x, y, z] for x in (0, 1.0) for y in (0, 1.0) for z in (0, 1.0)])
CUBE_F = np.array(
    [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
)


def read_ply_minimal(path):
    """Independent PLY reader: a ``vertex`` element of float/double scalar properties."""
    blob = Path(path).read_bytes()
    end = blob.index(b"end_header\n") + len(b"end_header\n")
    lines = blob[:end].decode("ascii").splitlines()
    assert lines[0] == "ply"
    fmt = lines[1].split()[1]
    n, props = None, []
    for ln in lines[2:]:
        t = ln.split()
        if t[0] == "element":
            assert t[1] == "vertex", ln
            n = int(t[2])
        elif t[0] == "property":
            props.append((t[2], {"float": "f4", "double": "f8"}[t[1]]))
    if fmt == "ascii":
        vals = np.array(blob[end:].decode().split(), dtype=np.float64).reshape(n, len(props))
        cols = {p: vals[:, i].astype(t).astype(np.float64) for i, (p, t) in enumerate(props)}
    else:
        endian = {"binary_little_endian": "<", "binary_big_endian": ">"}[fmt]
        dt = np.dtype([(p, endian + t) for p, t in props])
        assert len(blob) - end == n * dt.itemsize  # nothing missing, nothing extra
        arr = np.frombuffer(blob[end:], dtype=dt)
        cols = {p: arr[p].astype(np.float64) for p, _ in props}
    assert [p for p, _ in props] == ["x", "y", "z", "nx", "ny", "nz"]
    return (
        np.stack([cols[k] for k in "xyz"], 1),
        np.stack([cols[k] for k in ("nx", "ny", "nz")], 1),
    )


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    args = ["train", "--arch", TINY, "--flavour", "plain", "--root", str(out / "data")]
    args += ["--num-shapes", "8", "--num-test-shapes", "2", "--num-points", "32", "--epochs", "1"]
    args += ["--batch-size", "4", "--threads", "1", "--no-progress", "--out", str(out / "run")]
    assert main(args) == 0
    return str(out / "run" / "checkpoint.pt")


def _sphere(n, seed, radius=1.0, center=(0.0, 0.0, 0.0)):
    x = np.random.default_rng(seed).normal(size=(n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * radius + np.asarray(center)


def _write_inputs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    a = _sphere(300, 1, radius=250.0, center=(1e4, -3e3, 7.0))
    np.savetxt(folder / "ball.xyz", np.concatenate([a, np.ones((300, 1))], 1))
    np.save(folder / "blob.npy", _sphere(200, 2) * [1.0, 2.0, 0.5])
    lines = ["OFF", "8 6 0"] + [" ".join(map(str, v)) for v in CUBE_V]
    lines += ["4 " + " ".join(map(str, f)) for f in CUBE_F]
    (folder / "cube.off").write_text("\n".join(lines) + "\n")
    return {"ball": a, "blob": np.load(folder / "blob.npy"), "cube": CUBE_V}


def _direct(model, pos):
    """The model called directly on the centred, unit-radius cloud (eval mode)."""
    p = torch.as_tensor(pos, dtype=torch.float64)
    p = p - p.mean(0)
    p = p / p.norm(dim=1).max()
    with torch.no_grad():
        out = model.eval()(Batch.from_data_list([Data(pos=p.float())])).double()
    return (out / out.norm(dim=1, keepdim=True)).numpy()


@pytest.mark.parametrize("ascii_", [False, True])
def test_predict_checkpoint_end_to_end(tmp_path, tiny_ckpt, capsys, ascii_):
    inputs = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", tiny_ckpt, "--input", str(tmp_path / "in")]
    args += ["--output", str(out), "--no-progress", "--device", "cpu"] + ["--ascii"] * ascii_
    assert main(args) == 0
    stdout = capsys.readouterr().out
    ckpt = load_checkpoint(tiny_ckpt)
    model = build_model(ckpt["arch"], ckpt["flavour"], ckpt["options"])
    model.load_state_dict(ckpt["model"])
    assert sorted(p.name for p in out.iterdir()) == ["ball.ply", "blob.ply", "cube.ply"]
    for name, pos in inputs.items():
        got_pos, got_n = read_ply_minimal(out / f"{name}.ply")
        np.testing.assert_array_equal(got_pos, pos.astype(np.float32))
        np.testing.assert_allclose(np.linalg.norm(got_n, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(got_n, _direct(model, pos), atol=2e-6)
        line = next(ln for ln in stdout.splitlines() if f"{name}." in ln and "points/s" in ln)
        assert f"{len(pos)} points" in line
    assert not list((tmp_path / "in").glob("*.ply"))  # the input folder is untouched


def test_predict_models_checkpoint_matches_model_called_directly(tmp_path, capsys):
    import models
    from examples._normals_io import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    model = models.build("pointnet2", "pca", k=8, width=16)
    ckpt = {"format": CHECKPOINT_FORMAT, "arch": "pointnet2", "flavour": "pca", "epoch": 1}
    ckpt.update(options={"k": 8, "width": 16}, model=model.state_dict(), config={})
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    pos = _sphere(400, 3, radius=40.0, center=(100.0, 0.0, -50.0)) * [1.0, 0.6, 0.3]
    np.save(tmp_path / "ell.npy", pos)
    args = ["predict", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--no-progress"]
    assert main(args + ["--input", str(tmp_path / "ell.npy"), "--output", str(tmp_path)]) == 0
    _, n = read_ply_minimal(tmp_path / "ell.ply")
    want = _direct(model, pos)  # same orientation: the model's own output, normalised
    np.testing.assert_allclose(n, want, atol=1e-5)  # float32 round-off only


def test_predict_tiles_equal_one_piece_for_pca(tmp_path, capsys):
    np.save(tmp_path / "s.npy", _sphere(1500, 8) * [3.0, 1.0, 1.0])
    args = ["predict", "--arch", "pca", "--input", str(tmp_path / "s.npy"), "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "one")]) == 0
    assert main(args + ["--output", str(tmp_path / "tiles"), "--tile-points", "200"]) == 0
    _, one = read_ply_minimal(tmp_path / "one" / "s.ply")
    _, tiles = read_ply_minimal(tmp_path / "tiles" / "s.ply")
    np.testing.assert_allclose(np.abs((one * tiles).sum(1)), 1.0, atol=1e-6)


def test_predict_pca_matches_analytic_normals_at_any_scale(tmp_path, capsys):
    pos = _sphere(3000, 5, radius=1e-3, center=(5.0, 5.0, 5.0))
    np.save(tmp_path / "small.npy", pos)
    np.save(tmp_path / "large.npy", (pos - 5.0) * 1e6 + 3e4)
    out = tmp_path / "o"
    args = ["predict", "--arch", "pca", "--k", "12", "--input", str(tmp_path / "small.npy")]
    args += [str(tmp_path / "large.npy"), "--output", str(out), "--no-progress"]
    assert main(args) == 0
    radial = (pos - 5.0) / np.linalg.norm(pos - 5.0, axis=1, keepdims=True)
    normals = {}
    for name in ("small", "large"):
        _, n = read_ply_minimal(out / f"{name}.ply")
        err = np.degrees(np.arccos(np.clip(np.abs((n * radial).sum(1)), 0, 1)))
        assert err.mean() < 3.0, (name, err.mean())
        normals[name] = n
    # the same cloud in other units and placement: the same unoriented normals
    cos = np.abs((normals["small"] * normals["large"]).sum(1))
    assert np.degrees(np.arccos(np.clip(cos, 0, 1))).max() < 0.1


def test_predict_sample_draws_points_from_mesh_faces(tmp_path, capsys):
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["predict", "--arch", "pca", "--input", str(tmp_path / "in" / "cube.off")]
    args += ["--output", str(out), "--sample", "2000", "--seed", "4", "--no-progress"]
    assert main(args) == 0
    pos, n = read_ply_minimal(out / "cube.ply")
    assert pos.shape == (2000, 3)
    on_face = np.isclose(pos, 0, atol=1e-6) | np.isclose(pos, 1, atol=1e-6)
    assert on_face.any(1).all()
    # away from the edges the PCA normal is the face's axis
    axis = on_face.argmax(1)
    inner = ((pos > 0.2) & (pos < 0.8)).sum(1) == 2
    assert np.abs(n[inner, axis[inner]]).min() > 0.99
    assert "2000 points" in capsys.readouterr().out


def test_predict_refuses_collisions_and_overwriting_inputs(tmp_path, capsys):
    np.save(tmp_path / "a.npy", _sphere(50, 0))
    np.savetxt(tmp_path / "a.xyz", _sphere(50, 1))
    args = ["predict", "--arch", "pca", "--input", str(tmp_path / "a.npy"), str(tmp_path / "a.xyz")]
    assert main(args + ["--output", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a.npy and " in err and "a.xyz would both be written to" in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "b").mkdir()
    from tensorframes.data import write_ply

    write_ply(tmp_path / "b" / "c.ply", _sphere(50, 2))
    before = (tmp_path / "b" / "c.ply").read_bytes()
    args = ["predict", "--arch", "pca", "--input", str(tmp_path / "b"), "--output"]
    assert main(args + [str(tmp_path / "b"), "--no-progress"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert (tmp_path / "b" / "c.ply").read_bytes() == before


def test_predict_output_inside_input_folder_is_not_read_back(tmp_path, capsys):
    np.save(tmp_path / "a.npy", _sphere(60, 0))
    args = ["predict", "--arch", "pca", "--input", str(tmp_path), "--no-progress"]
    args += ["--output", str(tmp_path / "normals")]
    assert main(args) == 0
    assert main(args) == 0  # second run: normals/a.ply is not an input
    out = capsys.readouterr().out
    assert out.count("1 file(s)") == 2 and "normals/a.ply:" not in out


def test_predict_malformed_file_is_named_and_others_written(tmp_path, capsys):
    np.save(tmp_path / "good.npy", _sphere(60, 0))
    (tmp_path / "bad.xyz").write_text("0 0 0\n1 1 1\n2 nan 2\n")
    args = ["predict", "--arch", "pca", "--input", str(tmp_path), "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.xyz, line 3: non-finite" in err and "1 of 2 file(s) failed" in err
    assert (tmp_path / "o" / "good.ply").exists() and not (tmp_path / "o" / "bad.ply").exists()


def test_predict_bad_arguments(tmp_path, capsys):
    np.save(tmp_path / "a.npy", _sphere(60, 0))
    base = ["predict", "--input", str(tmp_path / "a.npy"), "--output", str(tmp_path / "o")]
    assert main(base + ["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    assert main(base + ["--arch", "pca", "--sample", "10"]) == 2
    assert "sample=10 needs a mesh" in capsys.readouterr().err
    assert main(["predict", "--arch", "pca", "--input", str(tmp_path / "x.ply"), "--output",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "x.ply: no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # neither --checkpoint nor --arch
        main(base)
