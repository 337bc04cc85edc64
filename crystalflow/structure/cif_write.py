"""CIF writing: a :class:`~crystalflow.structure.crystal.SymmetricCrystal` → a CIF with its space group
in the standard setting, the conventional cell, the symmetry operators and the asymmetric unit.

spglib finds the space group and the transformation to its standard setting; gemmi supplies that
setting's operators (from spglib's Hall symbol) and writes the CIF. The asymmetric unit is the
molecule itself (Z' = 1), or the part of it that is not an image of another part when the molecule
sits on a special position: one atom per orbit of spglib's idealised standard cell (exact orbits, so a
crystal that is only within ``symprec`` of its group, e.g. a molecule relaxed onto a −3 site, is written
with each atom once), the image nearest the molecule's centre. Mercury, VESTA, pymatgen, ASE and gemmi read the result; the tests read
it back with gemmi and pymatgen and compare the space group and cell.

Example::

    write_cif(rec.crystal, "out/pred_s0.cif", name="pred_s0",
              items={"_crystalflow_energy_kj_mol": -112.4})
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

import gemmi
import numpy as np
import spglib

from crystalflow.common.io import atomic_path
from crystalflow.common.version import __version__
from crystalflow.structure.crystal import SYMPREC, SymmetricCrystal
from crystalflow.structure.elements import formula, symbol


def _fraction(value: float) -> str:
    return f"{value:.6f}"


def standard_setting(crystal: SymmetricCrystal, symprec: float = SYMPREC):
    """(spglib dataset, conventional standard lattice rows [3, 3], asymmetric-unit fractional
    coordinates [a, 3] in that cell, their atomic numbers [a])."""
    frac, z = crystal.cell_atoms()
    ds = spglib.get_symmetry_dataset((crystal.lattice, frac, z), symprec=symprec)
    if ds is None:
        raise ValueError(f"spglib found no space group: {spglib.get_error_message()}")
    n = crystal.n_atoms
    # one atom per orbit, taken from the first molecule of the cell (the asymmetric molecule's image)
    seen, keep = set(), []
    for i in range(n):
        orbit = int(ds.equivalent_atoms[i])
        if orbit not in seen:
            seen.add(orbit)
            keep.append(i)
    p, shift = np.asarray(ds.transformation_matrix, dtype=np.float64), np.asarray(ds.origin_shift, dtype=np.float64)
    asym = frac[keep] @ p.T + shift  # x_std = P x + p
    lattice_std = np.linalg.inv(p).T @ crystal.lattice  # rows: (Lᵀ P⁻¹)ᵀ
    # the asymmetric unit from spglib's idealised standard cell, whose orbits are exact: where the crystal is only
    # close to its group (a molecule relaxed onto a site of higher symmetry than it was generated on), the raw
    # atoms' orbits may disagree with the group, and their images would be near-copies instead of one atom.
    # One atom per exact orbit, the image nearest the raw asymmetric molecule's centre (a contiguous unit)
    std_pos, std_types = np.asarray(ds.std_positions, dtype=np.float64), np.asarray(ds.std_types)
    exact = spglib.get_symmetry_dataset((np.asarray(ds.std_lattice), std_pos, std_types), symprec=1e-4)
    if exact is not None and int(exact.number) == int(ds.number):
        centre = asym.mean(axis=0)
        d = std_pos - centre
        d -= np.round(d)
        dist = np.linalg.norm(d @ lattice_std, axis=1)
        orbits = np.asarray(exact.equivalent_atoms)
        chosen = [int(np.flatnonzero(orbits == o)[np.argmin(dist[orbits == o])]) for o in np.unique(orbits)]
        chosen.sort(key=lambda i: dist[i])
        return ds, lattice_std, centre + d[chosen], std_types[chosen]
    return ds, lattice_std, asym, z[keep]


def cif_document(
    crystal: SymmetricCrystal, name: str = "crystalflow", items: Mapping[str, object] | None = None,
    symprec: float = SYMPREC,
) -> gemmi.cif.Document:
    """The CIF document of ``crystal`` (one data block ``name``); ``items`` are extra tag/value pairs."""
    ds, lattice, asym, z = standard_setting(crystal, symprec)
    sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(ds.hall))
    ops = list(sg.operations()) if sg is not None else list(gemmi.symops_from_hall(ds.hall))
    a, b, c = (float(np.linalg.norm(v)) for v in lattice)

    def angle(u, v):
        return math.degrees(math.acos(float(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))

    doc = gemmi.cif.Document()
    block = doc.add_new_block(gemmi.cif.quote(name) if " " in name else name)
    block.set_pair("_audit_creation_method", gemmi.cif.quote(f"crystalflow {__version__}"))
    block.set_pair("_chemical_formula_sum", gemmi.cif.quote(formula(crystal.z)))
    block.set_pair("_space_group_IT_number", str(int(ds.number)))
    hm = sg.xhm() if sg is not None else str(ds.international)
    block.set_pair("_space_group_name_H-M_alt", gemmi.cif.quote(hm))
    block.set_pair("_symmetry_space_group_name_H-M", gemmi.cif.quote(hm))
    block.set_pair("_space_group_name_Hall", gemmi.cif.quote(str(ds.hall)))
    for tag, value in zip(("a", "b", "c"), (a, b, c)):
        block.set_pair(f"_cell_length_{tag}", f"{value:.5f}")
    for tag, value in zip(("alpha", "beta", "gamma"), (angle(lattice[1], lattice[2]), angle(lattice[0], lattice[2]),
                                                       angle(lattice[0], lattice[1]))):
        block.set_pair(f"_cell_angle_{tag}", f"{value:.4f}")
    volume = float(abs(np.linalg.det(lattice)))
    block.set_pair("_cell_volume", f"{volume:.3f}")
    z_conv = len(ops) * len(z) // max(crystal.n_atoms, 1)
    block.set_pair("_cell_formula_units_Z", str(int(z_conv)))
    block.set_pair("_exptl_crystal_density_diffrn", f"{crystal.density():.4f}")
    for tag, value in (items or {}).items():
        block.set_pair(tag, gemmi.cif.quote(str(value)) if isinstance(value, str) else f"{value:.6g}")
    loop = block.init_loop("_space_group_symop_", ["id", "operation_xyz"])
    for i, op in enumerate(ops, 1):
        loop.add_row([str(i), gemmi.cif.quote(op.triplet())])
    loop = block.init_loop("_atom_site_", ["label", "type_symbol", "fract_x", "fract_y", "fract_z", "occupancy"])
    counts: dict[str, int] = {}
    for f, zz in zip(asym % 1.0, z):
        sym = symbol(int(zz))
        counts[sym] = counts.get(sym, 0) + 1
        loop.add_row([f"{sym}{counts[sym]}", sym, *(_fraction(v) for v in f), "1"])
    return doc


def write_cif(
    crystal: SymmetricCrystal, path: str | os.PathLike, name: str = "crystalflow",
    items: Mapping[str, object] | None = None, symprec: float = SYMPREC,
) -> str:
    """Write ``crystal`` as a CIF at ``path`` (atomically); returns the path.

    Example::

        write_cif(rec.crystal, "out/pred_s0.cif", name="pred_s0")
    """
    path = os.fspath(path)
    doc = cif_document(crystal, name, items, symprec)
    with atomic_path(path) as tmp:
        doc.write_file(tmp)
    return path
