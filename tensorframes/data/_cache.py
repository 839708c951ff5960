"""A verified on-disk cache for in-memory datasets (shared by every dataset in this package).

PyG's ``InMemoryDataset`` regenerates a processed file only when it is missing, and merely warns
when ``pre_transform`` changed. The datasets here need more: every option that changes the
tensors is part of the processed file's name (readable prefix + SHA-256 digest of the options),
and the file itself stores the full option key, a fingerprint of the raw inputs and a checksum of
its tensors. On load all three are compared; a file written with other options, from other raw
files, truncated or otherwise corrupted is regenerated (with a warning), never used silently.
Files are written atomically (temporary file + ``os.replace``). The two PyG internals this
relies on (running ``process()`` on every construction, installing the collated storage) go
through :mod:`tensorframes._compat`. ``pre_transform`` enters the
key through its ``repr``: give it a stable one (PyG transforms have), since e.g. a lambda's
``repr`` changes from run to run and then gets a fresh cache file every time.

Where the processed file goes: ``cache_dir`` when given, else the class's default.
:class:`~tensorframes.data.SyntheticShapes` (generated data) keeps it in ``root/processed``;
datasets read from a user's folder (:class:`~tensorframes.data.MeshFolder`,
:class:`~tensorframes.data.ModelNet40Normals`) never write into that folder unasked: their
default is :func:`default_cache_dir` (``$XDG_CACHE_HOME/tensorframes``, else
``~/.cache/tensorframes``) ``/<dataset>/<folder name>-<digest of its absolute path>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from .._compat import ProcessAlwaysInMemoryDataset, set_collated_storage

#: Bumped whenever the generated content or the file layout changes.
CACHE_FORMAT = 1


def default_cache_dir(
    kind: str | None = None,
    root: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
) -> str:
    """The user's cache folder of this library: ``base`` if given, else
    ``$XDG_CACHE_HOME/tensorframes`` (when the variable is set and absolute), else
    ``~/.cache/tensorframes``.

    With ``kind`` (a dataset's name) and ``root`` (its data folder) the folder for that data
    set: ``<cache>/<kind>/<basename of root>-<sha256 of its absolute path, 12 hex>``, so data
    folders that share a name get separate caches."""
    if base is not None:
        path = osp.expanduser(os.fspath(base))
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        if not xdg or not osp.isabs(xdg):
            xdg = osp.join(osp.expanduser("~"), ".cache")
        path = osp.join(xdg, "tensorframes")
    if kind is None:
        return path
    path = osp.join(path, kind)
    if root is None:
        return path
    absolute = osp.abspath(osp.expanduser(os.fspath(root)))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", osp.basename(absolute.rstrip(os.sep))) or "root"
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:12]
    return osp.join(path, f"{name}-{digest}")


class CacheWarning(UserWarning):
    """Emitted when a processed file is stale or corrupted and is regenerated."""


class _StaleCache(Exception):
    pass


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _tensor_checksum(data_dict: dict, slices: dict) -> str:
    h = hashlib.sha256()
    for prefix, mapping in (("d", data_dict), ("s", slices or {})):  # slices: None for 1 item
        for name in sorted(mapping):
            value = mapping[name]
            h.update(f"{prefix}:{name}:".encode())
            if isinstance(value, torch.Tensor):
                t = value.detach().cpu().contiguous()
                h.update(f"{t.dtype}:{tuple(t.shape)}:".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            else:
                h.update(repr(value).encode())
    return h.hexdigest()


def _repr_transform(transform: Any) -> str | None:
    return None if transform is None else repr(transform)


class CachedInMemoryDataset(ProcessAlwaysInMemoryDataset):
    """Base class: subclasses define :meth:`_cache_key`, :meth:`_cache_prefix` and
    :meth:`_generate` (and optionally :meth:`_fingerprint`).

    :meth:`process` runs on every construction (not only when the file is missing) and decides
    itself whether the processed file is valid. ``cache_dir`` (if not ``None``) is the folder
    of the processed file, instead of PyG's ``root/processed``.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        self._loaded: tuple[Data, dict, dict] | None = None
        if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
            raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
        self._cache_dir = None if cache_dir is None else osp.expanduser(os.fspath(cache_dir))
        super().__init__(
            str(root), transform, pre_transform, None, log=False, force_reload=force_reload
        )
        if self._loaded is None:  # pragma: no cover - _process always sets it
            raise RuntimeError("internal error: processed data was not loaded")
        data, slices, extra = self._loaded
        self._loaded = None
        set_collated_storage(self, data, slices)
        self._set_extra(extra)

    @property
    def processed_dir(self) -> str:
        """The folder of the processed file (``cache_dir``, or PyG's ``root/processed``)."""
        return self._cache_dir if self._cache_dir is not None else super().processed_dir

    # ----------------------------------------------------------------- subclass hooks
    def _cache_prefix(self) -> str:
        raise NotImplementedError

    def _cache_key(self) -> dict:
        raise NotImplementedError

    def _fingerprint(self) -> str:
        """A digest of the raw inputs (files); empty for generated data."""
        return ""

    def _generate(self) -> tuple[list[Data], dict]:
        raise NotImplementedError

    def _set_extra(self, extra: dict) -> None:
        """Receives the JSON-able metadata returned by :meth:`_generate`."""

    # ----------------------------------------------------------------- cache machinery
    def _full_key(self) -> str:
        key = dict(self._cache_key())
        key["__class__"] = type(self).__name__
        key["__format__"] = CACHE_FORMAT
        key["__pre_transform__"] = _repr_transform(self.pre_transform)
        return _canonical_json(key)

    @property
    def processed_file_names(self) -> list[str]:
        digest = hashlib.sha256(self._full_key().encode()).hexdigest()[:20]
        return [f"{self._cache_prefix()}_{digest}.pt"]

    @property
    def raw_file_names(self) -> list[str]:  # nothing is ever downloaded
        return []

    def process(self) -> None:
        """Load the processed file if it is valid, else generate and write it."""
        path = self.processed_paths[0]
        key = self._full_key()
        fingerprint = self._fingerprint()
        if not self.force_reload and osp.exists(path):
            try:
                self._loaded = self._read(path, key, fingerprint)
                return
            except _StaleCache as err:
                warnings.warn(
                    f"{type(self).__name__}: processed file {path} {err}; regenerating it",
                    CacheWarning,
                    stacklevel=3,
                )
        data_list, extra = self._generate()
        if not data_list:
            raise ValueError(f"{type(self).__name__}: nothing to load (no items)")
        if self.pre_transform is not None:
            data_list = [self.pre_transform(d) for d in data_list]
        data, slices = self.collate(data_list)
        data_dict = data.to_dict()
        payload = {
            "format": CACHE_FORMAT,
            "key": key,
            "fingerprint": fingerprint,
            "checksum": _tensor_checksum(data_dict, slices),
            "data": data_dict,
            "slices": slices,
            "extra": extra,
        }
        os.makedirs(self.processed_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.processed_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, path)
        except BaseException:
            if osp.exists(tmp):
                os.unlink(tmp)
            raise
        self._loaded = (data, slices, extra)

    @staticmethod
    def _read(path: str, key: str, fingerprint: str) -> tuple[Data, dict, dict]:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated / garbage / foreign pickle
            raise _StaleCache(f"cannot be read ({type(err).__name__}: {err})") from None
        if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
            raise _StaleCache("has an unknown format")
        if payload.get("key") != key:
            raise _StaleCache("was written with different options")
        if payload.get("fingerprint") != fingerprint:
            raise _StaleCache("was built from different raw files")
        try:
            data_dict, slices = payload["data"], payload["slices"]
            ok = payload["checksum"] == _tensor_checksum(data_dict, slices)
        except Exception:
            ok = False
        if not ok:
            raise _StaleCache("is corrupted (checksum mismatch)")
        return Data.from_dict(data_dict), slices, payload.get("extra", {})


def file_fingerprint(root: str, relpaths: list[str]) -> str:
    """Digest of (relative path, size, mtime) of raw files under ``root``, so that edited, added
    or removed raw files invalidate the cache."""
    h = hashlib.sha256()
    for rel in relpaths:
        st = os.stat(osp.join(root, rel))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
