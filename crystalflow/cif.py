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

from .elements import atomic_number
from .errors import RejectError

#: sites whose occupancy is below this are partial (disordered)
FULL_OCCUPANCY = 0.999
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
        if os.path.getsize(path) == 0:
            raise RejectError("unreadable", "empty file")
        doc = gemmi.cif.read(path)
    except RejectError:
        raise
    except (RuntimeError, ValueError, UnicodeDecodeError, OSError) as exc:
        raise RejectError("unreadable", str(exc).strip().splitlines()[0][:200]) from None
    block = _block_with_atoms(doc)
    try:
        small = gemmi.make_small_structure_from_block(block)
    except (RuntimeError, ValueError) as exc:
        raise RejectError("unreadable", str(exc)[:200]) from None
    return crystal_from_small(small, path, block)


def crystal_from_small(small: gemmi.SmallStructure, path: str, block: gemmi.cif.Block) -> Crystal:
    """Convert a gemmi SmallStructure (asymmetric unit + symmetry) to a :class:`Crystal`."""
    if not small.sites:
        raise RejectError("no_atoms", "atom_site loop has no sites")
    cell = small.cell
    if block.find_value("_cell_length_a") is None or not cell.is_crystal() or cell.volume < 1.0:
        raise RejectError("no_cell", f"cell parameters missing or degenerate ({cell.parameters})")
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
    for coord in ("x", "y", "z"):
        if any(np.isnan(getattr(s.fract, coord)) for s in small.sites):
            raise RejectError("no_atoms", "an atom site has no numeric fractional coordinate")
    sg = small.spacegroup
    if sg is None and not small.symops:
        raise RejectError("no_symmetry", f"space group {small.spacegroup_hm!r} not recognised and no operators given")
    # operators that gemmi cannot name (e.g. a 3D section of a superspace group) are still applied
    hm, number = (sg.hm, sg.number) if sg else (small.spacegroup_hm or "", 0)
    n_symops = len(sg.operations()) if sg else len(small.symops)
    sites = small.get_all_unit_cell_sites()  # gemmi applies the operators and merges special positions
    frac = np.array([[s.fract.x, s.fract.y, s.fract.z] for s in sites], dtype=np.float64) % 1.0
    z = np.array([s.element.atomic_number for s in sites], dtype=np.int64)
    lattice = np.array(cell.orth.mat.tolist(), dtype=np.float64).T
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
