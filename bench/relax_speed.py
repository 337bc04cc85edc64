"""Seconds per relaxation of crystalflow.physics: relax_cluster on perturbed true clusters, relax_crystal on COD.

    PYTHONPATH=. python bench/relax_speed.py                      # 10 cod, 5 csd500, 5 ocelot clusters; all COD crystals
    PYTHONPATH=. python bench/relax_speed.py --no-crystals --json out.json

Clusters: the first N true crystals of each set (cod: embedded CIFs; csd500/ocelot: the 40-file sample of
bench/relax_true.py), each 17-molecule cluster perturbed as there (every molecule moved 1 Å and rotated
15°, rng seed 1 per set) and relaxed with ``relax_cluster(x, z, restraint=1.0)``. Reports seconds,
L-BFGS steps, valid before/after (``is_valid``), the largest heavy-atom overlap after (``max_overlap``)
and the energy after. Crystals: ``relax_crystal(sc, ff)`` on every embedded COD crystal (max and mean s).
One torch thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relax_true import SHARED, perturb, true_crystals  # noqa: E402

from crystalflow import embedded_cif_dir  # noqa: E402
from crystalflow.physics.forcefield import assign  # noqa: E402
from crystalflow.physics.relax import relax_cluster, relax_crystal  # noqa: E402
from crystalflow.structure.contacts import is_valid, max_overlap  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clusters", default="cod:10,csd500:5,ocelot:5")
    ap.add_argument("--no-crystals", action="store_true")
    ap.add_argument("--only-crystals", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--gtol", type=float, default=None, help="relax_cluster gtol (default: its own)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    folders = {"cod": (embedded_cif_dir(), None), "csd500": (os.path.join(SHARED, "csd500"), 40),
               "ocelot": (os.path.join(SHARED, "ocelot"), 40)}
    out = {"clusters": [], "crystals": []}
    cache = {}
    if not args.only_crystals:
        print(f"{'cluster':28s} {'n':>3s} {'s':>6s} {'cpu s':>6s} {'steps':>5s} {'valid0':>6s} {'valid':>5s} {'overlap':>7s} {'E after':>10s}")
        for spec in args.clusters.split(","):
            name, n = spec.split(":")
            folder, sample = folders[name]
            if not os.path.isdir(folder):
                print(f"{name}: {folder} not present")
                continue
            items = cache.setdefault(name, true_crystals(folder, sample))
            rng = np.random.default_rng(1)
            for fname, sc in items[: int(n)]:
                xp = perturb(sc.cluster(), sc.z, rng)
                kw = {} if args.gtol is None else dict(gtol=args.gtol)
                t, c = time.perf_counter(), time.process_time()
                r = relax_cluster(xp, sc.z, restraint=1.0, **kw)
                s, cpu = time.perf_counter() - t, time.process_time() - c
                row = dict(set=name, file=fname, n_atoms=int(len(sc.z)), s=s, cpu=cpu, steps=int(r.steps),
                           valid0=bool(is_valid(xp, sc.z)), valid=bool(is_valid(r.x[0], sc.z)),
                           overlap=float(max_overlap(r.x[0], sc.z)), e=float(r.energy_after[0]))
                out["clusters"].append(row)
                print(f"{name + '/' + fname:28s} {row['n_atoms']:3d} {s:6.2f} {cpu:6.2f} {row['steps']:5d} {str(row['valid0']):>6s} "
                      f"{str(row['valid']):>5s} {row['overlap']:7.3f} {row['e']:10.2f}", flush=True)
        for name in folders:
            s = [r["s"] for r in out["clusters"] if r["set"] == name]
            if s:
                v = sum(r["valid"] for r in out["clusters"] if r["set"] == name)
                c = [r["cpu"] for r in out["clusters"] if r["set"] == name]
                print(f"  {name}: {len(s)} clusters, {np.mean(s):.2f} s mean, {np.min(s):.2f}-{np.max(s):.2f} s "
                      f"(CPU {np.mean(c):.2f} mean, {np.max(c):.2f} max), {v} valid after")
    if not args.no_crystals:
        items = cache.get("cod") or true_crystals(embedded_cif_dir(), None)
        for fname, sc in items:
            ff = assign(sc.z, sc.molecule)
            t, c = time.perf_counter(), time.process_time()
            r = relax_crystal(sc, ff)
            s, cpu = time.perf_counter() - t, time.process_time() - c
            out["crystals"].append(dict(file=fname, n_atoms=int(len(sc.z)), s=s, cpu=cpu, steps=int(r.steps), converged=bool(r.converged),
                                        e=float(r.energy_after), volume=float(r.crystal.volume)))
        s = np.array([r["s"] for r in out["crystals"]])
        c = np.array([r["cpu"] for r in out["crystals"]])
        k = int(np.argmax(s))
        print(f"relax_crystal cod: {len(s)} crystals, {s.mean():.2f} s mean, {s.max():.2f} s max ({out['crystals'][k]['file']}; "
              f"CPU {c.mean():.2f} mean, {c.max():.2f} max), "
              f"{sum(r['converged'] for r in out['crystals'])} converged")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
