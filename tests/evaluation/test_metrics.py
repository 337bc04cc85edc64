"""Tests of crystalflow.evaluation.metrics on hand-computed toy clusters and synthetic lattice clusters."""
from __future__ import annotations

import math

import gemmi
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from crystalflow.evaluation import metrics
from crystalflow.evaluation.metrics import (
    aggregate,
    cluster_metrics,
    collision_pairs,
    compactness,
    kabsch,
    pm_atom,
    pm_atom_samples,
    pm_center,
    pm_center_samples,
    rigidity,
    rmsd_matched,
    separation,
)

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
CELL = np.array([[7.0, 0.0, 0.0], [0.8, 8.0, 0.0], [1.0, 0.5, 9.0]])
INVERSION_OFFSET = np.array([3.5, 4.0, 4.5])
N_MOLECULES = 17
CARBON = 6


def lattice_cluster(n_molecules: int = N_MOLECULES) -> np.ndarray:
    """Centre molecule plus its nearest neighbours in a lattice with an inversion copy per cell."""
    mol = MOLECULE - MOLECULE.mean(axis=0)
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]) @ CELL
    mols = np.concatenate([mol[None] + shifts[:, None], -mol[None] + (shifts + INVERSION_OFFSET)[:, None]])
    dist = np.linalg.norm(mols.mean(axis=1), axis=1)
    return mols[np.argsort(dist, kind="stable")[:n_molecules]]


def rigid_motion(x: np.ndarray, seed: int) -> np.ndarray:
    """Apply one random rotation and translation to all atoms of ``x``."""
    rot = Rotation.random(random_state=seed).as_matrix()
    return x @ rot.T + np.random.default_rng(seed).normal(size=3) * 5.0


def line_cluster(*positions: float) -> np.ndarray:
    """Single-atom molecules on the x axis, shape [M, 1, 3]."""
    x = np.zeros((len(positions), 1, 3))
    x[:, 0, 0] = positions
    return x


# ------------------------------------------------------------------------------------ packing match
def test_pm_hand_computed_single_atom() -> None:
    # D_true off-diagonal 1, D_pred 2: two of four entries differ by 1 -> sqrt(2/4)
    assert pm_atom(line_cluster(0.0, 2.0), line_cluster(0.0, 1.0)) == pytest.approx(math.sqrt(0.5))
    assert pm_center(line_cluster(0.0, 2.0), line_cluster(0.0, 1.0)) == pytest.approx(math.sqrt(0.5))


def test_pm_hand_computed_two_atom_molecules() -> None:
    true = np.zeros((2, 2, 3))
    true[:, :, 0] = [[0.0, 1.0], [3.0, 4.0]]
    pred = true.copy()
    pred[1, :, 0] += 2.0
    # atoms: 8 of 16 entries (inter-molecular) differ by 2 -> sqrt(32 / 16); centres: 2 of 4 differ by 2
    assert pm_atom(pred, true) == pytest.approx(math.sqrt(2.0))
    assert pm_center(pred, true) == pytest.approx(math.sqrt(2.0))


def test_pm_zero_and_rigid_invariance() -> None:
    x = lattice_cluster()
    moved = rigid_motion(x, seed=3)
    assert pm_atom(x, x) == pytest.approx(0.0, abs=1e-12)
    assert pm_atom(moved, x) == pytest.approx(0.0, abs=1e-9)
    assert pm_center(moved, x) == pytest.approx(0.0, abs=1e-9)


def test_pm_samples_and_min() -> None:
    x = lattice_cluster()
    noisy = x + np.random.default_rng(0).normal(scale=0.3, size=x.shape)
    samples = np.stack([noisy, rigid_motion(x, seed=1), noisy * 1.1])
    per_sample = pm_atom_samples(samples, x)
    assert per_sample.shape == (3,)
    assert per_sample[1] == pytest.approx(0.0, abs=1e-9) and per_sample[0] > 0.1
    assert pm_atom(samples, x) == pytest.approx(per_sample.min())
    assert pm_center(samples, x) == pytest.approx(pm_center_samples(samples, x).min())


def test_pm_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        pm_atom(np.zeros((3, 2, 3)), np.zeros((2, 2, 3)))


# --------------------------------------------------------------------------------- physical validity
def test_collision_hand_computed() -> None:
    limit = 2 * gemmi.Element(CARBON).covalent_r
    x = line_cluster(0.0, 0.5, limit + 1.0)
    z = np.array([CARBON])
    assert collision_pairs(x, z) == pytest.approx(100.0 / 3)  # only the pair (0, 1) collides
    assert collision_pairs(x, z, scale=3.0) == pytest.approx(100.0)
    assert collision_pairs(line_cluster(0.0), z) == 0.0


