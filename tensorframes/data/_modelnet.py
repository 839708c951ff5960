"""``ModelNet40Normals``: the ``modelnet40_normal_resampled`` point clouds with normals."""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from ._cache import CachedInMemoryDataset, default_cache_dir, file_fingerprint
from ._validate import check_points

EXPECTED_LAYOUT = """\
<root>/
    modelnet40_shape_names.txt     one class name per line (airplane, bathtub, ...)
    modelnet40_train.txt           one shape id per line (airplane_0001, ...)
    modelnet40_test.txt            one shape id per line
    airplane/
        airplane_0001.txt          one point per line: x,y,z,nx,ny,nz (comma separated)
        ...
    <class>/<class>_NNNN.txt       (the class of an id is the id minus its trailing _NNNN)"""


class ModelNet40Normals(CachedInMemoryDataset):
    r"""ModelNet40 point clouds with surface normals (``modelnet40_normal_resampled``).

    The data set of PointNet++ (Qi et al., 2017): 12,311 CAD models of 40 classes, each given as
    10,000 points with normals. **It is never downloaded**: fetch
    ``modelnet40_normal_resampled.zip`` yourself (distributed by the PointNet++ authors,
    https://github.com/charlesq34/pointnet2, and mirrored on e.g. Hugging Face and Kaggle),
    unzip it and pass the folder as ``root``. Expected layout::

        <root>/
            modelnet40_shape_names.txt     one class name per line
            modelnet40_train.txt           one shape id per line (airplane_0001, ...)
            modelnet40_test.txt
            <class>/<class>_NNNN.txt       lines "x,y,z,nx,ny,nz"

    Missing files raise ``FileNotFoundError`` naming the path and printing this layout;
    malformed lines (wrong number of fields, non-numeric or non-finite values, a zero-length
    normal) raise ``ValueError`` naming the file and the 1-based line number. Blank lines are
    skipped. Normals are normalised to unit length. The processed cache is written to
    ``cache_dir``, by default ``default_cache_dir("modelnet40normals", root)``
    (``~/.cache/tensorframes/...``, honouring ``XDG_CACHE_HOME``; nothing is written into
    ``root``); its name encodes the options and it is rebuilt if the raw files change (size or
    modification time) or the file is corrupted.

    Args:
        root: the ``modelnet40_normal_resampled`` folder.
        split: ``"train"`` or ``"test"``.
        num_points: keep the first ``num_points`` points of each file (the files are already
            uniformly resampled, as in PointNet++); ``None`` keeps all. A file with fewer
            points raises ``ValueError``.
        classes: restrict to these class names (``y`` stays the index in
            ``modelnet40_shape_names.txt``, so labels agree across subsets).
        transform, pre_transform, force_reload: as in PyG.
        cache_dir: folder of the processed file (default: see above).

    Every :class:`~torch_geometric.data.Data` has ``pos`` ``(N, 3)`` float32, ``normal``
    ``(N, 3)`` float32 unit vectors and ``y`` ``(1,)`` the class index. The shape ids are in
    :attr:`shape_ids`, the class names in :attr:`classes`.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        *,
        num_points: int | None = None,
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_points is not None and (
            isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1
        ):
            raise ValueError(f"num_points must be None or a positive integer, got {num_points!r}")
        self.split = split
        self.num_points = num_points
        root = osp.expanduser(os.fspath(root))
        self._root = root
        self.classes = self._read_list("modelnet40_shape_names.txt")
        if not self.classes:
            raise ValueError(f"{osp.join(root, 'modelnet40_shape_names.txt')} lists no classes")
        if classes is not None:
            if isinstance(classes, str):
                classes = [classes]
            unknown = sorted(set(classes) - set(self.classes))
            if unknown:
                raise ValueError(
                    f"unknown classes {unknown}; known (modelnet40_shape_names.txt): {self.classes}"
                )
            self._selected = sorted(set(classes), key=self.classes.index)
        else:
            self._selected = list(self.classes)
        self.shape_ids, self._files = self._index()
        if cache_dir is None:
            cache_dir = default_cache_dir("modelnet40normals", root)
        super().__init__(root, transform, pre_transform, force_reload, cache_dir=cache_dir)

    # --------------------------------------------------------------------------- index
    @property
    def raw_dir(self) -> str:
        return self._root

    def _read_list(self, name: str) -> list[str]:
        path = osp.join(self._root, name)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"ModelNet40Normals: missing file {path}. This dataset is never downloaded; "
                f"expected the modelnet40_normal_resampled layout:\n{EXPECTED_LAYOUT}"
            )
        with open(path, encoding="utf-8") as fh:
            return [ln.strip() for ln in fh if ln.strip()]

    def _index(self) -> tuple[list[str], list[str]]:
        split_file = f"modelnet40_{self.split}.txt"
        ids, files, missing = [], [], []
        selected = set(self._selected)
        for sid in self._read_list(split_file):
            cls, sep, num = sid.rpartition("_")
            if not sep or not cls or not num.isdigit():
                raise ValueError(
                    f"{osp.join(self._root, split_file)}: shape id {sid!r} is not of the form "
                    f"<class>_NNNN"
                )
            if cls not in self.classes:
                raise ValueError(
                    f"{osp.join(self._root, split_file)}: shape id {sid!r} has class {cls!r}, "
                    "which is not in modelnet40_shape_names.txt"
                )
            if cls not in selected:
                continue
            rel = osp.join(cls, sid + ".txt")
            if not osp.isfile(osp.join(self._root, rel)):
                missing.append(osp.join(self._root, rel))
            ids.append(sid)
            files.append(rel)
        if not ids:
            raise ValueError(
                f"{osp.join(self._root, split_file)} lists no shapes of classes {self._selected}"
            )
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"ModelNet40Normals: missing file {missing[0]}{more}, listed in "
                f"{osp.join(self._root, split_file)}. Expected layout:\n{EXPECTED_LAYOUT}"
            )
        return ids, files

    # --------------------------------------------------------------------------- cache
    def _cache_prefix(self) -> str:
        return f"modelnet40normals_{self.split}_{self.num_points or 'all'}"

    def _cache_key(self) -> dict:
        return {
            "split": self.split,
            "num_points": self.num_points,
            "classes": self._selected,
            "shape_ids": self.shape_ids,
        }

    def _fingerprint(self) -> str:
        return file_fingerprint(self._root, self._files)

    def _generate(self) -> tuple[list[Data], dict]:
        data_list = []
        for sid, rel in zip(self.shape_ids, self._files):
            path = osp.join(self._root, rel)
            pos, normal = read_xyz_normal(path)
            if self.num_points is not None:
                if len(pos) < self.num_points:
                    raise ValueError(
                        f"{path}: has {len(pos)} points, fewer than num_points={self.num_points}"
                    )
                pos, normal = pos[: self.num_points], normal[: self.num_points]
            check_points(pos, normal, path)
            y = self.classes.index(sid.rpartition("_")[0])
            data_list.append(
                Data(
                    pos=torch.from_numpy(pos.astype(np.float32)),
                    normal=torch.from_numpy(normal.astype(np.float32)),
                    y=torch.tensor([y]),
                )
            )
        return data_list, {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)}, split={self.split!r})"


def read_xyz_normal(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``x,y,z,nx,ny,nz`` text file; returns float64 positions and unit normals.

    Raises ``ValueError`` naming ``path`` and the 1-based line number for a malformed line."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from None
    numbers = [i + 1 for i, ln in enumerate(lines) if ln.strip()]
    content = [lines[i - 1] for i in numbers]
    if not content:
        raise ValueError(f"{path}: no points (expected lines 'x,y,z,nx,ny,nz')")
    commas = np.fromiter((ln.count(",") for ln in content), dtype=np.int64, count=len(content))
    bad = np.flatnonzero(commas != 5)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{path}, line {numbers[i]}: expected 6 comma-separated values x,y,z,nx,ny,nz, "
            f"got {commas[i] + 1}: {content[i]!r}"
        )
    try:
        values = np.array(",".join(content).split(","), dtype=np.float64).reshape(-1, 6)
    except ValueError:
        for no, ln in zip(numbers, content):
            try:
                [float(v) for v in ln.split(",")]
            except ValueError:
                raise ValueError(f"{path}, line {no}: non-numeric value in {ln!r}") from None
        raise  # pragma: no cover - the loop above always finds the culprit
    bad = np.flatnonzero(~np.isfinite(values).all(1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}, line {numbers[i]}: non-finite value (NaN/inf) in {content[i]!r}")
    norms = np.linalg.norm(values[:, 3:], axis=1)
    bad = np.flatnonzero(norms <= 1e-12)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}, line {numbers[i]}: zero-length normal in {content[i]!r}")
    return values[:, :3], values[:, 3:] / norms[:, None]
