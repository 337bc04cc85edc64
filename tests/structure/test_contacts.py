"""Validity of clusters (crystalflow.structure.contacts) on hand-built two-molecule cases."""
from __future__ import annotations

import numpy as np
import pytest

from crystalflow.structure.contacts import VALIDITY_OVERLAP, is_valid, max_overlap
from crystalflow.structure.elements import BONDI_RADII, VDW_RADIUS

C, H, O = 6, 1, 8
R_C, R_O = BONDI_RADII["C"], BONDI_RADII["O"]


def two_ch(distance: float) -> np.ndarray:
    """Two C–H molecules whose carbons are ``distance`` Å apart along x (hydrogens pointing away)."""
    a = np.array([[0.0, 0.0, 0.0], [-1.09, 0.0, 0.0]])
    b = np.array([[distance, 0.0, 0.0], [distance + 1.09, 0.0, 0.0]])
    return np.stack([a, b])


def test_bondi_table() -> None:
    assert (R_C, R_O, BONDI_RADII["N"], BONDI_RADII["H"]) == (1.70, 1.52, 1.55, 1.20)
    assert VDW_RADIUS[C] == 1.70 and VDW_RADIUS[O] == 1.52


def test_touching_is_valid() -> None:
    x = two_ch(2 * R_C)
    assert max_overlap(x, np.array([C, H])) == pytest.approx(0.0, abs=1e-12)
    assert is_valid(x, np.array([C, H]))


def test_overlap_of_0_8_is_invalid() -> None:
    x = two_ch(2 * R_C - 0.8)
    assert max_overlap(x, np.array([C, H])) == pytest.approx(0.8)
    assert not is_valid(x, np.array([C, H]))


def test_threshold_is_inclusive() -> None:
    z = np.array([C, H])
    assert is_valid(two_ch(2 * R_C - (VALIDITY_OVERLAP - 0.01)), z)
    assert not is_valid(two_ch(2 * R_C - (VALIDITY_OVERLAP + 1e-9)), z)


def test_far_apart_has_zero_overlap() -> None:
    assert max_overlap(two_ch(10.0), np.array([C, H])) == 0.0


def test_hydrogen_bond_counts_as_valid() -> None:
    """O–H···O with H···O = 1.8 Å: the hydrogen sits 0.92 Å inside the O vdW sum, but hydrogens are
    excluded; O···O = 2.77 Å overlaps by 0.27 Å only."""
    donor = np.array([[0.0, 0.0, 0.0], [0.97, 0.0, 0.0], [-0.24, 0.94, 0.0]])  # O, H (towards B), H
    acceptor = np.array([[2.77, 0.0, 0.0], [3.01, 0.94, 0.0], [3.01, -0.94, 0.0]])
    x, z = np.stack([donor, acceptor]), np.array([O, H, H])
    assert max_overlap(x, z) == pytest.approx(2 * R_O - 2.77)
    assert is_valid(x, z)


def test_intramolecular_pairs_and_order_ignored() -> None:
    """Only pairs of different molecules count; the result does not depend on which molecule comes first."""
    x = two_ch(2 * R_C - 0.3)
    z = np.array([C, H])
    assert max_overlap(x[::-1], z) == pytest.approx(max_overlap(x, z))
    assert max_overlap(x[:1], z) == 0.0  # one molecule: nothing to overlap with


def test_non_finite_and_bad_shapes_are_refused() -> None:
    x = two_ch(3.0)
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        max_overlap(x, np.array([C, H]))
    with pytest.raises(ValueError, match="shape"):
        max_overlap(two_ch(3.0), np.array([C]))


def test_hydrogen_bonds_counted_by_hand() -> None:
    from crystalflow.structure.contacts import hydrogen_bonds

    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])  # O, H, H
    z, bonds = np.array([8, 1, 1]), np.array([[0, 1], [0, 2]])
    dimer = np.stack([water, water + [0.96 + 1.9, 0.0, 0.0]])  # O-H...O at 1.9 A: one bond, given by molecule 0
    assert hydrogen_bonds(dimer, z, bonds, 0) == 1 and hydrogen_bonds(dimer, z, bonds, 1) == 1
    far = np.stack([water, water + [0.96 + 2.6, 0.0, 0.0]])
    assert hydrogen_bonds(far, z, bonds, 0) == 0
    methane_like = np.array([6, 1, 1])  # the same geometry with C: its H are no donors, C no acceptor
    assert hydrogen_bonds(dimer, methane_like, bonds, 0) == 0


def test_contact_classes_tell_donor_hydrogens() -> None:
    from crystalflow.structure.contacts import CONTACT_CLASSES, contact_classes

    z = np.array([8, 1, 6, 1, 17, 5])  # O-H, C-H, Cl, B
    cls = contact_classes(z, np.array([[0, 1], [2, 3]]))
    assert [CONTACT_CLASSES[c] for c in cls] == ["O", "Hd", "C", "H", "X", "other"]


def test_contact_histogram_counted_by_hand() -> None:
    from crystalflow.structure.contacts import CONTACT_EDGES, CONTACT_PAIRS, contact_histogram

    oh = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0]])  # O-H: a donor H
    z, bonds = np.array([8, 1]), np.array([[0, 1]])
    cluster = np.stack([oh, oh + [0.0, 3.1, 0.0], oh + [0.0, 0.0, 7.0], oh + [0.0, 0.0, -1.0]])
    h = contact_histogram(cluster, z, bonds)
    assert h.shape == (len(CONTACT_PAIRS), len(CONTACT_EDGES) - 1)
    oo, ho, hh = (CONTACT_PAIRS.index(p) for p in ("O-O", "Hd-O", "Hd-Hd"))
    # molecule 1 at 3.1 A: O-O and H-H 3.1 A (bin 3.0-3.2), O-H twice at 3.245 A (bin 3.2-3.4)
    assert h[oo, 8] == 1 and h[hh, 8] == 1 and h[ho, 9] == 2
    # molecule 3 at 1.0 A (and O-H at 1.39 A): all below the first edge, counted in the first bin
    assert h[oo, 0] == 1 and h[hh, 0] == 1 and h[ho, 0] == 2
    # molecule 2 at 7 A is beyond the last edge; nothing else is counted
    assert h.sum() == 8
    # molecule 1 sees molecule 0 at 3.1 A and molecule 3 at 3.257 A (O-O); molecule 2, 7.66 A away, not at all
    h1 = contact_histogram(cluster, z, bonds, molecule=1)
    assert h1[oo, 8] == 1 and h1[oo, 9] == 1 and h1[oo].sum() == 2
