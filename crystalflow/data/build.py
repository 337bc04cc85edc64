"""Dataset building: a folder of CIFs -> a sharded COD-Cluster17 dataset directory, in parallel, resumable.

Layout of DATASET_DIR::

    build.json      settings and the sorted input list's location (decides what a re-run continues)
    inputs.txt      the input files, one per line, in processing order
    shards/         shard-00000.h5 ... (see :mod:`crystalflow.data.shards`), one per chunk of inputs
    clusters.csv    one row per cluster: index, shard, row, split and metadata
    rejects.csv     file, reason, detail for every input that was not used
    summary.json    counts, reject reasons tallied, noise parameters, seed, version, splits

Interrupting a build loses at most the chunks in flight; re-running the same command skips every
finished shard. ``finalize`` (run at the end of every build) writes the three tables from the shards.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import REASONS, RejectError, UserError
from crystalflow.common.io import is_temp_name, write_csv, write_json, write_text
from crystalflow.common.version import __version__
from crystalflow.common.vocabulary import DEFAULT_SPLIT_BY, SPLIT_BY, SPLITS
from crystalflow.data.pipeline import BuildSettings, process_cif
from crystalflow.data.shards import read_shard_tables, write_shard
from crystalflow.structure.contacts import VALIDITY_OVERLAP

CIF_SUFFIXES = (".cif", ".CIF")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
CLUSTER_COLUMNS = [
    "index", "split", "shard", "row", "key", "sample", "name", "cod_id", "formula", "spacegroup",
    "sg_number", "z_prime", "z", "n_atoms", "n_molecules", "density", "source",
    "noise_angle", "noise_push", "x_w_max_overlap",
]


@dataclass
class BuildResult:
    """What a build produced (also written to summary.json)."""

    summary: dict
    out_dir: str


def list_cifs(root: str) -> list[str]:
    """CIF files under ``root`` (a directory, searched recursively, or one file), sorted."""
    if os.path.isfile(root):
        return [root]
    if not os.path.isdir(root):
        raise UserError(f"input {root!r} does not exist or is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(CIF_SUFFIXES))
    return sorted(found)


def _chunk_size(n_files: int, workers: int) -> int:
    """Files per shard: small enough for a live progress bar and load balance, large enough for big inputs."""
    return int(np.clip(np.ceil(n_files / max(1, workers * 8)), 4, 512))


def _process_chunk(args: tuple[int, list[tuple[str, str]], str, dict]) -> dict:
    """Worker: process the files of one chunk and write its shard. Returns counts for the progress bar."""
    index, files, shard_path, settings_dict = args
    settings = BuildSettings.from_dict(settings_dict)
    records, rejects, accepted = [], [], 0
    for path, key in files:
        try:
            records.extend(process_cif(path, key, settings))
            accepted += 1
        except RejectError as exc:
            rejects.append({"file": key, "reason": exc.reason, "detail": exc.detail})
        except Exception as exc:  # recorded with its reason so the rest of the build goes on
            where = traceback.extract_tb(exc.__traceback__)[-1]
            detail = f"{type(exc).__name__}: {exc} ({os.path.basename(where.filename)}:{where.lineno})"
            rejects.append({"file": key, "reason": "internal_error", "detail": detail[:300]})
    write_shard(shard_path, records, rejects)
    return {"chunk": index, "files": len(files), "accepted": accepted, "clusters": len(records)}


def _prepare(input_dir: str, out_dir: str, settings: BuildSettings, workers: int, overwrite: bool):
    """Create or re-open DATASET_DIR; returns the input list (relative keys) and the chunk size."""
    prepare_output_dir(out_dir, ("shards",))
    cfg_path = os.path.join(out_dir, "build.json")
    wanted = {"input_dir": os.path.abspath(input_dir), "settings": settings.to_dict()}
    if os.path.exists(cfg_path) and not overwrite:
        with open(cfg_path) as f:
            cfg = json.load(f)
        if {k: cfg[k] for k in wanted} != wanted:
            raise UserError(
                f"{out_dir} holds a build with other inputs or settings; use --overwrite or another directory"
            )
        with open(os.path.join(out_dir, "inputs.txt")) as f:
            keys = [line.rstrip("\n") for line in f if line.strip()]
        return keys, cfg["chunk_size"]
    if overwrite:
        for name in os.listdir(os.path.join(out_dir, "shards")):
            os.remove(os.path.join(out_dir, "shards", name))
    paths = list_cifs(input_dir)
    if not paths:
        raise UserError(f"no .cif files found under {input_dir!r}")
    base = input_dir if os.path.isdir(input_dir) else os.path.dirname(input_dir)
    keys = [os.path.relpath(p, base) for p in paths]
    chunk = _chunk_size(len(keys), workers)
    write_text(os.path.join(out_dir, "inputs.txt"), "\n".join(keys) + "\n")
    write_json(cfg_path, {**wanted, "chunk_size": chunk, "n_inputs": len(keys), "version": __version__})
    return keys, chunk


def build_dataset(
    input_dir: str,
    out_dir: str,
    settings: BuildSettings = BuildSettings(),
    workers: int = 1,
    limit: int | None = None,
    split_by: str = DEFAULT_SPLIT_BY,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Build (or continue building) a dataset from the CIFs under ``input_dir``; see module docs."""
    start = time.time()
    if not os.path.exists(input_dir):
        raise UserError(f"input {input_dir!r} does not exist")
    keys, chunk = _prepare(input_dir, out_dir, settings, workers, overwrite)
    base = input_dir if os.path.isdir(input_dir) else os.path.dirname(input_dir)
    shard_dir = os.path.join(out_dir, "shards")
    for name in os.listdir(shard_dir):  # a partial shard from an interrupted run is never read
        if is_temp_name(name):
            os.remove(os.path.join(shard_dir, name))
    chunks = [keys[i : i + chunk] for i in range(0, len(keys), chunk)]
    shard_paths = [os.path.join(shard_dir, f"shard-{i:05d}.h5") for i in range(len(chunks))]
    todo = [i for i, p in enumerate(shard_paths) if not os.path.exists(p)]
    accepted = _accepted_so_far(shard_paths, todo) if limit else 0
    tasks = [
        (i, [(os.path.join(base, k), k) for k in chunks[i]], shard_paths[i], settings.to_dict()) for i in todo
    ]
    bar = tqdm(
        total=len(keys), initial=len(keys) - sum(len(chunks[i]) for i in todo), unit="cif",
        desc="build", disable=not progress, file=sys.stderr,
    )
    try:
        for done in _run(tasks, workers):
            bar.update(done["files"])
            accepted += done["accepted"]
            if limit and accepted >= limit and _prefix_complete(shard_paths, limit):
                break
    except KeyboardInterrupt:
        bar.close()
        raise UserError(f"interrupted: finished shards are kept in {shard_dir}; re-run the same command to continue")
    bar.close()
    summary = finalize(out_dir, settings, limit=limit, split_by=split_by)
    summary["seconds"] = round(time.time() - start, 2)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return BuildResult(summary=summary, out_dir=out_dir)


