"""One molecule from the user: a SMILES string or a .sdf/.mol/.xyz/.pdb/.cif file -> 3D coordinates.

:func:`read_molecule` is the input side of ``crystalflow predict``. It returns a :class:`Molecule3D`
(coordinates with all hydrogens, atomic numbers, a name and notes on what was done to the input) or
raises :class:`~crystalflow.common.errors.UserError` with a one-line reason:

- SMILES: RDKit parses it, adds hydrogens, embeds one conformer with ETKDG (seeded) and optimises it
  with MMFF94 (UFF when MMFF lacks parameters).
- .sdf / .mol: RDKit reads the first record with its coordinates; hydrogens the file leaves implicit
  are added with coordinates (``AddHs(addCoords=True)``); a 2D file gets a 3D conformer.
- .xyz: parsed here (first frame); bonds are inferred from covalent radii.
- .pdb: RDKit reads atoms and CONECT bonds (repeated CONECT entries give bond orders).
- .cif: :func:`crystalflow.structure.cif.read_cif` and :func:`crystalflow.structure.molecules.find_molecules`; the first
  molecule of the unit cell is taken.

A file without hydrogen atoms and without bond orders (.xyz, .pdb without multiple CONECT entries,
.cif) gets hydrogens only when all its bonds are single by length (saturated molecules); otherwise the
hydrogen count is ambiguous and the input is refused.

The input must be one molecule (one bonded fragment), of elements seen in the training data
(:data:`ALLOWED_ELEMENTS`), with at most :data:`MAX_ATOMS` atoms including hydrogens.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from crystalflow.common.errors import REASONS, RejectError, UserError
from crystalflow.common.vocabulary import DEFAULT_MAX_ATOMS
from crystalflow.structure.elements import ATOMIC_MASS, COVALENT_RADIUS, atomic_number, formula, symbol
from crystalflow.structure.molecules import molecule_bonds

#: elements of the training data (COD organic crystals); anything else is refused
ALLOWED_ELEMENTS = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I")
#: largest molecule accepted, hydrogens included (the dataset's ``max_atoms`` default)
MAX_ATOMS = DEFAULT_MAX_ATOMS
#: file types read by :func:`read_molecule`, by lower-case suffix
FILE_TYPES = {".sdf": "sdf", ".sd": "sdf", ".mol": "mol", ".xyz": "xyz", ".pdb": "pdb", ".ent": "pdb", ".cif": "cif"}
#: a heavy-atom bond shorter than (sum of gemmi's covalent radii - this, Å) is taken as multiple/aromatic:
#: single bonds lie above the sum (C-C 1.53 vs 1.46, C-O 1.43 vs 1.39, C-Cl 1.77 vs 1.75), multiple and
#: aromatic ones below it (aromatic C-C 1.39, C=C 1.34, amide C-N 1.33 vs 1.44, C=O 1.21 vs 1.39)
UNSATURATED_SHORTENING = 0.03
#: force-field iterations of the conformer optimisation
FF_MAX_ITERS = 2000
#: ETKDG embedding attempts (the second with random starting coordinates)
EMBED_ATTEMPTS = 2
#: ETKDG embeddings per requested conformer in :func:`smiles_conformers`
CONFORMER_POOL = 10
#: heavy-atom RMSD (Å) above which two conformers are distinct
CONFORMER_RMSD = 0.5
#: kcal → kJ
KCAL_TO_KJ = 4.184
#: largest random seed RDKit accepts
_MAX_RDKIT_SEED = 2**31 - 1
#: characters of the input echoed in error messages
_SHOWN_CHARS = 80


@dataclass
class Molecule3D:
    """One molecule with all hydrogens: coordinates (Å), atomic numbers, a name and notes on the input."""

    x: np.ndarray  #: [n, 3] Cartesian coordinates (Å)
    z: np.ndarray  #: [n] atomic numbers
    name: str  #: SMILES as given, or the file's molecule name / file stem
    notes: list[str] = field(default_factory=list)  #: what was done to the input (hydrogens added, ...)
    bonds: np.ndarray | None = None  #: [B, 2] bonds (i < j) when known (RDKit or covalent radii)
    source: str = ""  #: 'smiles', 'sdf', 'mol', 'xyz', 'pdb' or 'cif'

    @property
    def n_atoms(self) -> int:
        """Number of atoms n (hydrogens included)."""
        return int(len(self.z))

    @property
    def mass(self) -> float:
        """Molar mass (g/mol)."""
        return float(ATOMIC_MASS[self.z].sum())

    @property
    def formula(self) -> str:
        """Hill formula, e.g. 'C9 H8 O4'."""
        return formula(self.z)


# ------------------------------------------------------------------------------------------ helpers
def _shown(text: str) -> str:
    """The user's input, shortened for an error message."""
    text = text.strip()
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def require_rdkit() -> None:
    """UserError unless RDKit (the ``predict`` extra) is installed."""
    try:
        import rdkit  # noqa: F401
    except ImportError:
        raise UserError("reading this molecule needs RDKit: pip install 'crystalflow[predict]' (or rdkit)") from None


