"""Tests of crystalflow.structure.lattice: a cluster gives back its crystal's lattice and space group."""
from __future__ import annotations

import numpy as np
import pytest

from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.lattice import (
    LatticeError,
    cells_agree,
    fit_crystal,
    fit_lattice,
    primitive_reduced_cell,
    recover_crystal,
)

SMALL = ["2100348-benzene.cif", "2205750.cif", "2100438-cell-vol.cif", "7105573-no-Z.cif", "2006609.cif"]


def crystal_and_cluster(path):
    crystal = read_cif(path)
    molecules, _, _ = select(crystal, BuildSettings())
    return crystal, molecules, build_cluster(crystal, molecules)


@pytest.mark.parametrize("name", SMALL)
def test_round_trip(embedded_dir, name):
    crystal, molecules, cluster = crystal_and_cluster(embedded_dir / name)
    rec = recover_crystal(cluster.x, cluster.z)
    assert crystal.sg_number > 0
    assert rec.sg_number == crystal.sg_number
    reference = primitive_reduced_cell(crystal.lattice, crystal.frac, crystal.z)
    assert cells_agree(rec.lattice, reference)
    assert rec.residual < 1e-6
    assert np.linalg.det(rec.lattice) > 0
    # Z per primitive cell: the source's molecules per conventional cell over the centring
    assert rec.n_molecules * abs(np.linalg.det(crystal.lattice)) == pytest.approx(
        len(molecules) * abs(np.linalg.det(rec.lattice)), rel=1e-6
    )
    assert rec.frac.shape == (rec.n_molecules * cluster.atoms_per_molecule, 3)
    assert np.all((rec.frac >= 0) & (rec.frac < 1))


def test_small_noise_keeps_the_cell(embedded_dir):
    _, _, cluster = crystal_and_cluster(embedded_dir / "2100438-cell-vol.cif")
    exact = recover_crystal(cluster.x, cluster.z)
    noisy = recover_crystal(cluster.x + np.random.default_rng(0).normal(scale=0.01, size=cluster.x.shape), cluster.z)
    assert cells_agree(noisy.lattice, exact.lattice)
    assert 0 < noisy.residual < 0.1


@pytest.mark.parametrize("seed", range(3))
def test_molecules_moved_by_1_to_2_angstrom_raise(embedded_dir, seed):
    _, _, cluster = crystal_and_cluster(embedded_dir / "7105573-no-Z.cif")
    rng = np.random.default_rng(seed)
    move = rng.normal(size=(cluster.n_molecules, 3))
    move *= rng.uniform(1.0, 2.0, size=(cluster.n_molecules, 1)) / np.linalg.norm(move, axis=1, keepdims=True)
    with pytest.raises(LatticeError):
        recover_crystal(cluster.x + move[:, None, :], cluster.z)


def test_sublattice_is_completed():
    basis = np.array([[5.0, 0, 0], [0, 6.0, 0], [0, 0, 7.0]])
    centring = basis[0] / 2 + basis[1] / 2  # the three shortest independent vectors miss it
    vectors = np.array([basis[0], basis[1], basis[2], centring + basis[2], centring])
    fitted, residual = fit_lattice(vectors[[0, 1, 2, 3]])
    assert abs(np.linalg.det(fitted)) == pytest.approx(5 * 6 * 7 / 2)
    assert residual < 1e-9


def test_too_few_translations_is_reported():
    x = np.random.default_rng(1).normal(size=(4, 5, 3))
    x[1:] += np.array([[4.0, 0, 0], [8.0, 0, 0], [12.0, 0, 0]])[:, None, :] + x[0] - x[1:]
    with pytest.raises(LatticeError, match="independent translation"):
        recover_crystal(x, np.array([6, 6, 6, 1, 1]))


@pytest.mark.parametrize("name", SMALL[:3])
def test_the_recovered_crystal_rebuilds_the_cluster(embedded_dir, name):
    _, _, cluster = crystal_and_cluster(embedded_dir / name)
    rec = recover_crystal(cluster.x, cluster.z)
    assert rec.inliers == cluster.n_molecules
    assert np.abs(rec.cluster_like_input() - cluster.x).max() < 1e-6
    # the operators form a group modulo the lattice: identity first, closed under products
    sc = rec.crystal
    assert np.array_equal(sc.rotations[0], np.eye(3)) and np.allclose(sc.translations[0], 0)
    keys = {(w.tobytes(), tuple(np.round(t % 1.0, 6) % 1.0)) for w, t in zip(sc.rotations, sc.translations)}
    for wa, ta in zip(sc.rotations, sc.translations):
        for wb, tb in zip(sc.rotations, sc.translations):
            t = np.round((wa @ tb + ta) % 1.0, 6) % 1.0
            assert ((wa @ wb).tobytes(), tuple(t)) in keys


def test_noisy_prediction_fits_robustly(embedded_dir):
    _, _, cluster = crystal_and_cluster(embedded_dir / "2100438-cell-vol.cif")
    x = cluster.x.copy()
    x[5] += np.array([3.0, -2.0, 1.5])  # one molecule far off its place
    with pytest.raises(LatticeError):
        recover_crystal(x, cluster.z)
    rec = fit_crystal(x, cluster.z)
    exact = recover_crystal(cluster.x, cluster.z)
    assert rec.sg_number == exact.sg_number and cells_agree(rec.lattice, exact.lattice)
    assert rec.inliers == cluster.n_molecules - 1
