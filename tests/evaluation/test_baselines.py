"""Baselines (identity, PackMol) written as PRED_DIRs and scored by ``evaluate``."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLUSTERS

from crystalflow.common.errors import UserError
from crystalflow.data.dataset import ClusterDataset
from crystalflow.evaluation import baselines
from crystalflow.evaluation.baselines import pack_molecules, run_baseline
from crystalflow.evaluation.evaluate import evaluate
from crystalflow.evaluation.predictions import read_info, read_predictions

#: PackMol's xyz output has 6 decimals; intramolecular distances survive to about this (Å)
RIGID_TOL = 1e-3
#: slack (Å) on PackMol's distance tolerance and sphere constraint (it stops at a small violation)
PACK_SLACK = 0.3

needs_packmol = pytest.mark.skipif(shutil.which("packmol") is None, reason="packmol is not on PATH")


@pytest.fixture
def dataset(tiny_dataset: Path) -> str:
    """The session's shared ``tiny_dataset`` (TINY_CLUSTERS clusters from small embedded COD CIFs)."""
    return str(tiny_dataset)


def _pm_numpy(pred: np.ndarray, true: np.ndarray) -> float:
    """Packing matching written out independently: RMS difference of full distance matrices."""
    def dist(p: np.ndarray) -> np.ndarray:
        return np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))

    return float(np.sqrt(np.mean((dist(pred) - dist(true)) ** 2)))


def test_identity_matches_plain_numpy(dataset, tmp_path):
    pred_dir = str(tmp_path / "identity")
    assert run_baseline("identity", dataset, "all", pred_dir, samples=4, progress=False) == pred_dir
    info = read_info(pred_dir)
    assert info["method"] == "baseline:identity" and info["K"] == 1 and info["split"] == "all"
    result = evaluate(pred_dir, str(tmp_path / "metrics.json"), progress=False)
    ds = ClusterDataset(dataset, "all")
    truth = {rec.meta["index"]: rec for rec in (ds[i] for i in range(len(ds)))}
    assert len(result["per_cluster"]) == len(ds)
    for row in result["per_cluster"]:
        rec = truth[row["index"]]
        x_w, x_s = rec.x_w.astype(np.float64), rec.x_s.astype(np.float64)
        assert row["K"] == 1 and row["failure"] == ""
        assert row["pm_atom"] == pytest.approx(_pm_numpy(x_w.reshape(-1, 3), x_s.reshape(-1, 3)), rel=1e-6)
        assert row["pm_center"] == pytest.approx(_pm_numpy(x_w.mean(1), x_s.mean(1)), rel=1e-6)
        assert row["rigidity"] < 1e-4  # the noise moves molecules rigidly
    for split in {r["split"] for r in result["per_cluster"]}:
        values = [r["pm_atom"] for r in result["per_cluster"] if r["split"] == split]
        assert result[split]["pm_atom"]["mean"] == pytest.approx(np.mean(values))
        assert result[split]["pm_atom"]["n"] == len(values)


def test_unknown_baseline_and_bad_samples(dataset, tmp_path):
    with pytest.raises(UserError, match="unknown baseline"):
        run_baseline("magic", dataset, "test", str(tmp_path / "p"), progress=False)
    with pytest.raises(UserError, match="samples"):
        run_baseline("identity", dataset, "test", str(tmp_path / "p"), samples=0, progress=False)


def test_packmol_missing_is_one_clear_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(baselines.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="packmol"):
        run_baseline("packmol", dataset, "test", str(tmp_path / "p"), progress=False)
    assert not (tmp_path / "p").exists()


