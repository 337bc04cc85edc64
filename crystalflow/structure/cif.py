"""CIF reading: one CIF file -> a :class:`Crystal` (cell, every atom of the unit cell, symmetry).

gemmi parses the file and applies the space-group operators; this module only turns its result into
numpy arrays and rejects, with a named reason, what cannot be used.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import gemmi
import numpy as np

from crystalflow.common.errors import RejectError
from crystalflow.structure.elements import atomic_number

#: sites whose occupancy is below this are partial (disordered)
FULL_OCCUPANCY = 0.999
#: a cell whose closest lattice planes are nearer than this (Å) is degenerate (flat); real cells: > 3 Å
MIN_PLANE_SPACING = 1.0
#: a cell edge longer than this (Å) is not a crystal's unit cell (and overflows distance computations)
MAX_CELL_LENGTH = 1.0e4
_COD_ID = re.compile(r"(?<!\d)(\d{7})(?!\d)")


@dataclass
class Crystal:
    """A periodic crystal: the unit cell and every atom in it."""

    name: str  #: data-block name
    source: str  #: file path as given
    cod_id: str  #: 7-digit COD id when the file or block names one, else ""
    lattice: np.ndarray  #: [3, 3] lattice vectors a, b, c as rows, Å
    frac: np.ndarray  #: [N, 3] fractional coordinates of all atoms in the cell, in [0, 1)
    z: np.ndarray  #: [N] atomic numbers
    spacegroup: str  #: Hermann–Mauguin symbol ("" when only operators were given)
    sg_number: int  #: international table number (0 when unknown)
    n_symops: int  #: symmetry operations of the space group in this cell, centring included
    declared_formula: str  #: _chemical_formula_sum as written (may disagree with the atoms)

    @property
    def cart(self) -> np.ndarray:
        """[N, 3] Cartesian coordinates of the cell's atoms (Å)."""
        return self.frac @ self.lattice

    @property
    def volume(self) -> float:
        """Cell volume in Å^3."""
        return float(abs(np.linalg.det(self.lattice)))


def _block_with_atoms(doc: gemmi.cif.Document) -> gemmi.cif.Block:
    for block in doc:
        if block.find_value("_atom_site_fract_x") is not None or block.find_loop("_atom_site_fract_x"):
            return block
    raise RejectError("no_atoms", "no data block has _atom_site_fract_x")


def _cod_id(path: str, block_name: str, block: gemmi.cif.Block) -> str:
    value = block.find_value("_cod_database_code")
    if value and _COD_ID.search(value):
        return _COD_ID.search(value).group(1)
    for text in (block_name, os.path.basename(path)):
        m = _COD_ID.search(text)
        if m and text.lstrip("_-").startswith(m.group(1)):
            return m.group(1)
    return ""


