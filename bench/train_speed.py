"""Training speed of the default (``fast``) backbone against the straightforward atom-level PaiNN.

Measures clusters/s of a full training step (forward + backward + Adam step) for both models on the
same batches, steps interleaved so both see the same machine load; then trains each for the same
wall-clock budget on the same batch stream and reports validation losses (same t and noise draws
for both models), also the fast model's validation loss after the same number of steps as the
reference reached.

    python bench/train_speed.py /tmp/d --budget 90 --timing-steps 2    # about 5 minutes on 2 cores
    python bench/train_speed.py /tmp/d --budget 600 --eval-every 10    # about 25 minutes, learning curves

"clusters/s" comes from the interleaved timing, "train cl/s" from the training phase (its batches differ
in size: the two models' steps cover the same stream, so compare each column between the models).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Idle OpenMP threads sleep instead of spinning: on a shared, busy machine spinning threads stall every
# parallel region (measured: 2-thread steps 5x slower). Set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crystalflow.data.dataset import Batch, ClusterDataset, collate  # noqa: E402
from crystalflow.flow.model import (  # noqa: E402
    REFERENCE_BACKBONE,
    CrystalModel,
    ModelConfig,
    build_model,
    merge_config_dicts,
)

THREADS = 2
DEFAULT_DATA = "/tmp/d"
LEARNING_RATE = 1e-3
GRAD_CLIP = 10.0
#: independent (t, noise) draws per validation cluster
VAL_DRAWS = 4
VAL_SEED = 1234
#: most atoms per training batch (the brief's anchor: 8 clusters, 4,080 atoms)
DEFAULT_MAX_ATOMS = 4096
#: step cap of a wall-clock-budget run
BUDGET_MAX_STEPS = 1_000_000


class BatchStream:
    """An endless, seeded stream of shuffled batches, the same for every model; ``stream[i]`` is batch i.

    A batch takes clusters in shuffled order up to ``batch_size`` clusters and ``max_atoms`` atoms (a
    cluster larger than ``max_atoms`` goes alone): the reference PaiNN's memory grows with its edges.
    """

    def __init__(self, ds: ClusterDataset, batch_size: int, seed: int, max_atoms: int = DEFAULT_MAX_ATOMS) -> None:
        self.records = [ds[i] for i in range(len(ds))]
        self.batch_size = batch_size
        self.max_atoms = max_atoms
        self.g = torch.Generator().manual_seed(seed)
        self.cache: list[Batch] = []

    def __getitem__(self, i: int) -> Batch:
        while len(self.cache) <= i:
            order = torch.randperm(len(self.records), generator=self.g).tolist()
            group: list = []
            for k in order:
                rec = self.records[k]
                size = rec.x_s.shape[0] * rec.x_s.shape[1]
                atoms = sum(r.x_s.shape[0] * r.x_s.shape[1] for r in group)
                if group and (len(group) == self.batch_size or atoms + size > self.max_atoms):
                    self.cache.append(collate(group))
                    group = []
                group.append(rec)
            self.cache.append(collate(group))
        return self.cache[i]


def train_step(model: CrystalModel, opt: torch.optim.Optimizer, batch: Batch, g: torch.Generator) -> float:
    """One forward + backward + Adam step; the loss."""
    loss = model.loss(batch, g)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    return loss.item()


@torch.no_grad()
def val_loss(model: CrystalModel, val: list[Batch]) -> float:
    """Mean loss over validation batches, with the same (t, noise) draws for every model."""
    model.eval()
    losses = []
    for k, b in enumerate(val):
        for d in range(VAL_DRAWS):
            g = torch.Generator(device=b.x_w.device).manual_seed(VAL_SEED + 100 * k + d)
            losses.append(float(model.loss(b, g)))
    model.train()
    return sum(losses) / len(losses)


def make(config: ModelConfig, seed: int) -> tuple[CrystalModel, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(config)
    return model, torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)


def measure_speed(configs: dict[str, ModelConfig], stream: BatchStream, steps: int, seed: int,
                  device: str) -> dict[str, list[float]]:
    """Seconds per training step of each model, interleaved on the same batches (first step is warm-up)."""
    models = {k: make(c, seed) for k, c in configs.items()}
    times: dict[str, list[float]] = {k: [] for k in configs}
    for i in range(steps + 1):
        b = stream[i].to(device)
        for k, (m, opt) in models.items():
            m.to(device)
            g = torch.Generator(device=device).manual_seed(seed + i)
            _sync(device)
            t0 = time.perf_counter()
            train_step(m, opt, b, g)
            _sync(device)
            if i > 0:
                times[k].append(time.perf_counter() - t0)
    return times


def train_budget(config: ModelConfig, stream: BatchStream, val: list[Batch], budget: float, seed: int,
                 max_steps: int, device: str, eval_at: int | None = None, eval_every: int = 0, name: str = "") -> dict:
    """Train for ``budget`` seconds or ``max_steps``; validation loss at the end (and after ``eval_at`` steps)."""
    model, opt = make(config, seed)
    model.to(device)
    val = [b.to(device) for b in val]
    g = torch.Generator(device=device).manual_seed(seed)
    steps, train_time, at = 0, 0.0, None
    while steps < max_steps and train_time < budget:
        batch = stream[steps].to(device)
        t0 = time.perf_counter()
        train_step(model, opt, batch, g)
        _sync(device)
        train_time += time.perf_counter() - t0
        steps += 1
        if eval_at is not None and steps == eval_at:
            at = val_loss(model, val)
        if eval_every and steps % eval_every == 0:
            print(f"    {name} step {steps:5d}  {train_time:7.1f} s  val {val_loss(model, val):.4f}", flush=True)
    clusters = sum(stream[i].num_graphs for i in range(steps))
    return {"steps": steps, "train_s": train_time, "train_speed": clusters / max(train_time, 1e-9),
            "val": val_loss(model, val), "val_at_ref_steps": at}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default=DEFAULT_DATA, help="dataset directory (train + valid splits)")
    p.add_argument("--method", default="lerp", choices=["lerp", "ve", "vp", "gnn-md"])
    p.add_argument("--batch-size", type=int, default=8, help="most clusters per batch")
    p.add_argument("--max-atoms", type=int, default=DEFAULT_MAX_ATOMS, help="most atoms per batch")
    p.add_argument("--timing-steps", type=int, default=3, help="timed steps per model (after one warm-up)")
    p.add_argument("--budget", type=float, default=90.0, help="training seconds per model for the loss comparison")
    p.add_argument("--steps", type=int, default=None,
                   help="train both models for this many steps instead of the same wall-clock budget")
    p.add_argument("--eval-every", type=int, default=0, help="print the validation loss every N steps")
    p.add_argument("--skip-speed", action="store_true", help="skip the interleaved timing")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast model (minutes of warm-up)")
    p.add_argument("--val-clusters", type=int, default=6)
    p.add_argument("--fast", default="{}",
                   help='JSON overrides of the fast ModelConfig, e.g. {"backbone": {"hidden": 32}}')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=THREADS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    if not os.path.exists(args.data):
        from crystalflow.common.resources import embedded_cif_dir
        from crystalflow.data.build import build_dataset

        print(f"{args.data!r} does not exist: building it from the embedded COD CIFs", flush=True)
        build_dataset(embedded_cif_dir(), args.data, workers=args.threads, progress=False)
    if not os.path.exists(os.path.join(args.data, "clusters.csv")):
        raise SystemExit(f"{args.data!r} is not a dataset directory (build one with 'crystalflow build')")
    train, valid = ClusterDataset(args.data, "train"), ClusterDataset(args.data, "valid")
    stream = BatchStream(train, args.batch_size, args.seed, args.max_atoms)
    val_records = [valid[i] for i in range(min(args.val_clusters, len(valid)))]
    val = [collate(val_records[a : a + args.batch_size]) for a in range(0, len(val_records), args.batch_size)]
    configs = {
        "fast": ModelConfig.from_dict(merge_config_dicts(
            {"method": args.method, "backbone": {"compile": args.compile}}, json.loads(args.fast))),
        "reference": ModelConfig(method=args.method, backbone=REFERENCE_BACKBONE),
    }
    n_params = {k: sum(p.numel() for p in build_model(c).parameters()) for k, c in configs.items()}
    timed = [stream[i] for i in range(1, args.timing_steps + 1)]
    atoms = statistics.mean(int(b.x_w.shape[0]) for b in timed)
    clusters = statistics.mean(b.num_graphs for b in timed)
    print(f"data {args.data}: {len(train)} train / {len(val_records)} valid clusters; timed batches of "
          f"~{clusters:.1f} clusters, ~{atoms:.0f} atoms; threads {args.threads}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
          f"method {args.method}", flush=True)
    print("fast config:", json.dumps(configs["fast"].to_dict()), flush=True)

    speed = {k: float("nan") for k in configs}
    if not args.skip_speed:
        times = measure_speed(configs, stream, args.timing_steps, args.seed, args.device)
        n_clusters = sum(b.num_graphs for b in timed)
        speed = {k: n_clusters / sum(v) for k, v in times.items()}
        for k, v in times.items():
            print(f"  {k:9s} step s: {' '.join(f'{x:.2f}' for x in v)}", flush=True)

    budget, max_steps = (float("inf"), args.steps) if args.steps else (args.budget, BUDGET_MAX_STEPS)
    common = dict(stream=stream, val=val, budget=budget, seed=args.seed, max_steps=max_steps, device=args.device,
                  eval_every=args.eval_every)
    ref = train_budget(configs["reference"], name="reference", **common)
    print(f"  reference trained {ref['steps']} steps, val {ref['val']:.4f}", flush=True)
    fast = train_budget(configs["fast"], name="fast", eval_at=ref["steps"], **common)
    print(f"  fast      trained {fast['steps']} steps, val {fast['val']:.4f}", flush=True)

    print()
    print(f"{'model':10s} {'params':>9s} {'clusters/s':>11s} {'train cl/s':>11s} {'steps':>6s} {'train s':>8s} "
          f"{'val loss':>9s} {'val @ ref steps':>16s}")
    for k, r in (("fast", fast), ("reference", ref)):
        at = r["val_at_ref_steps"] if k == "fast" else r["val"]
        at_s = f"{at:.4f}" if at is not None else "n/a"
        print(f"{k:10s} {n_params[k]:9d} {speed[k]:11.3f} {r['train_speed']:11.3f} {r['steps']:6d} "
              f"{r['train_s']:8.1f} {r['val']:9.4f} {at_s:>16s}")
    ratio = speed["fast"] / speed["reference"]
    train_ratio = fast["train_speed"] / ref["train_speed"]
    verdict = "equal or better" if fast["val"] <= ref["val"] else "worse"
    same = f"{args.steps} steps" if args.steps else f"{args.budget:.0f} s of training"
    print(f"\nspeed ratio fast / reference on {args.device}: {ratio:.2f}x (interleaved timing, same batches), "
          f"{train_ratio:.2f}x (training phase)\nvalidation loss after the same {same}: "
          f"{verdict} ({fast['val']:.4f} vs {ref['val']:.4f})")


if __name__ == "__main__":
    main()
