"""``crystalflow predict --batch molecules.smi -o DIR``: the crystal-structure search over a library of SMILES.

The file holds one molecule per line, ``SMILES [name]`` (the name is the rest of the line after the first
whitespace); empty lines and lines starting with ``#`` are skipped. Molecule ``k`` (1-based, in file order)
is predicted by :func:`crystalflow.apps.predict_crystals.predict_crystals` into ``DIR/NNNN_<name>`` (the name
or SMILES made safe for a file name). A molecule whose folder already holds ``summary.csv`` is skipped, so a
stopped batch resumes where it was. A molecule that fails (bad SMILES, no valid crystal) is recorded in
``failures.csv`` (line, smiles, reason) and the batch goes on; ``batch_summary.csv`` lists every finished
molecule (molecule, folder, best energy, density, space group, seconds).

``shard = (i, n)`` takes molecules i, i + n, i + 2n, ... (``--shard i/n``, e.g.
``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` with 1-based array indices); each shard writes its
own ``batch_summary.shard-i-of-n.csv`` and ``failures.shard-i-of-n.csv`` so the shards never write one file;
when a shard ends it merges every shard table present into ``batch_summary.csv`` and ``failures.csv``
(:func:`merge_shards`, written atomically), so the last shard to finish leaves the whole library's tables.
"""
from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import write_csv

BATCH_COLUMNS = ("molecule", "smiles", "folder", "best_energy", "density", "space_group", "seconds")
FAILURE_COLUMNS = ("line", "smiles", "reason")
#: characters of a name kept in its folder name
FOLDER_NAME_CHARS = 40
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class BatchEntry:
    """One molecule line of a batch file."""

    index: int  #: 1-based position among the molecule lines
    line: int  #: line number in the file
    smiles: str
    name: str  #: the name given after the SMILES, else the SMILES

    @property
    def folder(self) -> str:
        """``NNNN_<safe name>``: numbered, only letters, digits and ``._+-``."""
        safe = _UNSAFE.sub("_", self.name).strip("._")[:FOLDER_NAME_CHARS] or "molecule"
        return f"{self.index:04d}_{safe}"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 ≤ i ≤ n) → (i, n); None → None; anything else a one-line :class:`UserError`."""
    if text is None:
        return None
    m = _SHARD.match(str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"bad --shard {text!r}: give i/n with 1 <= i <= n (e.g. 2/8)")
    return int(m.group(1)), int(m.group(2))


def read_batch(path: str) -> list[BatchEntry]:
    """The molecule lines of a batch file (module docstring); UserError when it is missing or holds none."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"no such batch file: {path!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read batch file {path!r}: {exc}") from None
    entries = []
    for number, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(None, 1)
        name = parts[1].strip() if len(parts) > 1 else parts[0]
        entries.append(BatchEntry(len(entries) + 1, number, parts[0], name))
    if not entries:
        raise UserError(f"batch file {path!r} holds no molecule (one SMILES per line, optional name after it)")
    return entries


def shard_entries(entries: list[BatchEntry], shard: tuple[int, int] | None) -> list[BatchEntry]:
    """The entries of shard (i, n): those whose index k has (k - 1) mod n = i - 1."""
    if shard is None:
        return list(entries)
    i, n = shard
    return [e for e in entries if (e.index - 1) % n == i - 1]


def _finished_row(entry: BatchEntry, folder: str) -> dict | None:
    """The batch_summary row of a molecule whose folder holds a summary.csv; None otherwise."""
    summary = os.path.join(folder, "summary.csv")
    if not os.path.exists(summary):
        return None
    with open(summary, newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f), None)
    seconds = ""
    try:
        with open(os.path.join(folder, "predict.json"), encoding="utf-8") as f:
            seconds = round(float(json.load(f)["seconds"]), 1)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    first = first or {}
    return {"molecule": entry.name, "smiles": entry.smiles, "folder": os.path.basename(folder),
            "best_energy": first.get("energy", ""), "density": first.get("density", ""),
            "space_group": first.get("space_group", ""), "seconds": seconds}


def _read_rows(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def merge_shards(out_dir: str, n: int) -> dict[str, int]:
    """Merge the ``batch_summary``/``failures`` tables of the shards ``i-of-n`` present in ``out_dir`` into
    ``batch_summary.csv`` and ``failures.csv`` (rows in folder / line order); returns the rows of each."""
    merged = {}
    for stem, columns, key in (("batch_summary", BATCH_COLUMNS, "folder"), ("failures", FAILURE_COLUMNS, "line")):
        rows = []
        for i in range(1, n + 1):
            path = os.path.join(out_dir, f"{stem}.shard-{i}-of-{n}.csv")
            if os.path.exists(path):
                rows += _read_rows(path)
        rows.sort(key=lambda r: (int(r[key]) if key == "line" else r[key]))
        write_csv(os.path.join(out_dir, f"{stem}.csv"), rows, columns)
        merged[stem] = len(rows)
    return merged


def run_batch(batch_file: str, out_dir: str, shard: tuple[int, int] | None = None, progress: bool = True,
              **options) -> dict:
    """Predict every molecule of ``batch_file`` (of the ``shard``) into ``out_dir``; ``options`` go to
    :func:`crystalflow.apps.predict_crystals.predict_crystals`. Returns counts and the paths written."""
    from tqdm import tqdm

    from crystalflow.apps.predict_crystals import predict_crystals

    entries = shard_entries(read_batch(batch_file), shard)
    prepare_output_dir(out_dir)
    suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    summary_path = os.path.join(out_dir, f"batch_summary{suffix}.csv")
    failures_path = os.path.join(out_dir, f"failures{suffix}.csv")
    rows, failures, done, skipped = [], [], 0, 0
    bar = tqdm(entries, desc="molecules", unit="molecule", disable=not progress)
    for entry in bar:
        folder = os.path.join(out_dir, entry.folder)
        row = _finished_row(entry, folder)
        if row is not None:
            rows.append(row)
            skipped += 1
            continue
        t0 = time.time()
        try:
            predict_crystals(entry.smiles, folder, progress=False, **options)
        except UserError as exc:
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            failures.append({"line": entry.line, "smiles": entry.smiles, "reason": reason})
            write_csv(failures_path, failures, FAILURE_COLUMNS)
            continue
        done += 1
        row = _finished_row(entry, folder)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        write_csv(summary_path, rows, BATCH_COLUMNS)  # after every molecule: a killed batch keeps its table
    write_csv(summary_path, rows, BATCH_COLUMNS)
    write_csv(failures_path, failures, FAILURE_COLUMNS)
    if shard is not None:
        merge_shards(out_dir, shard[1])
    return {"molecules": len(entries), "predicted": done, "skipped": skipped, "failed": len(failures),
            "summary": summary_path, "failures": failures_path}
