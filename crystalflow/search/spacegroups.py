"""The common space groups of molecular crystals: general-position operators, cell constraints and frequencies.

The operators are gemmi's (``gemmi.find_spacegroup_by_number(n).operations()``) in the standard
setting of International Tables (monoclinic: unique axis b, cell choice 1), centring translations
included, in the convention of :class:`crystalflow.structure.crystal.SymmetricCrystal`: fractional
``f' = W f + w`` with integer ``W``. A molecule on the general position has one image per operator,
so Z = the number of operators and Z' = 1.

Frequencies are the share of all entries of the Cambridge Structural Database in each space group,
from the CCDC's CSD space-group statistics (CSD 2024 release: P2₁/c holds 404 837 entries, 34 %);
the other values are rounded to 0.1 percentage points and used only as weights for drawing a
space group (:func:`space_group_weights`).

Example::

    sg = space_group("P21/c")          # also 14, "P 1 21/c 1", "P2_1/c"
    sg.rotations.shape, sg.z           # (4, 3, 3), 4
    sg.crystal_system                  # 'monoclinic': α = γ = 90°, β free
"""
from __future__ import annotations

from dataclasses import dataclass, field

import gemmi
import numpy as np


class SpaceGroupError(ValueError):
    """A space group that is not one of :data:`COMMON_SPACE_GROUPS`."""


#: free cell parameters of each crystal system handled here (the others are fixed at 90°)
FREE_ANGLES: dict[str, tuple[str, ...]] = {
    "triclinic": ("alpha", "beta", "gamma"),
    "monoclinic": ("beta",),
    "orthorhombic": (),
}

#: (international number, % of CSD entries): the CCDC's CSD space-group statistics (see module docstring)
CSD_FREQUENCY: dict[int, float] = {
    14: 34.1,  # P2_1/c
    2: 25.9,   # P-1
    15: 8.2,   # C2/c
    19: 6.9,   # P2_12_12_1
    4: 4.7,    # P2_1
    61: 3.1,   # Pbca
    33: 1.3,   # Pna2_1
    9: 0.9,    # Cc
    29: 0.6,   # Pca2_1
    5: 0.6,    # C2
    18: 0.5,   # P2_12_12
}


@dataclass(frozen=True)
class SpaceGroup:
    """One space group in its standard setting, with the operators of its general position."""

    number: int  #: international number
    symbol: str  #: short Hermann–Mauguin symbol as gemmi writes it ("P21/c")
    hall: str  #: Hall symbol
    crystal_system: str  #: "triclinic", "monoclinic" or "orthorhombic"
    rotations: np.ndarray = field(repr=False)  #: [Z, 3, 3] integer rotation parts
    translations: np.ndarray = field(repr=False)  #: [Z, 3] fractional translations in [0, 1)
    csd_frequency: float  #: % of CSD entries (:data:`CSD_FREQUENCY`)

    @property
    def z(self) -> int:
        """Molecules in the conventional cell with one molecule on the general position (Z' = 1)."""
        return len(self.rotations)

    @property
    def free_angles(self) -> tuple[str, ...]:
        """Cell angles the crystal system leaves free (:data:`FREE_ANGLES`)."""
        return FREE_ANGLES[self.crystal_system]


def _from_gemmi(sg: gemmi.SpaceGroup) -> SpaceGroup:
    ops = list(sg.operations())  # symmetry operations × centring vectors
    den = gemmi.Op.DEN
    rot = np.array([op.rot for op in ops], dtype=np.int64)
    if np.any(rot % den):
        raise SpaceGroupError(f"{sg.xhm()}: non-integer rotation part")
    tran = np.array([op.tran for op in ops], dtype=np.float64) / den
    return SpaceGroup(number=sg.number, symbol=sg.short_name(), hall=sg.hall, crystal_system=sg.crystal_system_str(),
                      rotations=rot // den, translations=tran % 1.0, csd_frequency=CSD_FREQUENCY[sg.number])


def _key(name: str) -> str:
    return name.replace(" ", "").replace("_", "").lower()


#: the common space groups of molecular crystals, most frequent first
COMMON_SPACE_GROUPS: tuple[SpaceGroup, ...] = tuple(
    _from_gemmi(gemmi.find_spacegroup_by_number(n)) for n in CSD_FREQUENCY
)
_BY_KEY: dict[str, SpaceGroup] = {}
for _sg in COMMON_SPACE_GROUPS:
    _g = gemmi.find_spacegroup_by_number(_sg.number)
    for _name in (_sg.symbol, _g.hm, _g.xhm(), str(_sg.number)):
        _BY_KEY[_key(_name)] = _sg


def space_group(which: int | str | SpaceGroup) -> SpaceGroup:
    """A space group of :data:`COMMON_SPACE_GROUPS` by number, symbol (gemmi's, spglib's or with spaces) or itself."""
    if isinstance(which, SpaceGroup):
        return which
    key = _key(str(int(which))) if isinstance(which, (int, np.integer)) else _key(str(which))
    if key not in _BY_KEY:
        shown = ", ".join(sg.symbol for sg in COMMON_SPACE_GROUPS)
        raise SpaceGroupError(f"space group {which!r} is not one of the common ones ({shown})")
    return _BY_KEY[key]


def space_group_weights(groups: tuple[SpaceGroup, ...] = COMMON_SPACE_GROUPS) -> np.ndarray:
    """[len(groups)] probabilities proportional to the CSD frequencies (to draw space groups as the CSD has them)."""
    w = np.array([g.csd_frequency for g in groups], dtype=np.float64)
    return w / w.sum()


def inversion_centres(sg: SpaceGroup) -> np.ndarray:
    """[k, 3] the fractional points of the cell, in [0, 1), that are inversion centres of ``sg`` (fixed points
    ``f = (w + n) / 2`` of its operators ``-f + w``, n a lattice vector); empty for a non-centrosymmetric group.
    A molecule with an inversion centre placed there has site symmetry -1 (Z' = ½), e.g. 2a–2d of P2₁/c."""
    points: list[np.ndarray] = []
    for rot, t in zip(sg.rotations, sg.translations):
        if not np.array_equal(rot, -np.eye(3, dtype=rot.dtype)):
            continue
        for n in np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(-1, 3):
            f = ((t + n) / 2.0) % 1.0
            if not any(np.allclose(((f - q + 0.5) % 1.0) - 0.5, 0.0, atol=1e-9) for q in points):
                points.append(f)
    return np.array(points, dtype=np.float64).reshape(-1, 3)