@contextlib.contextmanager
def _quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's log (its messages would clutter the one-line errors)."""
    require_rdkit()
    from rdkit import rdBase

    block = rdBase.BlockLogs()
    try:
        yield
    finally:
        del block


def graph_molecule(z: np.ndarray, x: np.ndarray, bonds: np.ndarray, bond_orders: bool = False):  # noqa: ANN201
    """RDKit molecule of atoms ``z [n]`` at ``x [n, 3]`` (Å) joined by single ``bonds [m, 2]``, one 3D conformer,
    not sanitised; with ``bond_orders`` the orders (neutral molecule) from ``rdDetermineBonds.DetermineBondOrders``,
    which raises where RDKit cannot perceive the molecule."""
    require_rdkit()
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds
    from rdkit.Geometry import Point3D

    rw = Chem.RWMol()
    for v in np.asarray(z).tolist():
        rw.AddAtom(Chem.Atom(int(v)))
    for a, b in np.asarray(bonds).reshape(-1, 2).tolist():
        rw.AddBond(int(a), int(b), Chem.BondType.SINGLE)
    conf = Chem.Conformer(len(z))
    for k, p in enumerate(np.asarray(x, dtype=float).tolist()):
        conf.SetAtomPosition(k, Point3D(*p))
    conf.Set3D(True)
    rw.AddConformer(conf, assignId=True)
    mol = rw.GetMol()
    if bond_orders:
        with _quiet_rdkit():
            rdDetermineBonds.DetermineBondOrders(mol, charge=0)
    return mol


def fragments(n: int, bonds: np.ndarray) -> np.ndarray:
    """Fragment label [n] of each atom (connected components of the bond graph)."""
    b = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _check_elements(z: np.ndarray, what: str) -> None:
    """UserError naming every element outside :data:`ALLOWED_ELEMENTS`."""
    allowed = {atomic_number(s) for s in ALLOWED_ELEMENTS}
    bad = sorted({int(v) for v in np.asarray(z).tolist()} - allowed)
    if bad:
        names = ", ".join(symbol(v) if v > 0 else "* (dummy atom)" for v in bad)
        raise UserError(
            f"{what} contains unsupported element(s) {names}: crystalflow was trained on organic molecules "
            f"of {', '.join(ALLOWED_ELEMENTS)} only"
        )


def _check_size(n: int, what: str) -> None:
    if n > MAX_ATOMS:
        raise UserError(f"{what} has {n} atoms including hydrogens, more than the {MAX_ATOMS} crystalflow supports")
    if n == 0:
        raise UserError(f"{what} has no atoms")


def _check_one_fragment(x: np.ndarray, z: np.ndarray, bonds: np.ndarray, what: str) -> None:
    """UserError when the atoms form more than one bonded fragment (salts, solvates, mixtures)."""
    labels = fragments(len(z), bonds)
    n_frag = int(labels.max()) + 1 if len(labels) else 0
    if n_frag > 1:
        parts = [formula(z[labels == k]) for k in range(n_frag)]
        shown = " + ".join(parts[:4]) + (" + ..." if n_frag > 4 else "")
        raise UserError(
            f"{what} holds {n_frag} separate fragments ({shown}): give one molecule (salts, solvates, co-crystals "
            "and mixtures are not supported)"
        )


