"""``crystalflow predict``: starting clusters, the physical score, the output files and the viewer page.

A tiny randomly initialised model stands in for a trained one: predictions need not be good, the
plumbing must work.
"""
from __future__ import annotations

import csv
import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pages import chromium_status, needs_chromium, needs_node, run_page_in_node

from crystalflow.apps.viz import STATUS_ID, vendored_3dmol_js
from crystalflow.backbones.registry import BackboneConfig
from crystalflow.common.errors import UserError
from crystalflow.data.noise import noise_model
from crystalflow.evaluation.metrics import rigidity
from crystalflow.flow.model import ModelConfig, build_model
from crystalflow.structure.molecule_input import read_molecule

# the module, even if the package re-exports the function under the same name
P = importlib.import_module("crystalflow.apps.predict")

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
ASPIRIN_ATOMS = 21
N_MOL = 17
K = 4
#: Euler steps in the tests: the plumbing is the same for any count
STEPS = 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BENZENE_CIF = "2100348-benzene.cif"


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(method="lerp", backbone=BackboneConfig(hidden=16, layers=1)))


@pytest.fixture(scope="module")
def aspirin():
    pytest.importorskip("rdkit", reason="reading SMILES needs RDKit (the predict extra)")
    return read_molecule(ASPIRIN, seed=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    """One prediction of aspirin with files written (shared by the output tests)."""
    pytest.importorskip("rdkit", reason="reading SMILES needs RDKit (the predict extra)")
    out = tmp_path_factory.mktemp("predict") / "out"
    cands = P.predict(ASPIRIN, model=tiny_model, samples=K, seed=1, steps=STEPS, out_dir=str(out), progress=False)
    return out, cands


def _true_cluster(embedded_dir: Path):
    from crystalflow.data.pipeline import BuildSettings, process_cif

    rec = process_cif(str(embedded_dir / BENZENE_CIF), BENZENE_CIF, BuildSettings())[0]
    return rec


# ------------------------------------------------------------------------------------------ inputs
def test_starting_clusters_follow_the_training_noise(aspirin):
    records = P.starting_clusters(aspirin, 3, noise_model("solution"), seed=5)
    assert len(records) == 3
    x0 = aspirin.x - aspirin.x.mean(0)
    for rec in records:
        assert rec.x_w.shape == rec.x_s.shape == (N_MOL, ASPIRIN_ATOMS, 3)
        assert rec.z.tolist() == aspirin.z.tolist()
        # molecules move rigidly: same conformer, new orientations
        assert rigidity(rec.x_w, np.broadcast_to(x0, rec.x_w.shape)) < 1e-4
        assert rigidity(rec.x_s, np.broadcast_to(x0, rec.x_s.shape)) < 1e-4
        assert "placeholder" in rec.meta["x_s"]
    np.testing.assert_array_equal(records[0].x_s, records[1].x_s)  # one placeholder
    assert not np.allclose(records[0].x_w, records[1].x_w)  # independent noise draws
    again = P.starting_clusters(aspirin, 3, noise_model("solution"), seed=5)
    np.testing.assert_array_equal(again[2].x_w, records[2].x_w)  # seeded


def test_packed_arrangement_density_and_no_overlap(aspirin):
    x, info = P.packed_arrangement(aspirin, density=1.3, seed=0)
    assert x.shape == (N_MOL, ASPIRIN_ATOMS, 3)
    from crystalflow.structure.molecules import centre_of_mass

    com = centre_of_mass(x, aspirin.z)
    np.testing.assert_allclose(com[0], 0.0, atol=1e-9)  # molecule 0 is central
    dist = np.linalg.norm(com[1:], axis=1)
    assert dist.min() > 3.0 and dist.max() < 3.0 * dist.min()
    r = P.vdw_radii(aspirin.z)
    limit = P.PLACEHOLDER_VDW_FRACTION * (r[:, None] + r[None])
    for a in range(1, N_MOL):
        d = np.linalg.norm(x[0][:, None] - x[a][None], axis=-1)
        assert np.all(d >= limit - 1e-9)
    assert 0.3 < info["placeholder_density"] <= 1.3 and info["lattice_scale"] >= 1.0


def test_density_estimate_on_a_real_crystal(embedded_dir):
    rec = _true_cluster(embedded_dir)
    rho = P.density_estimate(rec.x_s, rec.z)
    assert abs(rho / rec.meta["density"] - 1.0) < 0.3, (rho, rec.meta["density"])
    assert P.density_estimate(rec.x_s * 2.0, rec.z) < rho / 4  # diluted clusters are light


def test_physical_score_prefers_crystals(embedded_dir):
    rec = _true_cluster(embedded_dir)
    mol = rec.x_s[0]
    crystal = P.physical_score(rec.x_s, rec.z, mol)
    assert crystal["collision_pairs"] == 0.0 and crystal["rigidity"] < 1e-5 and crystal["compact"]
    assert crystal["max_overlap"] < 0.7  # a real crystal is valid
    assert crystal["min_contact"] > 2.0
    com = rec.x_s.mean(axis=1, keepdims=True)
    diluted = P.physical_score(rec.x_s - com + 2.0 * com, rec.z, mol)  # centres twice as far apart
    squashed = P.physical_score(rec.x_s - com + 0.5 * com, rec.z, mol)  # overlapping molecules
    exploded = P.physical_score(rec.x_s - com + 30.0 * com, rec.z, mol)
    assert squashed["collision_pairs"] > 0 and squashed["max_overlap"] >= 0.7 and not exploded["compact"]
    assert crystal["score"] < diluted["score"] < exploded["score"]
    assert crystal["score"] < squashed["score"]


# ------------------------------------------------------------------------------------------ predict
def test_predict_returns_ranked_candidates(run):
    _, cands = run
    assert [c.rank for c in cands] == list(range(1, K + 1))
    scores = [c.score for c in cands]
    assert scores == sorted(scores)
    assert sorted(c.sample for c in cands) == list(range(K))
    for c in cands:
        assert c.x.shape == (N_MOL, ASPIRIN_ATOMS, 3) and c.z.shape == (ASPIRIN_ATOMS,)
        assert np.all(np.isfinite(c.x)) and c.density > 0 and c.min_contact > 0
        assert isinstance(c.compact, bool) and c.start.shape == c.x.shape


def test_output_files(run):
    out, cands = run
    for c in cands:
        xyz = (out / f"candidate_{c.rank:02d}.xyz").read_text().splitlines()
        assert int(xyz[0]) == N_MOL * ASPIRIN_ATOMS and len(xyz) == 2 + N_MOL * ASPIRIN_ATOMS
        back = np.array([[float(v) for v in ln.split()[1:]] for ln in xyz[2:]]).reshape(c.x.shape)
        np.testing.assert_allclose(back, c.x, atol=1e-5)
        pdb = (out / f"candidate_{c.rank:02d}.pdb").read_text().splitlines()
        atoms = [ln for ln in pdb if ln.startswith("HETATM")]
        assert len(atoms) == N_MOL * ASPIRIN_ATOMS
        assert sorted({int(ln[22:26]) for ln in atoms}) == list(range(1, N_MOL + 1))  # one residue per molecule
        assert any(ln.startswith("CONECT") for ln in pdb)
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(P.SUMMARY_COLUMNS)
    assert [int(r["rank"]) for r in rows] == list(range(1, K + 1))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)
    assert (out / "overview.png").read_bytes()[:8] == PNG_MAGIC
    notes = (out / "notes.txt").read_text()
    assert "MMFF" in notes and "CrystalModel" in notes and "score" in notes and "default preset 'solution'" in notes
    assert not [p for p in os.listdir(out) if ".tmp" in p]


