"""Relaxing predictions (PRED_DIR → PRED_DIR) and reconstructing them as CIFs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from crystalflow.apps.reconstruct import cif_name, reconstruct_pred_dir
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.evaluation.evaluate import evaluate
from crystalflow.evaluation.predictions import PredictionWriter, read_predictions
from crystalflow.evaluation.relaxation import (
    make_rigid,
    relax_pred_dir,
    relax_prediction,
)
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.contacts import is_valid, max_overlap

BENZENE = "2100348-benzene.cif"


@pytest.fixture(scope="module")
def benzene(embedded_dir):
    crystal = read_cif(embedded_dir / BENZENE)
    molecules, _, _ = select(crystal, BuildSettings())
    return build_cluster(crystal, molecules)


def _clash(x):
    """Molecule 1 pushed 1.2 Å towards the central molecule: an invalid prediction."""
    out = x.copy()
    d = out[1].mean(axis=0) - out[0].mean(axis=0)
    out[1] -= 1.2 * d / np.linalg.norm(d)
    return out


def test_make_rigid_restores_the_conformer(benzene):
    rng = np.random.default_rng(0)
    pred = benzene.x + rng.normal(scale=0.2, size=benzene.x.shape)  # distorted molecules
    x = make_rigid(pred, benzene.x)
    d_in = np.linalg.norm(benzene.x[:, :, None] - benzene.x[:, None], axis=-1)
    d_out = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-9)
    assert np.abs(x.mean(axis=1) - pred.mean(axis=1)).max() < 1e-9


def test_true_cluster_relaxes_as_its_crystal(benzene):
    r = relax_prediction(benzene.x, benzene.z, benzene.x, max_steps=60)
    assert r.mode == "crystal" and r.crystal is not None
    assert r.sg_symbol == "Pbca"
    assert r.energy < 0 and is_valid(r.x, benzene.z)
    # the molecules stay in the prediction's order: each relaxed centre near its predicted one
    shift = np.linalg.norm(r.x.mean(axis=1) - benzene.x.mean(axis=1), axis=1)
    assert shift.max() < 1.0


def test_a_collision_is_removed(benzene):
    bad = _clash(benzene.x)
    assert not is_valid(bad, benzene.z)
    r = relax_prediction(bad, benzene.z, benzene.x, max_steps=100, periodic=False)
    assert r.mode == "cluster"
    assert max_overlap(r.x, benzene.z) < max_overlap(bad, benzene.z)
    assert is_valid(r.x, benzene.z)


def _pred_dir(path, cluster, preds):
    with PredictionWriter(str(path), {"method": "test"}) as w:
        w.add({"key": "benzene.cif", "index": 0, "split": "test"}, cluster.x, cluster.x, cluster.z, np.stack(preds))
    return str(path)


def test_relax_pred_dir_is_scored(benzene, tmp_path):
    pred = _pred_dir(tmp_path / "pred", benzene, [_clash(benzene.x)])
    out = tmp_path / "relaxed"
    info = relax_pred_dir(pred, str(out), progress=False, periodic=False, max_steps=100)
    assert info["relaxed"] is True and info["relax_modes"] == {"crystal": 0, "cluster": 1}
    item = next(iter(read_predictions(str(out))))
    assert item.meta["relax"][0]["mode"] == "cluster"
    assert is_valid(item.pred[0], item.z)
    metrics = evaluate(str(out), str(tmp_path / "m.json"), progress=False)
    assert metrics["test"]["valid"]["mean"] == 100.0
    assert not (tmp_path / "relaxed.work").exists()


def test_relax_pred_dir_records_its_charges_and_resumes_only_with_them(benzene, tmp_path):
    from crystalflow.common.errors import UserError

    pred = _pred_dir(tmp_path / "pred", benzene, [_clash(benzene.x)])
    gasteiger = relax_pred_dir(pred, str(tmp_path / "g"), progress=False, periodic=False, max_steps=100,
                               charge_model="gasteiger")
    mmff = relax_pred_dir(pred, str(tmp_path / "m"), progress=False, periodic=False, max_steps=100)
    assert gasteiger["relax_charges"] == "gasteiger" and mmff["relax_charges"] == "mmff"
    xg = next(iter(read_predictions(str(tmp_path / "g")))).pred[0]
    xm = next(iter(read_predictions(str(tmp_path / "m")))).pred[0]
    assert not np.allclose(xg, xm)  # other charges, another minimum
    (tmp_path / "r.work").mkdir()
    (tmp_path / "r.work" / "charges.txt").write_text("gasteiger")  # an interrupted Gasteiger run
    with pytest.raises(UserError, match="resume with --charges gasteiger"):
        relax_pred_dir(pred, str(tmp_path / "r"), progress=False, periodic=False, max_steps=100)
    with pytest.raises(UserError, match="unknown charge model"):
        relax_pred_dir(pred, str(tmp_path / "x"), progress=False, charge_model="eem")


def test_reconstruct_writes_cifs_and_a_table(benzene, tmp_path):
    pred = _pred_dir(tmp_path / "pred", benzene, [benzene.x, np.full_like(benzene.x, np.nan)])
    out = tmp_path / "cifs"
    rows = reconstruct_pred_dir(pred, str(out), progress=False)
    assert [r["status"] for r in rows] == ["ok", "no_lattice"]
    assert rows[0]["sg_symbol"] == "Pbca" and rows[0]["inliers"] == 17
    cif = out / cif_name("benzene.cif", 0)
    assert cif.name == "benzene_s0.cif"
    assert read_cif(cif).sg_number == 61
    assert (out / "benzene_s0.xy.csv").exists()
    with open(out / "crystals.csv") as f:
        table = list(csv.DictReader(f))
    assert table[1]["reason"] == "no prediction"
    # a re-run reuses the finished rows
    with open(out / "crystals.jsonl") as f:
        n_lines = len(f.readlines())
    reconstruct_pred_dir(pred, str(out), progress=False)
    with open(out / "crystals.jsonl") as f:
        assert len(f.readlines()) == n_lines
    assert json.loads(open(out / "crystals.jsonl").readline())["key"] == "benzene.cif"
