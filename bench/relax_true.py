"""Relax TRUE crystals with crystalflow.physics and measure how far they move.

    python bench/relax_true.py                         # embedded COD + 40 each of ../shared/data/{csd500,ocelot}
    python bench/relax_true.py --sample 40 --charge-scale 1.0 --cutoff 12 --clusters 5
    python bench/relax_true.py --charges gasteiger     # Gasteiger charges instead of MMFF94 (the default)

Per set: OXtalign RMSD_15 (median, 90th percentile) between the relaxed and the true 17-molecule
cluster (``packing_match``), n_matched (median), % valid after relaxation (and how many were valid
before), cell volume change (median, %), seconds per crystal on one thread, % converged. True crystals:
``read_cif`` → ``select(crystal, BuildSettings())`` (rejected files skipped) → ``SymmetricCrystal``.
With ``--clusters N``, N true clusters per set are perturbed (each molecule moved 1 Å and rotated 15°
at random) and relaxed with ``relax_cluster``: reports valid before/after. Missing folders are skipped.
"""
from __future__ import annotations

import argparse
import glob
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from crystalflow import embedded_cif_dir
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.evaluation.matching import packing_match
from crystalflow.physics.energy import EnergySettings
from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL
from crystalflow.physics.forcefield import assign
from crystalflow.physics.relax import relax_cluster, relax_crystal, rotation_matrix
from crystalflow.structure.cif import read_cif
from crystalflow.structure.contacts import is_valid
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.molecules import centre_of_mass

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data")


def true_crystals(folder: str, sample: int | None, seed: int = 0):
    files = sorted(glob.glob(os.path.join(folder, "*.cif")))
    if sample and len(files) > sample:
        files = sorted(np.random.default_rng(seed).choice(files, sample, replace=False).tolist())
    out = []
    for path in files:
        try:
            crystal = read_cif(path)
            molecules, _, _ = select(crystal, BuildSettings())
            out.append((os.path.basename(path), SymmetricCrystal.from_crystal(crystal, molecules[0])))
        except Exception:  # rejected by the pipeline (RejectError) or no symmetry: not a true crystal here
            continue
    return out


def perturb(x: np.ndarray, z: np.ndarray, rng: np.random.Generator, shift: float = 1.0, angle: float = 15.0) -> np.ndarray:
    com = centre_of_mass(x, z)
    out = []
    for m in range(len(x)):
        axis = rng.normal(size=3)
        axis *= np.deg2rad(angle) / np.linalg.norm(axis)
        R = rotation_matrix(torch.as_tensor(axis)).numpy()
        d = rng.normal(size=3)
        out.append((x[m] - com[m]) @ R.T + com[m] + shift * d / np.linalg.norm(d))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=40, help="crystals drawn from each shared set")
    ap.add_argument("--charge-scale", type=float, default=EnergySettings.charge_scale)
    ap.add_argument("--charges", default=DEFAULT_CHARGE_MODEL, choices=CHARGE_MODELS, help="charge model of assign")
    ap.add_argument("--cutoff", type=float, default=EnergySettings.cutoff)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--clusters", type=int, default=3, help="perturbed true clusters per set for relax_cluster")
    ap.add_argument("--sets", default="cod,csd500,ocelot")
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = EnergySettings(cutoff=args.cutoff, taper=min(2.0, args.cutoff / 4), charge_scale=args.charge_scale)
    folders = {"cod": (embedded_cif_dir(), None), "csd500": (os.path.join(SHARED, "csd500"), args.sample),
               "ocelot": (os.path.join(SHARED, "ocelot"), args.sample)}
    print(f"charges {args.charges} x {args.charge_scale}, cutoff {args.cutoff} Å, max steps {args.max_steps}, 1 thread")
    print(f"{'set':8s} {'n':>4s} {'RMSD15 med':>10s} {'p90':>6s} {'matched':>7s} {'valid':>6s} {'(before)':>8s} "
          f"{'dV% med':>7s} {'|dV|%p90':>8s} {'s/cryst':>7s} {'max s':>6s} {'conv%':>5s}")
    rows, cluster_rows, worst = [], [], []
    for name in args.sets.split(","):
        folder, sample = folders[name]
        if not os.path.isdir(folder):
            print(f"{name:8s} skipped: {folder} not present")
            continue
        items = true_crystals(folder, sample)
        rmsd, nm, valid, valid0, dv, secs, conv = [], [], [], [], [], [], []
        for fname, sc in tqdm(items, desc=name, leave=False):
            true_cluster = sc.cluster()
            t = time.perf_counter()
            try:
                ff = assign(sc.z, sc.molecule, charge_model=args.charges)
                res = relax_crystal(sc, ff, max_steps=args.max_steps, settings=settings)
            except Exception as e:  # report, keep measuring the others
                print(f"  {fname}: relaxation failed: {type(e).__name__}: {e}")
                continue
            secs.append(time.perf_counter() - t)
            relaxed = res.crystal.cluster()
            m = packing_match(relaxed, true_cluster, sc.z)
            rmsd.append(m.rmsd if m.n_matched > 1 else np.inf)
            nm.append(m.n_matched)
            valid.append(is_valid(relaxed, sc.z))
            valid0.append(is_valid(true_cluster, sc.z))
            dv.append(100 * (res.crystal.volume / sc.volume - 1))
            conv.append(res.converged)
            worst.append((rmsd[-1], name, fname, m.n_matched, dv[-1]))
        if not secs:
            continue
        r = np.array(rmsd)
        print(f"{name:8s} {len(secs):4d} {np.median(r):10.3f} {np.percentile(r, 90):6.3f} {np.median(nm):7.0f} "
              f"{100 * np.mean(valid):5.1f}% {int(np.sum(valid0)):8d} {np.median(dv):7.2f} {np.percentile(np.abs(dv), 90):8.2f} "
              f"{np.mean(secs):7.2f} {np.max(secs):6.2f} {100 * np.mean(conv):5.0f}", flush=True)
        rng = np.random.default_rng(1)
        for fname, sc in items[: args.clusters]:
            x = sc.cluster()
            xp = perturb(x, sc.z, rng)
            t = time.perf_counter()
            out = relax_cluster(xp, sc.z, restraint=1.0, settings=settings)
            cluster_rows.append((name, fname, is_valid(xp, sc.z), is_valid(out.x[0], sc.z), time.perf_counter() - t))
    print("\nworst RMSD_15:")
    for w in sorted(worst, key=lambda v: -v[0])[:6]:
        print(f"  {w[1]}/{w[2]}: RMSD_15 {w[0]:.3f} Å, {w[3]} matched, dV {w[4]:+.1f}%")
    if cluster_rows:
        print("\nrelax_cluster on perturbed true clusters (1 Å, 15° per molecule, restraint 1 kJ/mol/Å²):")
        for name, fname, v0, v1, s in cluster_rows:
            print(f"  {name}/{fname}: valid before {v0}, after {v1}, {s:.1f} s")


if __name__ == "__main__":
    main()
