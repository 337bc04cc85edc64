"""The prediction directory (PRED_DIR) shared by ``crystalflow sample``, the baselines and ``evaluate``.

Layout of a finished PRED_DIR::

    PRED_DIR/
      info.json              run description + bookkeeping (see below); written last
      shards/pred-00000.h5   clusters 0 .. CLUSTERS_PER_SHARD-1, ragged arrays (see below)
      shards/pred-00001.h5   ...

``info.json`` holds whatever the producer passed (``method``, ``model``, ``dataset_dir``, ``split``,
``K``, ``steps``, ``solver``, ...; keys in :data:`INFO_KEYS` are always present, ``None`` when unknown)
plus ``format_version``, ``version`` (crystalflow), ``created`` (UTC ISO time), ``seconds`` (wall
time of the writer unless the producer set it), ``n_clusters``, ``shards`` (file names in order) and
``failures`` (``[{index, key, split, reason}]`` for clusters whose meta carries a ``failure``).

Each shard stores its clusters back to back (C clusters, cluster c has M molecules of n atoms, K
samples, T trajectory frames; A = M n atoms):

- ``x_w``, ``x_s``: float32 [sum A, 3] with ``atom_ptr`` int64 [C + 1]
- ``z``: uint8 [sum n] with ``z_ptr`` int64 [C + 1]; ``n_mol`` int32 [C]
- ``pred``: float32 [sum K A, 3] with ``pred_ptr`` int64 [C + 1]; ``n_samples`` int32 [C]
- ``traj``: float32 [sum T K A, 3] with ``traj_ptr`` int64 [C + 1]; ``n_frames`` int32 [C] (0: none)
- ``times``: float32 [sum T] with ``times_ptr`` int64 [C + 1]
- ``meta``: one JSON text per cluster (the dataset's ``clusters.csv`` row, plus ``failure`` when the
  producer could not predict this cluster; its ``pred`` is then NaN)

Datasets are resizable and appended cluster by cluster, so memory stays flat however many clusters
are written. The whole directory is built in ``PRED_DIR.tmp-<pid>`` and renamed onto ``PRED_DIR``
when the writer closes without error, so a PRED_DIR that exists is complete.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from types import TracebackType
from typing import NamedTuple

import h5py
import numpy as np

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import json_default, temp_path, write_json
from crystalflow.common.version import __version__
from crystalflow.data.shards import shard_errors

#: version of the PRED_DIR layout described in the module docstring
FORMAT_VERSION = 1
#: clusters per HDF5 shard before a new one is started
CLUSTERS_PER_SHARD = 1000
#: rows (atoms) per HDF5 chunk of the resizable coordinate datasets
CHUNK_ROWS = 4096
#: keys always present in info.json (``None`` when the producer did not give them)
INFO_KEYS = ("method", "model", "dataset_dir", "split", "K", "steps", "solver", "seconds", "version")
INFO_FILE = "info.json"
SHARD_DIR = "shards"
_STR = h5py.string_dtype("utf-8")
_PTR_NAMES = ("atom_ptr", "z_ptr", "pred_ptr", "traj_ptr", "times_ptr")


class PredictionItem(NamedTuple):
    """One predicted cluster as read back from a PRED_DIR."""

    meta: dict  #: clusters.csv row of the cluster (+ ``failure`` when the producer failed on it)
    x_w: np.ndarray  #: [M, n, 3] input
    x_s: np.ndarray  #: [M, n, 3] crystal (truth)
    z: np.ndarray  #: [n] atomic numbers (int64)
    pred: np.ndarray  #: [K, M, n, 3] predicted samples
    trajectory: np.ndarray | None  #: [T, K, M, n, 3] or None
    times: np.ndarray | None  #: [T] times of the trajectory frames or None


class _ShardWriter:
    """Append clusters to one HDF5 shard through resizable datasets."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = h5py.File(path, "w")
        self.file.attrs["format_version"] = FORMAT_VERSION
        f = self.file
        for name in ("x_w", "x_s", "pred", "traj"):
            f.create_dataset(name, shape=(0, 3), maxshape=(None, 3), dtype=np.float32, chunks=(CHUNK_ROWS, 3))
        f.create_dataset("z", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(CHUNK_ROWS,))
        f.create_dataset("times", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(CHUNK_ROWS,))
        for name in ("n_mol", "n_samples", "n_frames"):
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(CHUNK_ROWS,))
        f.create_dataset("meta", shape=(0,), maxshape=(None,), dtype=_STR, chunks=(256,))
        self.ptrs: dict[str, list[int]] = {name: [0] for name in _PTR_NAMES}
        self.n = 0

    def _append(self, name: str, values: np.ndarray) -> None:
        ds = self.file[name]
        start = ds.shape[0]
        ds.resize(start + values.shape[0], axis=0)
        ds[start:] = values

    def add(self, meta: dict, x_w, x_s, z, pred, traj, times) -> None:  # noqa: ANN001 - checked arrays
        """Append one checked cluster."""
        k, m, n, _ = pred.shape
        self._append("x_w", x_w.reshape(-1, 3))
        self._append("x_s", x_s.reshape(-1, 3))
        self._append("z", z.astype(np.uint8))
        self._append("pred", pred.reshape(-1, 3))
        n_frames = 0 if traj is None else traj.shape[0]
        if traj is not None:
            self._append("traj", traj.reshape(-1, 3))
            self._append("times", times)
        self._append("n_mol", np.array([m], np.int32))
        self._append("n_samples", np.array([k], np.int32))
        self._append("n_frames", np.array([n_frames], np.int32))
        self._append("meta", np.array([json.dumps(meta, default=json_default)], dtype=object))
        p = self.ptrs
        p["atom_ptr"].append(p["atom_ptr"][-1] + m * n)
        p["z_ptr"].append(p["z_ptr"][-1] + n)
        p["pred_ptr"].append(p["pred_ptr"][-1] + k * m * n)
        p["traj_ptr"].append(p["traj_ptr"][-1] + n_frames * k * m * n)
        p["times_ptr"].append(p["times_ptr"][-1] + n_frames)
        self.n += 1

    def close(self) -> None:
        """Write the offset tables and close the file."""
        for name, values in self.ptrs.items():
            self.file[name] = np.asarray(values, dtype=np.int64)
        self.file.attrs["n_clusters"] = self.n
        self.file.close()


