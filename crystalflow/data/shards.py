"""On-disk dataset format: HDF5 shards of ragged cluster arrays, written whole or not at all.

One shard holds the clusters (and the rejects) of one chunk of input files:

- ``x_s``, ``x_w``: float32 [A, 3], the atoms of all clusters, cluster after cluster, molecule-major
- ``atom_ptr``: int64 [C + 1], cluster c owns rows ``atom_ptr[c]:atom_ptr[c+1]``
- ``z``: uint8 [B], the atomic numbers of one molecule per cluster; ``z_ptr`` int64 [C + 1]
- ``n_mol``: int16 [C], molecules per cluster (17 for COD-Cluster17)
- ``meta``: JSON text per cluster; ``rejects``: JSON text per rejected file

A shard is written atomically (:func:`crystalflow.common.io.atomic_path`), so a shard file that exists is whole;
one damaged afterwards (a cut copy, a full disk) is reported by :func:`shard_errors` as one line.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Iterator

import h5py
import numpy as np

from crystalflow.common.errors import UserError
from crystalflow.common.io import atomic_path

FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")
#: characters of h5py's message kept in the one-line error
_MAX_DETAIL = 160


@contextlib.contextmanager
def shard_errors(path: str) -> Iterator[None]:
    """Read the HDF5 file ``path`` inside: h5py's errors on a missing, truncated or corrupt file become a
    one-line :class:`UserError` naming it (dataset shards and prediction shards alike)."""
    try:
        yield
    # h5py raises OSError for unreadable files and blocks, KeyError for missing parts; damaged contents give
    # ValueError (text that is not JSON, arrays of the wrong size) or IndexError (offsets out of range)
    except (OSError, LookupError, ValueError) as exc:
        if not os.path.exists(path):
            raise UserError(f"shard {path} is missing") from None
        detail = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
        detail = (detail.splitlines() or [type(exc).__name__])[0][:_MAX_DETAIL]
        raise UserError(f"cannot read shard {path} (truncated or corrupt?): {detail}") from None


@dataclass
class ClusterRecord:
    """One training example: target x_s and input x_w [M, n, 3], atomic numbers z [n], metadata."""

    x_s: np.ndarray
    x_w: np.ndarray
    z: np.ndarray
    meta: dict = field(default_factory=dict)


def write_shard(path: str, records: list[ClusterRecord], rejects: list[dict]) -> None:
    """Write a complete shard atomically (a temporary file renamed onto ``path``)."""
    n_atoms = [r.x_s.shape[0] * r.x_s.shape[1] for r in records]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["n_clusters"] = len(records)
        empty = np.zeros((0, 3), np.float32)
        f["x_s"] = np.concatenate([r.x_s.reshape(-1, 3) for r in records]).astype(np.float32) if records else empty
        f["x_w"] = np.concatenate([r.x_w.reshape(-1, 3) for r in records]).astype(np.float32) if records else empty
        f["atom_ptr"] = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
        f["z"] = np.concatenate([r.z for r in records]).astype(np.uint8) if records else np.zeros(0, np.uint8)
        f["z_ptr"] = np.concatenate([[0], np.cumsum([len(r.z) for r in records])]).astype(np.int64)
        f["n_mol"] = np.array([r.x_s.shape[0] for r in records], dtype=np.int16)
        f.create_dataset("meta", data=[json.dumps(r.meta) for r in records], dtype=_STR)
        f.create_dataset("rejects", data=[json.dumps(r) for r in rejects], dtype=_STR)


def read_shard_tables(path: str) -> tuple[list[dict], list[dict]]:
    """The per-cluster metadata and the rejects of a shard (no coordinates are read)."""
    with shard_errors(path), h5py.File(path, "r") as f:
        meta = [json.loads(s) for s in f["meta"].asstr()[()]] if len(f["meta"]) else []
        rejects = [json.loads(s) for s in f["rejects"].asstr()[()]] if len(f["rejects"]) else []
    return meta, rejects


class ShardReader:
    """Random access to the clusters of one shard; opens the file lazily (and again after a fork)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: h5py.File | None = None
        self._pid = -1
        self._ptr: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            f = self._file
            self._ptr = (f["atom_ptr"][()], f["z_ptr"][()], f["n_mol"][()])
        return self._file

    def check(self) -> None:
        """Open the shard and read its offset tables, then close it; :class:`UserError` when it is unreadable."""
        with shard_errors(self.path):
            self._open()
        self.close()

    def read(self, i: int) -> ClusterRecord:
        """Cluster ``i`` of this shard (without metadata)."""
        with shard_errors(self.path):
            f = self._open()
            atom_ptr, z_ptr, n_mol = self._ptr
            a, b = atom_ptr[i], atom_ptr[i + 1]
            z = f["z"][z_ptr[i] : z_ptr[i + 1]].astype(np.int64)
            shape = (int(n_mol[i]), len(z), 3)
            return ClusterRecord(x_s=f["x_s"][a:b].reshape(shape), x_w=f["x_w"][a:b].reshape(shape), z=z)

    def close(self) -> None:
        """Close the file handle if open."""
        if self._file is not None:
            self._file.close()
            self._file = None
