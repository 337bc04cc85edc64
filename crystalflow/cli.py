"""Command-line interface of crystalflow: data, training, sampling, relaxation, crystals, scoring, the demo.

Every command reports bad input as one line on stderr (exit status 2), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from crystalflow.common.errors import UserError
from crystalflow.common.version import __version__
from crystalflow.common.vocabulary import (
    ALL_SPLITS,
    BASELINES,
    BENCHMARK_VARIANTS,
    CHARGE_MODELS,
    DEFAULT_BATCH_CLUSTERS,
    DEFAULT_CHARGE_MODEL,
    DEFAULT_EXPORT_WEIGHTS,
    DEFAULT_FWHM,
    DEFAULT_MAX_ATOMS,
    DEFAULT_NOISE_PRESET,
    DEFAULT_SEARCH_CANDIDATES,
    DEFAULT_SEARCH_RANKING,
    DEFAULT_SEARCH_SECONDS,
    DEFAULT_SEARCH_WORKERS,
    DEFAULT_SIMILARITY_WIDTH,
    DEFAULT_SOLVER,
    DEFAULT_SPLIT_BY,
    DEFAULT_STEPS,
    DEFAULT_TOP,
    DEFAULT_WEIGHTS,
    DEMO_EPOCHS,
    EXPORT_FORMATS,
    EXPORT_WEIGHTS,
    METHODS,
    NOISE_PRESET_NAMES,
    PREDICT_MODES,
    RECONSTRUCT_SOURCES,
    SEARCH_RANKINGS,
    SOLVERS,
    SPLIT_BY,
    SPLIT_CHOICES,
    WEIGHTS,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _usage_error(prog: str, message: str) -> str:
    """The one line a bad argument gets (no usage block)."""
    return f"{prog}: error: {message} (see {prog} -h)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as the one line every command uses (exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, _usage_error(self.prog, message) + "\n")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0.0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return x


def _cmd_build(args: argparse.Namespace) -> None:
    from crystalflow.data.build import build_dataset
    from crystalflow.data.noise import noise_model
    from crystalflow.data.pipeline import BuildSettings

    settings = BuildSettings(
        noise=noise_model(args.noise, inversion=args.inversion),
        noise_preset=args.noise,
        samples_per_crystal=args.samples_per_crystal,
        max_atoms=args.max_atoms,
        seed=args.seed,
    )
    result = build_dataset(
        args.cif_dir, args.output, settings, workers=args.workers, limit=args.limit,
        split_by=args.split_by, overwrite=args.overwrite, progress=not args.quiet,
    )
    s = result.summary
    reasons = ", ".join(f"{k} {v}" for k, v in s["reject_reasons"].items()) or "none"
    print(
        f"{s['accepted_crystals']} crystals accepted of {s['inputs']} CIFs -> {s['clusters']} clusters "
        f"(train {s['splits']['train']}, valid {s['splits']['valid']}, test {s['splits']['test']}) in {args.output}\n"
        f"rejected {s['rejected']}: {reasons} (see rejects.csv)\n{_inputs_line(s)}"
    )


def _inputs_line(summary: dict) -> str:
    """One line on how physical the inputs x_w of a dataset are (summary.json's ``x_w``)."""
    x = summary.get("x_w") or {}
    if "valid" not in x:
        return "inputs x_w: none"
    line = (f"inputs x_w: {x['valid']:.1f} % valid (no heavy-atom vdW overlap >= 0.7 A between molecules; "
            f"worst overlap median {x['max_overlap_median']:.2f} A, max {x['max_overlap_max']:.2f} A)")
    if "noise_push_mean" in x:
        line += f"; mean turn {x['noise_angle_mean']:.1f} deg, mean RMS push {x['noise_push_mean']:.2f} A"
    return line


def _cmd_export(args: argparse.Namespace) -> None:
    from crystalflow.data.cluster17_csv import export_cluster17

    if args.format not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {args.format!r}")
    n = export_cluster17(args.dataset_dir, args.output, split=args.split, progress=not args.quiet)
    print(f"wrote {n} clusters to {args.output} (FinalPositions/, InitialPositions/)")


def _cmd_import(args: argparse.Namespace) -> None:
    from crystalflow.data.cluster17_csv import import_cluster17

    summary = import_cluster17(args.raw_dir, args.output, seed=args.seed, progress=not args.quiet)
    print(f"imported {summary['clusters']} clusters into {args.output}; rejected {summary['rejected']}\n"
          f"{_inputs_line(summary)}")


def _cmd_stats(args: argparse.Namespace) -> None:
    from crystalflow.data.stats import dataset_stats

    dataset_stats(args.dataset_dir, args.output, split=args.split)
    print(f"figures and tables written to {args.output}")


def _cmd_train(args: argparse.Namespace) -> None:
    from crystalflow.training.config import load_config
    from crystalflow.training.trainer import train

    given = (("epochs", args.epochs), ("seed", args.seed), ("fresh_noise", args.fresh_noise or None))
    overrides = {k: v for k, v in given if v is not None}
    config = load_config(args.config, method=args.method, **overrides)
    from crystalflow.training.distributed import env_info

    summary = train(args.dataset_dir, args.output, config, resume=args.resume, progress=not args.quiet)
    if env_info().is_main:
        print(json.dumps(summary, indent=2, default=str))


def _cmd_export_model(args: argparse.Namespace) -> None:
    from crystalflow.training.checkpoint import export_model

    export_model(args.run_dir, args.output, which=args.weights)
    print(f"inference-only model written to {args.output} (use it with --model {args.output})")


def _cmd_sample(args: argparse.Namespace) -> None:
    from crystalflow.evaluation.sampling import sample_dataset
    from crystalflow.training.checkpoint import load_model
    from crystalflow.training.device import select_device

    if args.solver not in SOLVERS:
        raise UserError(f"unknown solver {args.solver!r}")
    device = select_device(args.device)
    model, config = load_model(args.run_dir, which=args.weights, device=device)
    info = {"method": config.model.method, "model": os.path.abspath(args.run_dir), "weights": args.weights}
    sample_dataset(
        model, args.dataset_dir, args.split, args.output, info, samples=args.samples, steps=args.steps,
        solver=args.solver, keep_trajectory=args.trajectory, batch_clusters=args.batch, seed=args.seed,
        limit=args.limit, overwrite=args.overwrite, progress=not args.quiet, rigid=args.rigid, device=device,
    )
    print(f"predictions written to {args.output}")
    if args.relax:
        from crystalflow.evaluation.relaxation import relax_pred_dir

        relaxed = args.output.rstrip("/\\") + "-relaxed"
        info = relax_pred_dir(args.output, relaxed, progress=not args.quiet, overwrite=args.overwrite)
        print(f"relaxed predictions written to {relaxed} ({_modes(info)})")


def _modes(info: dict) -> str:
    modes = info.get("relax_modes") or {}
    return f"{modes.get('crystal', 0)} samples relaxed as crystals, {modes.get('cluster', 0)} as clusters"


def _cmd_relax(args: argparse.Namespace) -> None:
    from crystalflow.evaluation.relaxation import relax_pred_dir

    info = relax_pred_dir(args.pred_dir, args.output, progress=not args.quiet, overwrite=args.overwrite,
                          limit=args.limit, periodic=not args.no_periodic, charge_model=args.charges)
    print(f"relaxed predictions written to {args.output} ({_modes(info)}); score them with crystalflow evaluate")


def _cmd_reconstruct(args: argparse.Namespace) -> None:
    from crystalflow.apps.reconstruct import TABLE, reconstruct_pred_dir

    rows = reconstruct_pred_dir(args.pred_dir, args.output, relax=args.relax, source=args.source,
                                limit=args.limit, progress=not args.quiet)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok} of {len(rows)} clusters reconstructed as crystals in {args.output} "
          f"({len(rows) - ok} without a consistent lattice: see {TABLE})")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from crystalflow.evaluation.evaluate import evaluate

    result = evaluate(args.pred_dir, args.output, progress=not args.quiet)
    for split, metrics in result.items():
        if split in ("info", "per_cluster"):
            continue
        shown = ", ".join(f"{k} {v['mean']:.3g}±{v['std']:.2g}" for k, v in metrics.items() if isinstance(v, dict))
        print(f"{split}: {shown}")
    print(f"metrics written to {args.output}")


