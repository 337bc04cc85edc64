"""CIFs written by crystalflow are read back by gemmi (and pymatgen) with the same space group and cell."""
from __future__ import annotations

import numpy as np
import pytest

from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cif_write import write_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.lattice import (
    cells_agree,
    primitive_reduced_cell,
    recover_crystal,
)
from crystalflow.structure.molecules import find_molecules

# P2_1/c (Z' = 1 and on an inversion centre), Pbca benzene (Z' = 0.5), C2/c, Cc, R3 (hexagonal setting)
NAMES = ["1512116.cif", "2202108.cif", "2100348-benzene.cif", "2010316-correct-values.cif",
         "4024913-with-new-symop-tags.cif", "2006992-example-of-R3.cif"]


def _source(embedded_dir, name):
    crystal = read_cif(embedded_dir / name)
    molecules, _, _ = select(crystal, BuildSettings())
    return crystal, molecules


@pytest.mark.parametrize("name", NAMES)
def test_recovered_crystal_written_and_read_back_by_gemmi(embedded_dir, tmp_path, name):
    crystal, molecules = _source(embedded_dir, name)
    cluster = build_cluster(crystal, molecules)
    rec = recover_crystal(cluster.x, cluster.z)
    path = write_cif(rec.crystal, tmp_path / "out.cif", name="out", items={"_crystalflow_energy_kj_mol": -1.5})
    back = read_cif(path)
    assert back.sg_number == crystal.sg_number
    # same primitive reduced cell and the same number of atoms per cell volume (nothing lost or doubled)
    assert cells_agree(primitive_reduced_cell(back.lattice, back.frac, back.z),
                       primitive_reduced_cell(crystal.lattice, crystal.frac, crystal.z))
    assert len(back.z) / back.volume == pytest.approx(len(crystal.z) / crystal.volume, rel=1e-3)
    # whole molecules come back: the asymmetric unit expands to molecules of the source's composition
    mols = find_molecules(back)
    assert sorted(np.bincount(back.z[mols[0].atoms]).tolist()) == sorted(np.bincount(cluster.z).tolist())
    with open(path, encoding="utf-8") as f:
        assert "_crystalflow_energy_kj_mol" in f.read()


def test_pymatgen_reads_the_same_space_group_and_cell(embedded_dir, tmp_path):
    pytest.importorskip("pymatgen")
    from pymatgen.io.cif import CifParser
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    for name in ("1512116.cif", "2010316-correct-values.cif"):
        crystal, molecules = _source(embedded_dir, name)
        sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
        path = write_cif(sc, tmp_path / name, name="x")
        structure = CifParser(str(path)).parse_structures(primitive=False)[0]
        assert SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number() == crystal.sg_number
        assert structure.lattice.volume == pytest.approx(crystal.volume, rel=1e-4)
        assert len(structure) == len(crystal.z)


def test_cell_atoms_unchanged_by_writing(embedded_dir, tmp_path):
    crystal, molecules = _source(embedded_dir, "1512116.cif")
    sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
    back = read_cif(write_cif(sc, tmp_path / "a.cif"))
    sc_back = SymmetricCrystal.from_crystal(back, find_molecules(back)[0])
    assert sc_back.density() == pytest.approx(sc.density(), rel=1e-4)
    assert sc_back.space_group() == sc.space_group()


def test_a_cell_of_two_symmetry_orbits_is_not_one_symmetric_crystal() -> None:
    # P1 cell with two water molecules in different orientations: the images of the first are not the cell
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    other = water @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]) + [3.1, 2.7, 2.9]
    lattice = np.diag([6.0, 6.5, 7.0])
    cart = np.vstack([water, other])
    z = np.array([8, 1, 1, 8, 1, 1])
    with pytest.raises(ValueError, match="more than one symmetry orbit"):
        SymmetricCrystal.from_cell(lattice, cart @ np.linalg.inv(lattice), z, water, z[:3])
    one = SymmetricCrystal.from_cell(lattice, water @ np.linalg.inv(lattice), z[:3], water, z[:3])
    assert one.n_molecules == 1
