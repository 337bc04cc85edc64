"""Validation of the open COMPACK packing similarity on synthetic lattice clusters."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from crystalflow.compack import CompackResult, compack

#: a made-up rigid, chiral C/N/O/H molecule (Å)
MOLECULE = np.array(
    [
        [0.00, 0.00, 0.00],
        [1.52, 0.00, 0.00],
        [2.05, 1.38, 0.00],
        [-0.55, -1.05, 0.72],
        [-0.60, 0.90, -0.90],
        [2.00, -0.60, 0.80],
        [2.90, 1.50, -0.50],
        [-1.60, 0.70, -1.10],
    ]
)
Z = np.array([6, 6, 7, 8, 6, 1, 1, 1])
HEAVY = Z != 1
#: methanol-like molecule: only two heavy atoms, so hydrogens must fix the orientation
METHANOL = np.array(
    [[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [-0.36, 1.03, 0.0], [-0.36, -0.51, 0.89],
     [-0.36, -0.51, -0.89], [1.75, 0.0, 0.91]]
)
METHANOL_Z = np.array([6, 8, 1, 1, 1, 1])
CELL = np.array([[7.0, 0.0, 0.0], [0.8, 8.0, 0.0], [1.0, 0.5, 9.0]])
INVERSION_OFFSET = np.array([3.5, 4.0, 4.5])
OTHER_CELL = np.array([[5.2, 0.0, 0.0], [0.0, 6.5, 0.0], [0.0, 0.0, 11.0]])
OTHER_OFFSET = np.array([2.6, 0.0, 5.5])
N_MOLECULES = 17
SHELL = 15


def lattice_cluster(
    cell: np.ndarray = CELL,
    offset: np.ndarray = INVERSION_OFFSET,
    rotation: np.ndarray | None = None,
    molecule: np.ndarray = MOLECULE,
) -> np.ndarray:
    """Centre molecule plus its 16 nearest neighbours: one molecule and one inversion copy per cell."""
    mol = molecule - molecule.mean(axis=0)
    if rotation is not None:
        mol = mol @ rotation.T
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]) @ cell
    mols = np.concatenate([mol[None] + shifts[:, None], -mol[None] + (shifts + offset)[:, None]])
    dist = np.linalg.norm(mols.mean(axis=1), axis=1)
    return mols[np.argsort(dist, kind="stable")[:N_MOLECULES]]


def rigid_motion(x: np.ndarray, seed: int) -> np.ndarray:
    """Apply one random rotation and translation to all atoms."""
    return x @ Rotation.random(random_state=seed).as_matrix().T + np.array([3.0, -2.0, 5.0])


def assert_full_match(result: CompackResult) -> None:
    assert result.n_matched == SHELL and result.shell == SHELL
    assert result.rmsd == pytest.approx(0.0, abs=1e-8)
    assert result.success


def test_identical() -> None:
    x = lattice_cluster()
    assert_full_match(compack(x, x, Z))


def test_rigidly_moved_copy() -> None:
    x = lattice_cluster()
    assert_full_match(compack(rigid_motion(x, seed=1), x, Z))
    assert_full_match(compack(x, rigid_motion(x, seed=2), Z))


def test_shuffled_molecule_order() -> None:
    x = lattice_cluster()
    order = np.concatenate([[0], np.random.default_rng(0).permutation(np.arange(1, N_MOLECULES))])
    assert_full_match(compack(rigid_motion(x, seed=3)[order], x, Z))


def test_hydrogens_ignored() -> None:
    x = lattice_cluster()
    moved_h = x.copy()
    moved_h[:, ~HEAVY] += 1.0
    assert_full_match(compack(moved_h, x, Z))


def test_small_noise_still_matches() -> None:
    x = lattice_cluster()
    noisy = x + np.random.default_rng(4).normal(scale=0.1, size=x.shape)
    result = compack(noisy, x, Z)
    assert result.n_matched >= 12 and 0.0 < result.rmsd < 0.5 and result.success


def test_random_orientations_do_not_match() -> None:
    x = lattice_cluster()
    centroids = x[:, HEAVY].mean(axis=1, keepdims=True)
    rotations = Rotation.random(N_MOLECULES, random_state=5).as_matrix()
    rotations[0] = np.eye(3)  # keep the central molecule
    scrambled = np.einsum("mij,mnj->mni", rotations, x - centroids) + centroids
    result = compack(scrambled, x, Z)
    assert result.n_matched < 8 and not result.success


def test_different_lattice_does_not_match() -> None:
    x = lattice_cluster()
    rot = Rotation.from_euler("xyz", [40.0, 10.0, 70.0], degrees=True).as_matrix()
    other = lattice_cluster(OTHER_CELL, OTHER_OFFSET, rot)
    for a, b in ((other, x), (x, other)):
        result = compack(a, b, Z)
        assert result.n_matched < 8 and not result.success


def test_two_heavy_atoms_use_hydrogens_for_orientation() -> None:
    x = lattice_cluster(molecule=METHANOL)
    assert_full_match(compack(rigid_motion(x, seed=6), x, METHANOL_Z))
    centroids = x.mean(axis=1, keepdims=True)
    rotations = Rotation.random(N_MOLECULES, random_state=7).as_matrix()
    rotations[0] = np.eye(3)
    scrambled = np.einsum("mij,mnj->mni", rotations, x - centroids) + centroids
    assert compack(scrambled, x, METHANOL_Z).n_matched < 8


def test_small_clusters_and_shell_cap() -> None:
    x = lattice_cluster()
    assert compack(x[:5], x[:5], Z).n_matched == 5
    result = compack(x, x, Z, shell=6)
    assert result.n_matched == 6 and result.shell == 6
    assert compack(x[:1], x, Z).n_matched == 1


def test_bad_shapes_raise() -> None:
    x = lattice_cluster()
    with pytest.raises(ValueError):
        compack(x, x[:, :5], Z)
