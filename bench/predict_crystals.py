"""Crystal structure prediction from the molecule alone on held-out crystals: sol_c@1/10/30 of search_crystals.

    python bench/predict_crystals.py                                  # cod + csd500, common space groups
    python bench/predict_crystals.py --sets cod,csd500 --max-molecules 10 --candidates 60 --seconds 120 \\
        --space-groups true --seed 0

Targets: the embedded COD CIFs (``crystalflow.common.resources.embedded_cif_dir()``) and
``../shared/data/csd500`` (skipped when absent), none of which any model here was trained on. Each CIF
goes through ``read_cif`` → ``select(crystal, BuildSettings())`` (rejected files skipped); the true
molecule is ``molecules[0]`` as it sits in the crystal (its crystal conformer, kept rigid). Kept:
molecules with at most ``--max-heavy`` heavy atoms and ``--max-rotatable`` rotatable bonds
(:func:`rotatable_bonds`), taken from the sets in turn up to ``--max-molecules``.

For each molecule ``crystalflow.search.pipeline.search_crystals`` runs with the budget ``--candidates``
crystals and ``--seconds`` seconds (whichever ends first), in the experimental space group only
(``--space-groups true``: the oracle setting; molecules whose group is not one of the common ones are
skipped) or in all ``COMMON_SPACE_GROUPS`` (``common``). Scores follow
``crystalflow.evaluation.metrics.cluster_metrics``: a candidate **solves** the target when its cluster
(``candidate.crystal.cluster()``) is valid (``cluster_validity``) and matches the experimental cluster
(``packing_match``: ≥ 8 of 15 molecules with RMSD_15 < 2 Å); solved@K: one of the K lowest-energy
candidates solves it. Per molecule also: the rank of the first solving candidate, the best n_matched
among the top 30, seconds of the search, the true space group (spglib), whether it was searched, and
whether the true molecule sits on the general position (Z' = 1 with Z = the group's order; the
generator places molecules only there).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

from crystalflow import embedded_cif_dir
from crystalflow.common.errors import RejectError
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.evaluation.matching import ClusterTopology, packing_match
from crystalflow.evaluation.metrics import cluster_validity
from crystalflow.search.pipeline import search_crystals
from crystalflow.search.spacegroups import COMMON_SPACE_GROUPS
from crystalflow.structure.cif import read_cif
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import HYDROGEN, formula
from crystalflow.structure.molecules import molecule_bonds

HERE = os.path.dirname(os.path.abspath(__file__))
SETS = {"cod": str(embedded_cif_dir()), "csd500": os.path.join(HERE, "..", "..", "shared", "data", "csd500")}
COMMON = {sg.number: sg for sg in COMMON_SPACE_GROUPS}
TOP_K = (1, 10, 30)


def rotatable_bonds(x: np.ndarray, z: np.ndarray) -> int:
    """Rotatable bonds: RDKit's ``CalcNumRotatableBonds`` on the molecule built from its bond graph
    (``molecule_bonds``) with bond orders from ``DetermineBondOrders``; where RDKit cannot assign orders,
    the acyclic bonds between two heavy atoms that each have another heavy neighbour."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds, rdMolDescriptors
    from rdkit.Geometry import Point3D

    RDLogger.DisableLog("rdApp.*")
    bonds = molecule_bonds(x, z)
    mol = Chem.RWMol()
    for v in z:
        mol.AddAtom(Chem.Atom(int(v)))
    for i, j in bonds:
        mol.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    conf = Chem.Conformer(len(z))
    for k, p in enumerate(x):
        conf.SetAtomPosition(k, Point3D(*map(float, p)))
    mol.AddConformer(conf)
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=0)
        Chem.SanitizeMol(mol)
        return int(rdMolDescriptors.CalcNumRotatableBonds(mol))
    except Exception:  # noqa: BLE001 - RDKit raises several kinds for molecules it cannot perceive
        Chem.GetSymmSSSR(mol)
        ring = mol.GetRingInfo()
        heavy_deg = [sum(a.GetAtomicNum() != HYDROGEN for a in atom.GetNeighbors()) for atom in mol.GetAtoms()]
        return sum(1 for i, j in bonds if z[i] != HYDROGEN and z[j] != HYDROGEN and heavy_deg[i] > 1 and heavy_deg[j] > 1
                   and not ring.NumBondRings(mol.GetBondBetweenAtoms(int(i), int(j)).GetIdx()))


def targets(sets: list[str], max_heavy: int, max_rotatable: int, max_molecules: int):
    """(name, true SymmetricCrystal, space-group number, rotatable bonds), taken from the sets in turn."""
    queues = []
    for s in sets:
        folder = SETS[s]
        if not os.path.isdir(folder):
            print(f"skipping {s}: {folder} not present", file=sys.stderr)
            continue
        queues.append((s, iter(sorted(f for f in os.listdir(folder) if f.endswith(".cif")))))
    taken = 0
    while queues and taken < max_molecules:
        for q in list(queues):
            s, files = q
            for f in files:
                try:
                    crystal = read_cif(os.path.join(SETS[s], f))
                    molecules, _, _ = select(crystal, BuildSettings())
                    sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
                except (RejectError, ValueError):  # rejected by the pipeline, or no symmetry: not a target
                    continue
                if int(np.sum(sc.z != HYDROGEN)) > max_heavy:
                    continue
                rot = rotatable_bonds(sc.molecule, sc.z)
                if rot > max_rotatable:
                    continue
                taken += 1
                yield f"{s}/{f[:-4]}", sc, sc.space_group()[0], rot
                break
            else:
                queues.remove(q)
            if taken >= max_molecules:
                return


