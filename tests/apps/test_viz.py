"""Cluster pictures: XYZ/PDB text, the PNG strip and the offline HTML viewer."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from pages import chromium_status, needs_chromium, needs_node, run_page_in_node

from crystalflow.apps.viz import (
    STATUS_ID,
    VENDORED_3DMOL_VERSION,
    cluster_to_pdb,
    cluster_to_xyz,
    molecule_bonds,
    trajectory_strip,
    vendored_3dmol_js,
    viewer_html,
)

#: benzene (C6H6), Å: ring radius 1.39, C-H 1.08
RING, CH = 1.39, 1.08
N_MOL = 17
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _benzene() -> tuple[np.ndarray, np.ndarray]:
    ang = np.arange(6) * np.pi / 3
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros(6)], axis=1)
    return np.concatenate([RING * ring, (RING + CH) * ring]), np.array([6] * 6 + [1] * 6)


def _cluster(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """17 benzene copies on a 3x3x2 grid (7 Å apart), slightly jittered."""
    mol, z = _benzene()
    grid = np.array([[i % 3, (i // 3) % 3, i // 9] for i in range(N_MOL)], dtype=float) * 7.0
    rng = np.random.default_rng(seed)
    return mol[None] + grid[:, None] + rng.normal(scale=0.05, size=(N_MOL, 1, 3)), z


def test_molecule_bonds_benzene():
    mol, z = _benzene()
    bonds = molecule_bonds(mol, z)
    assert len(bonds) == 12  # 6 C-C + 6 C-H
    assert np.all(bonds[:, 0] < bonds[:, 1])


def test_cluster_to_xyz_round_trip():
    x, z = _cluster()
    text = cluster_to_xyz(x, z, comment="two\nlines")
    lines = text.splitlines()
    assert int(lines[0]) == N_MOL * 12 and lines[1] == "two lines" and len(lines) == 2 + N_MOL * 12
    assert [ln.split()[0] for ln in lines[2:14]] == ["C"] * 6 + ["H"] * 6
    back = np.array([[float(v) for v in ln.split()[1:]] for ln in lines[2:]]).reshape(x.shape)
    np.testing.assert_allclose(back, x, atol=1e-6)


def test_cluster_to_pdb_residues_chain_and_bonds():
    x, z = _cluster()
    text = cluster_to_pdb(x, z, chain="B", title="toy")
    atoms = [ln for ln in text.splitlines() if ln.startswith("HETATM")]
    assert len(atoms) == N_MOL * 12
    assert {ln[21] for ln in atoms} == {"B"}
    resseq = [int(ln[22:26]) for ln in atoms]
    assert resseq == [m + 1 for m in range(N_MOL) for _ in range(12)]
    assert [ln[76:78].strip() for ln in atoms[:12]] == ["C"] * 6 + ["H"] * 6
    coords = np.array([[float(ln[30:38]), float(ln[38:46]), float(ln[46:54])] for ln in atoms])
    np.testing.assert_allclose(coords.reshape(x.shape), x, atol=1e-3)
    serial_res = {int(ln[6:11]): int(ln[22:26]) for ln in atoms}
    pairs = set()
    for ln in (ln for ln in text.splitlines() if ln.startswith("CONECT")):
        a = int(ln[6:11])
        for k in range(11, len(ln), 5):
            b = int(ln[k : k + 5])
            assert serial_res[a] == serial_res[b], "bonds stay within a molecule"
            pairs.add(tuple(sorted((a, b))))
    assert len(pairs) == N_MOL * 12
    assert text.rstrip().endswith("END") and text.startswith("TITLE     toy")


def test_trajectory_strip_png(tmp_path):
    x_s, z = _cluster(0)
    x_w = x_s * 1.4
    path = tmp_path / "sub" / "strip.png"
    out = trajectory_strip(x_w, 0.5 * (x_w + x_s), x_s[None] + 0.1, x_s, z, str(path), title="toy")
    assert out == str(path) and path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["strip.png"]
    with pytest.raises(ValueError, match="shape"):
        trajectory_strip(x_w[:5], x_s, x_s, x_s, z, str(tmp_path / "bad.png"))


def _write_page(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    truth, z = _cluster(0)
    pred, _ = _cluster(1)
    path = tmp_path / "viewer.html"
    viewer_html(pred, truth, z, str(path), title="toy </script> & <b>")
    return path, truth, z


def test_viewer_html_is_self_contained(tmp_path):
    path, truth, z = _write_page(tmp_path)
    page = path.read_text(encoding="utf-8")
    tags = re.findall(r"<script[^>]*>", page, flags=re.I)
    assert tags == ["<script>", "<script>"], "only inline scripts, nothing loaded by src"
    assert page.count("</script>") == 2
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "toy &lt;/script&gt; &amp; &lt;b&gt;" in page  # the title is escaped
    assert vendored_3dmol_js()[:200] in page
    assert "3Dmol.js incorporates code from GLmol" in page  # its licence travels with it
    # both models are embedded as PDB text (JSON-escaped): one atom line per atom and molecule
    data_script = page[page.rindex("<script>") :]
    assert data_script.count("HETATM") == 2 * truth.shape[0] * truth.shape[1]
    first = truth[0, 0]
    assert f"{first[0]:8.3f}{first[1]:8.3f}{first[2]:8.3f}" in page
    assert f'id="{STATUS_ID}"' in page


def test_vendored_3dmol_licence():
    lic = Path(__file__).resolve().parents[2] / "crystalflow" / "resources" / "js" / "LICENSE-3Dmol.txt"
    text = lic.read_text()
    assert "BSD-3-Clause" in text and "2.5.5" in text
    assert f"version {VENDORED_3DMOL_VERSION}" in text
    assert vendored_3dmol_js().startswith("/*! For license information")


_NODE_BODY = r"""
// The page's own script with a stub DOM and viewer, each model parsed by the real 3Dmol.js PDB parser.
const els = {};
const el = id => (els[id] = els[id] || {id, textContent: '', addEventListener() {}});
global.window = {addEventListener() {}};
global.document = {getElementById: el, createElement: () => ({getContext: () => ({})})};
const models = [];
global.$3Dmol = {createViewer(target) {
  const v = {getView: () => [0, 0, 0, 1, 0, 0, 0, 1]};
  for (const f of ['setStyle', 'zoomTo', 'render', 'linkViewer', 'setView', 'removeAllModels']) v[f] = () => {};
  v.addModel = (data, fmt, opts) => {
    const atoms = real.Parsers.PDB(data, opts)[0];
    let bonds = 0, inter = 0;
    atoms.forEach(a => a.bonds.forEach(b => { bonds++; if (atoms[b].resi !== a.resi) inter++; }));
    models.push({id: target.id, fmt, atoms: atoms.length, h: atoms.filter(a => a.elem === 'H').length,
                 residues: new Set(atoms.map(a => a.resi)).size, bonds: bonds / 2, inter});
  };
  return v;
}};
new Function(scripts[1])();
if (process.argv[4]) { window.crystalflowShowSample(Number(process.argv[4])); }
console.log(JSON.stringify({status: els['cf-status'].textContent, models}));
"""


@needs_node
def test_viewer_script_and_models_with_node(tmp_path):
    """The page's script under node (stub DOM/viewer), its models parsed by the real 3Dmol.js PDB parser."""
    path, truth, z = _write_page(tmp_path)
    out = run_page_in_node(path, _NODE_BODY, tmp_path)
    assert out["status"] == "ok"
    m, n = truth.shape[:2]
    expected = {"fmt": "pdb", "atoms": m * n, "h": m * int((z == 1).sum()), "residues": m,
                "bonds": m * len(molecule_bonds(truth[0], z)), "inter": 0}
    assert out["models"] == [{"id": f"cf-viewer-{k}", **expected} for k in range(2)]


