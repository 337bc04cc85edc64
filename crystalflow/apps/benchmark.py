"""The benchmark: the layout of CrystalFlow's Tables 1 and 2, and our Table 3, on the data available, in one call.

For each noise variant a dataset is built: the paper's two (the ``solution`` preset without and with
inversion: Tables 1 and 2) and a weakly-correlated input (the ``melt`` preset, orientations kept to
about 30°: Table 3). For each seed every method (GNN-MD, CrystalSDE-VE, CrystalSDE-VP,
CrystalFlow-LERP and our CrystalFlow-Rigid; Table 3 only the paper's LERP and ours) is trained,
sampled on the test split and evaluated, next to the identity and PackMol baselines on the same test
clusters. Results are the mean ± std over seeds of the per-cluster test means, written as
results.csv, results.md and plots.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import atomic_open, write_csv, write_text
from crystalflow.common.resources import embedded_cif_dir
from crystalflow.common.version import __version__
from crystalflow.common.vocabulary import (
    BASELINES,
    DEFAULT_CHARGE_MODEL,
    DEFAULT_MAX_ATOMS,
    DEFAULT_STEPS,
    METHODS,
)
from crystalflow.data.build import build_dataset
from crystalflow.data.noise import noise_model
from crystalflow.data.pipeline import BuildSettings
from crystalflow.evaluation.metrics import RANDOM_ORIENTATION_DEG

if TYPE_CHECKING:
    from crystalflow.training.config import TrainConfig

LABELS = {
    "gnn-md": "GNN-MD", "ve": "CrystalSDE-VE", "vp": "CrystalSDE-VP", "lerp": "CrystalFlow-LERP",
    "rigid": "CrystalFlow-Rigid (ours)",
    "identity": "identity (x_w)", "packmol": "PackMol",
}
#: noise variants (:data:`crystalflow.common.vocabulary.BENCHMARK_VARIANTS`): name -> (noise preset, inversion)
#: and the title of its table
VARIANTS = {"plain": ("solution", False), "inversion": ("solution", True), "melt": ("melt", False)}
TITLES = {
    "plain": "Table 1: without inversion",
    "inversion": "Table 2: with inversion",
    "melt": "Table 3: weakly-correlated input ('melt' noise: orientations kept to about 30°)",
}
#: how our method is set up beyond the plan's model: the molecule-level equivariant backbone predicting the
#: crystal (endpoint) from x_t alone, trained with fresh noise draws every epoch
OURS_MODEL = {"backbone": {"variant": "molecule-painn"}, "prediction": "endpoint", "condition_on_input": False}
OURS = "rigid"
#: the learned methods in the order of the paper's tables (that of LABELS), in which they run and are reported
TABLE_METHODS = tuple(name for name in LABELS if name in METHODS)
#: learned methods run on a variant, where not all: Table 3 is not the paper's, it compares the paper's flow
#: (LERP) with ours and the baselines
VARIANT_METHODS = {"melt": ("lerp", OURS)}
#: metrics shown in results.md, with their direction (True: higher is better)
TABLE_METRICS = {
    "pm_atom": False, "pm_center": False, "sol_c": True, "matched": True, "valid": True, "max_overlap": False,
    "n_matched": True, "rmsd15": False, "orientation": False, "rigidity": False,
}


#: a relaxed method's name: "<method>+relax"; its predictions live in "<pred dir>-relaxed"
RELAXED = "+relax"
RELAXED_SUFFIX = "-relaxed"


def label(method: str) -> str:
    """Table label of a method, baseline or relaxed one."""
    if method.endswith(RELAXED):
        base = method[: -len(RELAXED)]
        return f"{LABELS.get(base, base)} + relaxation"
    return LABELS.get(method, method)


#: quick preset: molecules up to this many atoms (keeps clusters below ~900 atoms)
QUICK_MAX_ATOMS = 50
QUICK_EPOCHS = 6
#: quick preset, our method: epochs of fresh noise draws per variant. Where the input keeps orientations
#: ('melt') they are learned in a jump after 300–400 steps (100 epochs: about 430); where it does not there is
#: nothing to learn about them and 40 epochs place the centres. Batch size and learning rate of every preset
QUICK_OURS_EPOCHS = {"plain": 40, "inversion": 40, "melt": 100}
OURS_BATCH = 16
OURS_LR = 3e-3
#: the quick preset's variants (Table 3 too: --variants plain inversion melt, about 4 more minutes)
QUICK_VARIANTS = ("plain", "inversion")
#: full preset: the default model size, trained this many epochs with this batch size (a GPU run)
FULL_EPOCHS = 20
FULL_BATCH = 8
#: full preset, our method (about 3000 steps on the full set)
FULL_OURS_EPOCHS = 100


@dataclass
class BenchmarkPlan:
    """What a benchmark run does; ``quick`` and ``full`` are the two presets."""

    sources: list[str]
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = TABLE_METHODS
    baselines: tuple[str, ...] = BASELINES
    variants: tuple[str, ...] = tuple(VARIANTS)
    epochs: int = 20
    batch_size: int = 4
    max_atoms: int = DEFAULT_MAX_ATOMS
    samples_per_crystal: int = 1
    samples: int = 4  #: K samples per test cluster
    steps: int = DEFAULT_STEPS
    #: ModelConfig overrides, e.g. ``{"backbone": {"hidden": 32}}`` (a nested backbone object is merged key by key)
    model: dict = field(default_factory=dict)
    workers: int = 2
    #: epochs of our method per variant (fresh noise every epoch, batch OURS_BATCH); missing: FULL_OURS_EPOCHS
    ours_epochs: dict = field(default_factory=dict)
    #: also relax every prediction (crystalflow.evaluation.relaxation) and score it as "<method>+relax"
    relax: bool = False
    #: relax only the first N test clusters of each prediction (None: all)
    relax_limit: int | None = None

    def runs(self, variant: str, name: str) -> bool:
        """Whether method or baseline ``name`` runs on ``variant``."""
        return name in self.baselines or (name in self.methods and name in VARIANT_METHODS.get(variant, METHODS))

    def train_config(self, name: str, seed: int, variant: str = "plain") -> TrainConfig:
        """How method ``name`` is trained on ``variant``: the plan's settings; ours with its own model and fresh
        noise, looking at the input orientations only where the variant's noise keeps some (not 'solution')."""
        from crystalflow.flow.model import ModelConfig, merge_config_dicts
        from crystalflow.training.config import TrainConfig

        if name == OURS:
            keeps_orientations = noise_model(VARIANTS[variant][0]).rotation_deg is not None
            sees = {"backbone": {"orientation_inputs": keeps_orientations}}
            model = ModelConfig.from_dict(merge_config_dicts({"method": name}, self.model, OURS_MODEL, sees))
            epochs = self.ours_epochs.get(variant, FULL_OURS_EPOCHS)
            return TrainConfig(epochs=epochs, batch_size=OURS_BATCH, lr=OURS_LR, seed=seed,
                               log_every=10**9, fresh_noise=True, model=model)
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, seed=seed, log_every=10**9,
                           model=ModelConfig.from_dict(merge_config_dicts({"method": name}, self.model)))