def test_collision_ignores_intramolecular_pairs() -> None:
    x = np.zeros((2, 2, 3))
    x[0, :, 0] = [0.0, 0.1]  # intramolecular pair far too close: not counted
    x[1, :, 0] = [10.0, 10.1]
    assert collision_pairs(x, np.array([CARBON, CARBON])) == 0.0
    x[1, 0, 0] = 0.5  # atom 0 of molecule 1 now hits both atoms of molecule 0: 2 of 4 pairs
    assert collision_pairs(x, np.array([CARBON, CARBON])) == pytest.approx(50.0)


def test_separation_hand_computed() -> None:
    assert separation(line_cluster(0.0, 0.3, 2.0)) == pytest.approx(200.0 / 3)
    assert separation(line_cluster(0.0, 0.3, 2.0), threshold=0.2) == pytest.approx(100.0)
    assert separation(lattice_cluster()) == 100.0


def test_compactness() -> None:
    assert compactness(line_cluster(0.0, 50.0)) == 100.0
    assert compactness(line_cluster(0.0, 150.0)) == 0.0
    assert compactness(line_cluster(0.0, 150.0), max_extent=200.0) == 100.0


def test_rigidity_hand_computed() -> None:
    true = np.zeros((2, 2, 3))
    true[:, 1, 0] = 1.0
    pred = true.copy()
    pred[0, 1, 0] = 1.2  # one bond stretched by 0.2 of two bonds in all
    assert rigidity(pred, true) == pytest.approx(math.sqrt(0.2**2 / 2))


def test_rigidity_zero_for_per_molecule_rigid_moves_and_mirrors() -> None:
    x = lattice_cluster()
    moved = np.stack([rigid_motion(mol, seed=i) for i, mol in enumerate(x)])
    moved[2] = -moved[2]  # a mirror image keeps all intramolecular distances
    assert rigidity(moved, x) == pytest.approx(0.0, abs=1e-9)
    assert rigidity(x * 1.1, x) > 0.01


# ---------------------------------------------------------------------------------- superposition
def test_kabsch_recovers_rotation() -> None:
    p = MOLECULE
    rot = Rotation.random(random_state=7).as_matrix()
    q = p @ rot.T + np.array([1.0, -2.0, 3.0])
    r, t, rmsd = kabsch(p, q)
    assert rmsd == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(p @ r.T + t, q, atol=1e-9)


def test_kabsch_reflection() -> None:
    p = MOLECULE
    mirrored = p * np.array([1.0, 1.0, -1.0])
    r_proper, _, rmsd_proper = kabsch(p, mirrored)
    r_any, _, rmsd_any = kabsch(p, mirrored, allow_reflection=True)
    assert np.linalg.det(r_proper) == pytest.approx(1.0)
    assert rmsd_proper > 0.1
    assert np.linalg.det(r_any) == pytest.approx(-1.0)
    assert rmsd_any == pytest.approx(0.0, abs=1e-9)


def test_kabsch_planar_prefers_proper() -> None:
    planar = MOLECULE * np.array([1.0, 1.0, 0.0])
    r, _, rmsd = kabsch(planar, planar * np.array([1.0, 1.0, -1.0]), allow_reflection=True)
    assert np.linalg.det(r) == pytest.approx(1.0) and rmsd == pytest.approx(0.0, abs=1e-9)


def test_rmsd_matched_permuted_rotated_copy() -> None:
    x = lattice_cluster()
    perm = np.random.default_rng(1).permutation(len(x))
    moved = rigid_motion(x, seed=5)[perm]
    assert rmsd_matched(moved, x, Z) == pytest.approx(0.0, abs=1e-8)
    assert pm_atom(moved, x) > 1.0  # PM is not permutation invariant


def test_rmsd_matched_noise_and_samples() -> None:
    x = lattice_cluster()
    noise = np.random.default_rng(2).normal(scale=0.1, size=x.shape)
    value = rmsd_matched(x + noise, x, Z)
    assert 0.0 < value <= math.sqrt(np.mean(np.sum(noise**2, axis=-1))) + 1e-12
    samples = np.stack([x + 5 * noise, rigid_motion(x, seed=9)])
    assert rmsd_matched(samples, x, Z) == pytest.approx(0.0, abs=1e-8)