def _cmd_baseline(args: argparse.Namespace) -> None:
    from crystalflow.evaluation.baselines import run_baseline

    run_baseline(args.name, args.dataset_dir, args.split, args.output, samples=args.samples, seed=args.seed,
                 progress=not args.quiet, overwrite=args.overwrite, limit=args.limit)
    print(f"{args.name} predictions written to {args.output}")


def _space_groups(values: list[str] | None) -> list[int | str] | None:
    return None if values is None else [int(v) if v.strip().isdigit() else v for v in values]


def _cmd_predict(args: argparse.Namespace) -> None:
    from crystalflow.apps.predict import TABLE_HEADER, predict

    if (args.molecule is None) == (args.batch is None):
        raise UserError("give either MOLECULE or --batch FILE (not both)" if args.molecule is not None
                        else "give a MOLECULE (SMILES or a file) or --batch FILE")
    mode = args.mode or ("model" if args.model is not None else "search")
    if mode == "search" and args.steps is not None:
        raise UserError("--steps applies to --mode model (the flow's Euler steps)")
    if mode == "model" and (args.batch is not None or args.shard is not None):
        raise UserError("--batch and --shard run the crystal search (--mode search)")
    if args.shard is not None and args.batch is None:
        raise UserError("--shard needs --batch FILE")
    search = {"candidates": args.candidates, "seconds": args.seconds, "space_groups": _space_groups(args.space_groups),
              "conformers": args.conformers, "pxrd": args.pxrd, "max_steps": args.max_steps,
              "workers": args.workers, "refine": args.refine, "ranking": args.rank, "charges": args.charges}
    if args.batch is not None:
        from crystalflow.apps.predict_batch import parse_shard, run_batch
        shard = parse_shard(args.shard)
        r = run_batch(args.batch, args.output, shard=shard, progress=not args.quiet, seed=args.seed,
                      samples=args.samples or DEFAULT_TOP, **search)
        print(f"{r['molecules']} molecules: {r['predicted']} predicted, {r['skipped']} already done, "
              f"{r['failed']} failed; table {r['summary']}" + (f", failures {r['failures']}" if r["failed"] else ""))
        return
    if mode == "model":
        for option, value in (("--pxrd", args.pxrd), ("--conformers", args.conformers), ("--refine", args.refine),
                              ("--rank", args.rank), ("--charges", args.charges)):
            if value is not None:
                raise UserError(f"{option} applies to --mode search")
        cands = predict(args.molecule, model=args.model, samples=args.samples, seed=args.seed,
                        steps=args.steps or DEFAULT_STEPS, out_dir=args.output, progress=not args.quiet,
                        relax=args.relax, mode="model")
        print(TABLE_HEADER)
        for c in cands:
            print(c.table_line())
        print(f"files in {args.output}: viewer.html, overview.png, summary.csv, candidate_*.xyz/.pdb, notes.txt")
        return
    from crystalflow.apps.predict_crystals import TABLE_HEADER as CRYSTAL_HEADER
    from crystalflow.apps.predict_crystals import pxrd_ranking

    cands = predict(args.molecule, model=args.model, samples=args.samples, seed=args.seed, out_dir=args.output,
                    progress=not args.quiet, relax=args.relax, mode="search", **search)
    print(CRYSTAL_HEADER)
    for c in cands:
        print(c.table_line())
    if args.pxrd is not None:
        best = pxrd_ranking(cands)[0]
        print(f"most similar to {args.pxrd}: candidate {best.rank} ({best.space_group[1]}, de Gelder "
              f"{best.pxrd_similarity:.3f}); ranking_pxrd.csv")
    print(f"files in {args.output}: viewer.html, overview.png, summary.csv, candidate_*.cif/.xyz/.pdb/_pxrd.csv, "
          "notes.txt")