def quick_plan() -> BenchmarkPlan:
    """The embedded COD set, small molecules, a small model, Tables 1–2: about 13 minutes on 2 cores."""
    return BenchmarkPlan(
        sources=[embedded_cif_dir()], epochs=QUICK_EPOCHS, max_atoms=QUICK_MAX_ATOMS, samples_per_crystal=2,
        samples=2, steps=10, model={"backbone": {"hidden": 32, "layers": 2}}, ours_epochs=dict(QUICK_OURS_EPOCHS),
        variants=QUICK_VARIANTS,
    )


def full_plan(shared_data: str) -> BenchmarkPlan:
    """All three folders of ../shared/data (COD, CSD-500, OCELOT)."""
    sources = [os.path.join(shared_data, d) for d in ("cod", "csd500", "ocelot")]
    missing = [s for s in sources if not os.path.isdir(s)]
    if missing:
        raise UserError(f"full benchmark needs {', '.join(missing)}; use --quick for the embedded set")
    return BenchmarkPlan(sources=sources, epochs=FULL_EPOCHS, batch_size=FULL_BATCH, samples=4)


def _link_inputs(sources: list[str], dest: str) -> str:
    """One folder of symlinks to the CIFs of several sources (names prefixed by their folder)."""
    os.makedirs(dest, exist_ok=True)
    for src in sources:
        tag = os.path.basename(os.path.normpath(src))
        for name in sorted(os.listdir(src)):
            if name.lower().endswith(".cif"):
                link = os.path.join(dest, f"{tag}-{name}")
                if not os.path.lexists(link):
                    os.symlink(os.path.abspath(os.path.join(src, name)), link)
    return dest


def _read_means(metrics_path: str) -> dict[str, float]:
    """The test-split means of a metrics.json ({} when there is none)."""
    try:
        with open(metrics_path) as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v["mean"] for k, v in metrics.get("test", {}).items() if isinstance(v, dict) and "mean" in v}


