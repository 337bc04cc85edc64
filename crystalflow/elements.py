"""Periodic-table lookups (covalent radii, masses, symbols) as numpy arrays indexed by atomic number."""
from __future__ import annotations

import numpy as np
import gemmi

MAX_Z = 119

_SYMBOLS = [""] + [gemmi.Element(z).name for z in range(1, MAX_Z)]
#: covalent radius in Å, indexed by atomic number (0 = unknown)
COVALENT_RADIUS = np.array([0.0] + [gemmi.Element(z).covalent_r for z in range(1, MAX_Z)], dtype=np.float64)
#: standard atomic weight in u, indexed by atomic number (0 = unknown)
ATOMIC_MASS = np.array([0.0] + [gemmi.Element(z).weight for z in range(1, MAX_Z)], dtype=np.float64)
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
