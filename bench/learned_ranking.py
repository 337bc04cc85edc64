"""Learned ranking of searched crystals against lattice-energy ranking, on held-out molecules.

    python bench/ranking_pool.py --split-of /tmp/melt50 --split train --seconds 25 --max-heavy 30 \\
        --max-rotatable 4 -o /tmp/pools/train --workers 2
    python bench/ranking_pool.py --split-of /tmp/melt50 --split test,valid --seconds 300 -o /tmp/pools/heldout --workers 2
    python bench/learned_ranking.py --train /tmp/pools/train --heldout /tmp/pools/heldout \\
        --save crystalflow/resources/models/ranker/ranker.json

Pools (``bench/ranking_pool.py``): every distinct candidate of one molecule's search, labelled ``solved`` against
its experimental crystal; the ``RANK_TOP`` (100) lowest in energy are what a ranker reorders, here as in
``predict --rank learned``. The rankers (:func:`crystalflow.search.ranking.fit_ranker`) are fitted on the training
pools only; the regularisation ``l2`` of each feature set is the one with the best mean sol_c@1 + @10 + @30 of a
5-fold cross-validation over the training molecules (folds by molecule). Then, on the held-out pools — the same
candidates, so the same search time — sol_c@1/10/30 of:

- ``energy``: the search's own order (lattice energy, lowest first);
- ``learned`` (no model): every feature but the flow model's (``MODEL_FEATURES``: ``model_shift``,
  ``model_recovery``);
- ``learned + model``: every feature, the model's from the flow model ``--model`` (default: the shipped search
  model), which is the only difference between the two learned rows: the learned model's share in the ranking;
- ``energy + model``: ``energy_gap`` and ``model_recovery`` alone: lattice energy corrected by the model;
- ``energy + contacts``, ``learned + contacts``: with the contact prior's score
  (:mod:`crystalflow.search.contact_prior`), the prior fitted on the same training molecules as the weights
  (in the cross-validation, on the training folds only): their experimental crystals relaxed with the
  pool's force field against their pools' candidates that are not the experimental packing.

The search model was trained on the training molecules' experimental clusters, so on the training pools its
features see crystals it learned (the cross-validation flatters them); the held-out rows do not.

``--save`` writes the ranker chosen by the cross-validation (the better of the two learned rows there, never by the
held-out figures), refitted on all training pools, with what it scored in its ``info``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pickle
import time

import numpy as np
import torch

from crystalflow.common.vocabulary import DEFAULT_CHARGE_MODEL
from crystalflow.physics.forcefield import assign
from crystalflow.physics.relax import relax_crystal
from crystalflow.search.contact_prior import crystal_histogram, fit_contact_prior
from crystalflow.search.ranking import FEATURES, MODEL_FEATURES, RANK_TOP, candidate_features, fit_ranker, top_k_solved
from crystalflow.search.refine import load_refiner
from crystalflow.structure.molecules import molecule_bonds

TOP_K = (1, 10, 30)
L2_GRID = (0.01, 0.1, 1.0, 10.0)
FOLDS = 5
BASE = tuple(f for f in FEATURES if f != "contacts")  # the features computed once per pool (cached)


def load_pools(folder: str, model, model_name: str) -> list[dict]:
    """name, features [K, F] (BASE, of the RANK_TOP lowest), their contact histograms ``hist`` [K, P, B], that
    of the experimental crystal relaxed with the pool's force field ``true_hist`` [P, B], solved [K] of every
    pool with candidates, in name order. Features are cached beside each pool (``NAME.features.npz``, valid for
    the same BASE, RANK_TOP and model; with the seconds they took; histograms in ``NAME.contacts.npz``)."""
    pools = []
    key = f"{','.join(BASE)}|{RANK_TOP}|{model_name}"
    for path in sorted(glob.glob(os.path.join(folder, "*.pkl"))):
        with open(path, "rb") as f:
            d = pickle.load(f)
        if not d["candidates"]:
            continue
        cache = path[:-4] + ".features.npz"
        stored = np.load(cache) if os.path.exists(cache) else None
        if stored is not None and str(stored["key"]) == key:
            x, seconds = stored["x"], float(stored["seconds"])
        else:
            t = time.perf_counter()
            x = candidate_features(d["candidates"][:RANK_TOP], model=model, features=BASE,
                                   charge_model=d.get("charges", DEFAULT_CHARGE_MODEL))
            seconds = time.perf_counter() - t
            np.savez(cache, x=x, key=key, seconds=seconds)
        contacts = path[:-4] + ".contacts.npz"
        if os.path.exists(contacts):
            stored = np.load(contacts)
            hist, true_hist = stored["hist"], stored["true_hist"]
        else:
            true = d["true"]
            ff = assign(true.z, true.molecule, charge_model=d.get("charges", DEFAULT_CHARGE_MODEL))
            bonds = molecule_bonds(true.molecule, true.z)
            true_hist = crystal_histogram(relax_crystal(true, ff).crystal, bonds)
            hist = np.stack([crystal_histogram(c.crystal, bonds) for c in d["candidates"][:RANK_TOP]])
            np.savez(contacts, hist=hist, true_hist=true_hist)
        solved = np.array([lab["solved"] for lab in d["labels"]][:RANK_TOP], dtype=bool)
        pools.append({"name": d["name"], "x": x, "hist": hist, "true_hist": true_hist, "atoms": len(d["true"].z),
                      "solved": solved, "n": len(d["candidates"]),
                      "seconds": d["seconds"], "feature_seconds": seconds,
                      "first": next((k + 1 for k, lab in enumerate(d["labels"]) if lab["solved"]), None)})
    return pools


def columns(names: tuple[str, ...]) -> list[int]:
    return [FEATURES.index(f) for f in names]


def sol(pools: list[dict], scores: list[np.ndarray]) -> dict[int, float]:
    """sol_c@K (%) of the pools ordered by scores."""
    return {k: 100.0 * np.mean([top_k_solved(s, p["solved"], k) for p, s in zip(pools, scores)]) for k in TOP_K}


def energy_scores(pools):  # the search's order: position in the energy-sorted list
    return [-np.arange(len(p["solved"]), dtype=np.float64) for p in pools]


def with_contacts(pools, prior) -> list[np.ndarray]:
    """Each pool's features in FEATURES order: BASE and the prior's contact score."""
    return [np.column_stack([p["x"], prior.score(p["hist"], p["atoms"])]) for p in pools]


def fitted_scores(train, test, names, l2):
    cols = columns(names)
    prior = None
    if "contacts" in names:
        prior = fit_contact_prior(np.stack([p["true_hist"] for p in train]), [p["hist"][~p["solved"]] for p in train])
        xtrain, xtest = with_contacts(train, prior), with_contacts(test, prior)
    else:
        xtrain, xtest = [p["x"] for p in train], [p["x"] for p in test]
    ranker = fit_ranker([(x[:, cols], p["solved"]) for x, p in zip(xtrain, train)], features=names, l2=l2,
                        prior=prior)
    return ranker, [ranker.score(x[:, cols]) for x in xtest]


def cross_validate(pools, names, l2) -> dict[int, float]:
    folds = [pools[i::FOLDS] for i in range(FOLDS)]
    scores, ordered = [], []
    for i in range(FOLDS):
        train = [p for j, f in enumerate(folds) if j != i for p in f]
        _, s = fitted_scores(train, folds[i], names, l2)
        scores += s
        ordered += folds[i]
    return sol(ordered, scores)


def line(label: str, n: int, s: dict[int, float]) -> str:
    return f"{label:34s} {n:9d} {s[1]:7.1f}% {s[10]:8.1f}% {s[30]:8.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="folder of training pools")
    ap.add_argument("--heldout", default=None, help="folder of held-out pools (without: the cross-validation only)")
    ap.add_argument("--model", default=None, help="flow model of the model features (default: the shipped search model)")
    ap.add_argument("--save", default=None, help="write the chosen ranker (JSON) here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_refiner(args.model)
    t = time.perf_counter()
    model_name = os.path.abspath(args.model) if args.model else "shipped search model"
    train = load_pools(args.train, model, model_name)
    heldout = load_pools(args.heldout, model, model_name) if args.heldout else []
    print(f"{len(train)} training molecules ({sum(p['solved'].any() for p in train)} with a solving candidate), "
          f"{len(heldout)} held-out; features in {time.perf_counter() - t:.0f} s", flush=True)
    plain = tuple(f for f in BASE if f not in MODEL_FEATURES)
    sets = {"learned": plain, "learned + model": BASE, "energy + model": ("energy_gap", "model_recovery"),
            "energy + contacts": ("energy_gap", "contacts"), "learned + contacts": plain + ("contacts",)}
    chosen = {}
    print(f"\ncross-validation on the training molecules ({FOLDS} folds)")
    print(f"{'ranking':34s} {'molecules':>9s} {'sol_c@1':>8s} {'sol_c@10':>9s} {'sol_c@30':>9s}")
    print(line("energy", len(train), sol(train, energy_scores(train))))
    for label, names in sets.items():
        best = None
        for l2 in L2_GRID:
            s = cross_validate(train, names, l2)
            print(line(f"{label} (l2 {l2:g})", len(train), s))
            if best is None or sum(s.values()) > sum(best[1].values()):
                best = (l2, s)
        chosen[label] = best
    if not heldout:
        return
    print(f"\nheld-out molecules (the same candidates: the same search time)")
    print(f"{'ranking':34s} {'molecules':>9s} {'sol_c@1':>8s} {'sol_c@10':>9s} {'sol_c@30':>9s}")
    results = {"energy": sol(heldout, energy_scores(heldout))}
    print(line("energy", len(heldout), results["energy"]))
    rankers = {}
    for label, names in sets.items():
        l2 = chosen[label][0]
        rankers[label], s = fitted_scores(train, heldout, names, l2)
        results[label] = sol(heldout, s)
        print(line(f"{label} (l2 {l2:g})", len(heldout), results[label]))
        print("    weights: " + ", ".join(f"{f} {w:+.2f}" for f, w in zip(names, rankers[label].weights)))
    prior = rankers["energy + contacts"].prior
    print(line("contact prior alone (no weights)", len(heldout), sol(heldout, [prior.score(p["hist"], p["atoms"])
                                                                            for p in heldout])))
    print(f"\nper held-out molecule: search {np.median([p['seconds'] for p in heldout]):.0f} s (median), "
          f"{np.median([p['n'] for p in heldout]):.0f} distinct candidates, features of the {RANK_TOP} lowest "
          f"{np.median([p['feature_seconds'] for p in heldout]):.1f} s (median; max "
          f"{max(p['feature_seconds'] for p in heldout):.1f} s)")
    if args.save:
        label = max(sets, key=lambda k: sum(chosen[k][1].values()))
        ranker = rankers[label]
        ranker.info = {"trained_on": args.train, "molecules": len(train), "l2": chosen[label][0],
                       "selected": label, "cross_validation": chosen[label][1], "heldout": results[label],
                       "heldout_energy": results["energy"], "heldout_molecules": len(heldout)}
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        ranker.save(args.save)
        print(f"saved the '{label}' ranker to {args.save}: {json.dumps(ranker.info['heldout'])}")


if __name__ == "__main__":
    main()