def run_task(out_dir: str, plan: BenchmarkPlan, variant: str, name: str, seed: int, progress: bool = True) -> dict:
    """Train (methods) or run (baselines), sample and evaluate one (variant, method, seed); reuse what exists.

    Returns the row of test means plus the seconds it took.
    """
    from crystalflow.evaluation.baselines import run_baseline
    from crystalflow.evaluation.evaluate import evaluate
    from crystalflow.evaluation.sampling import sample_dataset
    from crystalflow.training.checkpoint import load_model
    from crystalflow.training.device import select_device
    from crystalflow.training.trainer import train

    t0 = time.time()
    data = os.path.join(out_dir, "data", variant)
    pred = os.path.join(out_dir, "pred", variant, name, f"seed{seed}")
    metrics_path = os.path.join(pred, "metrics.json")
    if not os.path.exists(os.path.join(pred, "info.json")):
        if name in plan.baselines:
            run_baseline(name, data, "test", pred, samples=plan.samples, seed=seed, progress=progress, overwrite=True)
        else:
            run_dir = os.path.join(out_dir, "runs", variant, name, f"seed{seed}")
            config = plan.train_config(name, seed, variant)
            if not _finished(run_dir):
                resume = _resumable(run_dir, config)
                if not resume:  # nothing there, or a run with other settings: start afresh
                    shutil.rmtree(run_dir, ignore_errors=True)
                train(data, run_dir, config, resume=resume, progress=progress)
            device = select_device("auto")
            model, _ = load_model(run_dir, device=device)
            info = {"method": name, "model": run_dir, "weights": "ema"}
            sample_dataset(model, data, "test", pred, info, samples=plan.samples, steps=plan.steps,
                           seed=seed, overwrite=True, progress=progress, device=device)
    means = _read_means(metrics_path)
    if "sol_c" not in means:  # not evaluated yet, or scored before the current metrics
        evaluate(pred, metrics_path, progress=False)
        means = _read_means(metrics_path)
    return {"variant": variant, "method": name, "seed": seed, **means, "_seconds": time.time() - t0}


def run_relaxed_task(out_dir: str, plan: BenchmarkPlan, variant: str, name: str, seed: int,
                     progress: bool = True) -> dict:
    """Relax the predictions of one (variant, method, seed) task (run first) and score them as ``name+relax``."""
    from crystalflow.evaluation.evaluate import evaluate
    from crystalflow.evaluation.relaxation import relax_pred_dir

    t0 = time.time()
    pred = os.path.join(out_dir, "pred", variant, name, f"seed{seed}")
    if not os.path.exists(os.path.join(pred, "info.json")):
        run_task(out_dir, plan, variant, name, seed, progress)
    relaxed = pred + RELAXED_SUFFIX
    metrics_path = os.path.join(relaxed, "metrics.json")
    if not os.path.exists(os.path.join(relaxed, "info.json")):
        relax_pred_dir(pred, relaxed, progress=progress, overwrite=True, limit=plan.relax_limit)
    means = _read_means(metrics_path)
    if "sol_c" not in means:
        evaluate(relaxed, metrics_path, progress=False)
        means = _read_means(metrics_path)
    return {"variant": variant, "method": name + RELAXED, "seed": seed, **means, "_seconds": time.time() - t0}


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_benchmark(out_dir: str, plan: BenchmarkPlan, progress: bool = True, log=print, jobs: int = 1) -> dict:
    """Run ``plan`` into ``out_dir``; finished steps (runs, predictions, metrics) are reused on re-run.

    ``jobs`` > 1 runs that many (variant, method, seed) tasks at once in worker processes (e.g. several
    trainings sharing one GPU); each worker gets ``cpu_count // jobs`` torch threads.
    """
    start = time.time()
    prepare_output_dir(out_dir)
    inputs = _link_inputs(plan.sources, os.path.join(out_dir, "inputs"))
    for variant in plan.variants:
        preset, inversion = VARIANTS[variant]
        settings = BuildSettings(
            noise=noise_model(preset, inversion), noise_preset=preset,
            samples_per_crystal=plan.samples_per_crystal, max_atoms=plan.max_atoms, seed=0,
        )
        data = os.path.join(out_dir, "data", variant)
        log(f"[{variant}] dataset -> {data}")
        summary = build_dataset(inputs, data, settings, workers=plan.workers, progress=progress).summary
        log(f"[{variant}] {summary['clusters']} clusters (test {summary['splits']['test']})")
    tasks = [(v, name, seed) for v in plan.variants for seed in plan.seeds for name in plan.methods + plan.baselines
             if plan.runs(v, name)]

    def report(row: dict) -> None:
        log(f"[{row['variant']}/{row['method']}/seed{row['seed']}] ({len(done)}/{len(tasks) * (1 + plan.relax)} done) "
            f"pm_atom {row.get('pm_atom', float('nan')):.2f} pm_center {row.get('pm_center', float('nan')):.2f} "
            f"sol_c {row.get('sol_c', float('nan')):.0f}% valid {row.get('valid', float('nan')):.0f}% "
            f"orientation {row.get('orientation', float('nan')):.0f}° ({row['_seconds']:.0f} s)")

    done: dict[tuple, dict] = {}
    phases = [(run_task, tasks)] + ([(run_relaxed_task, tasks)] if plan.relax else [])
    for phase, (fn, phase_tasks) in enumerate(phases):  # relaxations start once every prediction exists
        keyed = [(phase, *t) for t in phase_tasks]
        if jobs <= 1:
            for key in keyed:
                done[key] = fn(out_dir, plan, *key[1:], progress=progress)
                report(done[key])
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads,)) as pool:
                futures = {pool.submit(fn, out_dir, plan, *key[1:], False): key for key in keyed}
                for future in as_completed(futures):
                    done[futures[future]] = future.result()
                    report(done[futures[future]])
    ordered = [(phase, *t) for phase, (_, phase_tasks) in enumerate(phases) for t in phase_tasks]  # plan order
    rows = [{k: v for k, v in done[key].items() if k != "_seconds"} for key in ordered]
    seconds = time.time() - start
    report_out = write_report(out_dir, rows, plan, seconds)
    log(f"benchmark finished in {seconds / 60:.1f} min: {os.path.join(out_dir, 'results.md')}")
    return report_out