def _check_arrays(x_w, x_s, z, pred, trajectory, times):  # noqa: ANN001, ANN202 - converts inputs
    """Convert and check the arrays of one cluster; return them as float32/int64 with pred [K, M, n, 3]."""
    x_s = np.asarray(x_s, dtype=np.float32)
    x_w = np.asarray(x_w, dtype=np.float32)
    if x_s.ndim != 3 or x_s.shape[-1] != 3:
        raise ValueError(f"x_s must have shape [M, n, 3], got {x_s.shape}")
    if x_w.shape != x_s.shape:
        raise ValueError(f"x_w {x_w.shape} and x_s {x_s.shape} differ")
    z = np.asarray(z).astype(np.int64).reshape(-1)
    if z.shape[0] != x_s.shape[1]:
        raise ValueError(f"z has {z.shape[0]} entries but molecules have {x_s.shape[1]} atoms")
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim == 3:
        pred = pred[None]
    if pred.ndim != 4 or pred.shape[1:] != x_s.shape:
        raise ValueError(f"pred must have shape [K, {', '.join(map(str, x_s.shape))}], got {pred.shape}")
    if trajectory is not None:
        trajectory = np.asarray(trajectory, dtype=np.float32)
        if trajectory.ndim != 5 or trajectory.shape[1:] != pred.shape:
            expected = ", ".join(map(str, pred.shape))
            raise ValueError(f"trajectory must have shape [T, {expected}], got {trajectory.shape}")
        n_frames = trajectory.shape[0]
        times = np.linspace(0.0, 1.0, n_frames) if times is None else times
        times = np.asarray(times, dtype=np.float32).reshape(-1)
        if times.shape[0] != n_frames:
            raise ValueError(f"times has {times.shape[0]} entries for {n_frames} trajectory frames")
    elif times is not None:
        raise ValueError("times given without a trajectory")
    return x_w, x_s, z, pred, trajectory, times


