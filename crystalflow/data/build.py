"""Dataset building: a folder of CIFs -> a sharded COD-Cluster17 dataset directory, in parallel, resumable.

Layout of DATASET_DIR::

    build.json      settings and the sorted input list's location (decides what a re-run continues)
    inputs.txt      the input files, one per line, in processing order
    shards/         shard-00000.h5 ... (see :mod:`crystalflow.data.shards`), one per chunk of inputs
    clusters.csv    one row per cluster: index, shard, row, split and metadata (see :mod:`crystalflow.data.index`)
    rejects.csv     file, reason, detail for every input that was not used
    summary.json    counts, reject reasons tallied, noise parameters, seed, version, splits

Interrupting a build loses at most the chunks in flight; re-running the same command skips every
finished shard. ``finalize`` (run at the end of every build) writes the three tables from the shards.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import RejectError, UserError
from crystalflow.common.io import is_temp_name, write_json, write_text
from crystalflow.common.version import __version__
from crystalflow.common.vocabulary import DEFAULT_SPLIT_BY, SPLIT_BY
from crystalflow.data.index import SHARD_DIR, assign_splits, write_index
from crystalflow.data.pipeline import BuildSettings, process_cif
from crystalflow.data.shards import read_shard_tables, write_shard

CIF_SUFFIXES = (".cif", ".CIF")


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
    prepare_output_dir(out_dir, (SHARD_DIR,))
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
        for name in os.listdir(os.path.join(out_dir, SHARD_DIR)):
            os.remove(os.path.join(out_dir, SHARD_DIR, name))
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
    """Build (or continue building) a dataset from the CIFs under ``input_dir``; see module docs.

    Example::

        from crystalflow import build_dataset, embedded_cif_dir
        from crystalflow.data.pipeline import BuildSettings

        result = build_dataset(embedded_cif_dir(), "cod17", BuildSettings(samples_per_crystal=2), workers=2)
        print(result.summary["clusters"], result.summary["splits"])  # counts also in cod17/summary.json
    """
    start = time.time()
    if not os.path.exists(input_dir):
        raise UserError(f"input {input_dir!r} does not exist")
    keys, chunk = _prepare(input_dir, out_dir, settings, workers, overwrite)
    base = input_dir if os.path.isdir(input_dir) else os.path.dirname(input_dir)
    shard_dir = os.path.join(out_dir, SHARD_DIR)
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


def finalize(out_dir: str, settings: BuildSettings, limit: int | None = None, split_by: str = DEFAULT_SPLIT_BY) -> dict:
    """Write clusters.csv, rejects.csv (:func:`crystalflow.data.index.write_index`) and the summary from the
    finished shards: the first ``limit`` accepted crystals in input order, split by crystal or by cluster."""
    if split_by not in SPLIT_BY:
        raise UserError(f"--split-by must be {' or '.join(map(repr, SPLIT_BY))}, not {split_by!r}")
    shard_dir = os.path.join(out_dir, SHARD_DIR)
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
    tally = write_index(out_dir, rows, rejects)
    with open(os.path.join(out_dir, "inputs.txt")) as f:
        n_inputs = sum(1 for line in f if line.strip())
    summary = {
        "version": __version__,
        "inputs": n_inputs,
        "processed": tally.accepted_crystals + tally.rejected if not limit else None,
        **tally.counts(),
        "split_by": split_by,
        "limit": limit,
        "settings": settings.to_dict(),
        "noise": settings.noise.to_dict(),
        "noise_preset": settings.noise_preset,
        "seed": settings.seed,
        "atoms_per_molecule": tally.atoms_per_molecule,
        "x_w": tally.x_w,
    }
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary
