"""Random Z' = 1 crystals of real molecules: density, speed, rejections and closeness to the experimental packing.

    python bench/generate_crystals.py                        # embedded COD CIFs + ../shared/data/csd500
    python bench/generate_crystals.py DIR [DIR ...] [--n 100] [--max-files N] [--pyxtal] [--seed 0]

For each CIF that the build pipeline accepts (``select`` with ``BuildSettings()``) whose space group
(spglib on the cell, via ``SymmetricCrystal.space_group()``) is one of
``crystalflow.search.spacegroups.COMMON_SPACE_GROUPS``, the true molecule (``molecules[0]``) is given to
``crystalflow.search.generate.generate_crystals`` with the true space group, ``--n`` candidates. Each
candidate's 17-molecule cluster is compared with the true one by OXtalign
(``crystalflow.evaluation.matching.packing_match``, RMSD_15 and molecules matched of 15), without any
relaxation. ``--pyxtal`` also runs PyXtal's ``from_random`` (its defaults) on the same molecule (our
coordinates, never PyXtal's bundled structures) and space group, and scores it the same way.

Per generator: molecules, median and 10–90 % range of density / true density, ms per accepted
candidate, % of draws rejected (PyXtal: % of calls without a valid crystal), the fraction of molecules
for which some candidate matches ≥ 8 of 15 within 2 Å, the median and maximum over molecules of the
best n_matched, and the fraction of candidates valid (no heavy-atom overlap ≥ 0.7 Å).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

from crystalflow import embedded_cif_dir
from crystalflow.common.errors import RejectError
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.evaluation.matching import (
    MAX_RMSD,
    MIN_MATCHED,
    ClusterTopology,
    packing_match,
)
from crystalflow.search.generate import generate_crystals
from crystalflow.search.spacegroups import COMMON_SPACE_GROUPS
from crystalflow.structure.cif import read_cif
from crystalflow.structure.contacts import is_valid
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import symbol

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIRS = [str(embedded_cif_dir()), os.path.join(HERE, "..", "..", "shared", "data", "csd500")]
NUMBERS = {sg.number for sg in COMMON_SPACE_GROUPS}


def targets(dirs: list[str], max_files: int):
    """(name, true SymmetricCrystal) of every accepted CIF in a common space group."""
    settings = BuildSettings()
    for d in dirs:
        if not os.path.isdir(d):
            print(f"skipping missing folder {d}", file=sys.stderr)
            continue
        files = sorted(f for f in os.listdir(d) if f.endswith(".cif"))
        taken = 0
        for f in files:
            if max_files and taken >= max_files:
                break
            try:
                crystal = read_cif(os.path.join(d, f))
                molecules, _, _ = select(crystal, settings)
                sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
            except (RejectError, ValueError):  # rejected by the pipeline, or no symmetry: not a target
                continue
            number, _ = sc.space_group()
            if number in NUMBERS and sc.n_molecules == len(sc.rotations):
                taken += 1
                yield f"{os.path.basename(os.path.normpath(d))}/{f}", sc, number


def pyxtal_candidates(sc: SymmetricCrystal, number: int, n: int, seed: int):
    """(crystals, failures, seconds) from PyXtal's from_random on the true molecule."""
    from pymatgen.core import Molecule as PMol
    from pyxtal import pyxtal
    from pyxtal.molecule import pyxtal_molecule

    x, z = sc.molecule, sc.z
    pm = pyxtal_molecule(PMol([symbol(int(e)) for e in z], x - x.mean(0)), fix=True)
    rng = np.random.default_rng(seed)
    out, failures = [], 0
    t0 = time.perf_counter()
    for _ in range(n):
        c = pyxtal(molecular=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c.from_random(3, number, [pm], [len(sc.rotations)], random_state=rng)
        except Exception:  # noqa: BLE001 - PyXtal raises many kinds when it gives up
            failures += 1
            continue
        if not c.valid:
            failures += 1
            continue
        site = c.mol_sites[0]
        mol, _ = site._get_coords_and_species(absolute=True, first=True)
        s = c.to_pymatgen()
        frac = np.asarray(s.frac_coords)
        zc = np.array([sp.Z for sp in s.species])
        try:
            out.append(SymmetricCrystal.from_cell(np.asarray(s.lattice.matrix), frac, zc, np.asarray(mol)[: len(z)], z))
        except ValueError:
            failures += 1
    return out, failures, time.perf_counter() - t0


def score(cands: list[SymmetricCrystal], true: SymmetricCrystal, true_cluster, topo) -> dict:
    best_n, any_match, valid, dens = 0, False, 0, []
    for c in cands:
        cl = c.cluster()
        m = packing_match(cl, true_cluster, true.z, topology=topo)
        best_n = max(best_n, m.n_matched)
        any_match |= bool(m.n_matched >= MIN_MATCHED and m.rmsd < MAX_RMSD)
        valid += is_valid(cl, true.z)
        dens.append(c.density() / true.density())
    return {"best_n": best_n, "match": any_match, "valid": valid / max(1, len(cands)), "density": dens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="*", default=DEFAULT_DIRS)
    ap.add_argument("--n", type=int, default=100, help="candidates per molecule")
    ap.add_argument("--max-files", type=int, default=0, help="targets per folder (0: all)")
    ap.add_argument("--pyxtal", action="store_true", help="also run PyXtal's random molecular crystals")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"crystalflow": [], "pyxtal": []}
    for k, (name, true, number) in enumerate(targets(args.dirs, args.max_files)):
        true_cluster = true.cluster()
        topo = ClusterTopology(true_cluster[0], true.z)
        gen = generate_crystals(true.molecule, true.z, number, args.n, np.random.default_rng([args.seed, k]))
        r = score(gen.crystals, true, true_cluster, topo)
        r.update(name=name, sg=number, ms=1000 * gen.seconds / max(1, len(gen.crystals)),
                 rejected=gen.rejected_fraction, made=len(gen.crystals))
        rows["crystalflow"].append(r)
        line = f"{name:45s} sg {number:3d} own: best {r['best_n']:2d} dens {np.median(r['density']) if r['density'] else float('nan'):.2f} {r['ms']:6.0f} ms"
        if args.pyxtal:
            cands, failures, seconds = pyxtal_candidates(true, number, args.n, args.seed + k)
            p = score(cands, true, true_cluster, topo)
            p.update(name=name, sg=number, ms=1000 * seconds / max(1, len(cands)),
                     rejected=failures / args.n, made=len(cands))
            rows["pyxtal"].append(p)
            line += f" | pyxtal: best {p['best_n']:2d} dens {np.median(p['density']) if p['density'] else float('nan'):.2f} {p['ms']:6.0f} ms"
        print(line, flush=True)
    print()
    print(f"{args.n} candidates per molecule, no relaxation; match: ≥ {MIN_MATCHED} of 15 within {MAX_RMSD} Å")
    print(f"{'generator':12s} {'molecules':>9s} {'density med':>11s} {'10-90%':>11s} {'ms/cand':>8s} {'rejected':>8s} "
          f"{'valid':>6s} {'any match':>9s} {'best n med':>10s} {'best n max':>10s}")
    for gen_name, rs in rows.items():
        if not rs:
            continue
        dens = np.concatenate([r["density"] for r in rs if r["density"]])
        q10, q50, q90 = np.percentile(dens, [10, 50, 90])
        best = np.array([r["best_n"] for r in rs])
        print(f"{gen_name:12s} {len(rs):9d} {q50:11.2f} {q10:5.2f}-{q90:4.2f} {np.median([r['ms'] for r in rs]):8.0f} "
              f"{100 * np.mean([r['rejected'] for r in rs]):7.1f}% {100 * np.mean([r['valid'] for r in rs]):5.1f}% "
              f"{100 * np.mean([r['match'] for r in rs]):8.1f}% {np.median(best):10.0f} {best.max():10d}")


if __name__ == "__main__":
    main()
