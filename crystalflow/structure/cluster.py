"""Cluster extraction: a central molecule and its nearest neighbours by centre-of-mass distance."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crystalflow.structure.cif import Crystal
from crystalflow.structure.molecules import Molecule, centre_of_mass

#: neighbours around the central molecule in COD-Cluster17 (17 molecules in all)
N_NEIGHBOURS = 16
#: distances equal to within this (Å) are ties, broken by molecule index then lattice shift
TIE_TOLERANCE = 1e-6


@dataclass
class Cluster:
    """A finite cluster of identical molecules: the strongly-correlated (crystal) target x_s."""

    x: np.ndarray  #: [M, n, 3] Cartesian coordinates (Å), central molecule first, its centre of mass at 0
    z: np.ndarray  #: [n] atomic numbers, the same atom order in every molecule
    centre_distance: np.ndarray  #: [M] centre-of-mass distance of each molecule to the central one (Å)

    @property
    def n_molecules(self) -> int:
        """Number of molecules M."""
        return self.x.shape[0]

    @property
    def atoms_per_molecule(self) -> int:
        """Number of atoms n of one molecule."""
        return self.x.shape[1]


def nearest_images(
    centres: np.ndarray, lattice: np.ndarray, centre: int = 0, k: int = N_NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` periodic images of molecule centres nearest to molecule ``centre`` (itself excluded).

    ``centres`` are fractional [m, 3] in [0, 1). Returns molecule indices [k], integer lattice shifts
    [k, 3] and distances [k] (Å), sorted by distance with deterministic tie-breaking. The search
    widens until the k-th distance is inside the radius that the searched shifts cover completely.
    """
    heights = 1.0 / np.linalg.norm(np.linalg.inv(lattice), axis=0)
    reach = 1
    while True:
        rng = np.arange(-reach, reach + 1)
        shifts = np.stack(np.meshgrid(rng, rng, rng, indexing="ij"), -1).reshape(-1, 3)
        mol = np.repeat(np.arange(len(centres)), len(shifts))
        shift = np.tile(shifts, (len(centres), 1))
        d = np.linalg.norm((centres[mol] + shift - centres[centre]) @ lattice, axis=1)
        is_self = (mol == centre) & np.all(shift == 0, axis=1)
        d[is_self] = np.inf
        key = np.round(d / TIE_TOLERANCE)
        order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], mol, key))[:k]
        if len(order) == k and d[order[-1]] <= reach * heights.min():
            return mol[order], shift[order], d[order]
        reach += 1


def build_cluster(crystal: Crystal, molecules: list[Molecule], centre: int = 0, k: int = N_NEIGHBOURS) -> Cluster:
    """The cluster of molecule ``centre`` and its ``k`` nearest neighbours (molecules in common atom order)."""
    z = crystal.z[molecules[0].atoms]
    frac = np.stack([m.frac(crystal) for m in molecules])  # [m, n, 3]
    com = centre_of_mass(frac, z)  # [m, 3] fractional, in [0, 1) by construction
    mol, shift, dist = nearest_images(com, crystal.lattice, centre, k)
    frac_cluster = np.concatenate([frac[[centre]], frac[mol] + shift[:, None, :]])
    x = frac_cluster @ crystal.lattice
    x -= centre_of_mass(x[0], z)
    return Cluster(x=x, z=z, centre_distance=np.concatenate([[0.0], dist]))
