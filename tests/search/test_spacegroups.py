"""The common space groups: gemmi's general-position operators form a group of gemmi's order; look-up by name."""
from __future__ import annotations

import gemmi
import numpy as np
import pytest

from crystalflow.search.spacegroups import (
    COMMON_SPACE_GROUPS,
    SpaceGroupError,
    inversion_centres,
    space_group,
    space_group_weights,
)


def _key(w: np.ndarray, t: np.ndarray) -> tuple:
    return tuple(w.ravel().tolist()) + tuple(np.round((t % 1.0) * 24).astype(int) % 24)


@pytest.mark.parametrize("sg", COMMON_SPACE_GROUPS, ids=lambda g: g.symbol)
def test_operators_form_a_group_of_gemmis_order(sg) -> None:
    ops = {_key(w, t) for w, t in zip(sg.rotations, sg.translations)}
    assert len(ops) == sg.z == len(gemmi.find_spacegroup_by_number(sg.number).operations())
    assert _key(np.eye(3, dtype=int), np.zeros(3)) in ops
    for w1, t1 in zip(sg.rotations, sg.translations):
        inv = np.rint(np.linalg.inv(w1)).astype(int)
        assert _key(inv, -inv @ t1) in ops
        for w2, t2 in zip(sg.rotations, sg.translations):
            assert _key(w1 @ w2, w1 @ t2 + t1) in ops


def test_look_up_by_number_and_symbols() -> None:
    assert space_group("P2_1/c").number == space_group("P 1 21/c 1").number == space_group(14).number == 14
    assert space_group("P212121").crystal_system == "orthorhombic"
    assert space_group("C2/c").z == 8 and space_group("P-1").free_angles == ("alpha", "beta", "gamma")
    assert np.isclose(space_group_weights().sum(), 1.0)
    with pytest.raises(SpaceGroupError, match="not one of the common"):
        space_group("Fm-3m")
    assert issubclass(SpaceGroupError, ValueError)


HALF = {(a, b, c) for a in (0.0, 0.5) for b in (0.0, 0.5) for c in (0.0, 0.5)}


@pytest.mark.parametrize("symbol, expected", [
    ("P-1", HALF),  # 1a-1h
    ("P21/c", HALF),  # 2a-2d, two points each (International Tables A)
    ("Pbca", HALF),  # 4a, 4b
    ("C2/c", HALF | {(x, y, z) for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.0, 0.5)}),  # 4a-4d
    ("P21", set()), ("P212121", set()), ("Cc", set()),
])
def test_inversion_centres_are_the_tabulated_sites(symbol, expected) -> None:
    sg = space_group(symbol)
    found = {tuple(float(v) for v in p) for p in inversion_centres(sg)}
    assert found == expected
    for p in inversion_centres(sg):  # each is fixed by an inversion of the group, up to a lattice vector
        images = [(w @ p + t) for w, t in zip(sg.rotations, sg.translations) if np.array_equal(w, -np.eye(3))]
        assert any(np.allclose((q - p + 0.5) % 1.0 - 0.5, 0.0) for q in images)
