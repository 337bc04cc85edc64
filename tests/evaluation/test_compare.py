"""Two crystals compared (crystalflow.evaluation.compare and ``crystalflow compare``): packing match and PXRD similarity."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import gemmi
import pytest
from conftest import write

from crystalflow.cli import main
from crystalflow.common.errors import UserError
from crystalflow.evaluation.compare import PATTERN_FILES, compare_crystals
from crystalflow.evaluation.matching import SHELL

CRYSTAL = "2205750.cif"
OTHER = "2100348-benzene.cif"


def stretched(src: Path, dest: Path, factor: float) -> Path:
    """A copy of the CIF ``src`` with its a axis ``factor`` times as long (fractional coordinates kept)."""
    doc = gemmi.cif.read(str(src))
    block = doc.sole_block()
    a = gemmi.cif.as_number(block.find_value("_cell_length_a"))
    block.set_pair("_cell_length_a", f"{a * factor:.5f}")
    doc.write_file(str(dest))
    return dest


def test_crystal_against_itself(embedded_dir: Path, tmp_path: Path) -> None:
    path = embedded_dir / CRYSTAL
    r = compare_crystals(path, path, pxrd_out=tmp_path / "px")
    assert (r["n"], r["n_matched"], r["matched"], r["status"]) == (SHELL, SHELL, True, "full")
    assert r["rmsd_n"] == pytest.approx(0.0, abs=1e-6)
    assert r["pxrd_similarity"] == pytest.approx(1.0, abs=1e-9)
    assert r["formula_a"] == r["formula_b"]
    assert [Path(f).name for f in r["files"]] == list(PATTERN_FILES)
    with open(r["files"][0]) as f:
        assert next(csv.reader(f)) == ["two_theta", "intensity"]
    assert Path(r["files"][2]).read_bytes()[:4] == b"\x89PNG"
    json.dumps(r, allow_nan=False)  # machine-readable as it is


def test_another_compound_matches_nothing(embedded_dir: Path) -> None:
    r = compare_crystals(embedded_dir / CRYSTAL, embedded_dir / OTHER)
    assert r["n_matched"] == 0 and r["rmsd_n"] is None and not r["matched"]
    assert 0.0 <= r["pxrd_similarity"] < 0.5
    assert compare_crystals(embedded_dir / OTHER, embedded_dir / CRYSTAL)["pxrd_similarity"] == pytest.approx(
        r["pxrd_similarity"], abs=1e-12)


def test_a_stretched_cell_matches_with_a_lower_similarity(embedded_dir: Path, tmp_path: Path) -> None:
    src = embedded_dir / OTHER
    r = compare_crystals(src, stretched(src, tmp_path / "s.cif", 1.02))
    assert r["matched"] and r["n_matched"] == SHELL and 0.0 < r["rmsd_n"] < 0.5
    assert 0.3 < r["pxrd_similarity"] < 0.99
    wider = compare_crystals(src, tmp_path / "s.cif", width=3.0)
    assert wider["pxrd_similarity"] > r["pxrd_similarity"]


def test_bad_files_are_user_errors(embedded_dir: Path, tmp_path: Path) -> None:
    good = embedded_dir / CRYSTAL
    with pytest.raises(UserError, match="no such file"):
        compare_crystals(good, tmp_path / "missing.cif")
    with pytest.raises(UserError, match="not a parseable CIF"):
        compare_crystals(write(tmp_path / "x.cif", "this is not a CIF\n"), good)
    with pytest.raises(UserError, match="no atom sites"):
        compare_crystals(good, write(tmp_path / "empty.cif", "data_x\n_cell_length_a 5\n"))
    with pytest.raises(UserError, match="is a directory"):
        compare_crystals(good, tmp_path)


def test_cli_prints_and_writes_json(embedded_dir: Path, tmp_path: Path, capsys) -> None:
    a, b = str(embedded_dir / CRYSTAL), str(embedded_dir / OTHER)
    assert main(["compare", a, a]) == 0
    out = capsys.readouterr().out
    assert "OXtalign RMSD_15: 0.000 A, 15/15 molecules matched, a match" in out
    assert "PXRD similarity (de Gelder, width 1 deg): 1.0000" in out
    assert main(["compare", a, b, "--json", "--pxrd-out", str(tmp_path / "px")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_matched"] == 0 and r["rmsd_n"] is None and not math.isnan(r["pxrd_similarity"])
    assert sorted(p.name for p in (tmp_path / "px").iterdir()) == sorted(PATTERN_FILES)
