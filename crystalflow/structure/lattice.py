"""Cluster → crystal: the lattice and space group implied by a finite cluster of identical molecules.

A cluster (central molecule first, the same atom order in every molecule, as built by
:func:`crystalflow.structure.cluster.build_cluster` or predicted by a model) fixes, for every molecule
``k``, the rigid motion ``x ↦ R_k x + t_k`` (proper or improper) that maps the central molecule onto
it. Two molecules with the same orientation (``R_j ≈ R_k``) are related by a pure translation, so the
differences of their centres are lattice vectors. Those vectors give a basis of the translation
lattice (least-squares fitted), Niggli-reduced; the distinct orientations, wrapped into that cell,
are the molecules of the periodic structure whose space group spglib then determines.

The lattice found is the primitive (translation) lattice, so ``Z`` counts molecules per primitive
cell (2 for a C-centred cell with 4 molecules in the conventional cell).

When the cluster does not describe a crystal — fewer than three independent translations, or
translations that are not integer combinations of one basis within ``tol`` — :class:`LatticeError`
is raised with a one-line reason; a noisy cluster that still fits reports its misfit in
``RecoveredCrystal.residual``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import spglib

from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import centre_of_mass

#: Å: a translation vector off the fitted lattice, or a duplicate molecule off its image, by more fails
LATTICE_TOL = 0.3
#: degrees: two molecules whose relative rotation is smaller have the same orientation
ANGLE_TOL = 5.0
#: Å: spglib's position tolerance for the space group
SYMPREC = 0.1
#: Å: a lattice vector shorter than this would overlap a molecule with its own image
MIN_TRANSLATION = 2.5
#: a basis vector must stand this far (Å) off the line / plane of the previous ones to be independent
MIN_INDEPENDENCE = 1.0
#: smallest/largest extent below which a molecule counts as planar (its motions are not composed)
PLANAR_REL = 0.05
#: composed motions are kept up to this multiple of the cluster's radius from the centre
CLOSURE_REACH = 1.5
#: rounds of composing the cluster's motions
CLOSURE_ROUNDS = 2
#: at most this many motions are kept
MAX_MOTIONS = 300
#: denominators tried when the shortest independent translations span only a sublattice
DENOMINATORS = (1, 2, 3, 4, 6)


class LatticeError(ValueError):
    """The cluster does not define a consistent crystal lattice (the message says why, in one line)."""


@dataclass
class RecoveredCrystal:
    """A periodic crystal recovered from a cluster."""

    lattice: np.ndarray  #: [3, 3] Niggli-reduced lattice vectors a, b, c as rows (Å), right-handed
    frac: np.ndarray  #: [Z·n, 3] fractional coordinates of every atom in the cell, in [0, 1)
    z: np.ndarray  #: [Z·n] atomic numbers
    sg_number: int  #: international space-group number (spglib at ``symprec``)
    sg_symbol: str  #: Hermann–Mauguin symbol
    n_molecules: int  #: Z: molecules in the (primitive, reduced) cell
    lattice_residual: float  #: RMS distance (Å) of the cluster's translations from the fitted lattice
    rigid_rmsd: float  #: largest Kabsch RMSD (Å) of the central molecule superposed on another

    @property
    def residual(self) -> float:
        """Overall misfit (Å): the larger of the lattice residual and the rigid-motion RMSD."""
        return max(self.lattice_residual, self.rigid_rmsd)

    @property
    def cell_parameters(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c, α, β, γ) in Å and degrees."""
        return cell_parameters(self.lattice)

    @property
    def cart(self) -> np.ndarray:
        """[Z·n, 3] Cartesian coordinates (Å)."""
        return self.frac @ self.lattice