def _finished(run_dir: str) -> bool:
    """Whether the training in ``run_dir`` ran all the epochs of its config (an interrupted one did not)."""
    from crystalflow.training.checkpoint import BEST, CONFIG, LOG

    try:
        with open(os.path.join(run_dir, CONFIG)) as f:
            epochs = int(json.load(f)["epochs"])
        with open(os.path.join(run_dir, LOG), newline="") as f:
            done = [int(r["epoch"]) for r in csv.DictReader(f) if r["epoch"].isdigit()]
    except (OSError, ValueError, KeyError):
        return False
    return bool(done) and max(done) >= epochs and os.path.exists(os.path.join(run_dir, BEST))


def _resumable(run_dir: str, config: "TrainConfig") -> bool:
    """Whether ``run_dir`` holds an interrupted training with ``config``'s settings, so it can be continued.

    Only the fields a resumed run may change (epochs, threads, ...) may differ; any other difference
    (an older plan, another learning rate) means the run is redone from the start.
    """
    from crystalflow.training.checkpoint import CHECKPOINT, CONFIG
    from crystalflow.training.config import RESUMABLE_FIELDS, TrainConfig

    try:
        with open(os.path.join(run_dir, CONFIG)) as f:
            saved = TrainConfig.from_dict(json.load(f)).to_dict()
    except (OSError, ValueError, UserError):
        return False
    wanted = config.to_dict()
    for key in RESUMABLE_FIELDS:
        saved.pop(key, None)
        wanted.pop(key, None)
    return os.path.exists(os.path.join(run_dir, CHECKPOINT)) and saved == wanted


def summarise(rows: list[dict]) -> dict[tuple[str, str], dict[str, tuple[float, float, int]]]:
    """(variant, method) -> metric -> (mean over seeds, std over seeds, number of seeds)."""
    out: dict[tuple[str, str], dict[str, tuple[float, float, int]]] = {}
    for key in sorted({(r["variant"], r["method"]) for r in rows}):
        group = [r for r in rows if (r["variant"], r["method"]) == key]
        metrics = sorted({k for r in group for k in r} - {"variant", "method", "seed"})
        out[key] = {}
        for m in metrics:
            vals = np.array([r[m] for r in group if m in r and np.isfinite(r[m])], dtype=float)
            out[key][m] = (float(vals.mean()), float(vals.std()), len(vals)) if len(vals) else (float("nan"), 0.0, 0)
    return out


def _table_variants(table: dict) -> list[str]:
    """The variants (in table order) that have results in ``table`` from :func:`summarise`."""
    return [v for v in VARIANTS if any(key[0] == v for key in table)]


def _cell(mean: float, std: float, n: int) -> str:
    """``mean ± std`` over seeds; a single seed has no spread to show, and no value at all is a dash."""
    if n == 0:
        return "–"
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"


