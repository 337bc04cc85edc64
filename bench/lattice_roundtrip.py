"""Round trip crystal → 17-molecule cluster → recovered crystal → CIF, on every accepted CIF of some folders.

    python bench/lattice_roundtrip.py                      # embedded COD CIFs + ../shared/data/{csd500,ocelot}
    python bench/lattice_roundtrip.py DIR [DIR ...] [--symprec 0.1] [--max-files N]

Each CIF the build pipeline accepts (``select`` with ``BuildSettings()``) is turned into its cluster
(``build_cluster``), given to ``recover_crystal`` and written with ``write_cif``; the written CIF is
read back (``read_cif``). A recovery is right when the written CIF's space-group number equals the
source's (the CIF's, or spglib's on the source cell when the CIF gives only operators) and its
Niggli-reduced primitive cell equals the source's within 1 % in every length and angle. The written
CIF is also compared with the source CIF by OXtalign (RMSD_15 over 15 molecules; the issue asks
≤ 0.1 Å). Prints one row per folder and every failure with its reason; missing folders are skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import oxtalign
import spglib
from tqdm import tqdm

from crystalflow import embedded_cif_dir
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cif_write import write_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.elements import symbol
from crystalflow.structure.lattice import (
    SYMPREC,
    LatticeError,
    cells_agree,
    primitive_reduced_cell,
    recover_crystal,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIRS = [str(embedded_cif_dir()), os.path.join(HERE, "..", "..", "shared", "data", "csd500"),
                os.path.join(HERE, "..", "..", "shared", "data", "ocelot")]


def one(path: str, settings: BuildSettings, symprec: float) -> tuple[str, str, float]:
    """('skip'|'ok'|'sg'|'cell'|'sg+cell'|'error', detail, RMSD_15 of the written CIF to the source) for one CIF."""
    try:
        crystal = read_cif(path)
        molecules, _, _ = select(crystal, settings)
    except Exception as e:  # rejected by the pipeline: not part of the round trip
        return "skip", f"{type(e).__name__}: {e}", float("nan")
    cluster = build_cluster(crystal, molecules, k=settings.neighbours)
    try:
        rec = recover_crystal(cluster.x, cluster.z, symprec=symprec)
    except LatticeError as e:
        return "error", str(e), float("nan")
    expected = crystal.sg_number
    if expected == 0 or crystal.n_symops == 1:  # P1 cells (CSD-500) or operators only: spglib names the group
        ds = spglib.get_symmetry_dataset((crystal.lattice, crystal.frac, crystal.z), symprec=symprec)
        expected = int(ds.number) if ds is not None else 0
    reference = primitive_reduced_cell(crystal.lattice, crystal.frac, crystal.z, symprec)
    with tempfile.TemporaryDirectory() as tmp:
        out = write_cif(rec.crystal, os.path.join(tmp, "rec.cif"), name="rec", symprec=symprec)
        back = read_cif(out)
    back_cell = primitive_reduced_cell(back.lattice, back.frac, back.z, symprec)
    sg_ok, cell_ok = back.sg_number == expected, cells_agree(back_cell, reference)
    rmsd = _rmsd15(crystal, back)
    detail = (f"sg {back.sg_number} ({rec.sg_symbol}) vs {expected}; cell "
              f"{' '.join(f'{v:.2f}' for v in rec.cell_parameters)} vs "
              f"{' '.join(f'{v:.2f}' for v in np.array(cell_parameters_of(reference)))}; RMSD_15 {rmsd}")
    status = "ok" if sg_ok and cell_ok else "+".join(k for k, good in (("sg", sg_ok), ("cell", cell_ok)) if not good)
    return status, detail, rmsd


def _rmsd15(a, b):
    """OXtalign RMSD_15 (Å) of two crystals, NaN when fewer than 15 molecules match."""
    sa = oxtalign.from_arrays([symbol(int(v)) for v in a.z], a.frac, cell=a.lattice)
    sb = oxtalign.from_arrays([symbol(int(v)) for v in b.z], b.frac, cell=b.lattice)
    r = oxtalign.compare(sa, sb, n=15)
    return float(r.rmsd_n) if r.n_matched == 15 and r.rmsd_n is not None else float("nan")


def cell_parameters_of(lattice):
    from crystalflow.structure.lattice import cell_parameters
    return cell_parameters(lattice)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*", default=DEFAULT_DIRS)
    ap.add_argument("--symprec", type=float, default=SYMPREC)
    ap.add_argument("--max-files", type=int, default=0)
    args = ap.parse_args()
    settings = BuildSettings()
    rows, failures, pooled = [], [], {"n": 0, "acc": 0, "sg": 0, "cell": 0, "ok": 0, "err": 0, "rmsd": []}
    for d in args.dirs:
        if not os.path.isdir(d):
            print(f"skipping missing folder {d}", file=sys.stderr)
            continue
        name = os.path.basename(os.path.normpath(d))
        files = sorted(f for f in os.listdir(d) if f.endswith(".cif"))
        if args.max_files:
            files = files[: args.max_files]
        counts = {"ok": 0, "sg": 0, "cell": 0, "sg+cell": 0, "error": 0, "skip": 0}
        rmsds = []
        t0 = time.perf_counter()
        for f in tqdm(files, desc=name, leave=False):
            status, detail, rmsd = one(os.path.join(d, f), settings, args.symprec)
            counts[status] += 1
            if status not in ("skip", "error"):
                rmsds.append(rmsd)
            if status not in ("ok", "skip") or not rmsd <= 0.1:
                if status != "skip":
                    failures.append((name, f, status, detail))
        accepted = len(files) - counts["skip"]
        row = {"n": len(files), "acc": accepted, "sg": counts["ok"] + counts["cell"], "cell": counts["ok"] + counts["sg"],
               "ok": counts["ok"], "err": counts["error"], "rmsd": rmsds}
        for k in pooled:
            pooled[k] = pooled[k] + row[k]
        rows.append((name, row, time.perf_counter() - t0))
    rows.append(("all", pooled, sum(r[2] for r in rows)))
    print(f"symprec {args.symprec} Å; a cell is right within 1 % in every Niggli length and angle; "
          "RMSD_15: OXtalign, written CIF vs source CIF (NaN: < 15 matched)")
    print(f"{'folder':<10}{'CIFs':>6}{'accepted':>9}{'sg right':>10}{'cell right':>11}{'both':>8}{'errors':>7}"
          f"{'RMSD≤0.1':>10}{'median':>8}{'max':>7}{'seconds':>9}")
    for name, r, sec in rows:
        pct = (lambda n: 100.0 * n / r["acc"] if r["acc"] else float("nan"))
        rm = np.array(r["rmsd"]) if r["rmsd"] else np.array([np.nan])
        good = 100.0 * np.sum(rm <= 0.1) / r["acc"] if r["acc"] else float("nan")
        print(f"{name:<10}{r['n']:>6}{r['acc']:>9}{pct(r['sg']):>9.1f}%{pct(r['cell']):>10.1f}%{pct(r['ok']):>7.1f}%"
              f"{r['err']:>7}{good:>9.1f}%{np.nanmedian(rm):>8.3f}{np.nanmax(rm) if np.isfinite(rm).any() else np.nan:>7.3f}"
              f"{sec:>9.1f}")
    if failures:
        print("\nfailures:")
        for name, f, status, detail in failures:
            print(f"  {name}/{f}: {status}: {detail}")


if __name__ == "__main__":
    main()
