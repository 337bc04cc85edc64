"""``crystalflow demo``: the whole pipeline on the embedded COD set, with a report a person can read.

Builds the dataset, draws its statistics, trains a small CrystalFlow-LERP model, samples the test split,
evaluates it against the identity baseline, draws a trajectory strip and a 3D viewer, predicts aspirin
with the demo model and by a small crystal-structure search, and writes ``report.md`` linking all of it.
"""
from __future__ import annotations

import os
import time

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.io import write_json, write_text
from crystalflow.common.resources import embedded_cif_dir
from crystalflow.common.vocabulary import DEMO_EPOCHS

#: the demo's crystal search of aspirin: random crystals, time budget (s), crystals kept
DEMO_SEARCH_CANDIDATES, DEMO_SEARCH_SECONDS, DEMO_SEARCH_TOP = 12, 40.0, 5
#: K samples per test cluster, and the flow's steps in every prediction of the demo
DEMO_SAMPLES = 2
DEMO_STEPS = 10
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
REPORT_METRICS = ("pm_atom", "pm_center", "sol_c", "valid", "max_overlap", "n_matched", "orientation", "rigidity")


def run_demo(out: str, seed: int = 0, workers: int = 2, epochs: int = DEMO_EPOCHS, progress: bool = True,
             log=print) -> str:
    """Run the demo into ``out``; returns the path of ``report.md``."""
    from crystalflow.apps.predict import predict
    from crystalflow.apps.viz import trajectory_strip, viewer_html
    from crystalflow.data.build import build_dataset
    from crystalflow.data.pipeline import BuildSettings
    from crystalflow.data.stats import dataset_stats
    from crystalflow.evaluation.baselines import run_baseline
    from crystalflow.evaluation.evaluate import evaluate
    from crystalflow.evaluation.predictions import read_predictions
    from crystalflow.evaluation.sampling import sample_dataset
    from crystalflow.flow.model import ModelConfig
    from crystalflow.training.checkpoint import BEST, load_model
    from crystalflow.training.config import TrainConfig
    from crystalflow.training.trainer import train

    start = time.time()
    prepare_output_dir(out)
    data = os.path.join(out, "dataset")
    log(f"[1/7] building the embedded COD dataset -> {data}")
    s = build_dataset(embedded_cif_dir(), data, BuildSettings(seed=seed), workers=workers, progress=progress).summary
    reasons = ", ".join(f"{k} {v}" for k, v in s["reject_reasons"].items()) or "none"
    log(f"      {s['accepted_crystals']} of {s['inputs']} crystals accepted ({reasons} rejected)")
    log("[2/7] dataset statistics (the paper's Figures 3-5)")
    dataset_stats(data, os.path.join(out, "stats"))
    run = os.path.join(out, "run")
    log(f"[3/7] training CrystalFlow-LERP for {epochs} epochs -> {run}")
    if not os.path.exists(os.path.join(run, BEST)):
        config = TrainConfig(epochs=epochs, batch_size=4, seed=seed, model=ModelConfig(method="lerp"))
        train(data, run, config, progress=progress)
    model, _ = load_model(run)
    log("[4/7] sampling the test split and the identity baseline; evaluating")
    pred_lerp, pred_id = os.path.join(out, "pred_lerp"), os.path.join(out, "pred_identity")
    sample_dataset(model, data, "test", pred_lerp, {"method": "lerp", "model": run}, samples=DEMO_SAMPLES,
                   steps=DEMO_STEPS, keep_trajectory=DEMO_STEPS, seed=seed, overwrite=True, progress=progress)
    run_baseline("identity", data, "test", pred_id, overwrite=True, progress=progress)
    results = {name: evaluate(p, os.path.join(p, "metrics.json"), progress=False)["test"]
               for name, p in (("CrystalFlow-LERP", pred_lerp), ("identity (x_w)", pred_id))}
    log("[5/7] pictures: trajectory strip and 3D viewer")
    item = next(iter(read_predictions(pred_lerp)))
    mid = item.trajectory[item.trajectory.shape[0] // 2, 0]
    strip = trajectory_strip(item.x_w, mid, item.pred[0], item.x_s, item.z, os.path.join(out, "trajectory.png"),
                             title=f"{item.meta.get('name', '')} ({item.meta.get('formula', '')})",
                             mid_label=f"t = {item.times[item.trajectory.shape[0] // 2]:.2f}")
    viewer = viewer_html(item.pred, item.x_s, item.z, os.path.join(out, "viewer.html"),
                         title=f"crystalflow demo: {item.meta.get('name', '')}")
    log(f"[6/7] predicting aspirin ({ASPIRIN}) with the demo model")
    cands = predict(ASPIRIN, model=run, samples=4, steps=DEMO_STEPS, out_dir=os.path.join(out, "aspirin"),
                    progress=False, mode="model")
    log(f"[7/7] crystal-structure search for aspirin ({DEMO_SEARCH_CANDIDATES} candidates, {DEMO_SEARCH_SECONDS:g} s)")
    crystals = predict(ASPIRIN, out_dir=os.path.join(out, "aspirin-crystals"), progress=False, mode="search",
                       candidates=DEMO_SEARCH_CANDIDATES, seconds=DEMO_SEARCH_SECONDS, samples=DEMO_SEARCH_TOP,
                       seed=seed)
    report = _write_report(out, s, results, strip, viewer, cands, time.time() - start, crystals)
    log(f"demo finished in {(time.time() - start) / 60:.1f} min: {report}")
    return report


def _write_report(out: str, summary: dict, results: dict, strip: str, viewer: str, cands: list, seconds: float,
                  crystals: list) -> str:
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    lines = [
        "# crystalflow demo", "",
        f"Wall time {seconds / 60:.1f} min. Dataset: {summary['accepted_crystals']} clusters from the embedded "
        f"COD set (splits {summary['splits']}).", "",
        "## Dataset statistics", "",
        "![atoms per molecule](stats/fig3_atoms_per_molecule.png)", "",
        "![x_w distances](stats/fig4_pairwise_distances_x_w.png)", "",
        "![x_s distances](stats/fig5_pairwise_distances_x_s.png)", "",
        "## Test split: CrystalFlow-LERP (demo model) vs identity", "",
        "| method | " + " | ".join(REPORT_METRICS) + " |", "|---|" + "---|" * len(REPORT_METRICS),
    ]
    for name, metrics in results.items():
        cells = [f"{metrics[m]['mean']:.2f} ± {metrics[m]['std']:.2f}" if m in metrics else "–" for m in REPORT_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "", "sol_c: % of test clusters solved by any sample (OXtalign match of ≥ 8/15 molecules with RMSD_15 < 2 Å "
        "and no heavy-atom vdW overlap ≥ 0.7 Å); valid: % without such an overlap; max_overlap in Å; PM in Å.", "",
        "A demo model trained for minutes on ~50 clusters: the point is the pipeline, not the numbers "
        "(see the README's benchmark for trained results).", "",
        "## Trajectory (x_w → intermediate → prediction → truth)", "", f"![trajectory]({rel(strip)})", "",
        f"3D viewer of prediction vs truth: [{rel(viewer)}]({rel(viewer)})", "",
        "## Aspirin: candidate packings", "",
        "| rank | score | valid | max overlap (Å) | density (g/cm³) | min contact (Å) |", "|---|---|---|---|---|---|",
    ]
    lines += [f"| {c.rank} | {c.score:.2f} | {'yes' if c.valid else 'no'} | {c.max_overlap:.2f} | {c.density:.2f} | "
              f"{c.min_contact:.2f} |" for c in cands]
    lines += ["", "![aspirin candidates](aspirin/overview.png)", "", "Viewer: [aspirin/viewer.html](aspirin/viewer.html)",
              "", "## Aspirin: crystal-structure search", "",
              f"{DEMO_SEARCH_CANDIDATES} random crystals (at most {DEMO_SEARCH_SECONDS:g} s), relaxed and ranked by lattice "
              "energy (a real prediction searches 60 or more; the experimental form I is P2₁/c, 1.40 g/cm³).", "",
              "| rank | energy (kJ/mol) | density (g/cm³) | space group | CIF |", "|---|---|---|---|---|"]
    lines += [f"| {c.rank} | {c.energy:.1f} | {c.density:.3f} | {c.space_group[1]} | "
              f"[candidate_{c.rank:02d}.cif](aspirin-crystals/candidate_{c.rank:02d}.cif) |" for c in crystals]
    lines += ["", "![aspirin crystals](aspirin-crystals/overview.png)", "",
              "Unit cells: [aspirin-crystals/viewer.html](aspirin-crystals/viewer.html); "
              "[summary.csv](aspirin-crystals/summary.csv), [notes.txt](aspirin-crystals/notes.txt)"]
    path = os.path.join(out, "report.md")
    write_text(path, "\n".join(lines) + "\n")
    write_json(os.path.join(out, "demo.json"), {"seconds": seconds, "results": results})
    return path