def read_cif(path: str | os.PathLike) -> Crystal:
    """Read a CIF file into a :class:`Crystal`, or raise :class:`RejectError` saying why not."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise RejectError("unreadable", "empty file")
        # CIF 1.1 is ASCII and CIF 2.0 UTF-8; other bytes would fail in whichever gemmi string is read first
        data.decode("utf-8")
        doc = gemmi.cif.read(path)
    except RejectError:
        raise
    except UnicodeDecodeError as exc:
        raise RejectError("unreadable", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (RuntimeError, ValueError, OSError) as exc:
        raise RejectError("unreadable", str(exc).strip().splitlines()[0][:200]) from None
    block = _block_with_atoms(doc)
    try:
        small = gemmi.make_small_structure_from_block(block)
    except (RuntimeError, ValueError) as exc:
        if str(exc).startswith("Impossible angle"):  # gemmi refuses an angle of 0 or 180 degrees
            raise RejectError("no_cell", str(exc)[:200]) from None
        raise RejectError("unreadable", str(exc)[:200]) from None
    return crystal_from_small(small, path, block)


def cell_lattice(cell: gemmi.UnitCell, block: gemmi.cif.Block) -> np.ndarray:
    """The [3, 3] lattice vectors (rows, Å) of a usable cell, or ``no_cell``.

    Usable: all six parameters given and finite (gemmi reads "?", "nan", "inf" and overflowing
    numbers as NaN), edges in (0, :data:`MAX_CELL_LENGTH`], angles in (0, 180) degrees and mutually
    possible, volume ≥ 1 Å^3 and lattice planes at least :data:`MIN_PLANE_SPACING` apart (a flat or
    singular cell would make the neighbour searches unbounded).
    """
    params = cell.parameters
    shown = ", ".join(f"{v:g}" for v in params)
    if block.find_value("_cell_length_a") is None or not cell.is_crystal():
        raise RejectError("no_cell", f"cell parameters missing ({shown})")
    if not np.all(np.isfinite(params)):
        raise RejectError("no_cell", f"a cell parameter is not a finite number ({shown})")
    if not all(0.0 < v <= MAX_CELL_LENGTH for v in params[:3]):
        raise RejectError("no_cell", f"cell edge not in (0, {MAX_CELL_LENGTH:g}] Å ({shown})")
    if not all(0.0 < v < 180.0 for v in params[3:]):
        raise RejectError("no_cell", f"cell angle not in (0, 180) degrees ({shown})")
    lattice = np.array(cell.orth.mat.tolist(), dtype=np.float64).T
    volume = float(np.linalg.det(lattice)) if np.all(np.isfinite(lattice)) else float("nan")
    if not volume >= 1.0:  # NaN when the three angles cannot close a cell
        raise RejectError("no_cell", f"degenerate cell, volume {volume:g} Å^3 ({shown})")
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(lattice), axis=0).max()
    if spacing < MIN_PLANE_SPACING:
        raise RejectError("no_cell", f"flat cell: lattice planes {spacing:.3g} Å apart ({shown})")
    return lattice


def operator_group_order(symops: list[str]) -> int:
    """Number of distinct operators in ``symops`` (x,y,z triplets), or ``no_symmetry`` unless they form a group.

    Needed where gemmi recognises no space group and expands the cell with these operators alone:
    one it cannot parse makes it silently apply none, and a singular, non-integer or non-closed set
    would fill the cell with atoms that are no crystal's.
    """
    ops = []
    for text in symops:
        try:
            op = gemmi.Op(text)
        except (RuntimeError, ValueError) as exc:
            raise RejectError("no_symmetry", f"operator {text.strip()!r} not understood ({exc})"[:200]) from None
        den = gemmi.Op.DEN
        if any(v % den for row in op.rot for v in row) or abs(op.det_rot()) != den**3:
            raise RejectError("no_symmetry", f"operator {text.strip()!r} is not a crystallographic symmetry operation")
        ops.append(op.wrap())
    distinct = {op.triplet(): op for op in ops}
    for a in distinct.values():
        for b in distinct.values():
            if (a * b).wrap().triplet() not in distinct:
                raise RejectError(
                    "no_symmetry", f"operators do not form a group: {a.triplet()} times {b.triplet()} is not among them"
                )
    return len(distinct)


def crystal_from_small(small: gemmi.SmallStructure, path: str, block: gemmi.cif.Block) -> Crystal:
    """Convert a gemmi SmallStructure (asymmetric unit + symmetry) to a :class:`Crystal`."""
    if not small.sites:
        raise RejectError("no_atoms", "atom_site loop has no sites")
    lattice = cell_lattice(small.cell, block)
    for site in small.sites:
        if site.element.atomic_number == 0:
            z = atomic_number(re.sub(r"[^A-Za-z].*", "", site.type_symbol or site.label)[:2])
            if z == 0:
                raise RejectError("unknown_element", f"site {site.label!r} type {site.type_symbol!r}")
            site.element = gemmi.Element(z)
        if site.occ < FULL_OCCUPANCY:
            raise RejectError("disordered", f"site {site.label} occupancy {site.occ:g}")
        if site.disorder_group < 0:  # disorder about a symmetry element: the copies overlap
            raise RejectError("disordered", f"site {site.label} in disorder group {site.disorder_group}")
    for site in small.sites:  # gemmi reads "?", "nan", "inf" and overflowing numbers as NaN
        if not all(np.isfinite((site.fract.x, site.fract.y, site.fract.z))):
            raise RejectError("no_atoms", f"site {site.label} has no finite fractional coordinate")
    sg = small.spacegroup
    if sg is None and not small.symops:
        raise RejectError("no_symmetry", f"space group {small.spacegroup_hm!r} not recognised and no operators given")
    # operators that gemmi cannot name (e.g. a 3D section of a superspace group) are still applied
    hm, number = (sg.hm, sg.number) if sg else (small.spacegroup_hm or "", 0)
    n_symops = len(sg.operations()) if sg else operator_group_order(small.symops)
    sites = small.get_all_unit_cell_sites()  # gemmi applies the operators and merges special positions
    frac = np.array([[s.fract.x, s.fract.y, s.fract.z] for s in sites], dtype=np.float64) % 1.0
    z = np.array([s.element.atomic_number for s in sites], dtype=np.int64)
    return Crystal(
        name=block.name,
        source=path,
        cod_id=_cod_id(path, block.name, block),
        lattice=lattice,
        frac=frac,
        z=z,
        spacegroup=hm,
        sg_number=number,
        n_symops=n_symops,
        declared_formula=(block.find_value("_chemical_formula_sum") or "").strip("'\""),
    )
