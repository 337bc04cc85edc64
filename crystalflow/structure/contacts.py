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

from itertools import combinations_with_replacement

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


def donor_hydrogens(z: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """[n] bools: the hydrogens covalently bonded (``bonds`` [B, 2]) to N or O, the hydrogen-bond donor H."""
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    polar = np.isin(zz, HBOND_ELEMENTS)
    donor = np.zeros(len(zz), dtype=bool)
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        donor[i] |= bool(zz[i] == HYDROGEN and polar[j])
        donor[j] |= bool(zz[j] == HYDROGEN and polar[i])
    return donor


def hydrogen_bonds(x: np.ndarray, z: np.ndarray, bonds: np.ndarray, molecule: int = 0,
                   max_distance: float = HBOND_DISTANCE) -> int:
    """Hydrogen bonds of one molecule of the cluster ``x`` [M, n, 3] with the others: contacts shorter than
    ``max_distance`` Å between an H covalently bonded (``bonds`` [B, 2], the molecule's bond graph) to N or O
    and an N or O of another molecule, counted whether ``molecule`` gives the H or takes it."""
    c = np.asarray(x, dtype=np.float64)
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    polar = np.isin(zz, HBOND_ELEMENTS)
    donor_h = donor_hydrogens(zz, bonds)
    if not donor_h.any() or not polar.any():
        return 0
    others = np.delete(np.arange(c.shape[0]), molecule)
    me = c[molecule]
    rest_h, rest_a = c[others][:, donor_h].reshape(-1, 3), c[others][:, polar].reshape(-1, 3)
    given = np.linalg.norm(me[donor_h][:, None] - rest_a[None], axis=-1) < max_distance
    taken = np.linalg.norm(me[polar][:, None] - rest_h[None], axis=-1) < max_distance
    return int(given.sum() + taken.sum())


#: atom classes of :func:`contact_histogram`: H on N/O (``Hd``, a hydrogen-bond donor H), other H, C, N, O, S,
#: halogens (``X``) and any other element
CONTACT_CLASSES = ("Hd", "H", "C", "N", "O", "S", "X", "other")
#: Å: distance bins of :func:`contact_histogram`, 0.2 Å wide from 1.4 to 6.0 Å (shorter contacts fall in the first)
CONTACT_EDGES = np.round(np.arange(1.4, 6.0 + 1e-9, 0.2), 2)
_CLASS_OF = {atomic_number(e): CONTACT_CLASSES.index(c) for e, c in
             (("C", "C"), ("N", "N"), ("O", "O"), ("S", "S"), ("F", "X"), ("Cl", "X"), ("Br", "X"), ("I", "X"))}
_CLASS_PAIRS = tuple(combinations_with_replacement(range(len(CONTACT_CLASSES)), 2))
#: unordered class pairs of :func:`contact_histogram` (its rows)
CONTACT_PAIRS = tuple(f"{CONTACT_CLASSES[a]}-{CONTACT_CLASSES[b]}" for a, b in _CLASS_PAIRS)
_PAIR = np.zeros((len(CONTACT_CLASSES), len(CONTACT_CLASSES)), dtype=np.int64)  # class, class -> row
for _k, (_a, _b) in enumerate(_CLASS_PAIRS):
    _PAIR[_a, _b] = _PAIR[_b, _a] = _k


def contact_classes(z: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """[n] index into :data:`CONTACT_CLASSES` of each atom (``bonds`` [B, 2]: the molecule's bond graph, which
    tells a donor H, bonded to N or O, from the others)."""
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    cls = np.array([_CLASS_OF.get(int(a), CONTACT_CLASSES.index("other")) for a in zz], dtype=np.int64)
    cls[zz == HYDROGEN] = CONTACT_CLASSES.index("H")
    cls[donor_hydrogens(zz, bonds)] = CONTACT_CLASSES.index("Hd")
    return cls


def contact_histogram(x: np.ndarray, z: np.ndarray, bonds: np.ndarray, molecule: int = 0,
                      edges: np.ndarray = CONTACT_EDGES) -> np.ndarray:
    """[len(CONTACT_PAIRS), len(edges) − 1] counts of the contacts of one molecule of the cluster ``x`` [M, n, 3]
    with the atoms of the others, by class pair (:func:`contact_classes`) and distance bin (``edges``, Å;
    contacts shorter than the first edge are counted in the first bin, those from the last edge on not at all)."""
    c = np.asarray(x, dtype=np.float64)
    cls = contact_classes(z, bonds)
    me = c[molecule]
    rest = np.delete(c, molecule, axis=0).reshape(-1, 3)
    d = np.linalg.norm(me[:, None, :] - rest[None, :, :], axis=-1)  # [n, (M-1) n]
    pair = _PAIR[cls[:, None], np.tile(cls, c.shape[0] - 1)[None, :]]
    keep = d < edges[-1]
    b = np.clip(np.searchsorted(edges, d[keep], side="right") - 1, 0, len(edges) - 2)
    out = np.zeros((len(CONTACT_PAIRS), len(edges) - 1))
    np.add.at(out, (pair[keep], b), 1.0)
    return out
