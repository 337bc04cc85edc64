"""Crystal structure prediction from the molecule alone on held-out crystals: sol_c@1/10/30 of the search,
with and without the learned refinement at equal time, against today's model-mode ``predict``.

    # targets: the test split of the search model's training build (see its model card for the build)
    python bench/predict_crystals.py --split-of /tmp/melt50 --split test --seconds 300 \\
        --model crystalflow/resources/models/search --workers 2
    python bench/predict_crystals.py --sets cod,csd500 --max-molecules 10 --candidates 60   # first files of sets

Targets: with ``--split-of DATASET --split S``, the crystals of split S of a ``crystalflow build`` directory
(its ``clusters.csv`` ``source`` paths, read relative to the current folder or to the dataset's parent); without
it, the first files of ``--sets`` (the embedded COD CIFs, ``../shared/data/csd500`` and ``../shared/data/ocelot``,
skipped when absent; OCELOT's molecules exceed the search model's 50 atoms, so none trained it).
Each CIF goes through ``read_cif`` → ``select(crystal, BuildSettings())`` (rejected files skipped); the true
molecule is ``molecules[0]`` as it sits in the crystal (its crystal conformer, kept rigid). Kept: molecules
with at most ``--max-heavy`` heavy atoms and ``--max-rotatable`` rotatable bonds (:func:`rotatable_bonds`), at
most ``--max-molecules``.

Per molecule, in the same run:

- ``search``: ``search_crystals`` with ``--candidates`` crystals and ``--seconds`` seconds, whichever ends
  first, in all ``COMMON_SPACE_GROUPS`` (``--space-groups common``) or in the experimental group only
  (``true``, the oracle setting; molecules whose group is not a common one are skipped);
- ``search+model`` (with ``--model``): the same search cut at ``(1 - --refine-fraction)`` of its time
  (``refine_result(..., until=...)`` replays the schedule's prefix), then its ``REFINE_TOP`` lowest
  distinct candidates refined by the model within the rest of the time: the same time budget as ``search``;
- ``search (SMILES)`` (``--from-smiles``, instead of the above): ``predict_crystals`` on the molecule's SMILES
  (RDKit's ``DetermineBonds`` on the crystal molecule): RDKit conformers (3 for > 2 rotatable bonds), not
  the crystal conformer, the budget shared among them; matched by OXtalign on the bond graph;
- ``predict (model)``: today's ``crystalflow predict --mode model`` (the shipped default model, K = 8
  clusters, rigid molecules), scored on its clusters.

Scores follow ``crystalflow.evaluation.metrics.cluster_metrics``: a candidate **solves** the target when its
cluster is valid (``cluster_validity``) and matches the experimental cluster (``packing_match``: ≥ 8 of 15
molecules with RMSD_15 < 2 Å); solved@K: one of the K lowest-energy candidates solves it. Per molecule also
the rank of the first solving candidate, the best n_matched among the top 30, the seconds, and the
experimental crystal relaxed with the same force field: its energy ``E_exp`` against the best candidate's
``E1`` (E_exp < E1 - 0.5: the search missed the experimental minimum; E_exp > E1: the force field ranks
another packing lower).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import multiprocessing
import os
import sys
import time

import numpy as np
import torch

from crystalflow import embedded_cif_dir
from crystalflow.common.errors import RejectError, UserError
from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.evaluation.matching import ClusterTopology, packing_match
from crystalflow.evaluation.metrics import cluster_validity
from crystalflow.physics.forcefield import assign
from crystalflow.physics.relax import relax_crystal
from crystalflow.search.pipeline import REFINE_FRACTION, refine_result, search_crystals
from crystalflow.search.spacegroups import COMMON_SPACE_GROUPS
from crystalflow.structure.cif import read_cif
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import HYDROGEN, formula
from crystalflow.structure.molecule_input import graph_molecule
from crystalflow.structure.molecules import molecule_bonds

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data")
SETS = {"cod": str(embedded_cif_dir()), "csd500": os.path.join(SHARED, "csd500"), "ocelot": os.path.join(SHARED, "ocelot")}
COMMON = {sg.number: sg for sg in COMMON_SPACE_GROUPS}
TOP_K = (1, 10, 30)


def rotatable_bonds(x: np.ndarray, z: np.ndarray) -> int:
    """Rotatable bonds: RDKit's ``CalcNumRotatableBonds`` on the molecule built from its bond graph
    (``molecule_bonds``) with bond orders from ``DetermineBondOrders``; where RDKit cannot assign orders,
    the acyclic bonds between two heavy atoms that each have another heavy neighbour."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    bonds = molecule_bonds(x, z)
    try:
        mol = graph_molecule(z, x, bonds, bond_orders=True)
        Chem.SanitizeMol(mol)
        return int(rdMolDescriptors.CalcNumRotatableBonds(mol))
    except Exception:  # noqa: BLE001 - RDKit raises several kinds for molecules it cannot perceive
        mol = graph_molecule(z, x, bonds)
        Chem.GetSymmSSSR(mol)
        ring = mol.GetRingInfo()
        heavy_deg = [sum(a.GetAtomicNum() != HYDROGEN for a in atom.GetNeighbors()) for atom in mol.GetAtoms()]
        return sum(1 for i, j in bonds if z[i] != HYDROGEN and z[j] != HYDROGEN and heavy_deg[i] > 1 and heavy_deg[j] > 1
                   and not ring.NumBondRings(mol.GetBondBetweenAtoms(int(i), int(j)).GetIdx()))


