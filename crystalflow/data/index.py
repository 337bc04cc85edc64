"""The index of a dataset directory: clusters.csv, rejects.csv and the tallies of its summary.

``clusters.csv`` has one row per cluster (:data:`CLUSTER_COLUMNS`): its position ``index``, its
``split``, where it is stored (``shard``, ``row`` in ``shards/``) and its metadata. ``rejects.csv``
has one row per input that did not enter the dataset (:data:`REJECT_COLUMNS`), sorted by file.
A build (:mod:`crystalflow.data.build`) and an import (:mod:`crystalflow.data.cluster17_csv`) both
write them with :func:`write_index`; everything that reads a dataset goes through :func:`iter_index`
(or :func:`read_index`, :func:`iter_clusters`), which gives the numeric columns their types.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from crystalflow.common.errors import REASONS, UserError
from crystalflow.common.io import atomic_open, write_csv
from crystalflow.common.vocabulary import ALL_SPLITS, SPLIT_CHOICES, SPLITS
from crystalflow.data.shards import ClusterRecord, ShardReader, read_shard_tables
from crystalflow.structure.contacts import VALIDITY_OVERLAP

CLUSTERS_FILE = "clusters.csv"
REJECTS_FILE = "rejects.csv"
#: folder of the HDF5 shards (:mod:`crystalflow.data.shards`) inside a dataset directory
SHARD_DIR = "shards"
CLUSTER_COLUMNS = [
    "index", "split", "shard", "row", "key", "sample", "name", "cod_id", "formula", "spacegroup",
    "sg_number", "z_prime", "z", "n_atoms", "n_molecules", "density", "source",
    "noise_angle", "noise_push", "x_w_max_overlap",
]
REJECT_COLUMNS = ["file", "reason", "detail"]
#: fractions of the distinct groups in train, valid and test (:func:`assign_splits`)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: columns read back as int and as float (the others stay text; the noise columns may be empty)
INT_COLUMNS = ("index", "row", "sample", "sg_number", "z", "n_atoms", "n_molecules")
FLOAT_COLUMNS = ("z_prime", "density")
#: clusters.csv columns the summary's ``x_w`` statistics come from (:func:`input_statistics`)
_OVERLAP_COLUMN = "x_w_max_overlap"
_NOISE_COLUMNS = ("noise_angle", "noise_push")


# --------------------------------------------------------------------------- writing


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


@dataclass
class IndexTally:
    """What :func:`write_index` wrote, as the summary reports it."""

    accepted_crystals: int  #: distinct ``key`` values
    clusters: int
    rejected: int
    reject_reasons: dict[str, int]  #: reason -> count, in the order of :data:`crystalflow.common.errors.REASONS`
    splits: dict[str, int]  #: split -> clusters, for every split
    atoms_per_molecule: dict  #: min / median / mean / max (:func:`describe_counts`)
    x_w: dict  #: how physical and how noisy the inputs are (:func:`input_statistics`)

    def counts(self) -> dict:
        """The summary's counts of crystals, clusters and rejects, in its order."""
        return {"accepted_crystals": self.accepted_crystals, "clusters": self.clusters, "rejected": self.rejected,
                "reject_reasons": self.reject_reasons, "splits": self.splits}


