"""The released COD-Cluster17 CSV layout: export a dataset directory to it and import it back.

Layout of RAW_DIR (as published by the paper's authors, plus three optional side files)::

    FinalPositions/{id}_cluster16.csv            x_s, the crystal cluster (target)
    InitialPositions/{id}_cluster16_noised.csv   x_w, the noised cluster (input)
    split.csv       id,split                       (written by export; absent in the published data)
    metadata.csv    id,key,sample,name,...,cell     (written by export; absent in the published data)
    export.json     source dataset and build settings (written by export)

Each cluster file has the header line ``mol_idx,atom,x,y,z`` and one row per atom: the molecule
index (0 = the central molecule, written first), the element symbol and Cartesian coordinates in Å
written with ``%.9g``, enough digits that float32 values read back bit-identical.

Import streams the pairs in chunks into HDF5 shards (see :mod:`crystalflow.data.shards`) and writes the
same dataset-directory layout as :mod:`crystalflow.data.build`; bad pairs become rejects with a reason.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
from typing import Iterator

import numpy as np
from tqdm import tqdm

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import REASONS, UserError
from crystalflow.common.io import atomic_open, is_temp_name, write_json, write_text
from crystalflow.common.version import __version__
from crystalflow.common.vocabulary import ALL_SPLITS, SPLITS
from crystalflow.data.index import (
    CLUSTERS_FILE,
    SHARD_DIR,
    assign_splits,
    check_dataset,
    iter_clusters,
    iter_index,
    write_index,
)
from crystalflow.data.shards import ClusterRecord, read_shard_tables, write_shard
from crystalflow.structure.contacts import max_overlap
from crystalflow.structure.elements import atomic_number, formula, symbol
from crystalflow.structure.geometry import batched_rotations

FORMAT = "cod-cluster17-csv"
FINAL_DIR = "FinalPositions"
INITIAL_DIR = "InitialPositions"
FINAL_SUFFIX = "_cluster16.csv"
INITIAL_SUFFIX = "_cluster16_noised.csv"
SPLIT_FILE = "split.csv"
METADATA_FILE = "metadata.csv"
EXPORT_FILE = "export.json"
HEADER = "mol_idx,atom,x,y,z"
N_FIELDS = 5
#: printf format of one atom row; 9 significant digits round-trip any float32 exactly
ROW_FORMAT = "%d,%s,%.9g,%.9g,%.9g\n"
#: fewest molecules a cluster may have (COD-Cluster17 has 17)
MIN_MOLECULES = 2
#: clusters per shard written by the import (bounds memory: one chunk is held at a time)
IMPORT_CHUNK = 512
#: longest id (before the file-name suffix) an export writes
MAX_ID_LENGTH = 100
#: per-cluster metadata carried by metadata.csv (the shard metadata a build writes)
META_COLUMNS = [
    "key", "sample", "name", "cod_id", "formula", "spacegroup", "sg_number", "z_prime", "z",
    "n_atoms", "n_molecules", "density", "source", "cell", "noise_angle", "noise_push",
]
_INT_META = ("sample", "sg_number", "z", "n_atoms", "n_molecules")
_FLOAT_META = ("z_prime", "density", "noise_angle", "noise_push")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_MAX_DETAIL = 300


# --------------------------------------------------------------------------- export


def cluster_id(meta: dict, with_sample: bool) -> str:
    """File-name-safe id of a cluster: its COD id, else its name (else key stem / index), plus ``_{sample}``."""
    key_stem = os.path.splitext(os.path.basename(str(meta.get("key") or "")))[0]
    base = str(meta.get("cod_id") or meta.get("name") or key_stem or f"cluster{meta.get('index', 0)}")
    base = _UNSAFE.sub("_", base).lstrip(".-")[:MAX_ID_LENGTH] or f"cluster{meta.get('index', 0)}"
    return f"{base}_{meta['sample']}" if with_sample else base


def format_cluster(x: np.ndarray, z: np.ndarray) -> str:
    """The CSV text of one cluster [M, n, 3] with atomic numbers z [n] (header included)."""
    m, n = x.shape[:2]
    symbols = [symbol(int(v)) for v in z] * m
    mol = np.repeat(np.arange(m), n).tolist()
    xyz = np.asarray(x, dtype=np.float32).astype(np.float64).reshape(-1, 3).T.tolist()
    return HEADER + "\n" + "".join([ROW_FORMAT % r for r in zip(mol, symbols, *xyz)])


def _meta_cell(value: object) -> str:
    """One metadata.csv cell: lists (the cell) space-separated, None empty, numbers as repr (exact)."""
    if isinstance(value, (list, tuple)):
        return " ".join(repr(float(v)) for v in value)
    return "" if value is None else str(value)


def _samples_per_crystal(dataset_dir: str) -> int:
    try:
        with open(os.path.join(dataset_dir, "build.json")) as f:
            return int((json.load(f).get("settings") or {}).get("samples_per_crystal", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


def assign_ids(dataset_dir: str) -> dict[int, str]:
    """Cluster index -> unique, file-name-safe id, over every split (so an id does not depend on the split).

    ``_{sample}`` is appended when the dataset has several samples per crystal (build.json's
    samples_per_crystal > 1, or any sample > 0); clashes, case-insensitive, get ``-2``, ``-3``...
    """
    check_dataset(dataset_dir, ALL_SPLITS)
    with_sample = _samples_per_crystal(dataset_dir) > 1
    if not with_sample:
        with_sample = any(r["sample"] > 0 for r in iter_index(dataset_dir))
    ids: dict[int, str] = {}
    used: set[str] = set()
    for r in iter_index(dataset_dir):
        base = cluster_id(r, with_sample)
        cid, k = base, 1
        while cid.casefold() in used:
            k += 1
            cid = f"{base}-{k}"
        used.add(cid.casefold())
        ids[r["index"]] = cid
    return ids


def export_cluster17(dataset_dir: str, out_dir: str, split: str = ALL_SPLITS, progress: bool = True) -> int:
    """Write the clusters of ``split`` in the COD-Cluster17 CSV layout; returns the number written.

    Ids come from :func:`assign_ids`. Stale ``*_cluster16*.csv`` files of an earlier export into
    ``out_dir`` are removed, so that an import reads exactly this export.
    """
    check_dataset(dataset_dir, split)
    ids = assign_ids(dataset_dir)
    total = sum(1 for _ in iter_index(dataset_dir, split))
    if total == 0:
        raise UserError(f"no clusters in split {split!r} of {dataset_dir!r}")
    prepare_output_dir(out_dir, (FINAL_DIR, INITIAL_DIR))
    written: set[str] = set()
    meta_path, split_path = os.path.join(out_dir, METADATA_FILE), os.path.join(out_dir, SPLIT_FILE)
    with atomic_open(meta_path) as meta_f, atomic_open(split_path) as split_f, \
            tqdm(total=total, unit="cluster", desc="export", disable=not progress, file=sys.stderr) as bar:
        meta_w, split_w = csv.writer(meta_f), csv.writer(split_f)
        meta_w.writerow(["id", *META_COLUMNS])
        split_w.writerow(["id", "split"])
        for rec in iter_clusters(dataset_dir, split, shard_meta=True):
            cid, meta = ids[rec.meta["index"]], rec.meta
            write_text(os.path.join(out_dir, FINAL_DIR, cid + FINAL_SUFFIX), format_cluster(rec.x_s, rec.z))
            write_text(os.path.join(out_dir, INITIAL_DIR, cid + INITIAL_SUFFIX), format_cluster(rec.x_w, rec.z))
            written.add(cid)
            split_w.writerow([cid, meta["split"]])
            meta_w.writerow([cid, *[_meta_cell(meta.get(k)) for k in META_COLUMNS]])
            bar.update(1)
    _remove_stale(out_dir, written)
    write_json(os.path.join(out_dir, EXPORT_FILE), {
        "format": FORMAT,
        "version": __version__,
        "source": os.path.abspath(dataset_dir),
        "split": split,
        "clusters": len(written),
        "settings": _source_settings(dataset_dir),
    })
    return len(written)


def _remove_stale(out_dir: str, written: set[str]) -> None:
    for sub, suffix in ((FINAL_DIR, FINAL_SUFFIX), (INITIAL_DIR, INITIAL_SUFFIX)):
        folder = os.path.join(out_dir, sub)
        for name in os.listdir(folder):
            if name.endswith(suffix) and name[: -len(suffix)] not in written:
                os.remove(os.path.join(folder, name))


def _source_settings(dataset_dir: str) -> dict | None:
    try:
        with open(os.path.join(dataset_dir, "build.json")) as f:
            return json.load(f).get("settings")
    except (OSError, ValueError, AttributeError):
        return None


# --------------------------------------------------------------------------- import


class _Bad(Exception):
    """A pair that cannot be imported: a reject reason (from errors.REASONS) and a detail line."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail[:_MAX_DETAIL]


def parse_cluster_csv(path: str, label: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one cluster file: (molecule ids [M], atomic numbers z [n], coordinates [M, n, 3] float64).

    Molecules come in increasing ``mol_idx`` order, atoms in file order. A first line whose first
    field is not an integer is a header. Raises ``_Bad`` (reason and detail) for anything malformed.
    """
    label = label or path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise _Bad("unreadable", f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise _Bad("unreadable", f"{label}: {exc.strerror or exc}") from None
    raw = text.replace(" ", "").replace("\t", "").splitlines()
    lines = [ln for ln in raw if ln]
    skip = 1 if lines and not _is_int(lines[0].split(",", 1)[0]) else 0  # the header line
    lines = lines[skip:]
    if not lines:
        raise _Bad("unreadable", f"{label}: no atom rows")

    def line_no(j: int) -> int:  # file line number of data row j (only needed for error messages)
        return [k for k, ln in enumerate(raw, 1) if ln][skip + j]

    fields = [ln.split(",") for ln in lines]
    if any(len(r) != N_FIELDS for r in fields):
        j = next(j for j, r in enumerate(fields) if len(r) != N_FIELDS)
        raise _Bad("unreadable", f"{label}: line {line_no(j)}: expected {N_FIELDS} comma-separated fields, "
                                 f"got {len(fields[j])}")
    cols = list(zip(*fields))
    try:
        mol = np.fromiter(map(int, cols[0]), np.int64, len(cols[0]))
    except ValueError:
        j = next(j for j, v in enumerate(cols[0]) if not _is_int(v))
        raise _Bad("unreadable",
                   f"{label}: line {line_no(j)}: molecule index {cols[0][j]!r} is not an integer") from None
    number = {s: atomic_number(s) for s in set(cols[1])}
    bad = [s for s, zv in number.items() if zv == 0]
    if bad:
        j = next(j for j, v in enumerate(cols[1]) if number[v] == 0)
        raise _Bad("unknown_element", f"{label}: line {line_no(j)}: unknown element symbol {cols[1][j]!r}")
    z_all = np.array([number[s] for s in cols[1]], dtype=np.int64)
    try:
        xyz = np.array([list(map(float, c)) for c in cols[2:5]], dtype=np.float64).T
    except ValueError:
        j, v = next((j, v) for j, r in enumerate(fields) for v in r[2:] if not _is_float(v))
        raise _Bad("unreadable", f"{label}: line {line_no(j)}: coordinate {v!r} is not a number") from None
    if not np.all(np.isfinite(xyz)):
        j = int(np.argmin(np.isfinite(xyz).all(axis=1)))
        raise _Bad("unreadable", f"{label}: line {line_no(j)}: coordinate is not finite")
    order = np.argsort(mol, kind="stable")
    ids, counts = np.unique(mol, return_counts=True)
    if len(ids) < MIN_MOLECULES:
        raise _Bad("unreadable", f"{label}: {len(ids)} molecule(s); a cluster needs at least {MIN_MOLECULES}")
    if np.any(counts != counts[0]):
        j = int(np.argmax(counts != counts[0]))
        raise _Bad("unreadable", f"{label}: ragged molecules: molecule {ids[0]} has {counts[0]} atoms, "
                                 f"molecule {ids[j]} has {counts[j]}")
    m, n = len(ids), int(counts[0])
    z = z_all[order].reshape(m, n)
    differs = np.any(z != z[0], axis=1)
    if np.any(differs):
        j = int(np.argmax(differs))
        raise _Bad("unreadable", f"{label}: molecule {ids[j]} lists other atoms than molecule {ids[0]} "
                                 f"({formula(z[j])} vs {formula(z[0])}, or another order)")
    return ids, z[0], xyz[order].reshape(m, n, 3)


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


#: largest RMSD (Å) of the best rigid (or mirrored) fit of an input molecule onto its crystal copy
RIGID_TOL = 0.05


def rigid_fit_rmsd(x_w: np.ndarray, x_s: np.ndarray) -> np.ndarray:
    """Per molecule ``[M]``: RMSD of the best orthogonal (rotation or mirror) + translation fit of
    ``x_w[m]`` onto ``x_s[m]`` (both ``[M, n, 3]``, same atom order) — 0 for a rigidly moved copy."""
    p = x_w - x_w.mean(axis=1, keepdims=True)
    q = x_s - x_s.mean(axis=1, keepdims=True)
    fitted = np.einsum("mij,maj->mai", batched_rotations(p, q, proper=False), p)
    return np.sqrt(((fitted - q) ** 2).sum(-1).mean(-1))


def read_pair(raw_dir: str, cid: str) -> ClusterRecord:
    """The cluster ``cid`` of a COD-Cluster17 folder (meta not filled in), or ``_Bad``."""
    if "/" in cid or "\\" in cid or cid in (".", ".."):
        raise _Bad("unreadable", f"id {cid!r} in {METADATA_FILE} is not a file name")
    final_rel = f"{FINAL_DIR}/{cid}{FINAL_SUFFIX}"
    initial_rel = f"{INITIAL_DIR}/{cid}{INITIAL_SUFFIX}"
    final_path, initial_path = os.path.join(raw_dir, final_rel), os.path.join(raw_dir, initial_rel)
    has_final, has_initial = os.path.isfile(final_path), os.path.isfile(initial_path)
    if not (has_final and has_initial):
        if has_final or has_initial:
            missing = initial_rel if has_final else final_rel
            raise _Bad("unreadable", f"missing partner file {missing}")
        raise _Bad("unreadable", f"listed in {METADATA_FILE} but neither {final_rel} nor {initial_rel} exists")
    mol_s, z_s, x_s = parse_cluster_csv(final_path, final_rel)
    mol_w, z_w, x_w = parse_cluster_csv(initial_path, initial_rel)
    if len(mol_s) != len(mol_w) or np.any(mol_s != mol_w):
        raise _Bad("unreadable", f"{final_rel} has {len(mol_s)} molecules, {initial_rel} has {len(mol_w)} "
                                 f"(or other molecule indices)")
    if len(z_s) != len(z_w) or np.any(z_s != z_w):
        raise _Bad("unreadable", f"molecules differ between the files: {formula(z_s)} in {final_rel}, "
                                 f"{formula(z_w)} in {initial_rel} (or another atom order)")
    rmsd = rigid_fit_rmsd(x_w.astype(np.float64), x_s.astype(np.float64))
    worst = int(np.argmax(rmsd))
    if rmsd[worst] > RIGID_TOL:
        raise _Bad("not_rigid", f"molecule {mol_s[worst]} of {initial_rel} is not a rigid motion of its copy in "
                                f"{final_rel} (best fit RMSD {rmsd[worst]:.3f} Å > {RIGID_TOL} Å)")
    return ClusterRecord(x_s=x_s.astype(np.float32), x_w=x_w.astype(np.float32), z=z_s)


def _list_ids(raw_dir: str) -> tuple[list[str], list[dict]]:
    """Sorted ids that have at least one of the two files, and rejects for stray .csv names."""
    ids: set[str] = set()
    stray = []
    for sub, suffix in ((FINAL_DIR, FINAL_SUFFIX), (INITIAL_DIR, INITIAL_SUFFIX)):
        for name in os.listdir(os.path.join(raw_dir, sub)):
            if name.endswith(suffix):
                ids.add(name[: -len(suffix)])
            elif name.endswith(".csv") and not (sub == FINAL_DIR and name.endswith(INITIAL_SUFFIX)):
                stray.append({"file": f"{sub}/{name}", "reason": "unreadable",
                              "detail": f"file name does not end in {suffix}"})
    return sorted(ids), stray


def _read_splits(raw_dir: str) -> dict[str, str] | None:
    path = os.path.join(raw_dir, SPLIT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"id", "split"} <= set(reader.fieldnames or ()):
            raise UserError(f"{path} must have the columns id and split")
        splits = {}
        for r in reader:
            if r["split"] not in SPLITS:
                raise UserError(f"{path}: split {r['split']!r} of {r['id']!r} is not train, valid or test")
            splits[r["id"]] = r["split"]
    return splits


def _meta_from_row(row: dict) -> dict:
    """Typed shard metadata from a metadata.csv row (empty cells become 0 / NaN / '')."""
    meta: dict = {}
    for k in META_COLUMNS:
        v = (row.get(k) or "").strip()
        if k in _INT_META:
            meta[k] = int(v) if _is_int(v) else 0
        elif k in _FLOAT_META:
            meta[k] = float(v) if _is_float(v) else math.nan
        elif k == "cell":
            if v:
                meta[k] = [float(c) for c in v.split()]
        else:
            meta[k] = v
    return meta


def _default_meta(cid: str, source: str) -> dict:
    return {"key": cid, "sample": 0, "name": cid, "cod_id": "", "formula": "", "spacegroup": "",
            "sg_number": 0, "z_prime": math.nan, "z": 0, "n_atoms": 0, "n_molecules": 0,
            "density": math.nan, "source": source}


def _work_list(raw_dir: str, ids: list[str]) -> Iterator[tuple[str, dict | None]]:
    """(id, metadata.csv row or None): metadata.csv's order first (streamed), then the other ids sorted."""
    path = os.path.join(raw_dir, METADATA_FILE)
    listed: set[str] = set()
    if os.path.isfile(path):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                cid = row.get("id") or ""
                if cid and cid not in listed:
                    listed.add(cid)
                    yield cid, row
    for cid in ids:
        if cid not in listed:
            yield cid, None


def import_cluster17(raw_dir: str, out_dir: str, seed: int = 0, progress: bool = True, overwrite: bool = False) -> dict:
    """Read a COD-Cluster17 folder into a dataset directory; returns the summary (also summary.json).

    Clusters keep the order of metadata.csv when present (then the remaining ids, sorted) and the
    splits of split.csv; ids without a split get a seeded 80/10/10 split (:func:`crystalflow.data.index.assign_splits`
    by ``key``). Bad pairs are recorded in rejects.csv with a reason and the rest is imported.
    """
    start = time.time()
    for sub in (FINAL_DIR, INITIAL_DIR):
        if not os.path.isdir(os.path.join(raw_dir, sub)):
            what = "does not exist" if not os.path.isdir(raw_dir) else f"has no {sub}/ folder"
            raise UserError(f"{raw_dir!r} {what}; expected FinalPositions/ and InitialPositions/")
    ids, stray = _list_ids(raw_dir)
    if not ids:
        raise UserError(f"no *{FINAL_SUFFIX} or *{INITIAL_SUFFIX} files in {raw_dir!r}")
    splits = _read_splits(raw_dir)
    export_info = _read_export_info(raw_dir)
    _prepare_import_dir(out_dir, overwrite)
    shard_dir = os.path.join(out_dir, SHARD_DIR)
    n_inputs = 0
    records: list[ClusterRecord] = []
    rejects: list[dict] = list(stray)
    n_shards = 0
    with atomic_open(os.path.join(out_dir, "inputs.txt")) as inputs, tqdm(
        total=len(ids), unit="cluster", desc="import", disable=not progress, file=sys.stderr
    ) as bar:
        for cid, row in _work_list(raw_dir, ids):
            inputs.write(cid + "\n")
            n_inputs += 1
            try:
                rec = read_pair(raw_dir, cid)
            except _Bad as exc:
                rejects.append({"file": _reject_file(raw_dir, cid), "reason": exc.reason, "detail": exc.detail})
            except Exception as exc:  # a bug: recorded like build does, so the rest of the import goes on
                detail = f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL]
                rejects.append({"file": _reject_file(raw_dir, cid), "reason": "internal_error", "detail": detail})
            else:
                source = os.path.join(os.path.abspath(raw_dir), FINAL_DIR, cid + FINAL_SUFFIX)
                meta = {**_default_meta(cid, source), **(_meta_from_row(row) if row else {})}
                meta.update(formula=formula(rec.z), n_atoms=int(rec.x_s.shape[1]), n_molecules=int(rec.x_s.shape[0]),
                            x_w_max_overlap=round(max_overlap(rec.x_w, rec.z), 4))
                if not meta["key"]:
                    meta["key"] = cid
                meta["id"] = cid
                if splits is not None and cid in splits:
                    meta["split"] = splits[cid]
                rec.meta = meta
                records.append(rec)
            bar.update(1)
            if len(records) + len(rejects) >= IMPORT_CHUNK:
                write_shard(os.path.join(shard_dir, f"shard-{n_shards:05d}.h5"), records, rejects)
                n_shards, records, rejects = n_shards + 1, [], []
        if records or rejects or n_shards == 0:
            write_shard(os.path.join(shard_dir, f"shard-{n_shards:05d}.h5"), records, rejects)
    settings = (export_info or {}).get("settings")
    write_json(os.path.join(out_dir, "build.json"), {
        "input_dir": os.path.abspath(raw_dir),
        "imported_from": os.path.abspath(raw_dir),
        "format": FORMAT,
        "settings": settings,
        "seed": seed,
        "chunk_size": IMPORT_CHUNK,
        "n_inputs": n_inputs,
        "version": __version__,
    })
    summary = _finalize_import(out_dir, raw_dir, seed, settings, n_inputs=n_inputs)
    summary["seconds"] = round(time.time() - start, 2)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def _reject_file(raw_dir: str, cid: str) -> str:
    final_rel = f"{FINAL_DIR}/{cid}{FINAL_SUFFIX}"
    if os.path.isfile(os.path.join(raw_dir, final_rel)):
        return final_rel
    return f"{INITIAL_DIR}/{cid}{INITIAL_SUFFIX}"


