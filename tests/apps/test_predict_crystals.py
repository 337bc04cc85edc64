"""``crystalflow predict`` by crystal-structure search: files, ranking, PXRD ranking, the viewer, batches and shards.

A tiny search (benzene, a few candidates, few relaxation steps): the plumbing, not the quality.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import gemmi
import pytest
import torch
from pages import chromium_status, needs_chromium, needs_node, run_page_in_node

from crystalflow.apps import predict_batch as B
from crystalflow.apps import predict_crystals as PC
from crystalflow.cli import main
from crystalflow.common.errors import UserError
from crystalflow.structure.cif import read_cif

pytest.importorskip("rdkit", reason="reading SMILES needs RDKit (the predict extra)")

BENZENE = "c1ccccc1"
BENZENE_ATOMS = 12
N_MOL = 17
#: a tiny search: deterministic (no time budget), quick relaxations
TINY = {"candidates": 4, "samples": 3, "seconds": None, "max_steps": 30, "seed": 3, "progress": False}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small relaxations: one torch thread avoids OpenMP synchronisation costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("crystals") / "benzene"
    return out, PC.predict_crystals(BENZENE, str(out), **TINY)


def test_files_and_cifs_read_back_with_the_summary_space_group(run):
    out, kept = run
    rows = _rows(out / "summary.csv")
    assert list(rows[0]) == list(PC.SUMMARY_COLUMNS)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(kept) + 1)) and 1 <= len(kept) <= TINY["samples"]
    for r, c in zip(rows, kept):
        stem = out / f"candidate_{int(r['rank']):02d}"
        crystal = read_cif(str(stem.with_suffix(".cif")))
        assert gemmi.find_spacegroup_by_name(crystal.spacegroup).number == int(r["space_group_number"])
        assert len(crystal.z) == int(r["Z"]) * BENZENE_ATOMS
        assert abs(crystal.lattice[0] @ crystal.lattice[0] - float(r["a"]) ** 2) < 1e-2
        xyz = stem.with_suffix(".xyz").read_text().splitlines()
        assert int(xyz[0]) == N_MOL * BENZENE_ATOMS
        assert sum(ln.startswith("HETATM") for ln in stem.with_suffix(".pdb").read_text().splitlines()) == N_MOL * BENZENE_ATOMS
        pattern = _rows(Path(str(stem) + "_pxrd.csv"))
        assert list(pattern[0]) == ["two_theta", "intensity"] and max(float(p["intensity"]) for p in pattern) == 100
        assert r["valid"] == "1" and r["pxrd_similarity"] == ""
    assert (out / "overview.png").read_bytes()[:8] == PNG_MAGIC
    notes = (out / "notes.txt").read_text()
    assert "candidates from" in notes and "conformer 1" in notes and "P21/c" in notes
    assert not [p for p in os.listdir(out) if ".tmp" in p]


def test_ranked_by_energy(run):
    _, kept = run
    energies = [c.energy for c in kept]
    assert energies == sorted(energies)
    assert all(c.density > 0.5 and c.valid and c.conformer == 1 for c in kept)


def test_learned_ranking_orders_the_same_search_by_score(run, tmp_path):
    _, by_energy = run
    kept = PC.predict_crystals(BENZENE, str(tmp_path / "learned"), ranking="learned", **{**TINY, "samples": 4})
    scores = [c.score for c in kept]
    assert scores == sorted(scores, reverse=True) and all(s == s for s in scores)  # finite, best first
    assert [c.rank for c in kept] == list(range(1, len(kept) + 1))
    assert {round(c.energy, 6) for c in by_energy} <= {round(c.energy, 6) for c in kept}  # the same crystals
    rows = _rows(tmp_path / "learned" / "summary.csv")
    assert [float(r["score"]) for r in rows] == pytest.approx(scores, abs=1e-4)
    assert "learned ranker" in (tmp_path / "learned" / "notes.txt").read_text()
    with pytest.raises(UserError, match="ranking must be one of"):
        PC.predict_crystals(BENZENE, None, ranking="density", **TINY)


def test_pxrd_ranking_puts_the_candidate_of_the_pattern_first(run, tmp_path):
    out, kept = run
    target = kept[-1].rank
    again = PC.predict_crystals(BENZENE, str(tmp_path / "p"), pxrd=str(out / f"candidate_{target:02d}_pxrd.csv"), **TINY)
    assert [c.energy for c in again] == [c.energy for c in kept]  # seeded: the same search
    ranking = _rows(tmp_path / "p" / "ranking_pxrd.csv")
    assert int(ranking[0]["rank"]) == target and float(ranking[0]["pxrd_similarity"]) > 0.999
    assert [float(r["pxrd_similarity"]) for r in ranking] == sorted((float(r["pxrd_similarity"]) for r in ranking),
                                                                    reverse=True)
    assert all(r["pxrd_similarity"] != "" for r in _rows(tmp_path / "p" / "summary.csv"))
    assert "most similar candidate" in (tmp_path / "p" / "notes.txt").read_text()


def test_bad_inputs_are_user_errors(tmp_path):
    bad = tmp_path / "bad.xy"
    bad.write_text("two_theta,intensity\n5,1\n")
    with pytest.raises(UserError, match="bad powder pattern"):
        PC.predict_crystals(BENZENE, pxrd=str(bad), **TINY)
    with pytest.raises(UserError, match="not one of the common"):
        PC.predict_crystals(BENZENE, space_groups=["P6"], **TINY)
    with pytest.raises(UserError, match="SMILES"):
        PC.predict_crystals("C1CC", **TINY)


def test_flexible_molecule_gets_several_conformers():
    assert PC.default_conformers(BENZENE) == 1 and PC.default_conformers("CCCCCO") == PC.FLEXIBLE_CONFORMERS
    confs = PC.molecule_conformers("CCCCCO", 3, seed=0)
    assert 1 < len(confs) <= 3 and confs[0][1] == 0.0 and all(e >= 0 for _, e in confs)
    assert all(m.n_atoms == 18 for m, _ in confs)


_NODE_BODY = r"""
const els = {};
const el = id => (els[id] = els[id] || {id, textContent: '', children: [], appendChild(c) { this.children.push(c); }});
const win = {addEventListener() {}};
global.window = win;
global.document = {getElementById: el, createElement: tag => ({tag, getContext: () => ({}), addEventListener() {}})};
const models = [];
global.$3Dmol = {createViewer(target) {
  const v = {};
  for (const f of ['setStyle', 'zoomTo', 'render', 'removeAllModels', 'removeAllShapes']) v[f] = () => {};
  v.addModel = (data, fmt, opts) => {
    const parsed = real.Parsers.cif(data, opts);
    models.push({fmt, atoms: parsed[0].length, cell: !!parsed.modelData[0].cryst});
    return parsed;
  };
  v.addUnitCell = model => { models[models.length - 1].unitCell = !!model.modelData[0].cryst; };
  return v;
}};
new Function(scripts[1])();
const rows = els['cf-table'].children.length;
for (let k = 1; k < rows; k++) { win.crystalflowShow(k); }
console.log(JSON.stringify({status: els['cf-status'].textContent, rows, models}));
"""


@needs_node
def test_viewer_fills_each_unit_cell_with_node(run, tmp_path):
    out, kept = run
    result = run_page_in_node(out / "viewer.html", _NODE_BODY, tmp_path)
    assert result["status"] == "ok" and result["rows"] == len(kept)
    assert result["models"] == [{"fmt": "cif", "atoms": c.z_cell * BENZENE_ATOMS, "cell": True, "unitCell": True}
                                for c in kept]


@needs_chromium
def test_viewer_in_headless_chromium(run, tmp_path):
    out, _ = run
    assert chromium_status(out / "viewer.html", tmp_path) == "ok"


# ------------------------------------------------------------------------------------------ batch
def test_batch_file_and_shards(tmp_path):
    path = tmp_path / "m.smi"
    path.write_text("# library\nc1ccccc1 benzene\n\nCO methanol\nC1CC broken\nCC(=O)O acetic acid/x\n")
    entries = B.read_batch(str(path))
    assert [(e.index, e.line, e.smiles, e.name) for e in entries] == [
        (1, 2, "c1ccccc1", "benzene"), (2, 4, "CO", "methanol"), (3, 5, "C1CC", "broken"),
        (4, 6, "CC(=O)O", "acetic acid/x")]
    assert entries[3].folder == "0004_acetic_acid_x"
    assert [e.index for e in B.shard_entries(entries, B.parse_shard("2/3"))] == [2]
    assert [e.index for e in B.shard_entries(entries, B.parse_shard("1/2"))] == [1, 3]
    assert [e.index for e in B.shard_entries(entries, B.parse_shard(" 3 / 3 "))] == [3]
    for bad in ("0/2", "3/2", "1", "a/b", "1/2/3", "-1/2"):
        with pytest.raises(UserError, match="bad --shard"):
            B.parse_shard(bad)


def test_batch_records_failures_and_resumes(tmp_path, capsys):
    smi = tmp_path / "m.smi"
    smi.write_text("c1ccccc1 benzene\nC1CC broken\nCO\n")
    out = tmp_path / "out"
    argv = ["predict", "--batch", str(smi), "-o", str(out), "--candidates", "3", "--samples", "2", "--max-steps", "30",
            "-q"]
    assert main(argv) == 0
    assert "3 molecules: 2 predicted, 0 already done, 1 failed" in capsys.readouterr().out
    failures = _rows(out / "failures.csv")
    assert [(f["line"], f["smiles"]) for f in failures] == [("2", "C1CC")] and "SMILES" in failures[0]["reason"]
    summary = _rows(out / "batch_summary.csv")
    assert [r["folder"] for r in summary] == ["0001_benzene", "0003_CO"]
    assert all(float(r["density"]) > 0 and r["space_group"] and float(r["seconds"]) > 0 for r in summary)
    done = (out / "0001_benzene" / "summary.csv").stat().st_mtime_ns
    assert main(argv) == 0  # resumed: nothing searched again
    assert "0 predicted, 2 already done, 1 failed" in capsys.readouterr().out
    assert (out / "0001_benzene" / "summary.csv").stat().st_mtime_ns == done
    assert [r["best_energy"] for r in _rows(out / "batch_summary.csv")] == [r["best_energy"] for r in summary]
    assert main([*argv, "--shard", "2/2"]) == 0  # molecule 2 only (the broken one): its own files
    assert "1 molecules: 0 predicted, 0 already done, 1 failed" in capsys.readouterr().out
    assert (out / "failures.shard-2-of-2.csv").exists() and (out / "batch_summary.shard-2-of-2.csv").exists()
    assert main([*argv, "--shard", "1/2"]) == 0  # the other shard (resumed): the merged tables hold both shards
    assert "2 molecules: 0 predicted, 2 already done, 0 failed" in capsys.readouterr().out
    assert [r["folder"] for r in _rows(out / "batch_summary.csv")] == ["0001_benzene", "0003_CO"]
    assert [f["line"] for f in _rows(out / "failures.csv")] == ["2"]
