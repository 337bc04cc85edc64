"""Physical validity of a molecular cluster: van der Waals overlaps between atoms of different molecules.

The overlap of two atoms i, j at distance d is ``r_vdW(i) + r_vdW(j) − d`` (Bondi radii,
:data:`crystalflow.structure.elements.VDW_RADIUS`). A cluster is **valid** when no pair of heavy atoms of
*different* molecules overlaps by :data:`VALIDITY_OVERLAP` Å or more — the clash test of the recent
crystal-structure-prediction benchmarks (OXtal, Clari): one such contact already makes a structure
impossible, so validity is a property of the whole cluster, not a percentage of atom pairs.

Hydrogens are left out (their positions are the least certain, and an O–H···O hydrogen bond puts H
at 1.8 Å from O, well inside their vdW sum, while O···O stays at 2.7 Å: overlap 0.34 Å). Heavy-atom
contacts of real crystals stay below ~0.6 Å (a very short O–H···O bond, O···O = 2.45 Å, overlaps
0.59 Å). Molecules made only of hydrogens use their hydrogens. Arrays are ``[M, n, 3]`` in Å (same
atom order in every molecule, ``z`` the ``[n]`` atomic numbers).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from crystalflow.structure.elements import HYDROGEN, VDW_RADIUS, atomic_number

#: heavy atoms of different molecules overlapping by this much (Å) or more make a cluster invalid
VALIDITY_OVERLAP = 0.7


class ContactAtoms:
    """The atoms a contact test looks at, flattened: positions ``[A, 3]``, molecule index and vdW radius ``[A]``."""

    def __init__(self, x: np.ndarray, z: np.ndarray) -> None:
        c = np.asarray(x, dtype=np.float64)
        zz = np.asarray(z).astype(np.int64).reshape(-1)
        if c.ndim != 3 or c.shape[1:] != (zz.shape[0], 3):
            raise ValueError(f"cluster must have shape [M, {zz.shape[0]}, 3], got {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError("cluster has non-finite coordinates")
        heavy = zz != HYDROGEN
        if not heavy.any():
            heavy = np.ones_like(heavy)
        m, h = c.shape[0], int(heavy.sum())
        self.n_molecules = m
        self.points = c[:, heavy].reshape(-1, 3)
        self.molecule = np.repeat(np.arange(m), h)
        self.radius = np.tile(VDW_RADIUS[zz[heavy]], m)

    def overlaps(self, points: np.ndarray | None = None, above: float = 0.0) -> tuple[np.ndarray, ...]:
        """Inter-molecular pairs overlapping by more than ``above`` Å: ``(i, j, distance, overlap)``.

        ``i``/``j`` index the flattened atoms (``i < j``); ``points`` replaces the stored positions (same
        atoms, e.g. molecules moved rigidly).
        """
        p = self.points if points is None else points
        if len(p) < 2:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), np.zeros(0)
        pairs = cKDTree(p).query_pairs(2.0 * float(self.radius.max()) - above, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        inter = self.molecule[i] != self.molecule[j]
        i, j = i[inter], j[inter]
        d = np.linalg.norm(p[i] - p[j], axis=1)
        overlap = self.radius[i] + self.radius[j] - d
        keep = overlap > above
        return i[keep], j[keep], d[keep], overlap[keep]


def max_overlap(x: np.ndarray, z: np.ndarray) -> float:
    """Largest vdW overlap (Å) of two heavy atoms of different molecules of ``x [M, n, 3]``; 0 when none touch.

    Example::

        from crystalflow import ClusterDataset, max_overlap

        rec = ClusterDataset("cod17", "test")[0]
        print(max_overlap(rec.x_s, rec.z), max_overlap(rec.x_w, rec.z))  # valid below VALIDITY_OVERLAP
    """
    *_, overlap = ContactAtoms(x, z).overlaps()
    return float(overlap.max()) if overlap.size else 0.0


def is_valid(x: np.ndarray, z: np.ndarray, threshold: float = VALIDITY_OVERLAP) -> bool:
    """Whether no two heavy atoms of different molecules overlap by ``threshold`` Å or more."""
    return max_overlap(x, z) < threshold


#: atomic numbers of hydrogen-bond donors (the atom an H is bonded to) and acceptors: N, O
HBOND_ELEMENTS = (atomic_number("N"), atomic_number("O"))
#: Å: an H on N/O at most this far from an N/O of another molecule is counted as a hydrogen bond
HBOND_DISTANCE = 2.5


def hydrogen_bonds(x: np.ndarray, z: np.ndarray, bonds: np.ndarray, molecule: int = 0,
                   max_distance: float = HBOND_DISTANCE) -> int:
    """Hydrogen bonds of one molecule of the cluster ``x`` [M, n, 3] with the others: contacts shorter than
    ``max_distance`` Å between an H covalently bonded (``bonds`` [B, 2], the molecule's bond graph) to N or O
    and an N or O of another molecule, counted whether ``molecule`` gives the H or takes it."""
    c = np.asarray(x, dtype=np.float64)
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    polar = np.isin(zz, HBOND_ELEMENTS)
    donor_h = np.zeros(len(zz), dtype=bool)
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        if zz[i] == HYDROGEN and polar[j]:
            donor_h[i] = True
        if zz[j] == HYDROGEN and polar[i]:
            donor_h[j] = True
    if not donor_h.any() or not polar.any():
        return 0
    others = np.delete(np.arange(c.shape[0]), molecule)
    me = c[molecule]
    rest_h, rest_a = c[others][:, donor_h].reshape(-1, 3), c[others][:, polar].reshape(-1, 3)
    given = np.linalg.norm(me[donor_h][:, None] - rest_a[None], axis=-1) < max_distance
    taken = np.linalg.norm(me[polar][:, None] - rest_h[None], axis=-1) < max_distance
    return int(given.sum() + taken.sum())