def cell_parameters(lattice: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(a, b, c, α, β, γ) of a lattice with vectors as rows (Å, degrees)."""
    a, b, c = np.asarray(lattice, dtype=np.float64)

    def angle(u, v):
        return math.degrees(math.acos(float(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))

    la, lb, lc = (float(np.linalg.norm(v)) for v in (a, b, c))
    return la, lb, lc, angle(b, c), angle(a, c), angle(a, b)


def niggli_cell(lattice: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Niggli-reduced lattice (rows), right-handed; :class:`LatticeError` if spglib cannot reduce it."""
    reduced = spglib.niggli_reduce(np.asarray(lattice, dtype=np.float64), eps=eps)
    if reduced is None:
        raise LatticeError("Niggli reduction failed")
    reduced = np.asarray(reduced, dtype=np.float64)
    return -reduced if np.linalg.det(reduced) < 0 else reduced


def _rotation_angle(r: np.ndarray) -> float:
    """Angle (degrees) of a proper rotation."""
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def _same_orientation(r1: np.ndarray, r2: np.ndarray, angle_tol: float) -> bool:
    rel = r1 @ r2.T
    return bool(np.linalg.det(rel) > 0 and _rotation_angle(rel) < angle_tol)


def rigid_motions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Motions ``x ↦ R x + t`` of molecule 0 onto each molecule: ``R`` [M, 3, 3] (improper where a
    reflection fits better), ``t`` [M, 3] and Kabsch RMSDs [M] (Å)."""
    m = x.shape[0]
    rots, trans, rmsd = np.empty((m, 3, 3)), np.empty((m, 3)), np.empty(m)
    for k in range(m):
        rots[k], trans[k], rmsd[k] = kabsch(x[0], x[k], allow_reflection=True)
    return rots, trans, rmsd


def orientation_classes(rots: np.ndarray, angle_tol: float = ANGLE_TOL) -> np.ndarray:
    """A class label per rotation [M, 3, 3]: molecules with the same label are related by a pure
    translation (relative rotation under ``angle_tol`` degrees, same handedness); labels number the
    classes in order of first appearance."""
    labels = np.full(len(rots), -1)
    reps: list[int] = []
    for k in range(len(rots)):
        for label, j in enumerate(reps):
            if _same_orientation(rots[k], rots[j], angle_tol):
                labels[k] = label
                break
        else:
            labels[k] = len(reps)
            reps.append(k)
    return labels


def _class_differences(centres: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Differences of centres within each class (later minus earlier), [p, 3]."""
    out = [np.zeros((0, 3))]
    for label in np.unique(labels):
        p = centres[labels == label]
        j, k = np.tril_indices(len(p), -1)
        out.append(p[j] - p[k])
    return np.concatenate(out)


def translation_vectors(
    rots: np.ndarray, trans: np.ndarray, centres: np.ndarray, labels: np.ndarray, angle_tol: float = ANGLE_TOL
) -> np.ndarray:
    """Lattice vectors implied by the cluster: differences of centres of same-orientation molecules.

    When those span fewer than three dimensions (a long axis with no translate in the cluster), the
    centres of composed motions ``g_a(c_b)`` of an orientation already present are added: the crystal
    is closed under its symmetry operations, so they are molecule centres too.
    """
    vectors = _class_differences(centres, labels)
    if len(vectors) and np.linalg.matrix_rank(vectors, tol=MIN_INDEPENDENCE) == 3:
        return vectors
    reps = [int(np.flatnonzero(labels == c)[0]) for c in range(labels.max() + 1)]
    points, point_labels = [centres], [labels]
    for a in range(len(rots)):
        for b in range(len(rots)):
            r = rots[a] @ rots[b]
            for label, j in enumerate(reps):
                if _same_orientation(r, rots[j], angle_tol):
                    points.append((rots[a] @ centres[b] + trans[a])[None])
                    point_labels.append(np.array([label]))
                    break
    vectors = _class_differences(np.concatenate(points), np.concatenate(point_labels))
    return vectors[np.linalg.norm(vectors, axis=1) > MIN_INDEPENDENCE]  # a composed motion landing on a known molecule


def _hermite_basis(rows: np.ndarray) -> np.ndarray:
    """Three integer rows generating the same lattice as the integer ``rows`` [m, 3] (rank 3)."""
    a = [[int(v) for v in row] for row in rows if any(row)]
    basis = []
    for col in range(3):
        while True:
            nz = [r for r in a if r[col] != 0]
            if len(nz) <= 1:
                break
            pivot = min(nz, key=lambda r: abs(r[col]))
            a = [r if r is pivot or r[col] == 0 else [u - (r[col] // pivot[col]) * p for u, p in zip(r, pivot)] for r in a]
            a = [r for r in a if any(r)]
        nz = [r for r in a if r[col] != 0]
        if not nz:
            raise LatticeError("translations span fewer than 3 dimensions")
        basis.append(nz[0])
        a = [r for r in a if r is not nz[0]]
    return np.array(basis, dtype=np.int64)


def _initial_basis(vectors: np.ndarray) -> np.ndarray:
    """The shortest vector, the shortest off its line, the shortest off their plane."""
    order = np.argsort(np.linalg.norm(vectors, axis=1))
    basis: list[np.ndarray] = []
    for i in order:
        v = vectors[i]
        if not basis:
            basis.append(v)
            continue
        q, _ = np.linalg.qr(np.stack(basis).T)
        off = np.linalg.norm(v - q @ (q.T @ v))
        if off > MIN_INDEPENDENCE:
            basis.append(v)
            if len(basis) == 3:
                return np.stack(basis)
    raise LatticeError(f"only {len(basis)} independent translation(s) among the cluster's molecules (need 3)")


def fit_lattice(vectors: np.ndarray, tol: float = LATTICE_TOL) -> tuple[np.ndarray, float]:
    """Basis (rows) of the lattice generated by translation ``vectors`` [m, 3], least-squares fitted.

    Every vector must be an integer combination of the basis within ``tol`` Å. Returns the basis
    (not reduced) and the RMS misfit of the vectors (Å); :class:`LatticeError` otherwise.
    """
    start = _initial_basis(vectors)
    frac = vectors @ np.linalg.inv(start)
    worst = np.inf
    for d in DENOMINATORS:
        err = np.linalg.norm((frac - np.round(frac * d) / d) @ start, axis=1)
        if d == 1:
            worst = float(err.max())
        if err.max() <= tol:
            break
    else:
        raise LatticeError(
            f"translations are not integer combinations of one lattice (worst off by {worst:.2f} Å > {tol:g} Å)"
        )
    ints = np.concatenate([np.round(frac * d).astype(np.int64), d * np.eye(3, dtype=np.int64)])
    basis = _hermite_basis(ints) @ start / d
    coeff = np.round(vectors @ np.linalg.inv(basis))
    fitted, *_ = np.linalg.lstsq(coeff, vectors, rcond=None)
    err = np.linalg.norm(coeff @ fitted - vectors, axis=1)
    if err.max() > tol:
        raise LatticeError(f"least-squares lattice misses a translation by {err.max():.2f} Å > {tol:g} Å")
    return fitted, float(np.sqrt(np.mean(err**2)))


def is_planar(x: np.ndarray, rel: float = PLANAR_REL) -> bool:
    """Whether points [n, 3] are (near-)planar: their rigid motion is then known only up to the
    reflection through their plane, and motions cannot be composed reliably."""
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return bool(s[-1] <= rel * s[0])


def close_motions(
    rots: np.ndarray, trans: np.ndarray, c0: np.ndarray, radius: float, tol: float = LATTICE_TOL,
    angle_tol: float = ANGLE_TOL, rounds: int = CLOSURE_ROUNDS,
) -> tuple[np.ndarray, np.ndarray]:
    """The motions ``rots``, ``trans`` (the cluster's, kept first) and their products with them, repeated
    ``rounds`` times, that put the centre ``c0`` within ``radius`` of itself; one motion per distinct
    molecule (same orientation and centre within ``tol``). The crystal is closed under its symmetry
    operations, so these are molecules of it the cluster does not hold."""
    out_r, out_t = list(rots), list(trans)
    out_c = [r @ c0 + t for r, t in zip(rots, trans)]
    frontier = list(range(len(rots)))
    for _ in range(rounds):
        new = []
        for a in frontier:
            for b in range(len(rots)):
                r = out_r[a] @ rots[b]
                t = out_r[a] @ trans[b] + out_t[a]
                c = r @ c0 + t
                if np.linalg.norm(c - c0) > radius:
                    continue
                if len(out_r) >= MAX_MOTIONS:
                    break
                near = np.flatnonzero(np.linalg.norm(np.array(out_c) - c, axis=1) < tol)
                if len(near):
                    continue
                out_r.append(r)
                out_t.append(t)
                out_c.append(c)
                new.append(len(out_r) - 1)
        if not new:
            break
        frontier = new
    return np.array(out_r), np.array(out_t)


def _lattice_of(rots, trans, c0, tol, angle_tol):
    """Reduced lattice, its residual, orientation labels and centres of the molecules ``R c0 + t``."""
    centres = np.einsum("mij,j->mi", rots, c0) + trans
    labels = orientation_classes(rots, angle_tol)
    vectors = translation_vectors(rots, trans, centres, labels, angle_tol)
    if not len(vectors):
        raise LatticeError("no two molecules share an orientation: no translations")
    short = np.linalg.norm(vectors, axis=1).min()
    if short < MIN_TRANSLATION:
        raise LatticeError(f"two molecules with the same orientation are {short:.2f} Å apart (< {MIN_TRANSLATION} Å)")
    basis, residual = fit_lattice(vectors, tol)
    if np.linalg.det(basis) < 0:
        basis = -basis
    return niggli_cell(basis), residual, labels, centres


def recover_crystal(
    x: np.ndarray, z: np.ndarray, tol: float = LATTICE_TOL, angle_tol: float = ANGLE_TOL, symprec: float = SYMPREC
) -> RecoveredCrystal:
    """The periodic crystal implied by a cluster ``x`` [M, n, 3] of identical molecules, atomic numbers ``z`` [n].

    ``tol`` (Å) bounds how far a translation may lie off the fitted lattice, ``angle_tol`` (degrees)
    how far two molecules may be rotated against each other and still count as translates, and
    ``symprec`` (Å) is spglib's tolerance for the space group. Raises :class:`LatticeError` when no
    consistent lattice exists.

    Example::

        crystal = read_cif(path)
        molecules, _, _ = select(crystal, BuildSettings())
        cluster = build_cluster(crystal, molecules)
        rec = recover_crystal(cluster.x, cluster.z)
        rec.sg_number, rec.sg_symbol, rec.cell_parameters, rec.n_molecules   # e.g. 14, 'P2_1/c', (...), 4
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.int64)
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[1] != len(z) or x.shape[0] < 4:
        raise LatticeError(f"need a cluster [M >= 4, n, 3] with n = len(z) = {len(z)}, got shape {x.shape}")
    rots, trans, rmsd = rigid_motions(x)
    centres = centre_of_mass(x, z)  # [M, 3]
    radius = CLOSURE_REACH * float(np.linalg.norm(centres - centres[0], axis=1).max())
    attempts = [lambda: (rots, trans)]
    if not is_planar(x[0]):  # the cluster's motions, then (only if they fail) their closure
        attempts.append(lambda: close_motions(rots, trans, centres[0], radius, tol, angle_tol))
    error = None
    for attempt in attempts:
        rots_try, trans_try = attempt()
        try:
            lattice, lattice_residual, labels, centres_try = _lattice_of(rots_try, trans_try, centres[0], tol, angle_tol)
            rots, trans, centres = rots_try, trans_try, centres_try
            break
        except LatticeError as e:
            error = error or e  # the cluster's own reason is the one reported
    else:
        raise error
    inv = np.linalg.inv(lattice)
    x0 = x[0]

    frac_atoms, z_atoms = [], []
    for label in range(labels.max() + 1):
        k = int(np.flatnonzero(labels == label)[0])
        shift = np.floor(centres[k] @ inv)
        atoms = x[k] if k < len(x) else x0 @ rots[k].T + trans[k]
        frac_atoms.append(atoms @ inv - shift)
        z_atoms.append(z)
    frac = np.concatenate(frac_atoms)
    frac -= np.floor(frac)
    z_all = np.concatenate(z_atoms)
    dataset = spglib.get_symmetry_dataset((lattice, frac, z_all), symprec=symprec)
    if dataset is None:
        raise LatticeError(f"spglib found no space group: {spglib.get_error_message()}")
    return RecoveredCrystal(
        lattice=lattice,
        frac=frac,
        z=z_all,
        sg_number=int(dataset.number),
        sg_symbol=str(dataset.international),
        n_molecules=int(labels.max() + 1),
        lattice_residual=lattice_residual,
        rigid_rmsd=float(rmsd.max()),
    )


def primitive_reduced_cell(lattice: np.ndarray, frac: np.ndarray, z: np.ndarray, symprec: float = SYMPREC) -> np.ndarray:
    """Niggli-reduced primitive cell (rows) of a periodic structure, as spglib finds it at ``symprec``."""
    prim = spglib.standardize_cell((lattice, frac, z), to_primitive=True, no_idealize=True, symprec=symprec)
    if prim is None:
        raise LatticeError(f"spglib found no primitive cell: {spglib.get_error_message()}")
    return niggli_cell(prim[0])


def cells_agree(lattice1: np.ndarray, lattice2: np.ndarray, rel: float = 0.01) -> bool:
    """Whether two reduced cells have the same lengths and angles within the relative tolerance ``rel``."""
    p1, p2 = np.array(cell_parameters(lattice1)), np.array(cell_parameters(lattice2))
    return bool(np.all(np.abs(p1 - p2) <= rel * np.abs(p2)))
