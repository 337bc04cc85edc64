"""Simulated PXRD (crystalflow.structure.pxrd) against gemmi's and pymatgen's structure factors and patterns.

    python bench/pxrd_agreement.py                 # the embedded COD CIFs that read_cif accepts
    python bench/pxrd_agreement.py DIR|FILE ... [--max-files N]

For each crystal (Cu Kα1 1.5406 Å, 2θ 5-50°, B = 0):

* ``gemmi |F|²``: the largest relative difference of |F(hkl)|² between ours (numpy sum over the cell
  with gemmi's IT92 coefficients) and ``gemmi.StructureFactorCalculatorX`` on the same P1 cell;
* against pymatgen's ``XRDCalculator`` (when installed): the largest 2θ difference of matched sticks
  (sticks of both grouped where neighbours lie within 0.005°), groups of I ≥ 1 % that one side lacks, the largest intensity difference of matched sticks (scale 0-100), the stick R-factor
  Σ|ΔI| / ΣI, and de Gelder's similarity of the two profiles (our profile function on both stick sets,
  FWHM 0.1°, width 1°);
* time per pattern: ours and pymatgen's (best of 3), and the one-off import cost of each.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import gemmi
import numpy as np

from crystalflow import embedded_cif_dir
from crystalflow.common.errors import RejectError
from crystalflow.structure.cif import read_cif
from crystalflow.structure.pxrd import (
    CU_KA,
    DEFAULT_FWHM,
    PowderPattern,
    pattern_similarity,
    powder_pattern,
    profile,
    reflections,
    structure_factors,
)

LOW, HIGH = 5.0, 50.0
#: sticks of the two calculations within this (degrees 2θ) are the same reflection(s)
MATCH_TOL = 0.005


def cif_files(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".cif"))
        else:
            out.append(p)
    return out


def gemmi_check(crystal) -> float:
    """Largest relative |F|² difference, ours vs gemmi.StructureFactorCalculatorX, on a P1 copy of the cell."""
    lat = crystal.lattice
    a, b, c = np.linalg.norm(lat, axis=1)
    ang = [np.degrees(np.arccos(np.dot(lat[i], lat[j]) / (np.linalg.norm(lat[i]) * np.linalg.norm(lat[j]))))
           for i, j in ((1, 2), (0, 2), (0, 1))]
    small = gemmi.SmallStructure()
    small.cell = gemmi.UnitCell(a, b, c, *ang)
    small.spacegroup_hm = "P 1"
    for k, (f, z) in enumerate(zip(crystal.frac, crystal.z)):
        site = gemmi.SmallStructure.Site()
        site.label = f"A{k}"
        site.element = gemmi.Element(int(z))
        site.fract = gemmi.Fractional(*f)
        site.occ = 1.0
        site.u_iso = 0.0
        small.add_site(site)
    small.setup_cell_images()
    hkl, d = reflections(lat, CU_KA / (2 * np.sin(np.radians(HIGH / 2))))
    ours = np.abs(structure_factors(hkl, d, crystal.frac, crystal.z)) ** 2
    calc = gemmi.StructureFactorCalculatorX(small.cell)
    ref = np.array([abs(calc.calculate_sf_from_small_structure(small, [int(v) for v in h])) ** 2 for h in hkl])
    return float(np.max(np.abs(ours - ref) / np.maximum(ref, 1e-6 * ref.max())))


def matched_sticks(t1, i1, t2, i2, tol: float = MATCH_TOL):
    """Sticks of two lists grouped where neighbours lie within ``tol`` degrees: per group ((2θ, I) of list 1,
    (2θ, I) of list 2), 2θ the intensity-weighted mean, None where a list has no stick in the group."""
    t = np.concatenate([t1, t2])
    i = np.concatenate([i1, i2])
    src = np.concatenate([np.zeros(len(t1), int), np.ones(len(t2), int)])
    order = np.argsort(t)
    t, i, src = t[order], i[order], src[order]
    cuts = np.flatnonzero(np.diff(t) > tol) + 1
    out = []
    for tt, ii, ss in zip(np.split(t, cuts), np.split(i, cuts), np.split(src, cuts)):
        sides = []
        for k in (0, 1):
            m = ss == k
            w = ii[m].sum()
            centre = float((tt[m] * ii[m]).sum() / w) if w > 0 else float(tt[m].mean()) if m.any() else None
            sides.append((centre, float(w)))
        out.append(tuple(sides))
    return out


def best_time(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return float(run.stdout.strip()) if run.returncode == 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", default=[embedded_cif_dir()])
    ap.add_argument("--max-files", type=int, default=None)
    args = ap.parse_args()
    try:
        from pymatgen.analysis.diffraction.xrd import XRDCalculator
        from pymatgen.core import Lattice, Structure
    except ImportError:
        XRDCalculator = None
    print(f"import: crystalflow.structure.pxrd {import_seconds('crystalflow.structure.pxrd'):.2f} s, "
          f"pymatgen XRDCalculator {import_seconds('pymatgen.analysis.diffraction.xrd'):.2f} s")
    header = "file atoms sticks gemmi_rel_F2 max_d2theta unmatched max_dI R_stick S_profile ours_ms pymatgen_ms"
    print(header)
    rows = []
    for path in cif_files(args.paths)[: args.max_files]:
        try:
            crystal = read_cif(path)
        except RejectError:
            continue
        ours = powder_pattern(crystal.lattice, crystal.frac, crystal.z)
        t_ours = best_time(lambda c=crystal: powder_pattern(c.lattice, c.frac, c.z))
        rel = gemmi_check(crystal)
        row = [os.path.basename(path)[:28], len(crystal.z), len(ours.peaks), rel]
        if XRDCalculator is not None:
            s = Structure(Lattice(crystal.lattice), [int(z) for z in crystal.z], crystal.frac)
            calc = XRDCalculator(wavelength=CU_KA)
            pm = calc.get_pattern(s, scaled=True, two_theta_range=(LOW, HIGH))
            t_pm = best_time(lambda c=calc, s=s: c.get_pattern(s, scaled=True, two_theta_range=(LOW, HIGH)))
            our_t = np.array([p.two_theta for p in ours.peaks])
            our_i = np.array([p.intensity for p in ours.peaks])
            pm_t, pm_i = np.asarray(pm.x), np.asarray(pm.y)
            dt, di, unmatched = [], [], 0
            for (t1, i1), (t2, i2) in matched_sticks(our_t, our_i, pm_t, pm_i):
                if t1 is None or t2 is None:
                    unmatched += int(max(i1, i2) >= 1.0)
                else:
                    dt.append(abs(t1 - t2))
                    di.append(abs(i1 - i2))
            grid = ours.two_theta
            prof = profile(grid, pm_t, pm_i, DEFAULT_FWHM)
            other = PowderPattern(grid, prof * 100 / prof.max())
            row += [max(dt), unmatched, max(di), float(np.sum(di) / pm_i.sum()), pattern_similarity(ours, other),
                    t_ours * 1e3, t_pm * 1e3]
        else:
            row += [np.nan] * 5 + [t_ours * 1e3, np.nan]
        rows.append(row)
        print(" ".join(f"{v:.6f}" if k == 8 else f"{v:.3g}" if isinstance(v, float) else str(v)
                       for k, v in enumerate(row)), flush=True)
    if rows:
        arr = np.array([r[3:] for r in rows], dtype=float)
        print(f"{len(rows)} crystals: gemmi max rel |F|² diff {np.nanmax(arr[:, 0]):.2g}; "
              f"max Δ2θ {np.nanmax(arr[:, 1]):.2g}°; unmatched sticks ≥1 % {int(np.nansum(arr[:, 2]))}; "
              f"max ΔI {np.nanmax(arr[:, 3]):.3g}; median R_stick {np.nanmedian(arr[:, 4]):.3g}; "
              f"min S {np.nanmin(arr[:, 5]):.5f}; median ms ours {np.nanmedian(arr[:, 6]):.1f}, "
              f"pymatgen {np.nanmedian(arr[:, 7]):.1f}")


if __name__ == "__main__":
    main()
