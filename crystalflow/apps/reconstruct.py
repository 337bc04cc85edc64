"""Predicted clusters → periodic crystals as CIF files (``crystalflow reconstruct``).

For every cluster and sample of a PRED_DIR: the crystal the cluster implies
(:func:`crystalflow.structure.lattice.fit_crystal`: exact, then robust for noisy predictions),
optionally relaxed (:func:`crystalflow.physics.relax.relax_crystal`), written as
``CIF_DIR/<cluster key>_s<sample>.cif`` (space group, cell, asymmetric unit) with a simulated powder
pattern beside it (``.xy.csv``), and one row of ``crystals.csv``: space group, cell, density, fit
residual, inliers, energy — or, for a cluster without a consistent lattice, the reason. Rows are
appended to ``crystals.jsonl`` as they are done, so a re-run skips finished samples.
"""
from __future__ import annotations

import json
import os
import re
import time

import numpy as np
from tqdm import tqdm

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.io import write_csv
from crystalflow.common.vocabulary import RECONSTRUCT_SOURCES as SOURCES
from crystalflow.evaluation.predictions import read_info, read_predictions
from crystalflow.evaluation.relaxation import make_rigid
from crystalflow.physics.energy import CellError
from crystalflow.physics.forcefield import assign
from crystalflow.physics.relax import relax_crystal
from crystalflow.structure.cif_write import write_cif
from crystalflow.structure.lattice import LatticeError, cell_parameters, fit_crystal
from crystalflow.structure.pxrd import powder_pattern

#: columns of crystals.csv
COLUMNS = ("key", "sample", "status", "reason", "cif", "sg_number", "sg_symbol", "a", "b", "c", "alpha", "beta",
           "gamma", "z", "density", "residual", "inliers", "energy_before", "energy", "relax_seconds")
TABLE = "crystals.csv"
LOG = "crystals.jsonl"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cif_name(key: str, sample: int) -> str:
    """``<cluster key>_s<sample>.cif`` (a key's own ``.cif`` ending dropped, characters unsafe in file names
    replaced)."""
    key = str(key)
    key = key[:-4] if key.lower().endswith(".cif") else key
    return f"{_SAFE.sub('_', key)}_s{sample}.cif"


def reconstruct_one(x: np.ndarray, z: np.ndarray, conformer: np.ndarray, relax: bool, path: str, name: str) -> dict:
    """Fit (and relax) the crystal of one cluster and write it to ``path``; returns its row."""
    row: dict = {"status": "no_lattice"}
    x = make_rigid(np.asarray(x, dtype=np.float64), np.asarray(conformer, dtype=np.float64))
    try:
        rec = fit_crystal(x, z)
    except LatticeError as exc:
        row["reason"] = str(exc)
        return row
    crystal = rec.crystal
    items = {"_crystalflow_fit_residual_A": rec.residual}
    if relax:
        t0 = time.perf_counter()
        try:
            res = relax_crystal(crystal, ff=assign(z, np.asarray(conformer[0], dtype=np.float64)))
        except CellError as exc:  # the fitted crystal is written unrelaxed, and the row says why
            row["reason"] = f"not relaxed: {exc}"
        else:
            crystal = res.crystal
            row.update(energy_before=round(res.energy_before, 3), energy=round(res.energy_after, 3),
                       relax_seconds=round(time.perf_counter() - t0, 2))
            items["_crystalflow_lattice_energy_kJ_mol"] = res.energy_after
    write_cif(crystal, path, name=name, items=items)
    frac, zz = crystal.cell_atoms()
    powder_pattern(crystal.lattice, frac, zz, name=name).write_xy(path[: -len(".cif")] + ".xy.csv")
    number, symbol = crystal.space_group()
    a, b, c, al, be, ga = cell_parameters(crystal.lattice)
    row.update(status="ok", reason=row.get("reason", ""), cif=os.path.basename(path), sg_number=number, sg_symbol=symbol,
               a=round(a, 4), b=round(b, 4), c=round(c, 4), alpha=round(al, 3), beta=round(be, 3), gamma=round(ga, 3),
               z=crystal.n_molecules, density=round(crystal.density(), 4), residual=round(rec.residual, 4),
               inliers=rec.inliers)
    return row


def reconstruct_pred_dir(pred_dir: str, out_dir: str, relax: bool = False, source: str = "pred",
                         limit: int | None = None, progress: bool = True) -> list[dict]:
    """Reconstruct every cluster (and sample) of ``pred_dir`` into ``out_dir`` (see the module docstring)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    info = read_info(pred_dir)
    prepare_output_dir(out_dir)
    log = os.path.join(out_dir, LOG)
    done: dict[tuple[str, int], dict] = {}
    if os.path.exists(log):
        with open(log, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: that sample is redone
                    continue
                done[(r["key"], r["sample"])] = r
    total = min(info.get("n_clusters") or 0, limit) if limit else info.get("n_clusters") or 0
    rows = []
    with open(log, "a", encoding="utf-8") as out:
        for index, item in enumerate(tqdm(read_predictions(pred_dir), total=total, desc="reconstruct",
                                          unit="cluster", disable=not progress)):
            if limit and index >= limit:
                break
            key = str(item.meta.get("key", index))
            clusters = {"pred": item.pred, "truth": item.x_s[None], "input": item.x_w[None]}[source]
            for s, x in enumerate(clusters):
                if (key, s) in done:
                    rows.append(done[(key, s)])
                    continue
                name = cif_name(key, s)
                if not np.isfinite(x).all():
                    row = {"status": "no_lattice", "reason": "no prediction"}
                else:
                    row = reconstruct_one(x, item.z, item.x_w, relax, os.path.join(out_dir, name), name[:-4])
                row = {"key": key, "sample": s, **row}
                out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
    write_csv(os.path.join(out_dir, TABLE), rows, COLUMNS)
    return rows
