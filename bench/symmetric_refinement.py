"""Does a learned model turn a crystal with a symmetric error back into the experimental one? Held-out crystals.

    python bench/symmetric_refinement.py --split-of /tmp/melt50 --split test,valid \\
        --model melt=crystalflow/resources/models/search --model symmetric=/tmp/sym_run --angles 20,30

A searched candidate near the experimental crystal carries one error: its asymmetric molecule is turned
and moved, its cell strained, and every image carries that error. This bench makes such candidates from
held-out experimental crystals (the ``--split`` crystals of a ``crystalflow build``, as
``bench/predict_crystals.py`` picks them) and asks each ``--model NAME=DIR`` to undo it. Per crystal and
``--angles`` value (``--draws`` draws each, seeded by crystal and draw): the asymmetric molecule is turned
by exactly that angle about a random axis through its centre of mass, moved by ``--displacement`` Å (std per
axis), the cell strained by ``I + E`` (E symmetric, entries of std ``--strain``) and then expanded uniformly
(molecules' fractional centres kept) until no heavy-atom vdW overlap exceeds 0.5 Å. Then, in the same run:

- ``input``: the perturbed crystal itself; ``input+relax``: relaxed (``relax_crystal``, at most ``--seconds``);
- ``NAME``: the model's symmetrised update of the perturbed crystal (``predicted_updates``, the step
  ``crystalflow predict --refine`` takes); ``NAME+relax``: that, relaxed;
- ``relax+NAME+relax``: the relaxed input updated by the model and relaxed again — the search's use of
  the model (it refines relaxed candidates).

Scores: ``turn`` (deg): the angle between the asymmetric molecule's orientation and the experimental one
(cell and operators are those of the experiment, so orientations compare directly); ``solved``: the
crystal's cluster is valid and matches the experimental cluster (≥ 8 of 15 molecules with RMSD_15 < 2 Å,
OXtalign). Relaxations that fail or run out of time count as unsolved (their count is printed).
"""
from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import os
import sys
import time

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from crystalflow.evaluation.matching import ClusterTopology, packing_match
from crystalflow.evaluation.metrics import cluster_validity
from crystalflow.physics.energy import CellError
from crystalflow.physics.forcefield import assign
from crystalflow.physics.relax import relax_crystal
from crystalflow.search.refine import load_refiner, predicted_updates
from crystalflow.structure.contacts import max_overlap
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import centre_of_mass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from predict_crystals import _load_target, _split_files  # noqa: E402  (one target reader for both benches)

#: largest heavy-atom overlap (Å) the perturbed crystal keeps (the noise's limit)
MAX_OVERLAP = 0.5
#: factor per step of the uniform cell expansion that clears overlaps
EXPAND = 1.01

_MODELS: dict = {}


def perturb(true: SymmetricCrystal, angle_deg: float, displacement: float, strain: float,
            rng: np.random.Generator) -> SymmetricCrystal:
    """The experimental crystal with one symmetric error (module docstring)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    rot = Rotation.from_rotvec(axis * math.radians(angle_deg)).as_matrix()
    com = centre_of_mass(true.molecule, true.z)
    moved = (true.molecule - com) @ rot.T + com + rng.standard_normal(3) * displacement
    e = rng.standard_normal((3, 3)) * strain
    lattice = true.lattice @ (np.eye(3) + 0.5 * (e + e.T)).T
    frac_com = centre_of_mass(moved, true.z) @ np.linalg.inv(true.lattice)
    rel = moved - centre_of_mass(moved, true.z)
    scale = 1.0
    while True:
        cell = lattice * scale
        crystal = true.with_pose(lattice=cell, molecule=rel + frac_com @ cell)
        if max_overlap(crystal.cluster(), true.z) <= MAX_OVERLAP:
            return crystal
        scale *= EXPAND


def turn(crystal: SymmetricCrystal, true: SymmetricCrystal) -> float:
    """Angle (deg) between the asymmetric molecule's orientation and the experimental one."""
    r, _, _ = kabsch(true.molecule, crystal.molecule)
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def solved(crystal: SymmetricCrystal | None, true_cluster: np.ndarray, z: np.ndarray, topo) -> bool:
    if crystal is None:
        return False
    cluster = crystal.cluster()
    valid, _ = cluster_validity(cluster, z)
    return bool(valid and packing_match(cluster, true_cluster, z, topology=topo).matched)


def _init(models: list[tuple[str, str]]) -> None:
    torch.set_num_threads(1)
    for name, path in models:
        _MODELS[name] = load_refiner(path)


def _relax(crystal: SymmetricCrystal, ff, seconds: float) -> SymmetricCrystal | None:
    try:
        res = relax_crystal(crystal, ff=ff, max_seconds=seconds)
    except CellError:
        return None
    return res.crystal if res.converged and np.isfinite(res.energy_after) else None


