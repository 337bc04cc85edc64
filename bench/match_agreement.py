"""Agreement of match decisions: crystalflow's lenient COMPACK re-implementation vs OXtalign, on real predictions.

    python bench/match_agreement.py PRED_ROOT [PRED_ROOT ...] [--max-pairs N] [--csv pairs.csv]

Every prediction directory (a folder with info.json) below the roots is read, e.g. a benchmark's
``pred/<variant>/<method>/seed<k>``; each (cluster, sample) is one predicted/true pair. For each pair
both engines decide "match" (≥ 8 of 15 molecules with RMSD_15 < 2 Å): ``lenient_compack`` (beside this
script: 20 % distance / 20° angle tolerances on centroid geometry, relative rotations compared in the
fixed atom order) and OXtalign (per-molecule overlay within 1 Å, atom assignment within molecules).
Prints, per group (the directory path without its seed) and overall: pairs, how many each engine
matches, agreement of the decisions, the two kinds of disagreement, Cohen's kappa, and the median
time per pair of each engine; ``--csv`` writes every pair.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenient_compack import compack  # noqa: E402

from crystalflow.evaluation.matching import ClusterTopology, packing_match  # noqa: E402
from crystalflow.evaluation.predictions import read_predictions  # noqa: E402
from crystalflow.structure.contacts import max_overlap  # noqa: E402


def prediction_dirs(roots: list[str]) -> list[str]:
    """Every folder below ``roots`` holding an info.json, sorted."""
    found = []
    for root in roots:
        for here, _, files in os.walk(root):
            if "info.json" in files and os.path.isdir(os.path.join(here, "shards")):
                found.append(here)
    return sorted(found)


def group_of(pred_dir: str, root: str) -> str:
    """The path of ``pred_dir`` below its root with a trailing ``seed<k>`` removed."""
    rel = os.path.relpath(pred_dir, root)
    if rel == ".":
        rel = os.path.basename(os.path.normpath(root))
    return re.sub(r"[/\\]seed\d+$", "", rel) or rel


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two boolean decision vectors (1 = perfect agreement, 0 = chance level)."""
    po = float(np.mean(a == b))
    pe = float(np.mean(a) * np.mean(b) + np.mean(~a) * np.mean(~b))
    return (po - pe) / (1.0 - pe) if pe < 1.0 else 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="folders holding prediction directories")
    p.add_argument("--max-pairs", type=int, default=None, help="stop after this many pairs")
    p.add_argument("--csv", help="write every pair to this CSV")
    args = p.parse_args()
    rows = []
    for root in args.roots:
        for pred_dir in prediction_dirs([root]):
            group = group_of(pred_dir, root)
            for item in read_predictions(pred_dir):
                if item.meta.get("failure"):
                    continue
                topology = ClusterTopology(item.x_s[0], item.z)
                for k, pred in enumerate(item.pred):
                    if not np.isfinite(pred).all():
                        continue
                    t0 = time.perf_counter()
                    ours = compack(pred, item.x_s, item.z)
                    t1 = time.perf_counter()
                    ox = packing_match(pred, item.x_s, item.z, topology=topology)
                    t2 = time.perf_counter()
                    rows.append({"group": group, "key": item.meta.get("key"), "sample": k,
                                 "ours_n": ours.n_matched, "ours_rmsd": round(ours.rmsd, 4), "ours": ours.success,
                                 "ox_n": ox.n_matched, "ox_rmsd": round(ox.rmsd, 4), "ox": ox.matched,
                                 "max_overlap": round(max_overlap(pred, item.z), 3),
                                 "t_ours": t1 - t0, "t_ox": t2 - t1})
                    if args.max_pairs and len(rows) >= args.max_pairs:
                        break
                if args.max_pairs and len(rows) >= args.max_pairs:
                    break
    if not rows:
        sys.exit("no predictions found")
    groups = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    groups["all"] = rows
    head = (f"{'group':28s} {'pairs':>6s} {'ours':>6s} {'OXt':>6s} {'agree %':>8s} {'ours only':>9s} "
            f"{'OXt only':>8s} {'kappa':>6s} {'ours ms':>8s} {'OXt ms':>7s}")
    print(head)
    print("-" * len(head))
    for name, group in groups.items():
        a = np.array([r["ours"] for r in group])
        b = np.array([r["ox"] for r in group])
        print(f"{name:28s} {len(group):6d} {int(a.sum()):6d} {int(b.sum()):6d} {100 * np.mean(a == b):8.1f} "
              f"{int((a & ~b).sum()):9d} {int((~a & b).sum()):8d} {kappa(a, b):6.2f} "
              f"{1e3 * np.median([r['t_ours'] for r in group]):8.1f} {1e3 * np.median([r['t_ox'] for r in group]):7.1f}")
    both = np.array([r["ox"] for r in rows])
    ours = np.array([r["ours"] for r in rows])
    only = [r for r in rows if r["ours"] and not r["ox"]]
    if only:
        print(f"\nwhere only ours matches ({len(only)} pairs): OXtalign matched a median of "
              f"{np.median([r['ox_n'] for r in only]):.0f} of 15 molecules (ours {np.median([r['ours_n'] for r in only]):.0f})")
    print(f"pairs matched by both: {int((both & ours).sum())}; by neither: {int((~both & ~ours).sum())}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
