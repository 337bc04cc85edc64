"""Candidate pools of the crystal search, labelled against the experimental crystal: the data a learned
ranking of candidates is trained and measured on (``bench/learned_ranking.py``).

    # training pools: the train split of the search model's build, 40 s per molecule
    python bench/ranking_pool.py --split-of /tmp/melt50 --split train --seconds 40 -o /tmp/pools/train --workers 2
    # held-out pools: test + valid, the goal's 300 s
    python bench/ranking_pool.py --split-of /tmp/melt50 --split test,valid --seconds 300 -o /tmp/pools/heldout --workers 2

Targets as in ``bench/predict_crystals.py`` (``targets``: ≤ ``--max-heavy`` heavy atoms, ≤ ``--max-rotatable``
rotatable bonds, the crystal conformer kept rigid). Per molecule, ``search_crystals`` in the common space groups
(seed ``[--seed, k]``, k the molecule's position; force-field charges ``--charges``; ``--inversion-fraction``
as ``search_crystals``'s; ``--special``: only the molecules on a special position), then every distinct candidate is scored against the experimental
cluster by ``labels`` of ``bench/predict_crystals.py`` (as it scores its top 30): ``n_matched``, ``rmsd``,
``solved``. One pickle per molecule (``NAME.pkl``: the target, the candidates, their labels, the search's
seconds); molecules already written are skipped, so a killed run resumes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from predict_crystals import _set_files, _split_files, labels, targets  # noqa: E402

from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL  # noqa: E402
from crystalflow.search.pipeline import INVERSION_FRACTION, search_crystals  # noqa: E402


def run(job) -> str:
    k, name, true, number, rot, args = job
    path = os.path.join(args.out, name.replace("/", "__") + ".pkl")
    if os.path.exists(path):
        return f"{name}: already there"
    torch.set_num_threads(1)
    t = time.perf_counter()
    result = search_crystals(true.molecule, true.z, args.candidates, rng=np.random.default_rng([args.seed, k]),
                             time_budget_s=args.seconds, progress=False, charge_model=args.charges,
                             inversion_fraction=args.inversion_fraction)
    seconds = time.perf_counter() - t
    lab = labels([c.crystal.cluster() for c in result.candidates], true)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        pickle.dump({"name": name, "true": true, "number": number, "rot": rot, "seconds": seconds,
                     "candidates": result.candidates, "labels": lab, "charges": args.charges}, f)
    os.replace(tmp, path)
    solved = [i + 1 for i, x in enumerate(lab) if x["solved"]]
    return f"{name}: {len(lab)} candidates in {seconds:.0f} s, solved at ranks {solved[:5]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--sets", default="cod,csd500")
    ap.add_argument("--split-of", default=None)
    ap.add_argument("--split", default="train")
    ap.add_argument("--max-molecules", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-heavy", type=int, default=20)
    ap.add_argument("--max-rotatable", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--charges", default=DEFAULT_CHARGE_MODEL, choices=CHARGE_MODELS,
                    help="charge model of the search's force field")
    ap.add_argument("--inversion-fraction", type=float, default=INVERSION_FRACTION,
                    help="share of batches putting a centrosymmetric molecule on an inversion centre (default 0: never)")
    ap.add_argument("--special", action="store_true", help="only molecules on a special position in their crystal")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    files = _split_files(args.split_of, args.split) if args.split_of else _set_files(args.sets.split(","))
    jobs = [(k, name, true, number, rot, args)
            for k, (name, true, number, rot) in enumerate(targets(files, args.max_heavy, args.max_rotatable,
                                                                   args.max_molecules,
                                                                   special=True if args.special else None))]
    print(f"{len(jobs)} molecules, {args.seconds} s each, {args.workers} worker(s) -> {args.out}", flush=True)
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for line in pool.imap_unordered(run, jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
