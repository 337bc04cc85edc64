"""Predictions before and after relaxation: sol_c, valid, matched on held-out clusters, per method.

    python bench/relax_predictions.py PRED_DIR [PRED_DIR ...] [--limit N] [--out DIR]

Each PRED_DIR (e.g. CrystalFlow-Rigid, the identity baseline and PackMol on clusters of crystals no
model trained on) is relaxed with ``crystalflow.evaluation.relaxation.relax_pred_dir`` into
``DIR/<name>-relaxed`` (first N clusters; a finished one is reused), both are scored by ``evaluate``,
and one table over all scored clusters (every split: the crystals are held out from every model) is
printed: sol_c (Sol_C@K: matched and valid by any of the K samples), sol_top1 (the best-PM sample),
valid, matched, n_matched, max_overlap, the share of samples relaxed as crystals and the seconds of
relaxation per sample.
"""
from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np
import torch

from crystalflow.evaluation.evaluate import evaluate
from crystalflow.evaluation.predictions import read_info, read_predictions
from crystalflow.evaluation.relaxation import relax_pred_dir

COLUMNS = ("solved", "solved_top1", "valid", "matched", "n_matched", "max_overlap", "orientation")


def scores(pred_dir: str, limit: int) -> dict:
    """Means over the first ``limit`` clusters of per_cluster.csv (evaluated here when missing)."""
    path = os.path.join(pred_dir, "per_cluster.csv")
    if not os.path.exists(path):
        evaluate(pred_dir, os.path.join(pred_dir, "metrics.json"), progress=False)
    with open(path) as f:
        rows = list(csv.DictReader(f))[:limit]
    out = {}
    for k in COLUMNS:
        vals = np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows])
        scale = 100.0 if k in ("solved", "solved_top1", "valid", "matched") else 1.0
        out[k] = scale * float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    out["n"] = len(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pred_dirs", nargs="+")
    ap.add_argument("--limit", type=int, default=30, help="first N clusters of each PRED_DIR")
    ap.add_argument("--out", default="relaxed-predictions", help="folder for the relaxed PRED_DIRs")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    table = []
    for pred in args.pred_dirs:
        name = os.path.basename(os.path.normpath(pred))
        method = read_info(pred).get("method")
        relaxed = os.path.join(args.out, f"{name}-relaxed")
        t0 = time.time()
        if not os.path.exists(os.path.join(relaxed, "info.json")):
            relax_pred_dir(pred, relaxed, overwrite=True, limit=args.limit)
        records = [r for item in read_predictions(relaxed) for r in item.meta.get("relax", [])]
        crystal = 100.0 * np.mean([r["mode"] == "crystal" for r in records]) if records else float("nan")
        seconds = np.mean([r.get("seconds", np.nan) for r in records]) if records else float("nan")
        table.append((f"{method}", scores(pred, args.limit), "", ""))
        table.append((f"{method} + relaxation", scores(relaxed, args.limit), crystal, seconds))
        print(f"{name}: relaxed in {time.time() - t0:.0f} s", flush=True)
    print(f"\nfirst {args.limit} clusters of each PRED_DIR; %: solved (sol_c), solved_top1, valid, matched")
    head = f"{'method':<34}{'n':>4}" + "".join(f"{k:>13}" for k in COLUMNS) + f"{'crystal %':>11}{'s/sample':>10}"
    print(head)
    for label, s, crystal, seconds in table:
        cells = "".join(f"{s[k]:>13.2f}" for k in COLUMNS)
        extra = f"{crystal:>11.1f}{seconds:>10.1f}" if crystal != "" else ""
        print(f"{label:<34}{s['n']:>4}{cells}{extra}")


if __name__ == "__main__":
    main()