def test_viewer_page_is_self_contained(run):
    out, cands = run
    page = (out / "viewer.html").read_text(encoding="utf-8")
    tags = re.findall(r"<script[^>]*>", page, flags=re.I)
    assert tags == ["<script>", "<script>"], "only inline scripts, nothing loaded by src"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert vendored_3dmol_js()[:200] in page and "3Dmol.js incorporates code from GLmol" in page
    data_script = page[page.rindex("<script>"):]
    assert data_script.count("HETATM") == K * N_MOL * ASPIRIN_ATOMS  # every candidate is embedded
    assert f'id="{STATUS_ID}"' in page


def test_predict_is_seeded(tiny_model, aspirin, run):
    _, cands = run
    again = P.predict(aspirin, model=tiny_model, samples=K, seed=1, steps=STEPS, progress=False)
    # the same seed (and conformer) gives the same candidates
    assert [c.sample for c in again] == [c.sample for c in cands]
    np.testing.assert_allclose(again[0].x, cands[0].x, atol=1e-4)


def test_predict_bad_inputs(tiny_model, aspirin):
    with pytest.raises(UserError, match="fragments"):
        P.predict("CC.O", model=tiny_model, samples=1, steps=1, progress=False)
    with pytest.raises(UserError, match="samples"):
        P.predict(aspirin, model=tiny_model, samples=0, progress=False)
    with pytest.raises(UserError, match="no model"):
        P.predict(aspirin, model="/nonexistent/run", samples=1, progress=False)