class PredictionWriter:
    """Stream predicted clusters into a new PRED_DIR (see the module docstring); use as a context manager.

    ``info`` describes the run (``method``, ``model``, ``dataset_dir``, ``split``, ``K``, ``steps``,
    ``solver``, ...); it stays editable as :attr:`info` until the writer closes. An existing
    non-empty ``pred_dir`` is an error unless ``overwrite`` is true, in which case it is replaced
    (metrics written into it before go too) only when the new one is complete.
    """

    def __init__(self, pred_dir: str, info: dict, overwrite: bool = False,
                 clusters_per_shard: int = CLUSTERS_PER_SHARD) -> None:
        if clusters_per_shard < 1:
            raise ValueError("clusters_per_shard must be >= 1")
        self.pred_dir = os.path.abspath(pred_dir)
        if os.path.exists(self.pred_dir) and not overwrite:
            if not os.path.isdir(self.pred_dir) or os.listdir(self.pred_dir):
                raise UserError(f"{pred_dir!r} already exists; choose another output or pass overwrite")
        self.info = dict(info)
        self.clusters_per_shard = clusters_per_shard
        self.tmp_dir = temp_path(self.pred_dir)
        self._shard: _ShardWriter | None = None
        self._shards: list[str] = []
        self._failures: list[dict] = []
        self._max_k = 0
        self.n_clusters = 0
        self._start = time.time()
        self._open = False

    def __enter__(self) -> "PredictionWriter":
        if os.path.exists(self.tmp_dir):
            shutil.rmtree(self.tmp_dir)
        prepare_output_dir(self.tmp_dir, (SHARD_DIR,), shown=self.pred_dir)
        self._open = True
        return self

    def add(self, meta: dict, x_w: np.ndarray, x_s: np.ndarray, z: np.ndarray, pred: np.ndarray,
            trajectory: np.ndarray | None = None, times: np.ndarray | None = None) -> None:
        """Append one cluster: its meta row, input, truth, atomic numbers and K samples ``[K, M, n, 3]``.

        ``trajectory`` ``[T, K, M, n, 3]`` with frame ``times`` ``[T]`` (default ``linspace(0, 1, T)``)
        is optional. A ``meta['failure']`` string marks a cluster the producer could not predict.
        """
        if not self._open:
            raise RuntimeError("PredictionWriter.add outside its 'with' block")
        x_w, x_s, z, pred, trajectory, times = _check_arrays(x_w, x_s, z, pred, trajectory, times)
        if self._shard is None or self._shard.n >= self.clusters_per_shard:
            self._close_shard()
            name = f"pred-{len(self._shards):05d}.h5"
            self._shard = _ShardWriter(os.path.join(self.tmp_dir, SHARD_DIR, name))
            self._shards.append(name)
        meta = dict(meta)
        self._shard.add(meta, x_w, x_s, z, pred, trajectory, times)
        if meta.get("failure"):
            self._failures.append({k: meta.get(k) for k in ("index", "key", "split")} | {"reason": meta["failure"]})
        self._max_k = max(self._max_k, pred.shape[0])
        self.n_clusters += 1

    def _close_shard(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def close(self) -> None:
        """Finish the shards, write info.json and move the directory into place."""
        if not self._open:
            return
        self._close_shard()
        info = {key: None for key in INFO_KEYS}
        info.update(self.info)
        if info.get("K") is None:
            info["K"] = self._max_k or None
        if info.get("seconds") is None:
            info["seconds"] = round(time.time() - self._start, 3)
        info.update(
            format_version=FORMAT_VERSION, version=__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            n_clusters=self.n_clusters, shards=list(self._shards),
            failures=list(self.info.get("failures", [])) + self._failures,
        )
        write_json(os.path.join(self.tmp_dir, INFO_FILE), info)
        old = None
        if os.path.exists(self.pred_dir):
            old = f"{self.pred_dir}.old-{os.getpid()}"
            os.replace(self.pred_dir, old)
        os.replace(self.tmp_dir, self.pred_dir)
        if old is not None and os.path.isdir(old):
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            os.remove(old)
        self._open = False

    def abort(self) -> None:
        """Drop everything written so far (the target directory is left untouched)."""
        if self._shard is not None:
            try:
                self._shard.file.close()
            finally:
                self._shard = None
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self._open = False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_info(pred_dir: str) -> dict:
    """The ``info.json`` of a finished PRED_DIR; :class:`UserError` when it is not one."""
    path = os.path.join(pred_dir, INFO_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{pred_dir!r} is not a prediction directory (no {INFO_FILE})")
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} (truncated or corrupt?): {exc}") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} is not a prediction directory's {INFO_FILE} (not a JSON object)")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{pred_dir!r} has prediction format {info['format_version']}; this crystalflow "
                        f"reads up to {FORMAT_VERSION}, please upgrade")
    return info


def _read_shard(path: str) -> Iterator[PredictionItem]:
    """Clusters of one prediction shard, in order."""
    with shard_errors(path), h5py.File(path, "r") as f:
        ptr = {name: f[name][()] for name in _PTR_NAMES}
        n_mol, n_samples, n_frames = f["n_mol"][()], f["n_samples"][()], f["n_frames"][()]
        metas = f["meta"].asstr()[()] if len(f["meta"]) else []
        for c in range(len(n_mol)):
            z = f["z"][ptr["z_ptr"][c] : ptr["z_ptr"][c + 1]].astype(np.int64)
            shape = (int(n_mol[c]), len(z), 3)
            a, b = ptr["atom_ptr"][c], ptr["atom_ptr"][c + 1]
            k, t = int(n_samples[c]), int(n_frames[c])
            pred = f["pred"][ptr["pred_ptr"][c] : ptr["pred_ptr"][c + 1]].reshape((k, *shape))
            traj = times = None
            if t:
                traj = f["traj"][ptr["traj_ptr"][c] : ptr["traj_ptr"][c + 1]].reshape((t, k, *shape))
                times = f["times"][ptr["times_ptr"][c] : ptr["times_ptr"][c + 1]]
            yield PredictionItem(
                meta=json.loads(metas[c]), x_w=f["x_w"][a:b].reshape(shape), x_s=f["x_s"][a:b].reshape(shape),
                z=z, pred=pred, trajectory=traj, times=times,
            )


def read_predictions(pred_dir: str) -> Iterator[PredictionItem]:
    """Iterate over the clusters of a PRED_DIR in the order they were written (one cluster in memory)."""
    info = read_info(pred_dir)
    for name in info.get("shards", []):
        path = os.path.join(pred_dir, SHARD_DIR, name)
        if not os.path.isfile(path):
            raise UserError(f"prediction shard {path!r} listed in {INFO_FILE} is missing")
        yield from _read_shard(path)