def _fake_packmol(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-packmol"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


@pytest.mark.parametrize("body, timeout, reason", [
    ("echo ' ERROR: something odd'; exit 3", 10.0, "packmol failed: ERROR: something odd"),
    ("exec sleep 5", 0.2, "packmol timed out"),
])
def test_packmol_failure_is_recorded_per_cluster(dataset, tmp_path, monkeypatch, body, timeout, reason):
    exe = _fake_packmol(tmp_path, body)
    monkeypatch.setattr(baselines, "packmol_path", lambda: exe)
    monkeypatch.setattr(baselines, "PACKMOL_TIMEOUT_S", timeout)
    pred_dir = str(tmp_path / "p")
    run_baseline("packmol", dataset, "all", pred_dir, limit=1, progress=False)
    info = read_info(pred_dir)
    assert len(info["failures"]) == 1 and info["failures"][0]["reason"].startswith(reason)
    result = evaluate(pred_dir, str(tmp_path / "m.json"), progress=False)
    (row,) = result["per_cluster"]
    assert row["failure"].startswith(reason) and np.isnan(row["pm_atom"])


def _records(dataset: str, count: int) -> list:
    ds = ClusterDataset(dataset, "all")
    return [ds[i] for i in range(count)]


@needs_packmol
def test_pack_molecules_is_rigid_ordered_and_seeded(dataset):
    rec = min(_records(dataset, TINY_CLUSTERS), key=lambda r: r.x_s.shape[1])
    mol = rec.x_s[0].astype(np.float64)
    radius = baselines.sphere_radius(rec.z, mol, 17, rec.meta["density"])
    a = pack_molecules(mol, rec.z, 17, radius, seed=11)
    b = pack_molecules(mol, rec.z, 17, radius, seed=11)
    assert a.failure == "" and a.x.shape == (17, *mol.shape)
    np.testing.assert_array_equal(a.x, b.x)  # a fixed seed gives a fixed packing
    dist = np.linalg.norm(a.x.mean(1), axis=1)
    assert np.all(np.diff(dist) >= 0), "copies are ordered by distance from the centre"


@needs_packmol
def test_packmol_baseline_packs_rigid_separate_copies(dataset, tmp_path):
    recs = {r.meta["index"]: r for r in _records(dataset, 2)}
    pred_dir = str(tmp_path / "packmol")
    run_baseline("packmol", dataset, "all", pred_dir, seed=3, progress=False, limit=2)
    info = read_info(pred_dir)
    assert info["method"] == "baseline:packmol" and info["n_clusters"] == 2 and info["failures"] == []
    items = list(read_predictions(pred_dir))
    for item in items:
        rec = recs[item.meta["index"]]
        pred = item.pred[0].astype(np.float64)
        assert pred.shape == (17, *rec.x_s.shape[1:])
        # every copy is the true conformer moved rigidly
        ref = np.linalg.norm(rec.x_s[0][:, None] - rec.x_s[0][None], axis=-1)
        intra = np.linalg.norm(pred[:, :, None] - pred[:, None, :], axis=-1)
        assert np.abs(intra - ref).max() < RIGID_TOL
        # inside the sphere (centred on x_w's centroid) and no copies overlapping
        centre = rec.x_w.reshape(-1, 3).mean(0)
        radius = item.meta["packmol_radius"]
        assert np.linalg.norm(pred.reshape(-1, 3) - centre, axis=1).max() < radius + PACK_SLACK
        diff = pred[:, None, :, None, :] - pred[None, :, None, :, :]
        d = np.sqrt((diff**2).sum(-1)).min(axis=(2, 3))
        d[np.diag_indices(17)] = np.inf
        assert d.min() > baselines.PACKMOL_TOLERANCE - PACK_SLACK
        order = np.linalg.norm(pred.mean(1) - centre, axis=1)
        assert np.argmin(order) == 0, "molecule 0 is the copy nearest the sphere centre"
    result = evaluate(pred_dir, os.path.join(tmp_path, "metrics.json"), progress=False)
    for row in result["per_cluster"]:
        assert row["rigidity"] < RIGID_TOL
        assert row["collision_pairs"] < 1.0  # % of intermolecular atom pairs
        assert row["separation"] == 100.0