def test_default_model_missing_is_a_user_error(tmp_path, monkeypatch, aspirin):
    assert P.default_model_dir().replace(os.sep, "/").endswith("crystalflow/resources/models/default")
    monkeypatch.setattr(P, "default_model_dir", lambda: str(tmp_path / "none"))
    with pytest.raises(UserError, match="no pretrained model shipped; pass --model RUN_DIR"):
        P.predict(aspirin, model=None, samples=1, progress=False, mode="model")


def test_model_from_run_dir_with_its_noise(tmp_path, tiny_model, aspirin):
    """A run directory as train writes it (config.json + checkpoint.pt), plus an optional noise.json."""
    from crystalflow.training.config import TrainConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = TrainConfig(model=ModelConfig(method="lerp", backbone=BackboneConfig(hidden=16, layers=1))).to_dict()
    (run_dir / "config.json").write_text(json.dumps(config))
    state = tiny_model.state_dict()
    torch.save({"config": config, "model": state, "ema": state}, run_dir / "checkpoint.pt")
    assert P.run_noise(str(run_dir)) is None
    (run_dir / P.NOISE_FILE).write_text(json.dumps({"preset": "liquid"}))
    noise, where = P.run_noise(str(run_dir))
    assert noise == noise_model("liquid") and where.endswith(P.NOISE_FILE)
    out = tmp_path / "out"
    cands = P.predict(aspirin, model=str(run_dir), samples=2, steps=1, out_dir=str(out), progress=False)
    assert len(cands) == 2
    notes = (out / "notes.txt").read_text()
    assert str(run_dir) in notes and "'spread': 1.2" in notes
    # the command line
    from crystalflow.cli import main

    assert main(["predict", ASPIRIN, "-o", str(tmp_path / "cli"), "--model", str(run_dir), "--samples", "2",
                 "--steps", "1", "--seed", "3", "-q"]) == 0
    assert (tmp_path / "cli" / "viewer.html").exists()
    symmetric = noise_model("symmetric")  # every field read back, the symmetric ones included
    (run_dir / P.NOISE_FILE).write_text(json.dumps(symmetric.to_dict()))
    assert P.run_noise(str(run_dir))[0] == symmetric
    (run_dir / P.NOISE_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="bad noise description"):
        P.run_noise(str(run_dir))


# ------------------------------------------------------------------------------------------ browsers
_NODE_BODY = r"""
// The page's own script with a stub DOM and viewer, each candidate parsed by the real 3Dmol.js parser.
const els = {};
const el = id => (els[id] = els[id] || {id, textContent: '', children: [], appendChild(c) { this.children.push(c); }});
const win = {addEventListener() {}};
global.window = win;
global.document = {getElementById: el, createElement: tag => ({tag, getContext: () => ({}), addEventListener() {}})};
const models = [];
global.$3Dmol = {createViewer(target) {
  const v = {};
  for (const f of ['setStyle', 'zoomTo', 'render', 'removeAllModels']) v[f] = () => {};
  v.addModel = (data, fmt, opts) => {
    const atoms = real.Parsers.PDB(data, opts)[0];
    let inter = 0;
    atoms.forEach(a => a.bonds.forEach(b => { if (atoms[b].resi !== a.resi) inter++; }));
    models.push({fmt, atoms: atoms.length, residues: new Set(atoms.map(a => a.resi)).size, inter});
  };
  return v;
}};
new Function(scripts[1])();
const rows = els['cf-table'].children.length;
for (let k = 1; k < rows; k++) { win.crystalflowShow(k); }
console.log(JSON.stringify({status: els['cf-status'].textContent, rows, models}));
"""


@needs_node
def test_viewer_script_with_node(run, tmp_path):
    out, cands = run
    result = run_page_in_node(out / "viewer.html", _NODE_BODY, tmp_path)
    assert result["status"] == "ok" and result["rows"] == K
    expected = {"fmt": "pdb", "atoms": N_MOL * ASPIRIN_ATOMS, "residues": N_MOL, "inter": 0}
    assert result["models"] == [expected] * K


@needs_chromium
def test_viewer_in_headless_chromium(run, tmp_path):
    out, _ = run
    assert chromium_status(out / "viewer.html", tmp_path) == "ok"
