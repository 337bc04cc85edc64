"""Named reasons for rejecting an input structure, and the exception that carries one."""
from __future__ import annotations

#: every reason a CIF can be rejected for, with the sentence the README and rejects.csv use
REASONS: dict[str, str] = {
    "unreadable": "not a parseable CIF (empty, binary or not UTF-8 text, truncated or malformed)",
    "no_cell": "no usable unit cell (cell parameters missing, not finite, out of range, or a singular or flat cell)",
    "no_atoms": "no atom sites with fractional coordinates",
    "no_symmetry": "space group not given (no operators, no recognised name), or operators alone that are no crystallographic group",
    "unknown_element": "an atom site whose element cannot be determined",
    "disordered": "partially occupied atom sites (occupancy < 1), or a negative disorder group (disorder about a symmetry element)",
    "overlapping_atoms": "two atoms closer than a chemically possible distance after symmetry expansion",
    "polymeric": "a molecule bonds to its own periodic image (polymeric / network solid)",
    "multi_component": "more than one kind of molecule (salts, solvates, co-crystals)",
    "z_prime_gt_1": "more than one molecule in the asymmetric unit (Z' > 1)",
    "no_carbon_or_hydrogen": "molecule lacks carbon or hydrogen (inorganic, or hydrogens not modelled)",
    "too_large": "molecule has more atoms than the configured limit",
    "not_rigid": "an input molecule (x_w) is not a rigid motion, possibly mirrored, of its crystal copy (import-cluster17)",
    "internal_error": "unexpected failure while processing this file (bug: please report with the file)",
}


class RejectError(Exception):
    """A structure that does not enter the dataset, with a named reason and a detail line."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reject reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""