def _load_target(path: str):
    """(true SymmetricCrystal) of a CIF, or None when the build pipeline rejects it or it has no symmetry."""
    try:
        crystal = read_cif(path)
        molecules, _, _ = select(crystal, BuildSettings())
        return SymmetricCrystal.from_crystal(crystal, molecules[0])
    except RejectError:
        return None
    except ValueError as exc:  # no symmetry, or molecules in more than one orbit: not a Z' = 1 target
        print(f"skipping {os.path.basename(path)}: {exc}", file=sys.stderr)
        return None


def _split_files(dataset: str, split: str) -> list[tuple[str, str]]:
    """(name, CIF path) of the crystals of one split of a build (one per ``key``)."""
    seen, out = set(), []
    splits = split.split(",")
    with open(os.path.join(dataset, "clusters.csv"), newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] not in splits or row["key"] in seen:
                continue
            seen.add(row["key"])
            src = row["source"]
            for cand in (src, os.path.join(os.path.dirname(os.path.abspath(dataset)), src)):
                if os.path.isfile(cand):
                    out.append((f"{row['split']}/{row['key'].removesuffix('.cif')}", cand))
                    break
            else:
                print(f"skipping {row['key']}: {src} not found", file=sys.stderr)
    return out


def _set_files(sets: list[str]) -> list[tuple[str, str]]:
    """(name, CIF path) of the given sets, interleaved (one file of each set in turn)."""
    lists = []
    for s in sets:
        folder = SETS[s]
        if not os.path.isdir(folder):
            print(f"skipping {s}: {folder} not present", file=sys.stderr)
            continue
        lists.append([(f"{s}/{f[:-4]}", os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".cif")])
    out = []
    for k in range(max(map(len, lists), default=0)):
        out += [lst[k] for lst in lists if k < len(lst)]
    return out


def targets(files: list[tuple[str, str]], max_heavy: int, max_rotatable: int, max_molecules: int,
            min_heavy: int = 0, min_rotatable: int = 0, special: bool | None = None):
    """(name, true SymmetricCrystal, space-group number, rotatable bonds) of the files that pass the filters;
    ``special``: True keeps only molecules on a special position (site symmetry beyond the identity), False
    only those on the general position, None both."""
    taken = 0
    for name, path in files:
        if taken >= max_molecules:
            return
        sc = _load_target(path)
        if sc is None or not min_heavy <= int(np.sum(sc.z != HYDROGEN)) <= max_heavy:
            continue
        if special is not None and (len(sc.site_ops()) > 1) != special:
            continue
        rot = rotatable_bonds(sc.molecule, sc.z)
        if not min_rotatable <= rot <= max_rotatable:
            continue
        taken += 1
        yield name, sc, sc.space_group()[0], rot


