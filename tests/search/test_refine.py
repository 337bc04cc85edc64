"""Learned refinement: the symmetrised pose update (hand-built predictions) and the shipped search model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import MOL_A, Z_A

from crystalflow.physics.energy import EnergySettings
from crystalflow.physics.relax import CrystalRelaxation
from crystalflow.search.generate import generate_crystals
from crystalflow.search.refine import _marked, load_refiner, refine_crystals, symmetrised_update
from crystalflow.search.spacegroups import space_group
from crystalflow.structure.geometry import kabsch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def crystal():
    return generate_crystals(MOL_A, Z_A, space_group("P21/c"), 1, np.random.default_rng(0)).crystals[0]


def _rotation(axis, degrees) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def test_unchanged_prediction_keeps_the_pose(crystal) -> None:
    marked = _marked(crystal).cluster()
    same = symmetrised_update(crystal, marked, marked[:, :-1])
    assert np.allclose(same.molecule, crystal.molecule, atol=1e-9)
    assert np.array_equal(same.lattice, crystal.lattice) and np.array_equal(same.rotations, crystal.rotations)


def test_a_symmetry_consistent_motion_is_recovered(crystal) -> None:
    # move the asymmetric molecule by (A, b) and every cluster molecule j by g_j (A, b) g_j^-1: the update is (A, b)
    marked = _marked(crystal).cluster()
    n = len(crystal.z)
    x0 = marked[0]
    a, b = _rotation([1, 2, 0.5], 7.0), np.array([0.2, -0.1, 0.3])
    centre = x0[:n].mean(axis=0)
    moved0 = (x0[:n] - centre) @ a.T + centre + b
    pred = []
    for xj in marked:
        r, t, rmsd = kabsch(x0, xj, allow_reflection=True)
        assert rmsd < 1e-8  # every cluster molecule is an exact image of the asymmetric one
        pred.append(moved0 @ r.T + t)
    update = symmetrised_update(crystal, marked, np.array(pred))
    r, t, rmsd = kabsch(crystal.molecule, update.molecule)
    assert rmsd < 1e-8 and np.allclose(r, a, atol=1e-8)
    shift = update.molecule.mean(axis=0) - crystal.molecule.mean(axis=0)
    assert np.allclose(shift, b, atol=1e-8)


def test_refine_crystals_with_the_shipped_model(crystal) -> None:
    model = load_refiner()
    out = refine_crystals([crystal, crystal], model, max_steps=10, settings=EnergySettings(cutoff=7.0, taper=1.0))
    assert len(out) == 2 and all(r is None or isinstance(r, CrystalRelaxation) for r in out)
    assert refine_crystals([], model) == []