def _finish(x: np.ndarray, z: np.ndarray, name: str, notes: list[str], bonds: np.ndarray | None,
            source: str, what: str) -> Molecule3D:
    """Common last checks (elements, size, one fragment) and notes on out-of-distribution inputs."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    _check_elements(z, what)
    _check_size(len(z), what)
    if not np.all(np.isfinite(x)):
        raise UserError(f"{what} has non-numeric coordinates")
    if bonds is None:
        bonds = molecule_bonds(x, z)
    _check_one_fragment(x, z, bonds, what)
    if not np.any(z == 1):
        notes.append("the molecule has no hydrogen atoms: every training molecule had some, expect poor predictions")
    if not np.any(z == atomic_number("C")):
        notes.append("the molecule has no carbon: outside the organic training data, expect poor predictions")
    return Molecule3D(x=x, z=z, name=name, notes=notes, bonds=np.asarray(bonds, dtype=np.int64).reshape(-1, 2),
                      source=source)


def _rdkit_arrays(mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001 (RDKit Mol)
    """(x [n, 3], z [n], bonds [B, 2]) of an RDKit molecule with one conformer."""
    x = np.array(mol.GetConformer().GetPositions(), dtype=np.float64).reshape(-1, 3)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    bonds = np.array(sorted((min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
                            for b in mol.GetBonds()), dtype=np.int64).reshape(-1, 2)
    return x, z, bonds


def _rdkit_formula_parts(mol) -> list[str]:  # noqa: ANN001
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    return [CalcMolFormula(f) for f in Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)]


def _check_rdkit(mol, what: str) -> None:  # noqa: ANN001
    """Elements, fragments and size of an RDKit molecule before any expensive step."""
    from rdkit import Chem

    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    _check_elements(z, what)
    frags = Chem.GetMolFrags(mol)
    if len(frags) > 1:
        parts = _rdkit_formula_parts(mol)
        shown = " + ".join(parts[:4]) + (" + ..." if len(parts) > 4 else "")
        raise UserError(
            f"{what} holds {len(frags)} separate fragments ({shown}): give one molecule (salts, solvates, "
            "co-crystals and mixtures are not supported)"
        )
    n_total = mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())
    _check_size(n_total, what)


def _charge_note(mol) -> list[str]:  # noqa: ANN001
    from rdkit import Chem

    charge = Chem.GetFormalCharge(mol)
    if charge:
        return [f"net charge {charge:+d}: a crystal of an ion needs counter-ions; predicted as if alone"]
    return []


def _embed(mol, seed: int, what: str) -> list[str]:  # noqa: ANN001
    """Give ``mol`` (hydrogens explicit) one ETKDG conformer optimised by MMFF94 or UFF; return notes."""
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed) % _MAX_RDKIT_SEED
    cid = -1
    for attempt in range(EMBED_ATTEMPTS):
        params.useRandomCoords = attempt > 0
        cid = AllChem.EmbedMolecule(mol, params)
        if cid >= 0:
            break
    if cid < 0:
        raise UserError(f"RDKit could not generate 3D coordinates for {what}")
    notes = [f"3D conformer generated by RDKit ETKDGv3 (seed {seed})"]
    if AllChem.MMFFHasAllMoleculeParams(mol):
        status = AllChem.MMFFOptimizeMolecule(mol, maxIters=FF_MAX_ITERS)
        notes.append("conformer optimised with MMFF94" + ("" if status == 0 else " (not fully converged)"))
    elif AllChem.UFFHasAllMoleculeParams(mol):
        status = AllChem.UFFOptimizeMolecule(mol, maxIters=FF_MAX_ITERS)
        notes.append("conformer optimised with UFF (MMFF94 lacks parameters)" + ("" if status == 0 else
                                                                                 " (not fully converged)"))
    else:
        notes.append("no force field has parameters for this molecule: ETKDG geometry kept unoptimised")
    return notes


# ------------------------------------------------------------------------------------------ SMILES
def _smiles_with_hydrogens(smiles: str):  # noqa: ANN202 (RDKit Mol)
    """(RDKit molecule with explicit hydrogens, notes, description) of a checked SMILES string."""
    from rdkit import Chem

    what = f"SMILES {_shown(smiles)}"
    with _quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles.strip(), sanitize=False)
        if mol is None:
            raise UserError(f"{_shown(smiles)} is neither an existing file nor a valid SMILES string (syntax error)")
        try:
            Chem.SanitizeMol(mol)
        except Exception as exc:  # RDKit raises several sanitisation exception types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"invalid SMILES {_shown(smiles)}: {reason}") from None
        if mol.GetNumAtoms() == 0:
            raise UserError(f"{what} has no atoms")
        _check_rdkit(mol, what)
        notes = _charge_note(mol)
        return Chem.AddHs(mol), notes, what


def molecule_from_smiles(smiles: str, seed: int = 0) -> Molecule3D:
    """A 3D molecule from SMILES: RDKit parse, AddHs, ETKDG embedding (seeded), MMFF/UFF optimisation."""
    mol, notes, what = _smiles_with_hydrogens(smiles)
    with _quiet_rdkit():
        notes += _embed(mol, seed, what)
    x, z, bonds = _rdkit_arrays(mol)
    return _finish(x, z, smiles.strip(), notes, bonds, "smiles", what)


def rotatable_bonds(smiles: str) -> int:
    """Number of rotatable bonds of a SMILES string (RDKit's ``CalcNumRotatableBonds``)."""
    from rdkit.Chem import rdMolDescriptors

    mol, _, _ = _smiles_with_hydrogens(smiles)
    return int(rdMolDescriptors.CalcNumRotatableBonds(mol))


def smiles_conformers(smiles: str, n: int, seed: int = 0, min_rmsd: float = CONFORMER_RMSD) -> list[tuple[Molecule3D, float]]:
    """Up to ``n`` distinct low-energy conformers of a SMILES string, lowest force-field energy first.

    :data:`CONFORMER_POOL` × ``n`` ETKDGv3 embeddings (seeded), each optimised by MMFF94 (UFF when MMFF
    lacks parameters); in order of energy a conformer is kept when its heavy-atom RMSD (best alignment,
    symmetry-aware, its mirror image included) to every kept one exceeds ``min_rmsd`` Å. Returns ``(molecule, energy)`` pairs, the
    energy in kJ/mol relative to the first; fewer than ``n`` when the molecule has fewer distinct shapes.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    if n < 1:
        raise UserError(f"the number of conformers must be >= 1, got {n}")
    mol, notes, what = _smiles_with_hydrogens(smiles)
    with _quiet_rdkit():
        params = AllChem.ETKDGv3()
        # seed + 1: RDKit derives each embedding's seed from this one, and 0 gives every embedding the same
        params.randomSeed = int(seed) % (_MAX_RDKIT_SEED - 1) + 1
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=CONFORMER_POOL * n, params=params))
        if not ids:
            params.useRandomCoords = True
            ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=CONFORMER_POOL * n, params=params))
        if not ids:
            raise UserError(f"RDKit could not generate 3D coordinates for {what}")
        if AllChem.MMFFHasAllMoleculeParams(mol):
            field_name, results = "MMFF94", AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=FF_MAX_ITERS)
        elif AllChem.UFFHasAllMoleculeParams(mol):
            field_name, results = "UFF", AllChem.UFFOptimizeMoleculeConfs(mol, maxIters=FF_MAX_ITERS)
        else:
            field_name, results = "none", [(0, 0.0)] * len(ids)
        energies = [KCAL_TO_KJ * float(e) for _, e in results]
        heavy = Chem.RemoveHs(mol)
        mirror = Chem.Mol(heavy)  # mirror images are one conformer: a crystal of either is the other's enantiomorph
        for conf in mirror.GetConformers():
            conf.SetPositions(-np.array(conf.GetPositions()))
        kept: list[int] = []
        for cid in sorted(ids, key=lambda c: energies[c]):
            if len(kept) == n:
                break
            if all(min(rdMolAlign.GetBestRMS(heavy, heavy, prbId=cid, refId=k),
                       rdMolAlign.GetBestRMS(mirror, heavy, prbId=cid, refId=k)) > min_rmsd for k in kept):
                kept.append(cid)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    bonds = _rdkit_arrays(mol)[2]
    out = []
    for k, cid in enumerate(kept):
        x = np.array(mol.GetConformer(cid).GetPositions(), dtype=np.float64)
        energy = energies[cid] - energies[kept[0]]
        conf_notes = notes + [f"conformer {k + 1} of {len(kept)} distinct ones (heavy-atom RMSD > {min_rmsd:g} Å) from "
                              f"{len(ids)} RDKit ETKDGv3 embeddings (seed {seed}), optimised with {field_name}, "
                              f"{energy:.2f} kJ/mol above the lowest"]
        out.append((_finish(x, z, smiles.strip(), conf_notes, bonds, "smiles", what), energy))
    return out


# ------------------------------------------------------------------------------------------ files
def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise UserError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if not text.strip():
        raise UserError(f"{path!r} is empty")
    if "\x00" in text:
        raise UserError(f"{path!r} is a binary file, not a molecule file")
    return text


def _complete_rdkit_hydrogens(mol, what: str) -> tuple[object, list[str]]:  # noqa: ANN001
    """Add the hydrogens an RDKit molecule with bond orders leaves implicit, with coordinates."""
    from rdkit import Chem

    missing = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
    if not missing:
        return mol, []
    had_h = any(a.GetAtomicNum() == 1 for a in mol.GetAtoms())
    mol = Chem.AddHs(mol, addCoords=True)
    which = "missing" if had_h else "all"
    return mol, [f"{what}: added {missing} {which} hydrogen atom(s) with RDKit (AddHs, addCoords=True)"]


def _molfile(path: str, kind: str, seed: int) -> Molecule3D:
    """First record of an MDL MOL / SD file, hydrogens completed, 2D inputs embedded in 3D."""
    from rdkit import Chem

    text = _read_text(path)
    what = os.path.basename(path)
    records = sum(1 for line in text.splitlines() if line.strip() == "$$$$")
    block = text.split("$$$$")[0] if records else text
    with _quiet_rdkit():
        mol = Chem.MolFromMolBlock(block, removeHs=False, sanitize=False)
        if mol is None:
            raise UserError(f"cannot read {path!r} as an MDL {kind.upper()} file (malformed or not a molfile)")
        if mol.GetNumAtoms() == 0:
            raise UserError(f"{path!r} has no atoms")
        try:
            Chem.SanitizeMol(mol)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path!r}: RDKit cannot make sense of the molecule: {reason}") from None
        _check_rdkit(mol, what)
        notes = [f"read the first of {records} records of {what}"] if records > 1 else []
        notes += _charge_note(mol)
        name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
        conf = mol.GetConformer() if mol.GetNumConformers() else None
        if (conf is None or not conf.Is3D()) and mol.GetNumAtoms() > 1:
            missing = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
            mol = Chem.AddHs(mol)
            notes.append(f"{what} has 2D coordinates: made a 3D conformer"
                         + (f" (with {missing} hydrogen atom(s) added)" if missing else ""))
            notes += _embed(mol, seed, what)
        else:
            mol, added = _complete_rdkit_hydrogens(mol, what)
            notes += added
    x, z, bonds = _rdkit_arrays(mol)
    return _finish(x, z, name or _stem(path), notes, bonds, kind, what)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _xyz(path: str) -> Molecule3D:
    """First frame of an XYZ file: count line, comment line, then 'element x y z' per atom."""
    lines = _read_text(path).splitlines()
    what = os.path.basename(path)
    try:
        n = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise UserError(f"{path!r} is not an XYZ file: the first line must be the number of atoms") from None
    if n <= 0:
        raise UserError(f"{path!r}: the XYZ atom count is {n}")
    _check_size(n, what)
    if len(lines) < n + 2:
        raise UserError(f"{path!r}: the XYZ file announces {n} atoms but has only {max(0, len(lines) - 2)} atom lines")
    z, x = [], []
    for k, line in enumerate(lines[2 : n + 2], start=3):
        parts = line.split()
        try:
            if len(parts) < 4:
                raise ValueError
            coords = [float(v) for v in parts[1:4]]
        except ValueError:
            raise UserError(f"{path!r} line {k}: expected 'element x y z', got {line.strip()[:60]!r}") from None
        sym = parts[0]
        number = int(sym) if sym.isdigit() else atomic_number("".join(ch for ch in sym if ch.isalpha())[:2])
        if number <= 0:
            raise UserError(f"{path!r} line {k}: unknown element {sym!r}")
        z.append(number)
        x.append(coords)
    notes = []
    if any(line.strip() for line in lines[n + 2 :]):
        notes.append(f"{what} holds more than one frame: took the first")
    name = lines[1].strip() or _stem(path)
    return _without_bond_orders(np.array(x), np.array(z), name, notes, "xyz", what)


def _without_bond_orders(x: np.ndarray, z: np.ndarray, name: str, notes: list[str], source: str, what: str,
                         rd_mol=None) -> Molecule3D:  # noqa: ANN001
    """Coordinates from a format without (reliable) bond orders; hydrogens added only to saturated molecules.

    ``rd_mol`` (optional): an RDKit molecule of the same atoms whose bonds carry orders (PDB CONECT);
    it is used to add hydrogens when the file has none.
    """
    _check_elements(z, what)
    bonds = molecule_bonds(x, z)
    _check_one_fragment(x, z, bonds, what)
    if np.any(z == 1) or len(z) == 0:
        return _finish(x, z, name, notes, bonds, source, what)
    if rd_mol is not None and any(b.GetBondTypeAsDouble() != 1.0 for b in rd_mol.GetBonds()):
        mol = _sanitised(rd_mol, what)
        with _quiet_rdkit():
            mol, added = _complete_rdkit_hydrogens(mol, what)
        x2, z2, bonds2 = _rdkit_arrays(mol)
        return _finish(x2, z2, name, notes + added + [f"{what}: bond orders taken from CONECT records"], bonds2,
                       source, what)
    i, j = bonds[:, 0], bonds[:, 1]
    single = COVALENT_RADIUS[z[i]] + COVALENT_RADIUS[z[j]] - UNSATURATED_SHORTENING
    length = np.linalg.norm(x[i] - x[j], axis=1)
    short = np.flatnonzero(length < single)
    if len(short):
        a, b = int(i[short[0]]), int(j[short[0]])
        raise UserError(
            f"{what} has no hydrogen atoms and no bond orders, and bonds such as {symbol(int(z[a]))}{a + 1}–"
            f"{symbol(int(z[b]))}{b + 1} ({length[short[0]]:.2f} Å) look double or aromatic, so the hydrogens "
            "cannot be placed reliably: give the molecule with hydrogens, as SMILES or as an SDF/MOL file"
        )
    return _saturate(x, z, bonds, name, notes, source, what)


def _sanitised(mol, what: str):  # noqa: ANN001, ANN202
    from rdkit import Chem

    mol = Chem.Mol(mol)
    with _quiet_rdkit():
        try:
            Chem.SanitizeMol(mol)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{what}: cannot add hydrogens, RDKit rejects the bonds: {reason}") from None
    return mol


def _saturate(x: np.ndarray, z: np.ndarray, bonds: np.ndarray, name: str, notes: list[str], source: str,
              what: str) -> Molecule3D:
    """Add hydrogens with coordinates to a hydrogen-free molecule whose bonds are all single."""
    mol = _sanitised(graph_molecule(z, x, bonds), what)
    with _quiet_rdkit():
        mol, added = _complete_rdkit_hydrogens(mol, what)
    if added:
        added = [added[0] + " (all bonds single by length: a saturated molecule)"]
    x2, z2, bonds2 = _rdkit_arrays(mol)
    return _finish(x2, z2, name, notes + added, bonds2, source, what)


def _pdb(path: str) -> Molecule3D:
    """Atoms of a PDB file (all ATOM/HETATM records, first model), with CONECT bonds when present."""
    from rdkit import Chem

    _read_text(path)
    what = os.path.basename(path)
    with _quiet_rdkit():
        mol = Chem.MolFromPDBFile(path, removeHs=False, sanitize=False, proximityBonding=False)
    if mol is None or mol.GetNumAtoms() == 0:
        raise UserError(f"cannot read {path!r} as a PDB file: no ATOM/HETATM records")
    x, z, _ = _rdkit_arrays(mol)
    if np.any(z == 0):
        raise UserError(f"{path!r}: an atom has an unknown element (check columns 77-78 of its ATOM/HETATM lines)")
    name = _stem(path)
    resnames = {a.GetPDBResidueInfo().GetResidueName().strip() for a in mol.GetAtoms() if a.GetPDBResidueInfo()}
    if len(resnames) == 1 and next(iter(resnames)) not in ("", "UNL", "UNK", "MOL", "LIG"):
        name = f"{name} ({next(iter(resnames))})"
    return _without_bond_orders(x, z, name, [], "pdb", what, rd_mol=mol)


def _cif(path: str) -> Molecule3D:
    """The first molecule of a CIF's unit cell (see :mod:`crystalflow.structure.molecules`)."""
    from crystalflow.structure.cif import read_cif
    from crystalflow.structure.molecules import find_molecules

    what = os.path.basename(path)
    try:
        crystal = read_cif(path)
        molecules = find_molecules(crystal)
    except RejectError as exc:
        detail = f" ({exc.detail})" if exc.detail else ""
        raise UserError(f"cannot use {path!r}: {REASONS[exc.reason]}{detail}") from None
    first = molecules[0]
    x, z = first.cart(crystal), crystal.z[first.atoms]
    kinds = sorted({formula(crystal.z[m.atoms]) for m in molecules})
    notes = [f"took the first of {len(molecules)} molecules in the unit cell of {what} ({formula(z)})"]
    if len(kinds) > 1:
        notes.append(f"the cell holds {len(kinds)} kinds of molecule ({', '.join(kinds[:4])}): only the first is used")
    name = crystal.cod_id or crystal.name or _stem(path)
    return _without_bond_orders(x, z, name, notes, "cif", what)


# ------------------------------------------------------------------------------------------ entry
def input_kind(spec: str) -> str:
    """'smiles' or the file type of ``spec`` ('sdf', 'mol', 'xyz', 'pdb', 'cif'); UserError for bad paths.

    ``spec`` is a file when it exists or ends in a supported suffix; anything else is SMILES.
    """
    suffix = os.path.splitext(spec.strip())[1].lower()
    if os.path.isdir(spec):
        raise UserError(f"{spec!r} is a directory, not a molecule file")
    if os.path.exists(spec):
        if suffix not in FILE_TYPES:
            raise UserError(
                f"unsupported file type {suffix or '(no suffix)'!r} of {spec!r}: give a SMILES string or a "
                f"{', '.join(sorted(set(FILE_TYPES)))} file"
            )
        return FILE_TYPES[suffix]
    if suffix in FILE_TYPES:
        raise UserError(f"no such file: {spec!r}")
    return "smiles"


def read_molecule(spec: str, seed: int = 0) -> Molecule3D:
    """The molecule given by ``spec`` (SMILES, or a .sdf/.mol/.xyz/.pdb/.cif path) with 3D coordinates.

    ``seed`` seeds the conformer generation (SMILES and 2D files). Raises :class:`UserError` for
    invalid or unsupported inputs (see the module docstring).
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise UserError(f"a molecule must be a SMILES string or a file path, not {type(spec).__name__}")
    spec = os.fspath(spec)
    if not spec.strip():
        raise UserError("no molecule given (empty SMILES / path)")
    kind = input_kind(spec)
    if kind in ("smiles", "sdf", "mol", "pdb"):
        require_rdkit()
    if kind == "smiles":
        return molecule_from_smiles(spec, seed)
    if kind in ("sdf", "mol"):
        return _molfile(spec, kind, seed)
    if kind == "xyz":
        return _xyz(spec)
    if kind == "pdb":
        return _pdb(spec)
    return _cif(spec)
