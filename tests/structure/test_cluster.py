"""Tests of crystalflow.structure.cluster: the 16-nearest-neighbour cluster and deterministic ties."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster, nearest_images
from crystalflow.structure.molecules import centre_of_mass, common_order, find_molecules


def molecules_of(path):
    crystal = read_cif(path)
    return crystal, common_order(crystal, find_molecules(crystal))


def brute_force_neighbours(centres, lattice, k):
    cands = []
    for m, c in enumerate(centres):
        for s in itertools.product(range(-4, 5), repeat=3):
            if m == 0 and s == (0, 0, 0):
                continue
            cands.append(np.linalg.norm((c + np.array(s) - centres[0]) @ lattice))
    return np.sort(cands)[:k]


@pytest.mark.parametrize("name", ["2100348-benzene.cif", "2006609.cif", "4021477-with-extra-tags.cif"])
def test_cluster_holds_the_16_nearest(embedded_dir, name):
    crystal, mols = molecules_of(embedded_dir / name)
    com = np.stack([centre_of_mass(m.frac(crystal), crystal.z[m.atoms]) for m in mols])
    _, _, dist = nearest_images(com, crystal.lattice, 0, 16)
    assert np.allclose(dist, brute_force_neighbours(com, crystal.lattice, 16))
    cluster = build_cluster(crystal, mols)
    assert cluster.x.shape == (17, len(mols[0].atoms), 3)
    coms = centre_of_mass(cluster.x, cluster.z)
    assert np.allclose(coms[0], 0, atol=1e-9)
    assert np.allclose(np.linalg.norm(coms, axis=1), cluster.centre_distance, atol=1e-6)
    assert np.all(np.diff(cluster.centre_distance) >= -1e-9)


def test_neighbour_ties_are_deterministic():
    lattice = np.eye(3) * 5.0  # simple cubic: 6 neighbours tie at 5 Å, 12 at 7.07 Å
    mol, shift, dist = nearest_images(np.zeros((1, 3)), lattice, 0, 16)
    assert np.allclose(dist[:6], 5.0) and np.allclose(dist[6:16], 5 * np.sqrt(2))
    again = nearest_images(np.zeros((1, 3)), lattice, 0, 16)
    assert np.array_equal(shift, again[1])
    assert [tuple(s) for s in shift[:6]] == sorted(tuple(s) for s in shift[:6])