def write_report(out_dir: str, rows: list[dict], plan: BenchmarkPlan, seconds: float) -> dict:
    """results.csv (one row per variant, method, seed), results.md (the layout of Tables 1–3) and plots."""
    table = summarise(rows)
    metric_names = sorted({k for r in rows for k in r} - {"variant", "method", "seed"})
    write_csv(os.path.join(out_dir, "results.csv"), rows, ["variant", "method", "seed", *metric_names])
    order = [m + suffix for m in plan.methods + plan.baselines for suffix in ("", RELAXED)
             if any(key[1] == m + suffix for key in table)]
    lines = [
        "# crystalflow benchmark",
        "",
        f"crystalflow {__version__}; data: {', '.join(os.path.basename(os.path.normpath(s)) for s in plan.sources)}; "
        f"seeds {list(plan.seeds)}; {plan.epochs} epochs ({LABELS[OURS]}: "
        f"{', '.join(f'{plan.ours_epochs.get(v, FULL_OURS_EPOCHS)} ({v})' for v in plan.variants)} epochs of fresh "
        f"noise, batch {OURS_BATCH}); K = {plan.samples} samples, {plan.steps} Euler steps; "
        f"molecules up to {plan.max_atoms} atoms; wall time {seconds / 60:.1f} min.",
        "",
        "Mean ± std over seeds (just the value for one seed) of the test-split means. "
        "PM in Å (min over K samples; lower is better); "
        "sol_c: % of clusters solved by any of the K samples (matched and valid, Sol_C@K); matched: % of "
        "clusters whose best-PM sample matches (OXtalign: ≥ 8 of 15 molecules with RMSD_15 < 2 Å); valid: % "
        "of clusters whose best-PM sample has no heavy-atom vdW overlap ≥ 0.7 Å between molecules; "
        "max_overlap: mean of its largest overlap (Å); n_matched (of 15, central molecule included) and rmsd15 "
        "(Å, over the clusters with ≥ 8 matched) from OXtalign; orientation: mean error (degrees) of the molecules' "
        "orientations relative to the central one (random ≈ 126°).",
    ]
    if any(m.endswith(RELAXED) for _, m in table):
        shown = f"the first {plan.relax_limit} test clusters" if plan.relax_limit else "every test cluster"
        lines += ["", f"\"+ relaxation\" rows: the method's samples relaxed (rigid molecules, W99 exp-6 + "
                      f"{DEFAULT_CHARGE_MODEL} charges; as a crystal where the cluster implies one, else as rigid bodies), scored on {shown}."]
    for variant in _table_variants(table):
        lines += ["", f"## {TITLES[variant]}", "", "| method | " + " | ".join(TABLE_METRICS) + " |",
                  "|---|" + "---|" * len(TABLE_METRICS)]
        for method in order:
            stats = table.get((variant, method))
            if not stats:
                continue
            cells = [_cell(*stats[m]) if m in stats else "–" for m in TABLE_METRICS]
            lines.append(f"| {label(method)} | " + " | ".join(cells) + " |")
    write_text(os.path.join(out_dir, "results.md"), "\n".join(lines) + "\n")
    _plot(out_dir, table, order)
    return {"rows": rows, "seconds": seconds, "results_md": os.path.join(out_dir, "results.md")}


def _plot(out_dir: str, table: dict, order: list[str]) -> None:
    try:
        import matplotlib
    except ImportError:  # a model-only install (e.g. a GPU node): the tables are written, the picture not
        print("matplotlib is not installed: results.png skipped", flush=True)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    panels = (("pm_center", "Å"), ("sol_c", "%"), ("valid", "%"), ("orientation", "°"))
    variants = _table_variants(table)
    width = 0.8 / max(len(variants), 1)
    for ax, (metric, unit) in zip(axes, panels):
        for k, variant in enumerate(variants):
            methods = [m for m in order if (variant, m) in table]
            vals = [table[(variant, m)].get(metric, (np.nan, 0, 0)) for m in methods]
            x = np.array([order.index(m) for m in methods], dtype=float) + (k - (len(variants) - 1) / 2) * width
            ax.bar(x, [v[0] for v in vals], width, yerr=[v[1] for v in vals], label=variant, capsize=3)
        ax.set_xticks(np.arange(len(order)))
        ax.set_xticklabels([label(m) for m in order], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric} ({unit})")
        ax.set_ylim(bottom=0.0, top=100.0 if unit == "%" else None)
        if metric == "orientation":
            ax.axhline(RANDOM_ORIENTATION_DEG, color="grey", linestyle="--", linewidth=1, label="random")
    fig.suptitle("crystalflow benchmark: test split, mean ± std over seeds")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(os.path.join(out_dir, "results.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