# ------------------------------------------------------------------------------------ per-cluster
def test_cluster_metrics_uses_best_pm_sample() -> None:
    x = lattice_cluster()
    exploded = x * 20.0  # far worse pm_atom, not compact
    row = cluster_metrics(np.stack([exploded, rigid_motion(x, seed=4)]), x, Z)
    expected = {
        "pm_atom", "pm_center", "solved", "solved_top1", "valid", "max_overlap", "matched", "n_matched", "rmsd15",
        "collision_pairs", "separation", "compactness", "rigidity", "rmsd_matched", "orientation",
    }
    assert set(row) == expected
    assert all(isinstance(v, float) for v in row.values())
    assert row["pm_atom"] == pytest.approx(0.0, abs=1e-9)
    assert row["compactness"] == 100.0 and row["collision_pairs"] == 0.0 and row["separation"] == 100.0
    assert row["rigidity"] == pytest.approx(0.0, abs=1e-9)
    assert row["n_matched"] == 15.0 and row["matched"] == 1.0 and row["rmsd15"] == pytest.approx(0.0, abs=1e-6)
    assert row["valid"] == 1.0 and row["solved"] == 1.0
    assert row["solved_top1"] == 0.0  # sample 0, the exploded one, matches nothing
    assert row["orientation"] == pytest.approx(0.0, abs=1e-5)


def test_solved_needs_validity() -> None:
    """A perfect match whose one molecule is shifted into its neighbour still matches (14 of 15 molecules
    overlay) but is not valid, so it does not solve the cluster."""
    x = lattice_cluster()
    centres = x.mean(axis=1)
    a = 3  # a shell molecule; move it onto its nearest other molecule's position, 1 Å short
    others = [b for b in range(len(x)) if b != a]
    b = others[int(np.argmin(np.linalg.norm(centres[others] - centres[a], axis=1)))]
    step = centres[b] - centres[a]
    clashing = x.copy()
    clashing[a] += step * (1.0 - 1.0 / np.linalg.norm(step))
    row = cluster_metrics(clashing, x, Z)
    assert row["matched"] == 1.0 and row["n_matched"] >= 8
    assert row["valid"] == 0.0 and row["max_overlap"] >= 0.7
    assert row["solved"] == 0.0 and row["solved_top1"] == 0.0
    assert cluster_metrics(x, x, Z)["solved"] == 1.0


def test_cluster_metrics_single_prediction() -> None:
    x = lattice_cluster()
    row = cluster_metrics(x, x, Z)
    assert row["rmsd_matched"] == pytest.approx(0.0, abs=1e-9)


def test_aggregate() -> None:
    rows = [{"a": 1.0, "b": 2.0, "solved": 1.0, "valid": 1.0}, {"a": 3.0, "b": float("nan"), "solved": 0.0, "valid": 1.0}]
    agg = aggregate(rows)
    assert agg["a"] == {"mean": 2.0, "std": 1.0, "n": 2.0}
    assert agg["b"] == {"mean": 2.0, "std": 0.0, "n": 1.0}
    assert agg["sol_c"] == {"mean": 50.0, "std": 50.0, "n": 2.0} and "solved" not in agg  # 0/1 -> %
    assert agg["valid"]["mean"] == 100.0


def test_covalent_radii_match_gemmi() -> None:
    radii = metrics.covalent_radii(Z)
    assert radii[0] == pytest.approx(gemmi.Element(6).covalent_r)
    assert radii[-1] == pytest.approx(gemmi.Element(1).covalent_r)


# ------------------------------------------------------------------------------------ orientation
def test_orientation_error_hand_computed() -> None:
    """0 for the truth and any rigid motion of it; one of M − 1 molecules turned by 30° about its centre
    scores 30 / (M − 1); random orientations score about 126.5° (the mean angle of a random rotation)."""
    from scipy.spatial.transform import Rotation

    from crystalflow.evaluation.metrics import RANDOM_ORIENTATION_DEG, orientation_error

    x = lattice_cluster()
    m = x.shape[0]
    assert orientation_error(x, x, Z) == pytest.approx(0.0, abs=1e-6)
    assert orientation_error(rigid_motion(x, seed=3), x, Z) == pytest.approx(0.0, abs=1e-6)
    turned = x.copy()
    c = turned[2].mean(0)
    turned[2] = (turned[2] - c) @ Rotation.from_rotvec([0.0, 0.0, math.radians(30.0)]).as_matrix().T + c
    assert orientation_error(turned, x, Z) == pytest.approx(30.0 / (m - 1), abs=1e-6)
    assert orientation_error(np.stack([turned, x]), x, Z) == pytest.approx(0.0, abs=1e-6)  # min over K
    scores = []
    for seed in range(40):
        rot = Rotation.random(m, random_state=seed).as_matrix()
        local = x - x.mean(1, keepdims=True)
        scores.append(orientation_error(np.einsum("mij,mnj->mni", rot, local) + x.mean(1, keepdims=True), x, Z))
    assert abs(np.mean(scores) - RANDOM_ORIENTATION_DEG) < 5.0
