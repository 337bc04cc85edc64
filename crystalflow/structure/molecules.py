"""Molecule completion: the atoms of a unit cell -> whole molecules, bonded across cell boundaries.

Bonds come from covalent radii plus a tolerance. Each connected component of the periodic bond graph
is one molecule; a component that reaches its own periodic image is polymeric. All molecules of a
crystal are then put in one atom order (that of the first molecule) by finding the isometry that maps
one onto the other, so x_w and x_s, and every molecule of a cluster, share the atom order.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from crystalflow.common.errors import RejectError
from crystalflow.structure.cif import Crystal
from crystalflow.structure.elements import ATOMIC_MASS, COVALENT_RADIUS, formula, symbol
from crystalflow.structure.geometry import kabsch

#: Å added to the sum of covalent radii to call two atoms bonded (cod-tools uses the same idea)
BOND_TOLERANCE = 0.45
#: the tolerance for bonds to hydrogen: smaller, so short hydrogen bonds (H···O 1.3–1.5 Å in
#: DFT-relaxed cells) do not join molecules into chains
HYDROGEN_BOND_TOLERANCE = 0.25
#: atoms closer than this (Å) cannot both be real
MIN_ATOM_DISTANCE = 0.5
#: molecules related by symmetry superpose better than this (Å RMSD) in the same atom order
CONGRUENCE_RMSD = 0.5


@dataclass
class Molecule:
    """One whole molecule: indices of its atoms in the cell and the lattice shift that unwraps each."""

    atoms: np.ndarray  #: [n] indices into Crystal.frac / Crystal.z, in the crystal's common atom order
    shift: np.ndarray  #: [n, 3] integer lattice shift added to each atom's fractional coordinate

    def frac(self, crystal: Crystal) -> np.ndarray:
        """[n, 3] unwrapped fractional coordinates."""
        return crystal.frac[self.atoms] + self.shift

    def cart(self, crystal: Crystal) -> np.ndarray:
        """[n, 3] Cartesian coordinates of the whole molecule (Å)."""
        return self.frac(crystal) @ crystal.lattice


def _shift_range(lattice: np.ndarray, radius: float) -> np.ndarray:
    """Integer lattice shifts that cover every point within ``radius`` Å of any point in the cell."""
    heights = 1.0 / np.linalg.norm(np.linalg.inv(lattice), axis=0)  # interplanar spacings
    n = np.ceil(radius / heights).astype(int)
    grids = np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def periodic_bonds(crystal: Crystal, tolerance: float = BOND_TOLERANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bonds of the periodic structure as (i, j, shift): atom i in cell 0 bonds atom j in cell ``shift``.

    Raises ``overlapping_atoms`` when two atoms are closer than :data:`MIN_ATOM_DISTANCE`.
    """
    radii = COVALENT_RADIUS[crystal.z]
    max_bond = 2 * radii.max() + tolerance
    shifts = _shift_range(crystal.lattice, max_bond)
    cart = crystal.cart
    n = len(cart)
    images = (crystal.frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3) @ crystal.lattice
    tree = cKDTree(images)
    pairs = tree.query_ball_point(cart, r=max_bond, return_sorted=False)
    lengths = np.fromiter((len(p) for p in pairs), dtype=np.int64, count=n)
    i = np.repeat(np.arange(n), lengths)
    k = np.concatenate([np.asarray(p, dtype=np.int64) for p in pairs]) if n else np.zeros(0, np.int64)
    j, s = k % n, k // n
    d = np.linalg.norm(images[k] - cart[i], axis=1)
    self_pair = (j == i) & np.all(shifts[s] == 0, axis=1)
    too_close = (d < MIN_ATOM_DISTANCE) & ~self_pair
    if too_close.any():
        a = int(np.flatnonzero(too_close)[0])
        raise RejectError("overlapping_atoms", f"atoms {i[a]} and {j[a]} are {d[a]:.2f} Å apart")
    tol = np.where((crystal.z[i] == 1) | (crystal.z[j] == 1), min(tolerance, HYDROGEN_BOND_TOLERANCE), tolerance)
    bonded = (d < radii[i] + radii[j] + tol) & ~self_pair
    return i[bonded], j[bonded], shifts[s[bonded]]