@needs_chromium
def test_viewer_in_headless_chromium(tmp_path):
    path, _, _ = _write_page(tmp_path)
    assert chromium_status(path, tmp_path) == "ok"


def test_viewer_superposes_prediction_on_truth(tmp_path):
    """A rotated, moved copy of the truth is drawn on top of it (superpose, the default); with
    ``superpose=False`` only its centroid moves."""
    from scipy.spatial.transform import Rotation

    truth, z = _cluster(0)
    rot = Rotation.from_rotvec([0.4, -0.2, 1.1]).as_matrix()
    pred = truth @ rot.T + np.array([3.0, -2.0, 7.0])
    first = truth[0, 0]
    line = f"{first[0]:8.3f}{first[1]:8.3f}{first[2]:8.3f}"
    path = tmp_path / "on.html"
    viewer_html(pred, truth, z, str(path))
    assert path.read_text(encoding="utf-8").count(line) == 2  # prediction and truth panels agree
    viewer_html(pred, truth, z, str(path), superpose=False)
    assert path.read_text(encoding="utf-8").count(line) == 1


@needs_node
def test_viewer_with_k_samples_switches_the_prediction(tmp_path):
    """K samples: a menu of K entries, K prediction models in the page, and showing sample 2 redraws
    the prediction panel with that sample (parsed by the real 3Dmol.js)."""
    truth, z = _cluster(0)
    preds = np.stack([_cluster(s)[0] for s in (1, 2, 3)])
    path = tmp_path / "k.html"
    viewer_html(preds, truth, z, str(path))
    page = path.read_text(encoding="utf-8")
    assert page.count("<option ") == 3 and 'id="cf-sample"' in page
    m, n = truth.shape[:2]
    assert page[page.rindex("<script>"):].count("HETATM") == 4 * m * n
    out = run_page_in_node(path, _NODE_BODY.replace("process.argv[4]", "'2'"), tmp_path)
    assert out["status"] == "ok"
    assert [mod["id"] for mod in out["models"]] == ["cf-viewer-0", "cf-viewer-1", "cf-viewer-0"]
    with pytest.raises(ValueError):
        viewer_html(preds[:, :3], truth, z, str(tmp_path / "bad.html"))
