"""CIF reading and the named reasons for bad input: never a traceback."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import write

from crystalflow.common.errors import REASONS, RejectError
from crystalflow.structure.cif import read_cif

GOOD_HEADER = """data_test
_cell_length_a 10.0
_cell_length_b 11.0
_cell_length_c 12.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
"""
SITES = """loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
{rows}
"""
METHANE = "C1 C 0.5 0.5 0.5\nH1 H 0.6089 0.5 0.5\nH2 H 0.4637 0.5991 0.5\nH3 H 0.4637 0.4505 0.5858\nH4 H 0.4637 0.4505 0.4142"


OCCUPANCY = """loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
C1 C 0.5 0.5 0.5 1
O1 O 0.6 0.5 0.5 0.5
"""


def reason(path) -> str:
    with pytest.raises(RejectError) as info:
        read_cif(path)
    assert info.value.reason in REASONS
    return info.value.reason


def test_reads_symmetric_cif(embedded_dir):
    c = read_cif(embedded_dir / "2100348-benzene.cif")
    assert c.spacegroup == "P b c a" and c.n_symops == 8
    assert c.cod_id == "2100348"
    assert len(c.z) == 4 * 12  # four benzene molecules (on inversion centres) of 12 atoms
    assert np.all((c.frac >= 0) & (c.frac < 1))


def test_reads_p1_cell(tmp_path):
    c = read_cif(write(tmp_path / "m.cif", GOOD_HEADER + SITES.format(rows=METHANE)))
    assert c.n_symops == 1 and sorted(c.z.tolist()) == [1, 1, 1, 1, 6]
    assert c.volume == pytest.approx(1320.0)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "unreadable"),
        (bytes(range(256)) * 8, "unreadable"),
        (GOOD_HEADER + "loop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nC1 0.1 0.2\n", "unreadable"),
        (GOOD_HEADER, "no_atoms"),
        (GOOD_HEADER + SITES.format(rows=""), "no_atoms"),
        (SITES.format(rows=METHANE).replace("loop_", "data_x\nloop_", 1), "no_cell"),
        (GOOD_HEADER + SITES.format(rows="Q1 Qq 0.1 0.1 0.1"), "unknown_element"),
        (GOOD_HEADER.replace("'P 1'", "'X q'") + SITES.format(rows=METHANE), "no_symmetry"),
        (GOOD_HEADER + OCCUPANCY, "disordered"),
    ],
    ids=["empty", "binary", "truncated-loop", "no-atom-loop", "empty-loop", "no-cell", "unknown-element",
         "unknown-spacegroup", "partial-occupancy"],
)
def test_bad_input_has_a_reason(tmp_path, content, expected):
    assert reason(write(tmp_path / "bad.cif", content)) == expected


def test_bytes_that_are_not_utf8_are_unreadable(tmp_path, embedded_dir):
    """A stray byte in any value (here the formula) is unreadable, not an error where the value is read."""
    text = (embedded_dir / "2100348-benzene.cif").read_bytes()
    assert read_cif(write(tmp_path / "ok.cif", text)).n_symops == 8
    bad = text.replace(b"'C6 H6'", b"'C6 H6 \xf2\x28'", 1)
    with pytest.raises(RejectError) as info:
        read_cif(write(tmp_path / "bad.cif", bad))
    assert info.value.reason == "unreadable" and "UTF-8" in info.value.detail


def test_missing_file_is_unreadable(tmp_path):
    assert reason(tmp_path / "nope.cif") == "unreadable"


def _cell(a="10.0", beta="90", gamma="90"):
    return (GOOD_HEADER.replace("_cell_length_a 10.0", f"_cell_length_a {a}")
            .replace("_cell_angle_beta 90", f"_cell_angle_beta {beta}")
            .replace("_cell_angle_gamma 90", f"_cell_angle_gamma {gamma}"))


@pytest.mark.parametrize(
    "header",
    [_cell(beta="nan"), _cell(beta="?"), _cell(a="inf"), _cell(a="1e999"), _cell(a="1e300"), _cell(a="-10"),
     _cell(beta="0"), _cell(beta="359"), _cell(beta="30", gamma="150"), _cell(gamma="179")],
    ids=["nan-angle", "unknown-angle", "inf-edge", "overflowing-edge", "huge-edge", "negative-edge", "zero-angle",
         "angle-over-180", "impossible-angles", "flat-cell"],
)
def test_unusable_cell_is_no_cell(tmp_path, header):
    """Cells whose lattice matrix would be non-finite, singular or flat never reach the neighbour search."""
    assert reason(write(tmp_path / "cell.cif", header + SITES.format(rows=METHANE))) == "no_cell"


@pytest.mark.parametrize("value", ["nan", "inf", "-1e999", "?"])
def test_non_finite_coordinate_is_no_atoms(tmp_path, value):
    rows = METHANE.replace("H2 H 0.4637", f"H2 H {value}")
    assert reason(write(tmp_path / "x.cif", GOOD_HEADER + SITES.format(rows=rows))) == "no_atoms"


@pytest.mark.parametrize(
    "ops, expected",
    [(["x,y,z", "-x,-y,-z"], 2), (["x,y,z", "-x,-y,-z", "-x,-y,-z"], 2), (["x,y,z", "-x,-y"], "no_symmetry"),
     (["x,y,z", "x+1/0,y,z"], "no_symmetry"), (["x,y,z", "x,x,z"], "no_symmetry"), (["x,y,z", "2x,y,z"], "no_symmetry"),
     (["x,y,z", "-x,y,z+1/3"], "no_symmetry")],
    ids=["group", "duplicate", "two-components", "zero-denominator", "singular", "not-unimodular", "not-closed"],
)
def test_operators_without_a_space_group_name(tmp_path, ops, expected):
    """Operators are all gemmi has without a name: they must parse and form a group, counted once each."""
    header = GOOD_HEADER.replace("_symmetry_space_group_name_H-M 'P 1'\n", "")
    header += "loop_\n_symmetry_equiv_pos_as_xyz\n" + "".join(f"'{op}'\n" for op in ops)
    path = write(tmp_path / "ops.cif", header + SITES.format(rows=METHANE))
    if isinstance(expected, int):
        assert read_cif(path).n_symops == expected
    else:
        assert reason(path) == expected
