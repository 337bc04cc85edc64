"""Sampling speed and convergence: clusters/s and PM at 5/10/20/50/100 steps, same model, same clusters.

    python bench/sample_speed.py [--run RUN_DIR] [--data DATASET_DIR] [--split test] [--solver euler]

Without --run, a small CrystalFlow-LERP model is trained on the embedded COD set first (a few minutes).
PM is the min over K samples as in `crystalflow evaluate`; the last rows show the adaptive dopri5
solver for reference. Prints a table; nothing is timed inside the test suite.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

from crystalflow.common.resources import embedded_cif_dir
from crystalflow.data.build import build_dataset
from crystalflow.data.dataset import ClusterDataset
from crystalflow.evaluation.metrics import pm_atom, pm_center
from crystalflow.evaluation.sampling import sample_records
from crystalflow.flow.model import ModelConfig
from crystalflow.training.checkpoint import load_model
from crystalflow.training.config import TrainConfig
from crystalflow.training.trainer import train

STEPS = (5, 10, 20, 50, 100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="training run directory (default: train a small LERP model)")
    p.add_argument("--data", help="dataset directory (default: build the embedded COD set)")
    p.add_argument("--split", default="test")
    p.add_argument("--solver", default="euler", choices=["euler", "rk4"])
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--clusters", type=int, default=6, help="clusters of the split to use")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="cf-sample-speed-")
    data = args.data or os.path.join(work, "data")
    if not args.data:
        build_dataset(embedded_cif_dir(), data, workers=2, progress=False)
    run = args.run or os.path.join(work, "run")
    if not args.run:
        print("training a small LERP model on", data, file=sys.stderr)
        train(data, run, TrainConfig(epochs=4, batch_size=4, model=ModelConfig(method="lerp")), progress=True)
    model, _ = load_model(run)
    ds = ClusterDataset(data, args.split)
    records = [ds[i] for i in range(min(args.clusters, len(ds)))]
    rows = []
    for steps, solver in [(s, args.solver) for s in STEPS] + [(0, "dopri5")]:
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        result = sample_records(model, records, args.samples, max(steps, 1), solver, generator=gen)
        seconds = time.perf_counter() - t0
        pa = np.mean([pm_atom(p.numpy(), r.x_s) for p, r in zip(result.pred, records)])
        pc = np.mean([pm_center(p.numpy(), r.x_s) for p, r in zip(result.pred, records)])
        rows.append((solver, steps or "adaptive", len(records) / seconds, pa, pc))
    ident_a = np.mean([pm_atom(r.x_w, r.x_s) for r in records])
    ident_c = np.mean([pm_center(r.x_w, r.x_s) for r in records])
    print(f"\n{len(records)} {args.split} clusters, K = {args.samples}, model {run}")
    print(f"{'solver':8} {'steps':>8} {'clusters/s':>11} {'PM atom':>8} {'PM center':>10}")
    for solver, steps, cps, pa, pc in rows:
        print(f"{solver:8} {steps!s:>8} {cps:11.3f} {pa:8.2f} {pc:10.2f}")
    print(f"{'identity':8} {'-':>8} {'-':>11} {ident_a:8.2f} {ident_c:10.2f}")


if __name__ == "__main__":
    main()