def run_target(job) -> list[dict]:
    name, path, angles, draws, args = job
    true = _load_target(path)
    if true is None:
        return []
    true_cluster = true.cluster()
    topo = ClusterTopology(true_cluster[0], true.z)
    ff = assign(true.z, true.molecule)
    rows = []
    for angle in angles:
        for draw in range(draws):
            rng = np.random.default_rng([args.seed, draw, int(angle * 10), sum(map(ord, name))])
            t0 = time.perf_counter()
            start = perturb(true, angle, args.displacement, args.strain, rng)
            relaxed = _relax(start, ff, args.seconds)
            row = {"name": name, "angle": angle, "draw": draw, "heavy": int(np.sum(true.z != 1)),
                   "input_turn": turn(start, true), "input_solved": solved(start, true_cluster, true.z, topo),
                   "input+relax_solved": solved(relaxed, true_cluster, true.z, topo),
                   "input+relax_turn": turn(relaxed, true) if relaxed is not None else math.nan,
                   "input+relax_failed": relaxed is None}
            for mname, model in _MODELS.items():
                upd = predicted_updates([start], model, seed=draw)[0]
                upd_relaxed = _relax(upd, ff, args.seconds)
                row[f"{mname}_turn"] = turn(upd, true)
                row[f"{mname}_solved"] = solved(upd, true_cluster, true.z, topo)
                row[f"{mname}+relax_solved"] = solved(upd_relaxed, true_cluster, true.z, topo)
                row[f"{mname}+relax_turn"] = turn(upd_relaxed, true) if upd_relaxed is not None else math.nan
                row[f"{mname}+relax_failed"] = upd_relaxed is None
                if relaxed is not None:
                    again = _relax(predicted_updates([relaxed], model, seed=draw)[0], ff, args.seconds)
                    row[f"relax+{mname}+relax_solved"] = solved(again, true_cluster, true.z, topo)
                    row[f"relax+{mname}+relax_turn"] = turn(again, true) if again is not None else math.nan
                else:
                    row[f"relax+{mname}+relax_solved"] = False
                    row[f"relax+{mname}+relax_turn"] = math.nan
            row["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
    return rows


def _summary(rows: list[dict], models: list[str]) -> None:
    angles = sorted({r["angle"] for r in rows})
    arms = ["input", "input+relax"] + [a for m in models for a in (m, f"{m}+relax", f"relax+{m}+relax")]
    print(f"\n{len({r['name'] for r in rows})} held-out crystals, {len(rows)} perturbed crystals; solved (%) and "
          "median turn (deg) by input angle")
    print("| arm | " + " | ".join(f"{a:g}°: solved / turn" for a in angles) + " |")
    print("|---|" + "---|" * len(angles))
    for arm in arms:
        cells = []
        for a in angles:
            sel = [r for r in rows if r["angle"] == a]
            s = 100.0 * np.mean([r[f"{arm}_solved"] for r in sel])
            key = f"{arm}_turn"
            t = np.nanmedian([r[key] for r in sel]) if key in sel[0] else math.nan
            cells.append(f"{s:.1f} / {t:.1f}" if math.isfinite(t) else f"{s:.1f} / –")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    fails = {k: int(sum(r[k] for r in rows)) for k in rows[0] if k.endswith("_failed")}
    print("relaxations failed or out of time:", fails)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split-of", required=True, help="a crystalflow build directory (its clusters.csv)")
    p.add_argument("--split", default="test", help="comma-separated splits (default: test)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a model to compare")
    p.add_argument("--angles", default="20,30", help="comma-separated turn angles (deg)")
    p.add_argument("--draws", type=int, default=1, help="perturbed crystals per crystal and angle")
    p.add_argument("--displacement", type=float, default=0.3, help="Å, std per axis of the molecule's move")
    p.add_argument("--strain", type=float, default=0.03, help="std of the cell strain's entries")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per relaxation at most")
    p.add_argument("--max-crystals", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", help="write the per-crystal rows here")
    args = p.parse_args()
    models = [tuple(m.split("=", 1)) for m in args.model]
    if any(len(m) != 2 for m in models):
        p.error("--model takes NAME=DIR")
    angles = [float(a) for a in args.angles.split(",")]
    files = _split_files(args.split_of, args.split)[: args.max_crystals]
    jobs = [(name, path, angles, args.draws, args) for name, path in files]
    t0 = time.perf_counter()
    rows: list[dict] = []
    from tqdm import tqdm

    if args.workers > 1:
        with multiprocessing.get_context("spawn").Pool(args.workers, _init, (models,)) as pool:
            for out in tqdm(pool.imap_unordered(run_target, jobs), total=len(jobs), desc="crystals"):
                rows += out
    else:
        _init(models)
        for job in tqdm(jobs, desc="crystals"):
            rows += run_target(job)
    rows.sort(key=lambda r: (r["name"], r["angle"], r["draw"]))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {time.perf_counter() - t0:.0f} s, "
          f"{' '.join(sys.argv[1:])}")
    _summary(rows, [m[0] for m in models])


if __name__ == "__main__":
    main()