def labels(clusters, true: SymmetricCrystal, pred_z=None) -> list[dict]:
    """``n_matched``, ``rmsd`` and ``solved`` (valid and matched) of each cluster ([17, n, 3], of atoms ``pred_z``
    when not in the true molecule's order) against the true crystal."""
    true_cluster = true.cluster()
    topo = ClusterTopology(true_cluster[0], true.z)
    out = []
    for cluster in clusters:
        valid, _ = cluster_validity(cluster, true.z if pred_z is None else pred_z)
        m = packing_match(cluster, true_cluster, true.z, topology=topo, pred_z=pred_z)
        out.append({"n_matched": int(m.n_matched), "rmsd": float(m.rmsd), "solved": bool(valid and m.matched)})
    return out


def score(candidates, true: SymmetricCrystal, clusters=None, pred_z=None) -> dict:
    """solved@K, first solving rank, best n_matched (top 30) of ranked candidates (or of ``clusters``,
    [17, n, 3] arrays in rank order, of atoms ``pred_z`` when not in the true molecule's order) against the
    true crystal."""
    items = clusters if clusters is not None else [c.crystal.cluster() for c in candidates[: max(TOP_K)]]
    found = labels(items[: max(TOP_K)], true, pred_z)
    solved, best_n, best_rmsd = [f["solved"] for f in found], 0, math.nan
    for f in found:
        if f["n_matched"] > best_n or (f["n_matched"] == best_n and f["rmsd"] < best_rmsd):
            best_n, best_rmsd = f["n_matched"], f["rmsd"]
    first = next((k + 1 for k, s in enumerate(solved) if s), None)
    return {**{f"solved@{k}": bool(any(solved[:k])) for k in TOP_K}, "first": first, "best_n": best_n,
            "best_rmsd": best_rmsd}


_MODEL = None


