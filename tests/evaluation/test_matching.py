"""The OXtalign packing match (crystalflow.evaluation.matching) on real COD clusters and hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.evaluation.matching import MAX_RMSD, MIN_MATCHED, SHELL, packing_match
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster


def cod_cluster(embedded_dir, name: str):
    crystal = read_cif(str(embedded_dir / name))
    molecules, _, _ = select(crystal, BuildSettings())
    return build_cluster(crystal, molecules, k=16)


def test_cluster_against_itself(embedded_dir) -> None:
    c = cod_cluster(embedded_dir, "2205750.cif")
    m = packing_match(c.x, c.x, c.z)
    assert (m.n_matched, m.matched) == (SHELL, True)
    assert m.rmsd == pytest.approx(0.0, abs=1e-6)


def test_rigid_motion_and_reordering_do_not_matter(embedded_dir) -> None:
    """Any rotation, translation or reordering of the molecules (the central one stays first) is the same packing."""
    c = cod_cluster(embedded_dir, "2205750.cif")
    rot = Rotation.from_rotvec([0.3, -1.2, 0.7]).as_matrix()
    order = np.concatenate([[0], np.random.default_rng(0).permutation(np.arange(1, len(c.x)))])
    moved = c.x[order] @ rot.T + np.array([4.0, -2.0, 9.0])
    m = packing_match(moved, c.x, c.z)
    assert m.n_matched == SHELL and m.rmsd == pytest.approx(0.0, abs=1e-6)


def test_unrelated_crystal_matches_nothing(embedded_dir) -> None:
    """Another compound's cluster: 0 matched; the same molecule in a random arrangement: only the
    central molecule overlays, no match."""
    a = cod_cluster(embedded_dir, "2205750.cif")
    b = cod_cluster(embedded_dir, "2100348-benzene.cif")
    m = packing_match(b.x, a.x, a.z, pred_z=b.z)
    assert m.n_matched == 0 and not m.matched and math.isnan(m.rmsd)
    rng = np.random.default_rng(1)
    local = a.x - a.x.mean(axis=1, keepdims=True)
    grid = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(2)])[: len(a.x)] * 12.0
    scrambled = np.einsum("mij,mnj->mni", Rotation.random(len(a.x), random_state=2).as_matrix(), local)
    m = packing_match(scrambled + grid[:, None, :] + rng.normal(size=3), a.x, a.z)
    assert m.n_matched <= 1 and not m.matched


def test_molecular_symmetry_is_respected() -> None:
    """Turning molecules by their own C2 axis leaves the packing unchanged, though the atom order is then
    permuted: the match takes the best over the molecule's automorphisms (15 of 15, RMSD 0)."""
    # a planar C2v skeleton (acetone's heavy atoms) with its C2 axis along y
    mol = np.array([[0.0, 0.0, 0.0], [0.0, 1.21, 0.0], [1.28, -0.75, 0.0], [-1.28, -0.75, 0.0]])
    z = np.array([6, 8, 6, 6])
    cell = np.array([[5.0, 0.0, 0.0], [0.9, 5.5, 0.0], [0.6, 0.4, 4.5]])
    turn = Rotation.from_euler("xyz", [20.0, 35.0, 50.0], degrees=True).as_matrix()
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]) @ cell
    shifts = shifts[np.argsort(np.linalg.norm(shifts, axis=1), kind="stable")[:17]]
    x = (mol @ turn.T)[None] + shifts[:, None, :]
    c2 = turn @ Rotation.from_rotvec([0.0, math.pi, 0.0]).as_matrix() @ turn.T  # the C2 axis in the crystal
    flipped = x.copy()
    for k in (2, 5, 7):
        centre = x[k, 0]  # the axis runs through the carbonyl carbon
        flipped[k] = (x[k] - centre) @ c2.T + centre
    assert np.abs(flipped[2] - x[2]).max() > 1.0  # atoms moved in the fixed order...
    assert np.allclose(np.sort(flipped[2], axis=0), np.sort(x[2], axis=0))  # ...to the same set of positions
    m = packing_match(flipped, x, z)
    assert m.n_matched == SHELL and m.rmsd == pytest.approx(0.0, abs=1e-6)


def test_criterion_constants() -> None:
    assert (SHELL, MIN_MATCHED, MAX_RMSD) == (15, 8, 2.0)
