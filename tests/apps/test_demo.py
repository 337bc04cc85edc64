"""The `crystalflow demo` pipeline end to end (one training epoch), through the command line."""
from __future__ import annotations

import json
from pathlib import Path

from crystalflow.cli import main


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--epochs", "1", "--workers", "2", "-q"]) == 0
    report = (out / "report.md").read_text()
    assert "| CrystalFlow-LERP |" in report and "| identity (x_w) |" in report and "orientation" in report
    for rel in ("trajectory.png", "viewer.html", "stats/fig3_atoms_per_molecule.png", "aspirin/viewer.html",
                "aspirin/overview.png", "aspirin-crystals/candidate_01.cif", "aspirin-crystals/viewer.html", "run/checkpoint.pt", "dataset/clusters.csv"):
        assert (out / rel).stat().st_size > 0, rel
    assert "## Aspirin: crystal-structure search" in report and "aspirin-crystals/candidate_01.cif" in report
    assert 'id="cf-sample"' in (out / "viewer.html").read_text(encoding="utf-8")  # K = 2 samples to pick from
    lerp = json.loads((out / "pred_lerp" / "metrics.json").read_text())["test"]
    identity = json.loads((out / "pred_identity" / "metrics.json").read_text())["test"]
    assert lerp["pm_atom"]["n"] == identity["pm_atom"]["n"] > 0  # the same test clusters