def _read_export_info(raw_dir: str) -> dict | None:
    try:
        with open(os.path.join(raw_dir, EXPORT_FILE)) as f:
            info = json.load(f)
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _prepare_import_dir(out_dir: str, overwrite: bool) -> None:
    prepare_output_dir(out_dir, (SHARD_DIR,))
    shard_dir = os.path.join(out_dir, SHARD_DIR)
    existing = [n for n in os.listdir(shard_dir) if n.endswith(".h5") or is_temp_name(n)]
    if (existing or os.path.exists(os.path.join(out_dir, CLUSTERS_FILE))) and not overwrite:
        raise UserError(f"{out_dir!r} already holds a dataset; remove it or choose another directory")
    for name in existing:
        os.remove(os.path.join(shard_dir, name))


def _finalize_import(out_dir: str, raw_dir: str, seed: int, settings: dict | None, n_inputs: int) -> dict:
    """clusters.csv, rejects.csv (:func:`crystalflow.data.index.write_index`) and the summary from the shards
    of an import, streaming the shards.

    Unlike :func:`crystalflow.data.build.finalize` this keeps the splits read from split.csv; clusters
    without one get the seeded split of :func:`crystalflow.data.index.assign_splits` over their ``key``
    (all samples of one crystal share a split).
    """
    shard_dir = os.path.join(out_dir, SHARD_DIR)
    shards = sorted(n for n in os.listdir(shard_dir) if n.endswith(".h5"))
    groups: list[str] = []
    rejects: list[dict] = []
    for name in shards:
        meta, rej = read_shard_tables(os.path.join(shard_dir, name))
        groups.extend(m["key"] for m in meta if "split" not in m)
        rejects.extend(rej)
    assigned = iter(assign_splits(groups, seed))

    def rows() -> Iterator[dict]:
        index = 0
        for name in shards:
            for r, m in enumerate(read_shard_tables(os.path.join(shard_dir, name))[0]):
                split = m["split"] if "split" in m else next(assigned)
                yield {**m, "index": index, "split": split, "shard": name, "row": r}
                index += 1

    tally = write_index(out_dir, rows(), rejects, noise_stats=False)
    return {
        "version": __version__,
        "imported_from": os.path.abspath(raw_dir),
        "format": FORMAT,
        "inputs": n_inputs,
        "processed": n_inputs,
        **tally.counts(),
        "split_by": "crystal" if groups else "split.csv",
        "splits_assigned": len(groups),
        "limit": None,
        "settings": settings,
        "noise": (settings or {}).get("noise"),
        "noise_preset": (settings or {}).get("noise_preset"),
        "seed": seed,
        "atoms_per_molecule": tally.atoms_per_molecule,
        "x_w": tally.x_w,
    }
