"""Periodic-table lookups (covalent and van der Waals radii, masses, symbols) as numpy arrays indexed by atomic number."""
from __future__ import annotations

import gemmi
import numpy as np

MAX_Z = 119

_SYMBOLS = [""] + [gemmi.Element(z).name for z in range(1, MAX_Z)]
#: covalent radius in Å, indexed by atomic number (0 = unknown)
COVALENT_RADIUS = np.array([0.0] + [gemmi.Element(z).covalent_r for z in range(1, MAX_Z)], dtype=np.float64)
#: standard atomic weight in u, indexed by atomic number (0 = unknown)
ATOMIC_MASS = np.array([0.0] + [gemmi.Element(z).weight for z in range(1, MAX_Z)], dtype=np.float64)
#: atomic number of hydrogen
HYDROGEN = 1

#: van der Waals radii (Å): Bondi, J. Phys. Chem. 68, 441 (1964); B, Al, Ge, Sb, Bi and the alkaline
#: earths from Mantina et al., J. Phys. Chem. A 113, 5806 (2009). The one table behind every contact
#: test (:mod:`crystalflow.structure.contacts`).
BONDI_RADII: dict[str, float] = {
    "H": 1.20, "He": 1.40, "Li": 1.82, "Be": 1.53, "B": 1.92, "C": 1.70, "N": 1.55, "O": 1.52, "F": 1.47,
    "Ne": 1.54, "Na": 2.27, "Mg": 1.73, "Al": 1.84, "Si": 2.10, "P": 1.80, "S": 1.80, "Cl": 1.75, "Ar": 1.88,
    "K": 2.75, "Ca": 2.31, "Ni": 1.63, "Cu": 1.40, "Zn": 1.39, "Ga": 1.87, "Ge": 2.11, "As": 1.85, "Se": 1.90,
    "Br": 1.85, "Kr": 2.02, "Sr": 2.49, "Pd": 1.63, "Ag": 1.72, "Cd": 1.58, "In": 1.93, "Sn": 2.17, "Sb": 2.06,
    "Te": 2.06, "I": 1.98, "Xe": 2.16, "Ba": 2.68, "Pt": 1.72, "Au": 1.66, "Hg": 1.70, "Tl": 1.96, "Pb": 2.02,
    "Bi": 2.07, "U": 1.86,
}
#: van der Waals radius (Å) of elements missing from :data:`BONDI_RADII`
DEFAULT_VDW_RADIUS = 2.0
#: van der Waals radius in Å, indexed by atomic number (:data:`BONDI_RADII`, else :data:`DEFAULT_VDW_RADIUS`)
VDW_RADIUS = np.array(
    [DEFAULT_VDW_RADIUS] + [BONDI_RADII.get(gemmi.Element(z).name, DEFAULT_VDW_RADIUS) for z in range(1, MAX_Z)],
    dtype=np.float64,
)
#: volume per atom in organic crystals (Å³): Hofmann, "Fast estimation of crystal densities", Acta Cryst.
#: B58, 489–493 (2002), Table 2 (fitted to the CSD). The sum over a molecule's atoms estimates the cell
#: volume per molecule, V_cell / Z, at the packing of a typical crystal.
HOFMANN_VOLUMES: dict[str, float] = {
    "H": 5.08, "B": 13.24, "C": 13.87, "N": 11.8, "O": 11.39, "F": 11.17, "Na": 26.0, "Si": 37.3, "P": 29.5,
    "S": 25.2, "Cl": 25.8, "K": 36.0, "Ge": 41.6, "As": 36.4, "Se": 30.3, "Br": 32.7, "Sn": 52.8, "Sb": 48.0,
    "Te": 46.7, "I": 46.2,
}
#: volume per atom in Å³ indexed by atomic number (:data:`HOFMANN_VOLUMES`; NaN for elements not in it)
HOFMANN_VOLUME = np.array(
    [np.nan] + [HOFMANN_VOLUMES.get(gemmi.Element(z).name, np.nan) for z in range(1, MAX_Z)], dtype=np.float64
)
_BY_SYMBOL = {s.upper(): z for z, s in enumerate(_SYMBOLS) if s}
_BY_SYMBOL["D"] = 1  # deuterium is hydrogen for our purposes
_BY_SYMBOL["T"] = 1


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z`` ('X' if unknown)."""
    return _SYMBOLS[z] if 0 < z < MAX_Z else "X"


def atomic_number(sym: str) -> int:
    """Atomic number of an element symbol (case-insensitive); 0 if it is not an element."""
    return _BY_SYMBOL.get(sym.strip().upper(), 0)


def formula(z: np.ndarray) -> str:
    """Hill formula (C first, H second, then alphabetical) of a list of atomic numbers."""
    counts: dict[str, int] = {}
    for zi in np.asarray(z).tolist():
        s = symbol(int(zi))
        counts[s] = counts.get(s, 0) + 1
    order = [s for s in ("C", "H") if s in counts] if "C" in counts else []
    order += sorted(s for s in counts if s not in order)
    return " ".join(f"{s}{counts[s]}" for s in order)
