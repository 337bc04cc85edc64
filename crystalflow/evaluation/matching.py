"""Packing match of a predicted cluster against the true one: RMSD_15 and molecules matched, by OXtalign.

OXtalign (Apache-2.0, PyPI ``oxtalign``) is an open implementation of COMPACK's RMSD_n whose RMSD_15
agrees with CCDC COMPACK to 0.004 Å: it takes a central molecule of the reference and its ``n``
nearest neighbours, finds the rigid motion (proper or improper) that overlays the most of them on
the other structure within 1 Å per molecule (atoms assigned within each molecule, so a molecule's
symmetry — its automorphisms — is respected), and reports how many matched and their RMSD.

Here the reference is the true cluster, so the shell is the crystal's own 15 nearest neighbours.
Molecules are passed to OXtalign explicitly, one per copy with the bond graph of the true molecule
(:func:`crystalflow.structure.molecules.molecule_bonds`), so that predicted molecules that clash are not
merged by bond perception. Hydrogens are left out, as COMPACK and OXtalign do by default.

A prediction **matches** when at least :data:`MIN_MATCHED` of :data:`SHELL` molecules overlay with
RMSD_15 below :data:`MAX_RMSD` Å (the criterion of the CSP literature); it **solves** the target when
it also is physically valid (:mod:`crystalflow.structure.contacts`), see :mod:`crystalflow.evaluation.metrics`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from oxtalign import Molecule, Structure, compare

from crystalflow.structure.elements import HYDROGEN, formula, symbol
from crystalflow.structure.molecules import molecule_bonds

#: molecules of the reference shell compared (COMPACK's and OXtal's n)
SHELL = 15
#: fewest matched molecules (of :data:`SHELL`) for a match
MIN_MATCHED = 8
#: largest RMSD_15 (Å) of a match
MAX_RMSD = 2.0


@dataclass(frozen=True)
class PackingMatch:
    """``n_matched`` of :data:`SHELL` molecules overlaid with ``rmsd`` (Å, NaN when none); ``matched``: the criterion."""

    n_matched: int
    rmsd: float
    matched: bool


class ClusterTopology:
    """What every copy of the molecule shares: heavy-atom mask, element symbols and bond graph."""

    def __init__(self, reference: np.ndarray, z: np.ndarray) -> None:
        zz = np.asarray(z).astype(np.int64).reshape(-1)
        heavy = zz != HYDROGEN
        if not heavy.any():
            heavy = np.ones_like(heavy)
        self.heavy = heavy
        index = np.full(zz.shape[0], -1)
        index[heavy] = np.arange(int(heavy.sum()))
        bonds = molecule_bonds(np.asarray(reference, dtype=np.float64), zz)
        bonds = index[bonds[np.all(heavy[bonds], axis=1)]]
        self.elements = tuple(symbol(int(v)) for v in zz[heavy])
        self.labels = tuple(f"{e}{i + 1}" for i, e in enumerate(self.elements))
        self.bonds = tuple((int(i), int(j)) for i, j in bonds)
        self.species = formula(zz[heavy])

    def structure(self, x: np.ndarray, source: str = "cluster") -> Structure:
        """An OXtalign cluster (no cell) of the molecules of ``x [M, n, 3]``, one Molecule each."""
        molecules = [Molecule(self.elements, np.asarray(mol[self.heavy], dtype=np.float64), self.labels, self.bonds,
                              self.species) for mol in np.asarray(x)]
        return Structure(molecules, None, source)


def packing_match(pred: np.ndarray, true: np.ndarray, z: np.ndarray, shell: int = SHELL,
                  topology: ClusterTopology | None = None, pred_z: np.ndarray | None = None) -> PackingMatch:
    """OXtalign RMSD_``shell`` of ``pred [M, n, 3]`` against the reference ``true [M', n, 3]``.

    Both are clusters of the molecule ``z``; pass ``pred_z`` when ``pred`` is made of another molecule
    (a different compound matches nothing). Pass ``topology`` (built from ``true``) to compare many
    predictions of one cluster cheaply. ``n_matched`` counts the central molecule: 1 means that only
    the central molecules overlay.

    Example::

        from crystalflow import ClusterDataset, packing_match

        rec = ClusterDataset("cod17", "test")[0]
        match = packing_match(rec.x_s, rec.x_s, rec.z)  # a crystal matches itself: 15 of 15, RMSD 0
        print(match.n_matched, match.rmsd, match.matched)
    """
    topo = topology or ClusterTopology(np.asarray(true)[0], z)
    topo_pred = topo if pred_z is None else ClusterTopology(np.asarray(pred)[0], pred_z)
    result = compare(topo.structure(true, "true"), topo_pred.structure(pred, "prediction"), n=shell)
    n = int(result.n_matched)
    rmsd = float(result.rmsd_n) if n > 0 else math.nan
    return PackingMatch(n_matched=n, rmsd=rmsd, matched=bool(n >= MIN_MATCHED and rmsd < MAX_RMSD))
