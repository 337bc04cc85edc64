"""Tests of crystalflow.structure.molecules: molecule completion, rejections and the common atom order."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import write
from test_cif import GOOD_HEADER, SITES

from crystalflow.common.errors import RejectError
from crystalflow.data.noise import random_rotations
from crystalflow.data.pipeline import BuildSettings, process_cif
from crystalflow.structure.cif import read_cif
from crystalflow.structure.molecules import centre_of_mass, common_order, find_molecules, match_atoms, z_prime


def molecules_of(path):
    crystal = read_cif(path)
    return crystal, common_order(crystal, find_molecules(crystal))


def test_benzene_on_inversion_centres(embedded_dir):
    crystal, mols = molecules_of(embedded_dir / "2100348-benzene.cif")
    assert len(mols) == 4 and all(len(m.atoms) == 12 for m in mols)
    assert z_prime(crystal, len(mols)) == pytest.approx(0.5)
    ref = mols[0].cart(crystal)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    for m in mols[1:]:  # common order: identical intramolecular distance matrices
        x = m.cart(crystal)
        assert np.allclose(np.linalg.norm(x[:, None] - x[None], axis=-1), d_ref, atol=1e-3)
        assert np.array_equal(crystal.z[m.atoms], crystal.z[mols[0].atoms])


def test_molecules_are_whole_across_cell_boundaries(embedded_dir):
    crystal, mols = molecules_of(embedded_dir / "2006609.cif")
    for m in mols:
        x = m.cart(crystal)
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        assert d.max() < 15.0  # no atom left a cell away
        com = centre_of_mass(m.frac(crystal), crystal.z[m.atoms])
        assert np.all((com >= 0) & (com < 1))


def test_match_atoms_recovers_permutation_and_mirror():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3)) * 2
    z = np.array([6, 6, 7, 8, 1, 1, 1, 1, 1])
    perm = rng.permutation(9)
    r = random_rotations(1, rng)[0]
    for sign in (1.0, -1.0):
        moved = (sign * x @ r.T + 3.0)[perm]
        found, rmsd = match_atoms(x, z, moved, z[perm])
        assert rmsd < 1e-6
        assert np.array_equal(perm[found], np.arange(9))


def test_polymeric_chain_is_rejected(tmp_path):
    chain = "C1 C 0.0 0.0 0.0\nC2 C 0.5 0.0 0.0\nH1 H 0.0 0.35 0.0\nH2 H 0.5 0.35 0.0"
    path = write(tmp_path / "chain.cif", GOOD_HEADER.replace("_cell_length_a 10.0", "_cell_length_a 3.0") + SITES.format(rows=chain))
    with pytest.raises(RejectError) as info:
        process_cif(str(path), "chain", BuildSettings())
    assert info.value.reason == "polymeric"


def test_two_kinds_of_molecule_are_rejected(tmp_path):
    rows = "C1 C 0.1 0.1 0.1\nH1 H 0.2 0.1 0.1\nO1 O 0.6 0.6 0.6\nH2 H 0.69 0.6 0.6\nH3 H 0.6 0.68 0.6"
    path = write(tmp_path / "mix.cif", GOOD_HEADER + SITES.format(rows=rows))
    with pytest.raises(RejectError) as info:
        process_cif(str(path), "mix", BuildSettings())
    assert info.value.reason == "multi_component"


def test_overlapping_atoms_are_rejected(tmp_path):
    rows = "C1 C 0.1 0.1 0.1\nC2 C 0.11 0.1 0.1\nH1 H 0.2 0.1 0.1"
    with pytest.raises(RejectError) as info:
        process_cif(str(write(tmp_path / "o.cif", GOOD_HEADER + SITES.format(rows=rows))), "o", BuildSettings())
    assert info.value.reason == "overlapping_atoms"


def test_no_hydrogen_and_too_large(embedded_dir, tmp_path):
    rows = "C1 C 0.1 0.1 0.1\nO1 O 0.21 0.1 0.1\nO2 O -0.01 0.1 0.1"  # CO2: no hydrogen
    with pytest.raises(RejectError) as info:
        process_cif(str(write(tmp_path / "co2.cif", GOOD_HEADER + SITES.format(rows=rows))), "c", BuildSettings())
    assert info.value.reason == "no_carbon_or_hydrogen"
    with pytest.raises(RejectError) as info:
        process_cif(str(embedded_dir / "2006609.cif"), "k", BuildSettings(max_atoms=10))
    assert info.value.reason == "too_large"
