"""Tests of crystalflow.apps.benchmark: summaries by hand, and a tiny end-to-end run (serial, resumed, parallel)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from crystalflow.apps import benchmark as bm

#: small molecules of the embedded set (quick to build, train and evaluate)
TINY_CIFS = ["2100348-benzene.cif", "2205750.cif", "2006609.cif", "2100438-cell-vol.cif"]


def test_summarise_mean_and_std_over_seeds():
    rows = [
        {"variant": "plain", "method": "lerp", "seed": 0, "pm_atom": 2.0, "pm_center": 1.0},
        {"variant": "plain", "method": "lerp", "seed": 1, "pm_atom": 4.0, "pm_center": float("nan")},
        {"variant": "plain", "method": "identity", "seed": 0, "pm_atom": 9.0},
    ]
    table = bm.summarise(rows)
    assert table[("plain", "lerp")]["pm_atom"] == (3.0, 1.0, 2)  # population std of {2, 4}
    assert table[("plain", "lerp")]["pm_center"] == (1.0, 0.0, 1)  # NaN left out
    assert table[("plain", "identity")]["pm_atom"] == (9.0, 0.0, 1)


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory, embedded_dir: Path) -> Path:
    src = tmp_path_factory.mktemp("cifs") / "cod"
    src.mkdir()
    for name in TINY_CIFS:
        shutil.copy(embedded_dir / name, src / name)
    return src


def tiny_plan(src: Path) -> bm.BenchmarkPlan:
    return bm.BenchmarkPlan(
        sources=[str(src)], seeds=(0,), methods=("lerp",), baselines=("identity",), epochs=1, batch_size=4,
        max_atoms=40, samples_per_crystal=3, samples=1, steps=2,
        model={"backbone": {"hidden": 8, "layers": 1, "n_rbf": 4}}, workers=1,
    )


def test_tiny_benchmark_writes_tables_and_resumes(tmp_path, tiny_sources, monkeypatch):
    out = tmp_path / "bench"
    logs: list[str] = []
    report = bm.run_benchmark(str(out), tiny_plan(tiny_sources), progress=False, log=logs.append)
    md = (out / "results.md").read_text()
    assert "## Table 1: without inversion" in md and "## Table 2: with inversion" in md and "## Table 3:" in md
    assert "| CrystalFlow-LERP |" in md and "| identity (x_w) |" in md and "orientation" in md
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["variant"], r["method"]) for r in rows} == {
        (v, m) for v in ("plain", "inversion", "melt") for m in ("lerp", "identity")}
    assert all(float(r["pm_atom"]) > 0 for r in rows)
    assert (out / "results.png").stat().st_size > 0
    assert any(line.startswith("benchmark finished in") for line in logs)
    # the identity baseline scores the input itself: rigid copies of the molecule
    identity = [r for r in rows if r["method"] == "identity"]
    assert all(float(r["rigidity"]) == pytest.approx(0.0, abs=1e-4) for r in identity)

    # a re-run reuses every finished step: training or sampling again would fail here
    def boom(*args, **kwargs):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr("crystalflow.training.trainer.train", boom)
    monkeypatch.setattr("crystalflow.evaluation.sampling.sample_dataset", boom)
    again = bm.run_benchmark(str(out), tiny_plan(tiny_sources), progress=False, log=lambda *_: None)
    assert again["rows"] == report["rows"]


def test_tiny_benchmark_in_worker_processes_matches_serial(tmp_path, tiny_sources):
    plan = tiny_plan(tiny_sources)
    plan.methods, plan.baselines = (), ("identity",)
    serial = bm.run_benchmark(str(tmp_path / "a"), plan, progress=False, log=lambda *_: None)
    parallel = bm.run_benchmark(str(tmp_path / "b"), plan, progress=False, log=lambda *_: None, jobs=2)
    assert json.dumps(serial["rows"]) == json.dumps(parallel["rows"]) and len(serial["rows"]) == 3  # NaN-aware


def test_variants_noise_and_our_training_setup():
    assert {v: bm.VARIANTS[v] for v in ("plain", "inversion", "melt")} == {
        "plain": ("solution", False), "inversion": ("solution", True), "melt": ("melt", False)}
    plan = bm.quick_plan()
    lerp = plan.train_config("lerp", 1, "melt")
    assert (lerp.epochs, lerp.batch_size, lerp.seed, lerp.fresh_noise) == (bm.QUICK_EPOCHS, 4, 1, False)
    assert (lerp.model.method, lerp.model.backbone.variant, lerp.model.backbone.hidden) == ("lerp", "fast", 32)
    for variant, sees_orientations in (("plain", False), ("inversion", False), ("melt", True)):
        ours = plan.train_config("rigid", 2, variant)
        assert (ours.epochs, ours.batch_size, ours.lr, ours.seed, ours.fresh_noise) == (
            bm.QUICK_OURS_EPOCHS[variant], bm.OURS_BATCH, bm.OURS_LR, 2, True)
        m = ours.model
        assert (m.method, m.backbone.variant, m.prediction, m.condition_on_input, m.backbone.hidden) == (
            "rigid", "molecule-painn", "endpoint", False, 32)
        assert m.backbone.orientation_inputs is sees_orientations
    assert plan.variants == bm.QUICK_VARIANTS and bm.BenchmarkPlan(sources=[]).variants == tuple(bm.VARIANTS)
    # Table 3 compares the paper's LERP with ours and the baselines; --methods still narrows it
    assert [n for n in bm.METHODS + bm.BASELINES if plan.runs("melt", n)] == ["lerp", "rigid", "identity", "packmol"]
    assert all(plan.runs("plain", n) for n in bm.METHODS + bm.BASELINES)
    plan.methods = ("rigid",)
    assert not plan.runs("melt", "lerp") and plan.runs("melt", "rigid")


def test_an_interrupted_training_is_not_taken_as_finished(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"epochs": 3, "model": {}}')
    (run / "best.pt").write_bytes(b"")
    header = "epoch,step,train_loss,val_loss,lr,seconds\n"
    (run / "log.csv").write_text(header + "1,4,1.0,1.0,0.001,1.0\n2,8,0.5,0.5,0.001,2.0\n")
    assert not bm._finished(str(run))  # stopped after 2 of 3 epochs: train again
    with open(run / "log.csv", "a") as f:
        f.write("3,12,0.4,0.4,0.001,3.0\n")
    assert bm._finished(str(run))
    (run / "best.pt").unlink()
    assert not bm._finished(str(run))


def test_an_interrupted_training_with_the_plans_settings_is_resumed(tmp_path):
    plan = bm.quick_plan()
    config = plan.train_config("lerp", 0, "melt")
    run = tmp_path / "run"
    run.mkdir()
    assert not bm._resumable(str(run), config)  # nothing there
    (run / "config.json").write_text(json.dumps(dict(config.to_dict(), threads=1)))
    assert not bm._resumable(str(run), config)  # settings but no checkpoint
    (run / "checkpoint.pt").write_bytes(b"")
    assert bm._resumable(str(run), config)  # only a resumable field differs
    other = plan.train_config("lerp", 1, "melt")
    assert not bm._resumable(str(run), other)  # another seed: train afresh
    (run / "config.json").write_text("{not json")
    assert not bm._resumable(str(run), config)


def test_relaxed_rows_follow_each_method(tmp_path, tiny_sources):
    plan = tiny_plan(tiny_sources)
    plan.methods, plan.baselines, plan.variants = (), ("identity",), ("melt",)
    plan.relax, plan.relax_limit = True, 1
    out = tmp_path / "bench"
    report = bm.run_benchmark(str(out), plan, progress=False, log=lambda *_: None)
    methods = [r["method"] for r in report["rows"]]
    assert methods == ["identity", "identity+relax"]
    relaxed = report["rows"][1]
    assert relaxed["valid"] == 100.0  # a relaxation removes every collision
    assert (out / "pred" / "melt" / "identity" / "seed0-relaxed" / "info.json").exists()
    md = (out / "results.md").read_text()
    assert "| identity (x_w) + relaxation |" in md
    assert bm.label("rigid+relax") == "CrystalFlow-Rigid (ours) + relaxation"
