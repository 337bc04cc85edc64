"""Reading the molecule of ``crystalflow predict``: SMILES and .sdf/.mol/.xyz/.pdb/.cif files, and clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit", reason="reading molecules needs RDKit (the predict extra)")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import AllChem  # noqa: E402

from crystalflow.common.errors import UserError  # noqa: E402
from crystalflow.structure.elements import symbol  # noqa: E402
from crystalflow.structure.molecule_input import (  # noqa: E402
    ALLOWED_ELEMENTS,
    MAX_ATOMS,
    Molecule3D,
    fragments,
    input_kind,
    read_molecule,
)
from crystalflow.structure.molecules import molecule_bonds

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
#: aspirin C9H8O4: 21 atoms, 13 of them heavy
ASPIRIN_ATOMS, ASPIRIN_HEAVY = 21, 13
BENZENE_CIF = "2100348-benzene.cif"


def _aspirin_rdkit(seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(ASPIRIN))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return mol


def _xyz_text(x: np.ndarray, z: np.ndarray, comment: str = "test") -> str:
    lines = [str(len(z)), comment] + [f"{symbol(int(v))} {p[0]:.5f} {p[1]:.5f} {p[2]:.5f}" for v, p in zip(z, x)]
    return "\n".join(lines) + "\n"


def _error(spec: str | Path, match: str) -> str:
    with pytest.raises(UserError, match=match) as info:
        read_molecule(str(spec))
    text = str(info.value)
    assert "\n" not in text, "user errors are one line"
    return text


def _check(mol: Molecule3D, n: int) -> None:
    assert mol.x.shape == (n, 3) and mol.z.shape == (n,)
    assert np.all(np.isfinite(mol.x))
    assert fragments(n, molecule_bonds(mol.x, mol.z)).max() == 0, "one bonded fragment"


# ------------------------------------------------------------------------------------------ SMILES
def test_smiles_aspirin_3d_with_hydrogens():
    mol = read_molecule(ASPIRIN, seed=3)
    _check(mol, ASPIRIN_ATOMS)
    assert mol.formula == "C9 H8 O4" and mol.source == "smiles" and mol.name == ASPIRIN
    assert any("MMFF" in n for n in mol.notes) and any("ETKDG" in n for n in mol.notes)
    assert np.ptp(mol.x, axis=0).min() > 0.5, "a 3D conformer"
    assert abs(mol.mass - 180.16) < 0.05
    # seeded: the same seed gives the same conformer
    np.testing.assert_allclose(read_molecule(ASPIRIN, seed=3).x, mol.x, atol=1e-6)


@pytest.mark.parametrize("smiles, match", [
    ("C1CC", "valid SMILES"),  # unclosed ring
    ("C(C)(C)(C)(C)C", "valence"),  # pentavalent carbon
    ("not a molecule", "valid SMILES"),
])
def test_invalid_smiles(smiles, match):
    _error(smiles, match)


@pytest.mark.parametrize("smiles", ["CC.O", "CC(=O)[O-].[NH4+]", "c1ccccc1.c1ccccc1"])
def test_multi_fragment_smiles(smiles):
    text = _error(smiles, "fragments")
    assert "one molecule" in text


@pytest.mark.parametrize("smiles, element", [("[Fe]", "Fe"), ("C[Hg]C", "Hg"), ("[Na+].[Cl-]", "Na")])
def test_unsupported_element(smiles, element):
    text = _error(smiles, "unsupported element")
    assert element in text and "Cl" in text  # names the element and the allowed ones


def test_allowed_elements_cover_training_set():
    assert set(ALLOWED_ELEMENTS) == {"H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I"}
    mol = read_molecule("C[Si](C)(C)c1ccc(Br)cc1")
    assert 35 in mol.z.tolist() and 14 in mol.z.tolist()


def test_too_many_atoms():
    _error("C" * 70, f"more than the {MAX_ATOMS}")  # C70H142: 212 atoms


def test_empty_spec():
    _error("  ", "no molecule")


# ------------------------------------------------------------------------------------------ files
def test_mol_file_without_hydrogens_gets_them(tmp_path):
    full = _aspirin_rdkit()
    heavy = Chem.RemoveHs(full)
    path = tmp_path / "aspirin.mol"
    path.write_text(Chem.MolToMolBlock(heavy))
    mol = read_molecule(str(path))
    _check(mol, ASPIRIN_ATOMS)
    assert any("added 8 all hydrogen" in n for n in mol.notes), mol.notes
    np.testing.assert_allclose(mol.x[:ASPIRIN_HEAVY], heavy.GetConformer().GetPositions(), atol=1e-3)
    assert mol.source == "mol"


def test_sdf_keeps_coordinates_and_takes_first_record(tmp_path):
    full = _aspirin_rdkit()
    full.SetProp("_Name", "aspirin")
    path = tmp_path / "two.sdf"
    with Chem.SDWriter(str(path)) as w:
        w.write(full)
        w.write(Chem.AddHs(Chem.MolFromSmiles("CCO")))
    mol = read_molecule(str(path))
    _check(mol, ASPIRIN_ATOMS)
    np.testing.assert_allclose(mol.x, full.GetConformer().GetPositions(), atol=1e-3)
    assert mol.name == "aspirin"
    assert any("first of 2 records" in n for n in mol.notes)
    assert not any("added" in n for n in mol.notes)


def test_2d_mol_file_is_embedded(tmp_path):
    flat = Chem.MolFromSmiles(ASPIRIN)
    AllChem.Compute2DCoords(flat)
    path = tmp_path / "flat.mol"
    path.write_text(Chem.MolToMolBlock(flat))
    mol = read_molecule(str(path))
    _check(mol, ASPIRIN_ATOMS)
    assert any("2D" in n for n in mol.notes)
    assert np.ptp(mol.x[:, 2]) > 0.1


def test_xyz_round_trip(tmp_path):
    full = _aspirin_rdkit()
    x = full.GetConformer().GetPositions()
    z = np.array([a.GetAtomicNum() for a in full.GetAtoms()])
    path = tmp_path / "aspirin.xyz"
    path.write_text(_xyz_text(x, z, "aspirin from xyz"))
    mol = read_molecule(str(path))
    _check(mol, ASPIRIN_ATOMS)
    np.testing.assert_allclose(mol.x, x, atol=1e-4)
    assert mol.z.tolist() == z.tolist() and mol.name == "aspirin from xyz" and mol.source == "xyz"


def test_xyz_two_fragments(tmp_path):
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    x = np.concatenate([water, water + 6.0])
    path = tmp_path / "waters.xyz"
    path.write_text(_xyz_text(x, np.array([8, 1, 1, 8, 1, 1])))
    assert "H2 O1 + H2 O1" in _error(path, "2 separate fragments")


def test_xyz_aromatic_without_hydrogens_is_refused(tmp_path):
    ang = np.arange(6) * np.pi / 3
    ring = 1.39 * np.stack([np.cos(ang), np.sin(ang), np.zeros(6)], axis=1)
    path = tmp_path / "benzene_noH.xyz"
    path.write_text(_xyz_text(ring, np.full(6, 6)))
    _error(path, "no hydrogen atoms.*cannot be placed")


def test_xyz_saturated_without_hydrogens_gets_them(tmp_path):
    chair = Chem.AddHs(Chem.MolFromSmiles("C1CCCCC1"))
    AllChem.EmbedMolecule(chair, randomSeed=1)
    AllChem.MMFFOptimizeMolecule(chair)
    x = chair.GetConformer().GetPositions()[:6]
    path = tmp_path / "cyclohexane.xyz"
    path.write_text(_xyz_text(x, np.full(6, 6)))
    mol = read_molecule(str(path))
    _check(mol, 18)
    assert mol.formula == "C6 H12" and any("saturated" in n for n in mol.notes)


def test_pdb_with_and_without_hydrogens(tmp_path):
    full = _aspirin_rdkit()
    path = tmp_path / "aspirin.pdb"
    path.write_text(Chem.MolToPDBBlock(full))
    mol = read_molecule(str(path))
    _check(mol, ASPIRIN_ATOMS)
    np.testing.assert_allclose(mol.x, full.GetConformer().GetPositions(), atol=2e-3)
    # without hydrogens: bond orders come from the repeated CONECT entries, hydrogens are added
    heavy = tmp_path / "aspirin_noH.pdb"
    heavy.write_text(Chem.MolToPDBBlock(Chem.RemoveHs(full)))
    mol = read_molecule(str(heavy))
    _check(mol, ASPIRIN_ATOMS)
    assert mol.formula == "C9 H8 O4" and any("CONECT" in n for n in mol.notes)


def test_cif_first_molecule(embedded_dir):
    mol = read_molecule(str(embedded_dir / BENZENE_CIF))
    _check(mol, 12)
    assert mol.formula == "C6 H6" and mol.source == "cif"
    assert any("first of" in n for n in mol.notes)


@pytest.mark.parametrize("name, content, match", [
    ("empty.sdf", "", "empty"),
    ("garbage.sdf", "this is not\na molfile at all\n\n\n", "cannot read"),
    ("garbage.mol", "\x00\x01\x02 binary", "binary"),
    ("garbage.xyz", "hello world\n", "not an XYZ"),
    ("short.xyz", "5\ncomment\nC 0 0 0\n", "only 1 atom"),
    ("badline.xyz", "1\ncomment\nC zero 0 0\n", "line 3"),
    ("garbage.pdb", "nothing here\n", "no ATOM"),
    ("garbage.cif", "data_x\n_cell_length_a 1\n", "cannot use"),
])
def test_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    _error(path, match)


def test_missing_file_and_unsupported_type(tmp_path):
    _error(tmp_path / "missing.sdf", "no such file")
    other = tmp_path / "molecule.mol2"
    other.write_text("@<TRIPOS>MOLECULE\n")
    _error(other, "unsupported file type")
    _error(tmp_path, "directory")


def test_input_kind_tells_smiles_from_paths(tmp_path):
    assert input_kind("C/C=C/C") == "smiles"
    assert input_kind("CC.Cl") == "smiles"
    f = tmp_path / "m.SDF"
    f.write_text("x")
    assert input_kind(str(f)) == "sdf"
