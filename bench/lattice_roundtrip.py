"""Round trip crystal → 17-molecule cluster → recovered crystal, on every accepted CIF of some folders.

    python bench/lattice_roundtrip.py                      # embedded COD CIFs + ../shared/data/{csd500,ocelot}
    python bench/lattice_roundtrip.py DIR [DIR ...] [--symprec 0.1] [--max-files N]

Each CIF the build pipeline accepts (``select`` with ``BuildSettings()``) is turned into its cluster
(``build_cluster``) and given to ``recover_crystal``. A recovery is right when its space-group number
equals the source's (the CIF's, or spglib's on the source cell when the CIF gives only operators)
and its Niggli-reduced cell equals the source's Niggli-reduced primitive cell within 1 % in every
length and angle. Prints one row per folder and every failure with its reason; missing folders are
skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import spglib

from crystalflow import embedded_cif_dir
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.lattice import SYMPREC, LatticeError, cells_agree, primitive_reduced_cell, recover_crystal

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIRS = [str(embedded_cif_dir()), os.path.join(HERE, "..", "..", "shared", "data", "csd500"),
                os.path.join(HERE, "..", "..", "shared", "data", "ocelot")]


def one(path: str, settings: BuildSettings, symprec: float) -> tuple[str, str]:
    """('skip'|'ok'|'sg'|'cell'|'sg+cell'|'error', detail) for one CIF."""
    try:
        crystal = read_cif(path)
        molecules, _, _ = select(crystal, settings)
    except Exception as e:  # rejected by the pipeline: not part of the round trip
        return "skip", f"{type(e).__name__}: {e}"
    cluster = build_cluster(crystal, molecules, k=settings.neighbours)
    try:
        rec = recover_crystal(cluster.x, cluster.z, symprec=symprec)
    except LatticeError as e:
        return "error", str(e)
    expected = crystal.sg_number
    if expected == 0:
        ds = spglib.get_symmetry_dataset((crystal.lattice, crystal.frac, crystal.z), symprec=symprec)
        expected = int(ds.number) if ds is not None else 0
    reference = primitive_reduced_cell(crystal.lattice, crystal.frac, crystal.z, symprec)
    sg_ok, cell_ok = rec.sg_number == expected, cells_agree(rec.lattice, reference)
    detail = (f"sg {rec.sg_number} ({rec.sg_symbol}) vs {expected}; cell "
              f"{' '.join(f'{v:.2f}' for v in rec.cell_parameters)} vs "
              f"{' '.join(f'{v:.2f}' for v in np.array(cell_parameters_of(reference)))}")
    status = "ok" if sg_ok and cell_ok else "+".join(k for k, good in (("sg", sg_ok), ("cell", cell_ok)) if not good)
    return status, detail


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
    rows, failures = [], []
    for d in args.dirs:
        if not os.path.isdir(d):
            print(f"skipping missing folder {d}", file=sys.stderr)
            continue
        files = sorted(f for f in os.listdir(d) if f.endswith(".cif"))
        if args.max_files:
            files = files[: args.max_files]
        counts = {"ok": 0, "sg": 0, "cell": 0, "sg+cell": 0, "error": 0, "skip": 0}
        t0 = time.perf_counter()
        for f in files:
            status, detail = one(os.path.join(d, f), settings, args.symprec)
            counts[status] += 1
            if status not in ("ok", "skip"):
                failures.append((os.path.basename(os.path.normpath(d)), f, status, detail))
        accepted = len(files) - counts["skip"]
        sg_right = counts["ok"] + counts["cell"]
        cell_right = counts["ok"] + counts["sg"]
        pct = (lambda n: 100.0 * n / accepted if accepted else float("nan"))
        rows.append((os.path.basename(os.path.normpath(d)), len(files), accepted, pct(sg_right), pct(cell_right),
                     pct(counts["ok"]), counts["error"], time.perf_counter() - t0))
    print(f"symprec {args.symprec} Å; a cell is right within 1 % in every Niggli length and angle")
    print(f"{'folder':<12}{'CIFs':>6}{'accepted':>10}{'sg right':>10}{'cell right':>12}{'both':>8}{'errors':>8}{'seconds':>9}")
    for name, n, acc, sg, cell, both, err, sec in rows:
        print(f"{name:<12}{n:>6}{acc:>10}{sg:>9.1f}%{cell:>11.1f}%{both:>7.1f}%{err:>8}{sec:>9.1f}")
    if failures:
        print("\nfailures:")
        for name, f, status, detail in failures:
            print(f"  {name}/{f}: {status}: {detail}")


if __name__ == "__main__":
    main()