def _run(tasks: list, workers: int):
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_process_chunk, tasks)
        return
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
    with ctx.Pool(workers) as pool:
        yield from pool.imap_unordered(_process_chunk, tasks)


def _accepted_so_far(shard_paths: list[str], todo: list[int]) -> int:
    done = set(range(len(shard_paths))) - set(todo)
    return sum(len({m["key"] for m in read_shard_tables(shard_paths[i])[0]}) for i in sorted(done))


def _prefix_complete(shard_paths: list[str], limit: int) -> bool:
    """True when the shards in input order, without gaps, already hold ``limit`` accepted crystals."""
    count = 0
    for p in shard_paths:
        if not os.path.exists(p):
            return False
        count += len({m["key"] for m in read_shard_tables(p)[0]})
        if count >= limit:
            return True
    return False


def assign_splits(groups: list[str], seed: int) -> list[str]:
    """Exact 80/10/10 split of the distinct ``groups``, by a seeded hash order; returns one split per item."""
    distinct = sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n = len(distinct)
    n_train = int(round(SPLIT_FRACTIONS[0] * n))
    n_valid = int(round(SPLIT_FRACTIONS[1] * n))
    if n >= 3:  # every split gets at least one group when there are enough
        n_valid = max(n_valid, 1)
        n_train = min(n_train, n - n_valid - 1)
    split_of = {}
    for rank, g in enumerate(distinct):
        split_of[g] = "train" if rank < n_train else "valid" if rank < n_train + n_valid else "test"
    return [split_of[g] for g in groups]