def score(result, true: SymmetricCrystal) -> dict:
    """solved@K, first solving rank, best n_matched (top 30) of a SearchResult against the true crystal."""
    true_cluster = true.cluster()
    topo = ClusterTopology(true_cluster[0], true.z)
    solved, best_n, best_rmsd = [], 0, math.nan
    for c in result.candidates[: max(TOP_K)]:
        cluster = c.crystal.cluster()
        valid, _ = cluster_validity(cluster, true.z)
        m = packing_match(cluster, true_cluster, true.z, topology=topo)
        solved.append(bool(valid and m.matched))
        if m.n_matched > best_n or (m.n_matched == best_n and m.rmsd < best_rmsd):
            best_n, best_rmsd = m.n_matched, m.rmsd
    first = next((k + 1 for k, s in enumerate(solved) if s), None)
    return {**{f"solved@{k}": bool(any(solved[:k])) for k in TOP_K}, "first": first, "best_n": best_n,
            "best_rmsd": best_rmsd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="cod,csd500")
    ap.add_argument("--max-molecules", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=60, help="crystals generated per molecule")
    ap.add_argument("--seconds", type=float, default=None, help="time budget per molecule (none: all candidates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space-groups", choices=("true", "common"), default="common")
    ap.add_argument("--max-heavy", type=int, default=20)
    ap.add_argument("--max-rotatable", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"budget per molecule: {args.candidates} candidates, {args.seconds or 'no'} s limit; space groups: "
          f"{args.space_groups}; seed {args.seed}; ≤ {args.max_heavy} heavy atoms, ≤ {args.max_rotatable} rotatable bonds; "
          f"{torch.get_num_threads()} thread", flush=True)
    header = (f"{'molecule':28s} {'formula':14s} {'rot':>3s} {'true sg':>7s} {'srch':>4s} {'gen':>3s} {'cand':>4s} "
              f"{'@1':>2s} {'@10':>3s} {'@30':>3s} {'first':>5s} {'best n':>6s} {'rmsd':>5s} {'E1 kJ/mol':>9s} {'s':>6s}")
    print(header, flush=True)
    rows = []
    for k, (name, true, number, rot) in enumerate(targets(args.sets.split(","), args.max_heavy, args.max_rotatable,
                                                       args.max_molecules)):
        general = true.n_molecules == len(true.rotations)
        if args.space_groups == "true":
            if number not in COMMON:
                print(f"{name:28s} skipped: space group {number} is not one of the common ones", flush=True)
                continue
            groups = [COMMON[number]]
        else:
            groups = list(COMMON_SPACE_GROUPS)
        t = time.perf_counter()
        result = search_crystals(true.molecule, true.z, args.candidates, space_groups=groups,
                                 rng=np.random.default_rng([args.seed, k]), time_budget_s=args.seconds,
                                 max_steps=args.max_steps, progress=False)
        seconds = time.perf_counter() - t
        r = score(result, true)
        r.update(name=name, number=number, searched=number in {g.number for g in groups}, general=general,
                 seconds=seconds, n=len(result.candidates), generated=result.n_generated)
        rows.append(r)
        yn = {True: "y", False: "-"}
        e1 = result.candidates[0].energy if result.candidates else math.nan
        print(f"{name:28s} {formula(true.z):14s} {rot:3d} {number:4d}{'' if general else '*':3s} {yn[r['searched']]:>4s} "
              f"{result.n_generated:3d} {r['n']:4d} {yn[r['solved@1']]:>2s} {yn[r['solved@10']]:>3s} {yn[r['solved@30']]:>3s} "
              f"{r['first'] or '-':>5} {r['best_n']:6d} {r['best_rmsd']:5.2f} {e1:9.1f} {seconds:6.0f}", flush=True)
    if not rows:
        print("no molecules")
        return
    print("(*: the true molecule sits on a special position, which the generator does not place molecules on)")
    print()
    sol = {k: 100 * np.mean([r[f"solved@{k}"] for r in rows]) for k in TOP_K}
    print(f"{'setting':8s} {'molecules':>9s} {'sol_c@1':>8s} {'sol_c@10':>9s} {'sol_c@30':>9s} {'searched':>8s} "
          f"{'best n med':>10s} {'median s':>8s} {'max s':>6s}")
    print(f"{args.space_groups:8s} {len(rows):9d} {sol[1]:7.1f}% {sol[10]:8.1f}% {sol[30]:8.1f}% "
          f"{sum(r['searched'] and r['general'] for r in rows):8d} {np.median([r['best_n'] for r in rows]):10.0f} "
          f"{np.median([r['seconds'] for r in rows]):8.0f} {max(r['seconds'] for r in rows):6.0f}")


if __name__ == "__main__":
    main()