def molecule_bonds(mol: np.ndarray, z: np.ndarray, tolerance: float = BOND_TOLERANCE) -> np.ndarray:
    """Bonds ``[B, 2]`` (i < j) of one molecule ``[n, 3]``, by the rule of :func:`periodic_bonds`.

    Atoms are bonded when closer than r_cov(i) + r_cov(j) + ``tolerance`` (at most
    :data:`HYDROGEN_BOND_TOLERANCE` for bonds to hydrogen).
    """
    x = np.asarray(mol, dtype=np.float64)
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    r = COVALENT_RADIUS[zz]
    hydrogen = (zz[:, None] == 1) | (zz[None, :] == 1)
    tol = np.where(hydrogen, min(tolerance, HYDROGEN_BOND_TOLERANCE), tolerance)
    i, j = np.nonzero(np.triu(d < r[:, None] + r[None] + tol, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)


def find_molecules(crystal: Crystal, tolerance: float = BOND_TOLERANCE) -> list[Molecule]:
    """Whole molecules of the cell, each atom of the cell in exactly one, unwrapped across boundaries."""
    i, j, shift = periodic_bonds(crystal, tolerance)
    n = len(crystal.z)
    order = np.argsort(i, kind="stable")
    i, j, shift = i[order], j[order], shift[order]
    start = np.searchsorted(i, np.arange(n + 1))
    offset = np.full((n, 3), np.iinfo(np.int64).min, dtype=np.int64)
    molecules = []
    for root in range(n):
        if offset[root, 0] != np.iinfo(np.int64).min:
            continue
        offset[root] = 0
        members = [root]
        queue = deque([root])
        while queue:
            a = queue.popleft()
            for e in range(start[a], start[a + 1]):
                b, want = j[e], offset[a] + shift[e]
                if offset[b, 0] == np.iinfo(np.int64).min:
                    offset[b] = want
                    members.append(b)
                    queue.append(b)
                elif not np.array_equal(offset[b], want):
                    raise RejectError(
                        "polymeric",
                        f"atom {b} ({symbol(crystal.z[b])}) bonds to its own image {tuple((want - offset[b]).tolist())}",
                    )
        atoms = np.array(sorted(members), dtype=np.int64)
        molecules.append(Molecule(atoms=atoms, shift=offset[atoms]))
    return [_wrap_centre(m, crystal) for m in molecules]


def _wrap_centre(mol: Molecule, crystal: Crystal) -> Molecule:
    """Shift a molecule by a lattice vector so that its centre of mass lies in the unit cell."""
    com = centre_of_mass(mol.frac(crystal), crystal.z[mol.atoms])
    return Molecule(atoms=mol.atoms, shift=mol.shift - np.floor(com).astype(np.int64))


def centre_of_mass(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mass-weighted centre of the points ``x`` [..., n, 3] with atomic numbers ``z`` [n]."""
    w = ATOMIC_MASS[z]
    return np.tensordot(w / w.sum(), x, axes=([0], [-2]))


#: Å: a molecule is centrosymmetric when inverting it through its centre of mass moves no atom farther than this
#: onto an atom of the same element
INVERSION_TOLERANCE = 0.25


def inversion_partners(x: np.ndarray, z: np.ndarray, tol: float = INVERSION_TOLERANCE) -> np.ndarray | None:
    """Permutation ``p`` with ``x[p] - c ≈ -(x - c)`` (``c`` the centre of mass, each atom within ``tol`` Å of its
    partner's inverted position, same element), or None when the molecule has no inversion centre. An atom at the
    centre is its own partner.

    Example::

        p = inversion_partners(x, z)
        if p is not None:
            x_sym = c + 0.5 * ((x - c) - (x[p] - c))   # exactly centrosymmetric
    """
    xx = np.asarray(x, dtype=np.float64)
    zz = np.asarray(z, dtype=np.int64)
    rel = xx - centre_of_mass(xx, zz)
    perm = np.full(len(zz), -1, dtype=np.int64)
    for element in np.unique(zz):
        idx = np.flatnonzero(zz == element)
        cost = np.linalg.norm(rel[idx][:, None, :] + rel[idx][None, :, :], axis=-1)  # |x_i - c + (x_j - c)|
        rows, cols = linear_sum_assignment(cost)
        if cost[rows, cols].max() > tol:
            return None
        perm[idx[rows]] = idx[cols]
    return perm


def match_atoms(ref: np.ndarray, z_ref: np.ndarray, mov: np.ndarray, z_mov: np.ndarray, max_tries: int = 256) -> tuple[np.ndarray, float]:
    """Permutation ``perm`` with ``mov[perm] ≈ ref`` up to an isometry (rotation, maybe improper).

    Anchor atoms of ``ref`` are matched to candidates of ``mov`` with the same element and the same
    sorted distances to all other atoms; each consistent anchor match fixes an isometry, and the
    Hungarian method assigns all atoms under it. Returns the permutation and its RMSD (Å).
    """
    n = len(ref)
    if n != len(mov) or not np.array_equal(np.sort(z_ref), np.sort(z_mov)):
        return np.arange(len(mov)), float("inf")
    if n == 1:
        return np.zeros(1, dtype=np.int64), 0.0
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    d_mov = np.linalg.norm(mov[:, None] - mov[None], axis=-1)
    desc_ref, desc_mov = np.sort(d_ref, axis=1), np.sort(d_mov, axis=1)
    mismatch = np.abs(desc_ref[:, None, :] - desc_mov[None, :, :]).max(-1)
    mismatch[z_ref[:, None] != z_mov[None, :]] = np.inf
    tol = CONGRUENCE_RMSD
    candidates = [np.flatnonzero(row < tol) for row in mismatch]
    anchors = _anchors(ref, [len(c) for c in candidates])
    best_perm, best_rmsd = np.arange(n), float("inf")
    element_penalty = 1e6 * (z_ref[:, None] != z_mov[None, :])
    tries = 0
    for combo in _consistent(anchors, candidates, d_ref, d_mov, tol):
        for reflect in (False, True):
            r, t, _ = kabsch(ref[anchors], mov[list(combo)], allow_reflection=reflect)
            if reflect and np.linalg.det(r) > 0:
                continue
            moved = ref @ r.T + t
            cost = ((moved[:, None, :] - mov[None, :, :]) ** 2).sum(-1) + element_penalty
            rows, cols = linear_sum_assignment(cost)
            rmsd = kabsch(ref, mov[cols], allow_reflection=True)[2]
            if rmsd < best_rmsd:
                best_perm, best_rmsd = cols, rmsd
        tries += 1
        if best_rmsd < 1e-2 or tries >= max_tries:
            break
    return best_perm, best_rmsd


def _anchors(x: np.ndarray, n_candidates: list[int]) -> list[int]:
    """Up to four well-spread reference atoms, the first being the one with the fewest candidates."""
    a0 = int(np.lexsort((np.arange(len(x)), n_candidates))[0])
    anchors = [a0]
    a1 = int(np.argmax(np.linalg.norm(x - x[a0], axis=1)))
    if np.linalg.norm(x[a1] - x[a0]) < 1e-6:
        return anchors
    anchors.append(a1)
    u = (x[a1] - x[a0]) / np.linalg.norm(x[a1] - x[a0])
    perp = (x - x[a0]) - np.outer((x - x[a0]) @ u, u)
    a2 = int(np.argmax(np.linalg.norm(perp, axis=1)))
    if np.linalg.norm(perp[a2]) < 0.1:
        return anchors
    anchors.append(a2)
    normal = np.cross(x[a1] - x[a0], x[a2] - x[a0])
    normal /= np.linalg.norm(normal)
    height = np.abs((x - x[a0]) @ normal)
    a3 = int(np.argmax(height))
    if height[a3] > 0.3:
        anchors.append(a3)
    return anchors


def _consistent(anchors, candidates, d_ref, d_mov, tol):
    """Yield tuples of ``mov`` atoms for the anchors whose mutual distances match those of ``ref``."""

    def extend(prefix: list[int], k: int):
        if k == len(anchors):
            yield tuple(prefix)
            return
        a = anchors[k]
        for c in candidates[a]:
            if c in prefix:
                continue
            if all(abs(d_mov[c, p] - d_ref[a, anchors[m]]) < tol for m, p in enumerate(prefix)):
                prefix.append(int(c))
                yield from extend(prefix, k + 1)
                prefix.pop()

    yield from extend([], 0)


def common_order(crystal: Crystal, molecules: list[Molecule]) -> list[Molecule]:
    """Reorder every molecule's atoms to the order of the first; reject non-congruent molecules."""
    ref = molecules[0]
    ref_x, ref_z = ref.cart(crystal), crystal.z[ref.atoms]
    out = [ref]
    for mol in molecules[1:]:
        perm, rmsd = match_atoms(ref_x, ref_z, mol.cart(crystal), crystal.z[mol.atoms])
        if rmsd > CONGRUENCE_RMSD:
            shown = "no atom-by-atom match" if np.isinf(rmsd) else f"best RMSD {rmsd:.2f} Å"
            raise RejectError(
                "z_prime_gt_1", f"symmetry-independent molecules of one formula differ ({shown})"
            )
        out.append(Molecule(atoms=mol.atoms[perm], shift=mol.shift[perm]))
    return out


def check_single_component(crystal: Crystal, molecules: list[Molecule]) -> str:
    """Formula of the one kind of molecule; raises ``multi_component`` when there are several."""
    formulas = sorted({formula(crystal.z[m.atoms]) for m in molecules})
    if len(formulas) > 1:
        shown = ", ".join(formulas[:4]) + (" ..." if len(formulas) > 4 else "")
        raise RejectError("multi_component", f"{len(formulas)} kinds of molecule: {shown}")
    return formulas[0]


#: spglib position tolerance (Å) for finding the symmetry of P1 cells; DFT-relaxed cells need ~0.1
SYMPREC = 0.1


def z_prime(crystal: Crystal, n_molecules: int) -> float:
    """Molecules per asymmetric unit: molecules in the cell / symmetry operations of the space group.

    A cell given in P1 carries no operators, so its symmetry is found with spglib first.
    """
    n_ops = crystal.n_symops
    if n_ops == 1 and n_molecules > 1:
        import spglib  # only P1 cells need it (keeps model-only installs free of it)

        data = spglib.get_symmetry_dataset((crystal.lattice, crystal.frac, crystal.z), symprec=SYMPREC)
        if data is not None:
            n_ops = len(data.rotations)
    return n_molecules / n_ops