def finalize(out_dir: str, settings: BuildSettings, limit: int | None = None, split_by: str = DEFAULT_SPLIT_BY) -> dict:
    """Write clusters.csv, rejects.csv and the summary from the finished shards."""
    if split_by not in SPLIT_BY:
        raise UserError(f"--split-by must be {' or '.join(map(repr, SPLIT_BY))}, not {split_by!r}")
    shard_dir = os.path.join(out_dir, "shards")
    shards = sorted(n for n in os.listdir(shard_dir) if n.endswith(".h5"))
    rows, rejects, crystals = [], [], []
    for name in shards:
        meta, rej = read_shard_tables(os.path.join(shard_dir, name))
        rejects.extend(rej)
        for r, m in enumerate(meta):
            if limit and m["key"] not in crystals[-1:] and len(crystals) >= limit:
                continue
            if m["key"] not in crystals[-1:]:
                crystals.append(m["key"])
            rows.append({**m, "shard": name, "row": r})
    group = [r["key"] if split_by == "crystal" else f"{r['key']}#{r['sample']}" for r in rows]
    for i, (row, split) in enumerate(zip(rows, assign_splits(group, settings.seed))):
        row["index"], row["split"] = i, split
    write_csv(os.path.join(out_dir, "clusters.csv"), rows, CLUSTER_COLUMNS, extrasaction="ignore")
    rejects.sort(key=lambda r: r["file"])
    write_csv(os.path.join(out_dir, "rejects.csv"), rejects, ["file", "reason", "detail"])
    with open(os.path.join(out_dir, "inputs.txt")) as f:
        n_inputs = sum(1 for line in f if line.strip())
    tally = Counter(r["reason"] for r in rejects)
    summary = {
        "version": __version__,
        "inputs": n_inputs,
        "processed": len(crystals) + len(rejects) if not limit else None,
        "accepted_crystals": len(crystals),
        "clusters": len(rows),
        "rejected": len(rejects),
        "reject_reasons": {k: tally[k] for k in REASONS if tally[k]},
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "split_by": split_by,
        "limit": limit,
        "settings": settings.to_dict(),
        "noise": settings.noise.to_dict(),
        "noise_preset": settings.noise_preset,
        "seed": settings.seed,
        "atoms_per_molecule": _describe([r["n_atoms"] for r in rows]),
        "x_w": input_statistics(rows),
    }
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def input_statistics(rows: list[dict]) -> dict:
    """How physical and how noisy the inputs x_w are: % valid, worst overlaps, mean turn and push.

    ``valid`` is the % of clusters whose x_w has no heavy-atom overlap ≥
    :data:`crystalflow.structure.contacts.VALIDITY_OVERLAP`; ``noise_angle`` (deg) and ``noise_push`` (Å) are
    the means of the per-cluster values (absent for imported datasets, whose noise is unknown).
    """
    overlaps = [float(r["x_w_max_overlap"]) for r in rows if r.get("x_w_max_overlap") not in (None, "")]
    out: dict = {}
    if overlaps:
        a = np.asarray(overlaps)
        out = {"valid": round(100.0 * float(np.mean(a < VALIDITY_OVERLAP)), 2),
               "max_overlap_median": round(float(np.median(a)), 4), "max_overlap_max": round(float(a.max()), 4)}
    for key in ("noise_angle", "noise_push"):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if values:
            out[f"{key}_mean"] = round(float(np.mean(values)), 4)
    return out


def _describe(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "median": float(np.median(a)), "mean": round(float(a.mean()), 2), "max": float(a.max())}