def write_index(out_dir: str, rows: Iterable[dict], rejects: list[dict], noise_stats: bool = True) -> IndexTally:
    """Write clusters.csv from ``rows`` and rejects.csv from ``rejects`` (sorted by file); returns the tallies.

    Each row holds the :data:`CLUSTER_COLUMNS` (``index``, ``split``, ``shard`` and ``row`` included; other keys
    are left out). ``rows`` is consumed once, as it is written, so it may stream from the shards.
    ``noise_stats``: the ``x_w`` statistics include the mean noise angle and push (a build, whose noise is
    known) or only the overlaps (an import).
    """
    crystals: set[str] = set()
    n_atoms: Counter = Counter()
    split_counts: Counter = Counter()
    stat_columns = (_OVERLAP_COLUMN, *(_NOISE_COLUMNS if noise_stats else ()))
    stats: list[dict] = []
    n_clusters = 0
    with atomic_open(os.path.join(out_dir, CLUSTERS_FILE)) as f:
        writer = csv.DictWriter(f, fieldnames=CLUSTER_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            n_clusters += 1
            crystals.add(row["key"])
            n_atoms[row["n_atoms"]] += 1
            split_counts[row["split"]] += 1
            stats.append({k: row.get(k) for k in stat_columns})
    rejects = sorted(rejects, key=lambda r: r["file"])
    write_csv(os.path.join(out_dir, REJECTS_FILE), rejects, REJECT_COLUMNS)
    tally = Counter(r["reason"] for r in rejects)
    return IndexTally(
        accepted_crystals=len(crystals), clusters=n_clusters, rejected=len(rejects),
        reject_reasons={k: tally[k] for k in REASONS if tally[k]}, splits={s: split_counts[s] for s in SPLITS},
        atoms_per_molecule=describe_counts(n_atoms), x_w=input_statistics(stats),
    )


def input_statistics(rows: list[dict]) -> dict:
    """How physical and how noisy the inputs x_w are: % valid, worst overlaps, mean turn and push.

    ``valid`` is the % of clusters whose x_w has no heavy-atom overlap ≥
    :data:`crystalflow.structure.contacts.VALIDITY_OVERLAP`; ``noise_angle`` (deg) and ``noise_push`` (Å) are
    the means of the per-cluster values (absent for imported datasets, whose noise is unknown).
    """
    overlaps = [float(r[_OVERLAP_COLUMN]) for r in rows if r.get(_OVERLAP_COLUMN) not in (None, "")]
    out: dict = {}
    if overlaps:
        a = np.asarray(overlaps)
        out = {"valid": round(100.0 * float(np.mean(a < VALIDITY_OVERLAP)), 2),
               "max_overlap_median": round(float(np.median(a)), 4), "max_overlap_max": round(float(a.max()), 4)}
    for key in _NOISE_COLUMNS:
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if values:
            out[f"{key}_mean"] = round(float(np.mean(values)), 4)
    return out


def describe_counts(counts: Counter) -> dict:
    """min / median / mean / max of values given as value -> count."""
    if not counts:
        return {}
    values = np.array(sorted(counts), dtype=float)
    weights = np.array([counts[v] for v in sorted(counts)], dtype=np.int64)
    cum = np.cumsum(weights)
    total = int(cum[-1])
    lo, hi = (values[np.searchsorted(cum, p, side="right")] for p in ((total - 1) // 2, total // 2))
    return {"min": float(values[0]), "median": float((lo + hi) / 2),
            "mean": round(float((values * weights).sum() / total), 2), "max": float(values[-1])}


# --------------------------------------------------------------------------- reading


def check_split(split: str) -> None:
    """:class:`UserError` unless ``split`` is one of :data:`crystalflow.common.vocabulary.SPLIT_CHOICES`."""
    if split not in SPLIT_CHOICES:
        raise UserError(f"split must be {', '.join(SPLIT_CHOICES[:-1])} or {SPLIT_CHOICES[-1]}, not {split!r}")


def index_path(dataset_dir: str) -> str:
    """Path of the clusters.csv of ``dataset_dir``, or :class:`UserError` when there is none."""
    path = os.path.join(dataset_dir, CLUSTERS_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"{dataset_dir!r} is not a crystalflow dataset (no {CLUSTERS_FILE}); run 'crystalflow build' first"
        )
    return path


def check_dataset(dataset_dir: str, split: str) -> str:
    """Path of clusters.csv after checking ``split`` and that the directory exists, or :class:`UserError`."""
    check_split(split)
    if not os.path.isdir(dataset_dir):
        raise UserError(f"dataset directory {dataset_dir!r} does not exist")
    return index_path(dataset_dir)


def iter_index(dataset_dir: str, split: str = ALL_SPLITS) -> Iterator[dict]:
    """The clusters.csv rows of one split (or all), streamed, with :data:`INT_COLUMNS` as int and
    :data:`FLOAT_COLUMNS` as float."""
    with open(index_path(dataset_dir), newline="") as f:
        for row in csv.DictReader(f):
            if split != ALL_SPLITS and row["split"] != split:
                continue
            for k in INT_COLUMNS:
                row[k] = int(row[k])
            for k in FLOAT_COLUMNS:
                row[k] = float(row[k])
            yield row


def read_index(dataset_dir: str, split: str = ALL_SPLITS) -> list[dict]:
    """All rows :func:`iter_index` gives."""
    return list(iter_index(dataset_dir, split))


def iter_clusters(
    dataset_dir: str, split: str = ALL_SPLITS, limit: int | None = None, shard_meta: bool = False
) -> Iterator[ClusterRecord]:
    """Stream the clusters of one split in index order, one shard file open at a time.

    Each record's ``meta`` is the clusters.csv row (:func:`iter_index`), merged over the shard's own
    metadata (which adds e.g. ``cell``) when ``shard_meta`` is set. Memory stays flat: clusters.csv is
    read row by row.
    """
    index = check_dataset(dataset_dir, split)
    reader: ShardReader | None = None
    metas: list[dict] = []
    count = 0
    rows = iter_index(dataset_dir, split)
    try:
        for row in rows:
            if limit is not None and count >= limit:
                break
            if reader is None or os.path.basename(reader.path) != row["shard"]:
                if reader is not None:
                    reader.close()
                path = os.path.join(dataset_dir, SHARD_DIR, row["shard"])
                if not os.path.isfile(path):
                    raise UserError(f"shard {row['shard']!r} listed in {index} is missing")
                reader = ShardReader(path)
                metas = read_shard_tables(path)[0] if shard_meta else []
            rec = reader.read(row["row"])
            rec.meta = {**metas[row["row"]], **row} if shard_meta else row
            count += 1
            yield rec
    finally:  # also when the caller stops early
        rows.close()
        if reader is not None:
            reader.close()