def _cmd_benchmark(args: argparse.Namespace) -> None:
    from crystalflow.apps.benchmark import full_plan, quick_plan, run_benchmark

    plan = quick_plan() if args.quick else full_plan(args.shared)
    if args.seeds:
        plan.seeds = tuple(range(args.seeds))
    if args.methods is not None:
        plan.methods = tuple(args.methods)
    if args.baselines is not None:
        plan.baselines = tuple(args.baselines)
    if args.variants is not None:
        plan.variants = tuple(args.variants)
    plan.relax = args.relax
    plan.relax_limit = args.relax_limit
    jobs = args.jobs if args.jobs is not None else (min(2, os.cpu_count() or 1) if args.quick else 1)
    run_benchmark(args.output, plan, progress=not args.quiet, jobs=jobs)


def _cmd_compare(args: argparse.Namespace) -> None:
    from crystalflow.evaluation.compare import compare_crystals

    r = compare_crystals(args.cif_a, args.cif_b, width=args.width, fwhm=args.fwhm, pxrd_out=args.pxrd_out)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    rmsd = "none" if r["rmsd_n"] is None else f"{r['rmsd_n']:.3f} A"
    why = f" ({r['message']})" if r["message"] else ""
    print(f"A: {r['a']} ({r['formula_a']})\nB: {r['b']} ({r['formula_b']})\n"
          f"OXtalign RMSD_{r['n']}: {rmsd}, {r['n_matched']}/{r['n']} molecules matched, "
          f"{'a match' if r['matched'] else 'no match'}{why}\n"
          f"PXRD similarity (de Gelder, width {r['pxrd']['width']:g} deg): {r['pxrd_similarity']:.4f}")
    if "files" in r:
        print(f"patterns written to {args.pxrd_out}: {', '.join(os.path.basename(f) for f in r['files'])}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from crystalflow.apps.demo import run_demo

    run_demo(args.output, seed=args.seed, workers=args.workers, epochs=args.epochs, progress=not args.quiet)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``crystalflow`` command."""
    p = _Parser(prog="crystalflow", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"crystalflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="build a COD-Cluster17 dataset from a folder of CIF files")
    b.add_argument("cif_dir", help="folder of .cif files (searched recursively) or one .cif file")
    b.add_argument("-o", "--output", required=True, help="dataset directory to create or continue")
    b.add_argument("--inversion", action="store_true", help="mirror each molecule through its centre with p=0.5")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=_positive, default=max(1, os.cpu_count() or 1))
    b.add_argument("--noise", choices=sorted(NOISE_PRESET_NAMES), default=DEFAULT_NOISE_PRESET,
                   help="noise preset (README)")
    b.add_argument("--samples-per-crystal", type=_positive, default=1, help="noise draws per crystal")
    b.add_argument("--max-atoms", type=_positive, default=DEFAULT_MAX_ATOMS,
                   help="largest molecule kept (atoms incl. H)")
    b.add_argument("--limit", type=_positive, default=None, help="keep the first N accepted crystals (COD-5K: 5000)")
    b.add_argument("--split-by", choices=SPLIT_BY, default=DEFAULT_SPLIT_BY,
                   help="crystal: all clusters of one crystal share a split (default)")
    b.add_argument("--overwrite", action="store_true", help="discard an existing build in the output directory")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_build)

    e = sub.add_parser("export", help="write a dataset in the released COD-Cluster17 CSV layout")
    e.add_argument("dataset_dir")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--format", default=EXPORT_FORMATS[0], choices=EXPORT_FORMATS)
    e.add_argument("--split", default=ALL_SPLITS, choices=SPLIT_CHOICES)
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=_cmd_export)

    i = sub.add_parser("import-cluster17", help="read the released COD-Cluster17 CSV layout into a dataset")
    i.add_argument("raw_dir", help="folder holding FinalPositions/ and InitialPositions/")
    i.add_argument("-o", "--output", required=True)
    i.add_argument("--seed", type=int, default=0, help="seed of the 80/10/10 split when none is given")
    i.add_argument("-q", "--quiet", action="store_true")
    i.set_defaults(func=_cmd_import)

    s = sub.add_parser("stats", help="dataset statistics: the paper's Figures 3-5 as PNG plus CSV")
    s.add_argument("dataset_dir")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--split", default=ALL_SPLITS, choices=SPLIT_CHOICES)
    s.set_defaults(func=_cmd_stats)

    t = sub.add_parser("train", help="train GNN-MD, CrystalSDE-VE/VP or CrystalFlow-LERP on a dataset")
    t.add_argument("dataset_dir")
    t.add_argument("--method", choices=METHODS, default=None)
    t.add_argument("-o", "--output", required=True, help="run directory (checkpoint, config, log)")
    t.add_argument("--epochs", type=_positive, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--config", default=None, help="JSON file of training/model settings")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    t.add_argument("--fresh-noise", action="store_true",
                   help="draw the training inputs x_w anew every epoch with the dataset's noise model")
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    em = sub.add_parser("export-model", help="write an inference-only model (config + EMA weights) from a run")
    em.add_argument("run_dir")
    em.add_argument("-o", "--output", required=True)
    em.add_argument("--weights", default=DEFAULT_EXPORT_WEIGHTS, choices=EXPORT_WEIGHTS)
    em.set_defaults(func=_cmd_export_model)

    sm = sub.add_parser("sample", help="predict crystals for a dataset split with a trained model")
    sm.add_argument("run_dir", help="training run directory (or checkpoint file)")
    sm.add_argument("dataset_dir")
    sm.add_argument("--split", default="test", choices=SPLIT_CHOICES)
    sm.add_argument("-o", "--output", required=True, help="prediction directory to create")
    sm.add_argument("--samples", type=_positive, default=1, help="K samples per cluster (PM is the min over K)")
    sm.add_argument("--steps", type=_positive, default=DEFAULT_STEPS, help="fixed steps of euler/rk4")
    sm.add_argument("--solver", default=DEFAULT_SOLVER, choices=SOLVERS)
    sm.add_argument("--trajectory", type=int, default=0, metavar="FRAMES", help="keep FRAMES+1 trajectory frames")
    sm.add_argument("--weights", default=DEFAULT_WEIGHTS, choices=WEIGHTS)
    sm.add_argument("--rigid", action="store_true",
                    help="replace each predicted molecule by the input conformer superposed onto it")
    sm.add_argument("--batch", type=_positive, default=DEFAULT_BATCH_CLUSTERS, help="clusters per batch")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    sm.add_argument("--limit", type=_positive, default=None, help="first N clusters only")
    sm.add_argument("--overwrite", action="store_true")
    sm.add_argument("--relax", action="store_true",
                    help="also relax every sample (physics, rigid molecules) into OUTPUT-relaxed")
    sm.add_argument("-q", "--quiet", action="store_true")
    sm.set_defaults(func=_cmd_sample)

    rx = sub.add_parser("relax", help="relax predicted clusters (rigid molecules, W99 + charges) into a new PRED_DIR")
    rx.add_argument("pred_dir")
    rx.add_argument("-o", "--output", required=True, help="prediction directory to create (evaluate scores it)")
    rx.add_argument("--no-periodic", action="store_true",
                    help="relax every cluster as rigid bodies in vacuum, never as a periodic crystal")
    rx.add_argument("--limit", type=_positive, default=None, help="first N clusters only")
    rx.add_argument("--charges", choices=CHARGE_MODELS, default=DEFAULT_CHARGE_MODEL,
                    help=f"atomic charges of the force field (default {DEFAULT_CHARGE_MODEL}; docs/physics.md)")
    rx.add_argument("--overwrite", action="store_true")
    rx.add_argument("-q", "--quiet", action="store_true")
    rx.set_defaults(func=_cmd_relax)

    rc = sub.add_parser("reconstruct", help="predicted clusters -> periodic crystals: one CIF per cluster and sample")
    rc.add_argument("pred_dir")
    rc.add_argument("-o", "--output", required=True, help="folder for the CIFs and crystals.csv (re-running continues)")
    rc.add_argument("--relax", action="store_true", help="relax each crystal (pose and cell) before writing it")
    rc.add_argument("--source", default="pred", choices=RECONSTRUCT_SOURCES,
                    help="the predictions (default), the true clusters or the inputs")
    rc.add_argument("--limit", type=_positive, default=None, help="first N clusters only")
    rc.add_argument("-q", "--quiet", action="store_true")
    rc.set_defaults(func=_cmd_reconstruct)

    ev = sub.add_parser("evaluate", help="score a prediction directory (PM, Sol_C, validity, OXtalign RMSD_15, ...)")
    ev.add_argument("pred_dir")
    ev.add_argument("-o", "--output", required=True, help="metrics.json to write")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    bl = sub.add_parser("baseline", help="identity or PackMol predictions for a dataset split")
    bl.add_argument("name", choices=BASELINES)
    bl.add_argument("dataset_dir")
    bl.add_argument("--split", default="test", choices=SPLIT_CHOICES)
    bl.add_argument("-o", "--output", required=True)
    bl.add_argument("--samples", type=_positive, default=1)
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--limit", type=_positive, default=None)
    bl.add_argument("--overwrite", action="store_true")
    bl.add_argument("-q", "--quiet", action="store_true")
    bl.set_defaults(func=_cmd_baseline)

    pr = sub.add_parser("predict", help="predicted crystals of a molecule (SMILES or structure file): crystal search "
                                        "(default) or the flow model")
    pr.add_argument("molecule", nargs="?", default=None,
                    help="SMILES, or a .sdf/.mol/.xyz/.pdb/.cif file of one molecule (CIF: its first)")
    pr.add_argument("-o", "--output", required=True, help="directory for the candidates and the viewer")
    pr.add_argument("--mode", choices=PREDICT_MODES, default=None,
                    help="crystal-structure search (default) or the flow model (default when --model is given)")
    pr.add_argument("--batch", default=None, metavar="FILE",
                    help="one SMILES per line (optional name after it, '#' comments): one subfolder each, resumable")
    pr.add_argument("--shard", default=None, metavar="I/N", help="with --batch: molecules I, I+N, I+2N, ... (1-based)")
    pr.add_argument("--samples", type=_positive, default=None,
                    help="candidates kept: top K crystals (search, default 10) or model clusters (default 8)")
    pr.add_argument("--candidates", type=_positive, default=DEFAULT_SEARCH_CANDIDATES,
                    help="search: random crystals generated and relaxed")
    pr.add_argument("--seconds", type=_positive_float, default=DEFAULT_SEARCH_SECONDS,
                    help="search: time budget (s) per molecule")
    pr.add_argument("--space-groups", nargs="+", default=None, metavar="SG",
                    help="search: space groups (numbers or symbols, e.g. 14 P-1; default the 11 common ones)")
    pr.add_argument("--conformers", type=_positive, default=None,
                    help="search: RDKit conformers of a SMILES (default 1 for <= 2 rotatable bonds, else 3)")
    pr.add_argument("--pxrd", default=None, metavar="PATTERN.xy",
                    help="search: a measured powder pattern; candidates get its similarity and ranking_pxrd.csv")
    pr.add_argument("--max-steps", type=_positive, default=None, help="search: L-BFGS steps per relaxation (300)")
    pr.add_argument("--workers", type=_positive, default=DEFAULT_SEARCH_WORKERS,
                    help="search: processes relaxing crystals at once (e.g. the number of cores; default 1)")
    pr.add_argument("--refine", nargs="?", const=True, default=None, metavar="MODEL",
                    help="search: refine the lowest candidates with a flow model (the shipped search model, or a "
                         "run/model directory); off by default: it did not raise success on held-out molecules "
                         "(docs/search.md)")
    pr.add_argument("--rank", choices=SEARCH_RANKINGS, default=None,
                    help=f"search: order of the crystals: lattice energy, or the learned ranker (default "
                         f"{DEFAULT_SEARCH_RANKING}; docs/search.md)")
    pr.add_argument("--charges", choices=CHARGE_MODELS, default=None,
                    help=f"search: atomic charges of the force field (default {DEFAULT_CHARGE_MODEL}; docs/physics.md)")
    pr.add_argument("--model", default=None, help="model: training run directory (default: the shipped model)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--steps", type=_positive, default=None, help=f"model: Euler steps of the flow ({DEFAULT_STEPS})")
    pr.add_argument("--relax", action="store_true",
                    help="model: relax every candidate (as a crystal when it implies one: candidate_NN.cif) and rank by energy")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    pr.set_defaults(func=_cmd_predict)

    bm = sub.add_parser("benchmark", help="the paper's Tables 1-2 (methods x baselines) and Table 3 (melt input)")
    bm.add_argument("--quick", action="store_true", help="embedded COD set, small model, Tables 1-2 (about 13 min on 2 cores)")
    bm.add_argument("--shared", default=os.path.join("..", "shared", "data"), help="folder with cod/ csd500/ ocelot/")
    bm.add_argument("--seeds", type=_positive, default=None, help="number of seeds (default 3)")
    bm.add_argument("--methods", nargs="*", choices=METHODS, default=None,
                    help="learned methods to run (default: all; none: baselines only)")
    bm.add_argument("--baselines", nargs="*", choices=BASELINES, default=None,
                    help="baselines to run (default: both; none: learned methods only)")
    bm.add_argument("--variants", nargs="+", choices=BENCHMARK_VARIANTS, default=None,
                    help="noise variants, i.e. tables (default: all three; with --quick: plain inversion)")
    bm.add_argument("--jobs", type=_positive, default=None,
                    help="tasks run at once in worker processes, e.g. trainings sharing a GPU "
                         "(default: 2 with --quick on 2+ cores, else 1)")
    bm.add_argument("--relax", action="store_true", help="add a relaxed row (<method> + relaxation) for every method")
    bm.add_argument("--relax-limit", type=_positive, default=None, metavar="N",
                    help="relax only the first N test clusters of each prediction")
    bm.add_argument("-o", "--output", required=True, help="report directory (re-running continues it)")
    bm.add_argument("-q", "--quiet", action="store_true")
    bm.set_defaults(func=_cmd_benchmark)

    c = sub.add_parser("compare", help="compare two crystals (CIFs): OXtalign RMSD_15 and simulated-PXRD similarity")
    c.add_argument("cif_a", help="CIF file of crystal A")
    c.add_argument("cif_b", help="CIF file of crystal B")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.add_argument("--pxrd-out", default=None, metavar="DIR",
                   help="write both patterns (pattern_a.csv, pattern_b.csv) and overlay.png into DIR")
    c.add_argument("--width", type=_positive_float, default=DEFAULT_SIMILARITY_WIDTH,
                   help="half-width l of de Gelder's triangular weight (degrees 2-theta)")
    c.add_argument("--fwhm", type=_positive_float, default=DEFAULT_FWHM, help="peak FWHM (degrees 2-theta)")
    c.set_defaults(func=_cmd_compare)

    d = sub.add_parser("demo", help="the whole pipeline on the embedded COD set: data, training, evaluation, aspirin, report")
    d.add_argument("-o", "--output", default="crystalflow-demo")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--epochs", type=_positive, default=DEMO_EPOCHS, help="training epochs of the demo model")
    d.add_argument("--workers", type=_positive, default=max(1, os.cpu_count() or 1))
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crystalflow`` command; returns the exit status."""
    args, extra = make_parser().parse_known_args(argv)
    if extra:  # named after the subcommand, as its other errors are
        print(_usage_error(f"crystalflow {args.command}", f"unrecognized arguments: {' '.join(extra)}"),
              file=sys.stderr)
        return EXIT_USAGE
    try:
        args.func(args)
    except UserError as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        print(f"crystalflow {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"crystalflow {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
