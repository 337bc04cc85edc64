"""Atom typing and parameters of the rigid-molecule intermolecular potential.

Pair energy ``E = A exp(-B r) - C r^-6`` (``A`` kJ/mol, ``B`` 1/Å, ``C`` kJ/mol·Å⁶) plus Coulomb between
atomic charges (e). Parameters:

* H, C, N, O: Williams' W99 force field — D. E. Williams, "Improved intermolecular force field for
  molecules containing H, C, N, and O atoms, with application to nucleoside and peptide crystals",
  J. Comput. Chem. 22, 1154–1166 (2001), doi:10.1002/jcc.1074. Types: H1 (H on C), H2 (H on the O of an
  alcohol), H3 (H on the O of a carboxylic acid), H4 (H on N); C2, C3, C4 (C with 2, 3, 4 bonded
  neighbours); N1 (triply bonded N, one neighbour), N2 (no bonded H), N3 (one bonded H), N4 (two or
  more bonded H); O1 (one neighbour), O2 (two neighbours). The values are W99's as tabulated in the
  W99 file of Soprano (CCP-NC, ``soprano/data/w99_parameters.json``, there in eV and ρ = 1/B),
  converted with 1 eV = 96.485 kJ/mol; the N classes follow the 2001 paper's abstract. As in W99,
  the interaction site of a hydrogen is moved 0.1 Å towards the atom it is bonded to
  (:data:`H_FORESHORTENING`).
* Other elements (B, F, Si, P, S, Cl, Se, Br, I, ...): UFF van der Waals parameters (well distance
  x_i, Å; well depth D_i, kcal/mol; A. K. Rappé et al., J. Am. Chem. Soc. 114, 10024 (1992)) turned
  into an exp-6 with the MM3 shape (N. L. Allinger, Y. H. Yuh, J.-H. Lii, J. Am. Chem. Soc. 111,
  8551 (1989)): ``E = D [1.84e5 exp(-12 r/x) - 2.25 (x/r)^6]``, i.e. A = 1.84e5 D, B = 12/x,
  C = 2.25 D x⁶. The values agree with RDKit's UFF table.

Mixed pairs: geometric mean of A and C, arithmetic mean of B (W99's rules). Charges, from RDKit on the
molecule's bond graph (:func:`crystalflow.structure.molecules.molecule_bonds`) with bond orders from
``rdkit.Chem.rdDetermineBonds.DetermineBondOrders``: ``gasteiger`` (J. Gasteiger, M. Marsili, Tetrahedron
36, 3219 (1980)) or ``mmff`` (MMFF94 bond-charge increments, T. A. Halgren, J. Comput. Chem. 17, 490
(1996); Gasteiger where MMFF94 has no atom types, e.g. B or Se). W99 was fitted with electrostatic-potential
charges, which MMFF94's resemble in size; Gasteiger's are about half as large. Where RDKit cannot perceive
the molecule the charges are zero; :attr:`ForceField.note` records every fallback.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL
from crystalflow.structure.elements import HYDROGEN, symbol
from crystalflow.structure.molecule_input import graph_molecule
from crystalflow.structure.molecules import molecule_bonds

#: kJ/mol per eV
EV = 96.48533
#: kJ/mol per kcal/mol
KCAL = 4.184
#: Å a hydrogen's interaction site is moved towards its bonded atom (W99)
H_FORESHORTENING = 0.1

#: W99 (A kJ/mol, B 1/Å, C kJ/mol·Å⁶) of each type with itself
W99: dict[str, tuple[float, float, float]] = {
    name: (a_ev * EV, 1.0 / rho, c_ev * EV)
    for name, (a_ev, rho, c_ev) in {
        "H1": (131.4189333351544, 0.2808988764044944, 2.88510161455102),
        "H2": (3.744610458516663, 0.2808988764044944, 0.0),
        "H3": (1.1991459453373317, 0.2808988764044944, 0.0),
        "H4": (7.92762950379019, 0.2808988764044944, 0.0),
        "C2": (1069.9553298781282, 0.2777777777777778, 14.873659072551003),
        "C3": (2802.11491114293, 0.2777777777777778, 17.637187809497817),
        "C4": (1363.6372616592744, 0.2777777777777778, 10.139986405187829),
        "N1": (998.5869722325546, 0.28735632183908044, 14.58843438442928),
        "N2": (1060.9798727591815, 0.28735632183908044, 14.490802968655059),
        "N3": (1989.266007072781, 0.28735632183908044, 24.631203944610508),
        "N4": (4201.063237934134, 0.28735632183908044, 58.3489699738895),
        "O1": (2498.224174209171, 0.25252525252525254, 13.066545096500727),
        "O2": (2949.909389799026, 0.25252525252525254, 13.327102823949131),
    }.items()
}

#: UFF (x_i Å, D_i kcal/mol) of the elements W99 does not cover (Rappé et al. 1992)
UFF: dict[str, tuple[float, float]] = {
    "B": (4.083, 0.180), "F": (3.364, 0.050), "Si": (4.295, 0.402), "P": (4.147, 0.305),
    "S": (4.035, 0.274), "Cl": (3.947, 0.227), "Ge": (4.280, 0.379), "As": (4.230, 0.309),
    "Se": (4.205, 0.291), "Br": (4.189, 0.251), "Sn": (4.392, 0.567), "Te": (4.470, 0.398),
    "I": (4.500, 0.339),
}
#: UFF-like parameters of an element in neither table (x Å, D kcal/mol)
UFF_DEFAULT = (4.0, 0.3)
#: MM3's exp-6 shape: E = D [MM3_A exp(-MM3_B r/x) - MM3_C (x/r)^6]
MM3_A, MM3_B, MM3_C = 1.84e5, 12.0, 2.25


def uff_exp6(x: float, d_kcal: float) -> tuple[float, float, float]:
    """(A kJ/mol, B 1/Å, C kJ/mol·Å⁶) of the MM3-shaped exp-6 with well distance ``x`` (Å) and depth ``d_kcal``."""
    d = d_kcal * KCAL
    return MM3_A * d, MM3_B / x, MM3_C * d * x**6


class ForceFieldError(ValueError):
    """A molecule the force field cannot be assigned to (bad shapes, no atoms)."""


@dataclass
class ForceField:
    """Per-atom types and charges of one molecule, and its pair parameters.

    ``sites @ x`` gives the interaction sites of the atoms ``x [n, 3]`` (hydrogens foreshortened);
    ``A``, ``B``, ``C`` are ``[n, n]`` (kJ/mol, 1/Å, kJ/mol·Å⁶) for atom i of one molecule and atom j of another.
    """

    z: np.ndarray  #: [n] atomic numbers
    types: list[str]  #: [n] type names (W99 names, or the element symbol for UFF-derived ones)
    charges: np.ndarray  #: [n] atomic charges (e)
    A: np.ndarray  #: [n, n] kJ/mol
    B: np.ndarray  #: [n, n] 1/Å
    C: np.ndarray  #: [n, n] kJ/mol·Å⁶
    sites: np.ndarray  #: [n, n] linear map atoms → interaction sites
    note: list[str] = field(default_factory=list)  #: fallbacks taken (empty when none)

    @property
    def n_atoms(self) -> int:
        return len(self.z)


def atom_types(z: np.ndarray, bonds: np.ndarray) -> tuple[list[str], list[str]]:
    """W99 type (or element symbol) of every atom from the bond graph; and notes on fallbacks."""
    zz = np.asarray(z).astype(np.int64)
    nb: list[list[int]] = [[] for _ in zz]
    for i, j in np.asarray(bonds).reshape(-1, 2):
        nb[i].append(int(j))
        nb[j].append(int(i))
    sym = [symbol(int(v)) for v in zz]
    types, notes = [], []
    for a, s in enumerate(sym):
        deg, nbs = len(nb[a]), [sym[b] for b in nb[a]]
        if s == "H":
            partner = nbs[0] if deg == 1 else None
            if partner == "O":
                o = nb[a][0]
                carbons = [c for c in nb[o] if sym[c] == "C"]
                acid = any(len(nb[c]) == 3 and sum(sym[b] == "O" for b in nb[c]) == 2 for c in carbons)
                types.append("H3" if acid else "H2")
            elif partner == "N":
                types.append("H4")
            else:
                if partner != "C":
                    notes.append(f"H{a + 1} bonded to {partner or f'{deg} atoms'}: typed H1")
                types.append("H1")
        elif s == "C":
            if deg < 2:
                notes.append(f"C{a + 1} with {deg} neighbour(s): typed C2")
            types.append(f"C{min(max(deg, 2), 4)}")
        elif s == "N":
            n_h = nbs.count("H")
            types.append("N1" if deg == 1 else "N2" if n_h == 0 else "N3" if n_h == 1 else "N4")
        elif s == "O":
            types.append("O1" if deg <= 1 else "O2")
        else:
            if s not in UFF:
                notes.append(f"{s}: no UFF parameters in the table, generic exp-6 used")
            types.append(s)
    return types, notes


def type_parameters(t: str) -> tuple[float, float, float]:
    """(A, B, C) of a type with itself."""
    return W99[t] if t in W99 else uff_exp6(*UFF.get(t, UFF_DEFAULT))


def rdkit_charges(z: np.ndarray, x: np.ndarray, bonds: np.ndarray, model: str = DEFAULT_CHARGE_MODEL) -> tuple[np.ndarray, str]:
    """Atomic charges (e, summing to zero) of the molecule by ``model`` (one of
    :data:`~crystalflow.common.vocabulary.CHARGE_MODELS`), and '' or a note on the fallback taken: MMFF94 falls
    back to Gasteiger for molecules it has no types for (e.g. B, Se), and charges are zero where RDKit cannot
    perceive the molecule."""
    try:
        m = graph_molecule(z, x, bonds, bond_orders=True)
        note = ""
        q = None
        if model == "mmff":
            from rdkit.Chem import AllChem

            props = AllChem.MMFFGetMoleculeProperties(m)
            if props is None:
                note = "MMFF94 has no types for this molecule: Gasteiger charges used"
            else:
                q = np.array([props.GetMMFFPartialCharge(i) for i in range(m.GetNumAtoms())])
        if q is None:
            from rdkit.Chem import rdPartialCharges

            rdPartialCharges.ComputeGasteigerCharges(m)
            q = np.array([a.GetDoubleProp("_GasteigerCharge") for a in m.GetAtoms()])
        if not np.isfinite(q).all():
            return np.zeros(len(z)), f"{model} charges not finite: charges are zero"
        return q - q.mean(), note
    except Exception as e:  # RDKit cannot perceive the molecule: no charges
        return np.zeros(len(z)), f"RDKit could not assign bond orders or charges ({type(e).__name__}: {str(e)[:80]}): charges are zero"


def assign(z: np.ndarray, x: np.ndarray, charges: np.ndarray | None = None, charge_model: str = DEFAULT_CHARGE_MODEL) -> ForceField:
    """The force field of one molecule: atomic numbers ``z [n]``, conformer ``x [n, 3]`` (Å).

    Bonds come from :func:`crystalflow.structure.molecules.molecule_bonds`; charges by ``charge_model`` (one of
    :data:`~crystalflow.common.vocabulary.CHARGE_MODELS`: ``gasteiger``, ``mmff``), unless ``charges`` (e) gives
    them.

    Example::

        ff = assign(sc.z, sc.molecule)      # sc: a SymmetricCrystal
        ff.types[:3], ff.charges[:3], ff.note
    """
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    xx = np.asarray(x, dtype=np.float64)
    if zz.size == 0 or xx.shape != (zz.size, 3):
        raise ForceFieldError(f"molecule must be z [n] and x [n, 3] with n > 0, got {zz.shape} and {xx.shape}")
    if not np.isfinite(xx).all():
        raise ForceFieldError("molecule has non-finite coordinates")
    if charge_model not in CHARGE_MODELS:
        raise ForceFieldError(f"unknown charge model {charge_model!r}; known: {', '.join(CHARGE_MODELS)}")
    bonds = molecule_bonds(xx, zz)
    types, notes = atom_types(zz, bonds)
    if charges is None:
        q, why = rdkit_charges(zz, xx, bonds, charge_model)
        if why:
            notes.append(why)
    else:
        q = np.asarray(charges, dtype=np.float64).reshape(-1)
        if q.shape != zz.shape:
            raise ForceFieldError(f"charges must have shape [{zz.size}], got {q.shape}")
    p = np.array([type_parameters(t) for t in types])  # [n, 3]
    a = np.sqrt(np.outer(p[:, 0], p[:, 0]))
    b = 0.5 * (p[:, 1][:, None] + p[:, 1][None, :])
    c = np.sqrt(np.outer(p[:, 2], p[:, 2]))
    sites = np.eye(len(zz))
    for i, j in bonds:
        for h, heavy in ((i, j), (j, i)):
            if zz[h] == HYDROGEN and np.sum(bonds == h) == 1:
                f = H_FORESHORTENING / np.linalg.norm(xx[heavy] - xx[h])
                sites[h, h], sites[h, heavy] = 1.0 - f, f
    return ForceField(z=zz, types=types, charges=q, A=a, B=b, C=c, sites=sites, note=notes)