def crystal_smiles(x: np.ndarray, z: np.ndarray) -> str:
    """SMILES of the crystal's molecule (bond orders from RDKit's ``DetermineBonds``)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    block = f"{len(z)}\n\n" + "".join(f"{Chem.GetPeriodicTable().GetElementSymbol(int(v))} {p[0]:.4f} {p[1]:.4f} {p[2]:.4f}\n"
                                      for v, p in zip(z, x))
    mol = Chem.MolFromXYZBlock(block)
    rdDetermineBonds.DetermineBonds(mol, charge=0)
    return Chem.MolToSmiles(Chem.RemoveHs(mol))


def _from_smiles(true: SymmetricCrystal, name: str, base: dict, groups, args) -> dict:
    """The search from the SMILES alone (RDKit conformers, ``predict_crystals``), scored like the others."""
    from crystalflow.apps.predict_crystals import predict_crystals

    smiles = crystal_smiles(true.molecule, true.z)
    t = time.perf_counter()
    try:
        kept = predict_crystals(smiles, None, candidates=args.candidates, seconds=args.seconds, samples=max(TOP_K),
                                space_groups=groups, seed=args.seed, progress=False, charges=args.charges)
    except UserError as exc:  # no valid crystal within the budget: nothing solved
        print(f"{name}: {exc}", file=sys.stderr)
        kept = []
    seconds = time.perf_counter() - t
    scores = score(None, true, clusters=[c.crystal.cluster() for c in kept], pred_z=kept[0].crystal.z if kept else None)
    return {**base, **scores, "setting": "search (SMILES)", "seconds": seconds, "n": len(kept),
            "generated": len(kept), "e1": kept[0].lattice_energy if kept else math.nan, "smiles": smiles}


def _init_worker(model_path: str | None) -> None:
    global _MODEL
    torch.set_num_threads(1)
    if model_path:
        from crystalflow.search.refine import load_refiner

        _MODEL = load_refiner(model_path)


def run_target(job) -> dict:
    """Every setting on one target (module docstring); one row per setting."""
    k, name, true, number, rot, args = job
    general = true.n_molecules == len(true.rotations)
    if args.space_groups == "true":
        groups = [COMMON[number]]
    else:
        groups = list(COMMON_SPACE_GROUPS)
    e_exp = relax_crystal(true, assign(true.z, true.molecule, charge_model=args.charges)).energy_after
    rows = []
    base = dict(name=name, formula=formula(true.z), rot=rot, number=number, general=general,
                searched=number in {g.number for g in groups}, e_exp=e_exp)
    if args.from_smiles:
        return [_from_smiles(true, name, base, groups, args)]
    t = time.perf_counter()
    result = search_crystals(true.molecule, true.z, args.candidates, space_groups=groups,
                             rng=np.random.default_rng([args.seed, k]), time_budget_s=args.seconds,
                             max_steps=args.max_steps, progress=False, workers=args.search_workers,
                             charge_model=args.charges)
    seconds = time.perf_counter() - t
    rows.append({**base, **score(result.candidates, true), "setting": "search", "seconds": seconds,
                 "n": len(result.candidates), "generated": result.n_generated,
                 "e1": result.candidates[0].energy if result.candidates else math.nan})
    if _MODEL is not None:  # the same budget: the search's first (1 - f) of it, then refinement for f of it
        budget = args.seconds if args.seconds is not None else seconds
        until = budget * (1.0 - args.refine_fraction)
        t = time.perf_counter()
        refined = refine_result(result, _MODEL, until=until, time_budget_s=budget - until)
        rows.append({**base, **score(refined.candidates, true), "setting": "search+model",
                     "seconds": until + time.perf_counter() - t, "n": len(refined.candidates),
                     "generated": refined.n_generated, "refined_kept": refined.n_refined_kept,
                     "refined_top": sum(c.origin == "refined" for c in refined.candidates[:30]),
                     "e1": refined.candidates[0].energy if refined.candidates else math.nan})
    if args.predict:
        from crystalflow.apps.predict import predict
        from crystalflow.structure.molecule_input import Molecule3D

        mol = Molecule3D(x=true.molecule, z=true.z, name=name)
        t = time.perf_counter()
        cands = predict(mol, progress=False, mode="model", samples=8, model=args.predict_model)
        rows.append({**base, **score(None, true, clusters=[c.x for c in cands]), "setting": "predict (model)",
                     "seconds": time.perf_counter() - t, "n": len(cands), "generated": len(cands), "e1": math.nan})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="cod,csd500")
    ap.add_argument("--split-of", default=None, help="a build directory: take the targets from one of its splits")
    ap.add_argument("--split", default="test", help="split(s) of --split-of, comma-separated")
    ap.add_argument("--max-molecules", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=2000, help="crystals generated per molecule")
    ap.add_argument("--seconds", type=float, default=300.0, help="time budget per molecule (one core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space-groups", choices=("true", "common"), default="common")
    ap.add_argument("--max-heavy", type=int, default=20)
    ap.add_argument("--max-rotatable", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--model", default=None, help="refinement model (run or exported model directory)")
    ap.add_argument("--refine-fraction", type=float, default=REFINE_FRACTION)
    ap.add_argument("--charges", default=DEFAULT_CHARGE_MODEL, choices=CHARGE_MODELS,
                    help="atomic charges of the force field (search and E_exp)")
    ap.add_argument("--predict", action="store_true", help="also today's model-mode predict")
    ap.add_argument("--predict-model", default=None, help="model of --predict (default: the shipped one)")
    ap.add_argument("--from-smiles", action="store_true",
                    help="search from the molecule's SMILES (RDKit conformers, predict_crystals) instead of its crystal conformer")
    ap.add_argument("--min-rotatable", type=int, default=0)
    ap.add_argument("--min-heavy", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="molecules searched at once (one core each)")
    ap.add_argument("--search-workers", type=int, default=1,
                    help="processes of each search (search_crystals(workers=...)); with --workers 1 and "
                         "--search-workers 2 --seconds 600: the goal's 10 min on 2 cores per molecule")
    ap.add_argument("--only", default=None,
                    help="comma-separated names (substrings): run only these targets, with the seeds they have in the full run")
    ap.add_argument("--csv", default=None, help="write every row here")
    args = ap.parse_args()
    if args.workers > 1 and args.search_workers > 1:
        ap.error("--search-workers > 1 needs --workers 1 (a pool's worker cannot start processes)")
    torch.set_num_threads(1)
    files = _split_files(args.split_of, args.split) if args.split_of else _set_files(args.sets.split(","))
    jobs = []
    for k, (name, true, number, rot) in enumerate(targets(files, args.max_heavy, args.max_rotatable, args.max_molecules,
                                                                  args.min_heavy, args.min_rotatable)):
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        if args.space_groups == "true" and number not in COMMON:
            print(f"{name:28s} skipped: space group {number} is not one of the common ones", flush=True)
            continue
        jobs.append((k, name, true, number, rot, args))
    cores = "one core" if args.search_workers == 1 else f"{args.search_workers} processes"
    print(f"{len(jobs)} molecules; budget per molecule: {args.candidates} candidates, {args.seconds or 'no'} s on "
          f"{cores}; space groups: {args.space_groups}; seed {args.seed}; ≤ {args.max_heavy} heavy atoms, "
          f"≤ {args.max_rotatable} rotatable bonds; {args.charges} charges; model {args.model}; {args.workers} worker(s)",
          flush=True)
    header = (f"{'molecule':32s} {'setting':15s} {'formula':12s} {'rot':>3s} {'sg':>5s} {'gen':>4s} {'cand':>4s} "
              f"{'@1':>2s} {'@10':>3s} {'@30':>3s} {'first':>5s} {'best n':>6s} {'rmsd':>5s} {'E1':>7s} {'E_exp':>7s} {'s':>5s}")
    print(header, flush=True)
    rows = []
    yn = {True: "y", False: "-"}
    with contextlib.ExitStack() as stack:
        if args.workers == 1:  # in this process: a search may then start its own worker processes
            _init_worker(args.model)
            outputs = map(run_target, jobs)
        else:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(
                args.workers, initializer=_init_worker, initargs=(args.model,)))
            outputs = pool.imap(run_target, jobs)
        for out in outputs:
            for r in out:
                rows.append(r)
                print(f"{r['name'][:32]:32s} {r['setting']:15s} {r['formula'][:12]:12s} {r['rot']:3d} "
                      f"{r['number']:4d}{'' if r['general'] else '*':1s} {r['generated']:4d} {r['n']:4d} "
                      f"{yn[r['solved@1']]:>2s} {yn[r['solved@10']]:>3s} {yn[r['solved@30']]:>3s} {r['first'] or '-':>5} "
                      f"{r['best_n']:6d} {r['best_rmsd']:5.2f} {r['e1']:7.1f} {r['e_exp']:7.1f} {r['seconds']:5.0f}",
                      flush=True)
    if not rows:
        print("no molecules")
        return
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            w.writeheader()
            w.writerows(rows)
    print("(*: the true molecule sits on a special position: reached through a subgroup, or generated there with "
          "search_crystals(inversion_fraction > 0) for an inversion centre)")
    print()
    print(f"{'setting':24s} {'molecules':>9s} {'sol_c@1':>8s} {'sol_c@10':>9s} {'sol_c@30':>9s} {'exp missed':>10s} "
          f"{'best n med':>10s} {'median s':>8s} {'max s':>6s}")
    groups = {}
    for r in rows:
        groups.setdefault(r["setting"], []).append(r)
        if "/" in r["name"] and args.split_of and "," in args.split:
            groups.setdefault(f"{r['setting']} [{r['name'].split('/')[0]}]", []).append(r)
    for setting, sub in groups.items():
        sol = {k: 100 * np.mean([r[f"solved@{k}"] for r in sub]) for k in TOP_K}
        missed = sum(r["e_exp"] < r["e1"] - 0.5 for r in sub)
        print(f"{setting:24s} {len(sub):9d} {sol[1]:7.1f}% {sol[10]:8.1f}% {sol[30]:8.1f}% {missed:10d} "
              f"{np.median([r['best_n'] for r in sub]):10.0f} {np.median([r['seconds'] for r in sub]):8.0f} "
              f"{max(r['seconds'] for r in sub):6.0f}")


if __name__ == "__main__":
    main()
