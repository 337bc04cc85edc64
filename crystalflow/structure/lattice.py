"""Cluster → crystal: the lattice, space group and asymmetric molecule implied by a finite cluster of
identical molecules.

A cluster (central molecule first, the same atom order in every molecule, as built by
:func:`crystalflow.structure.cluster.build_cluster` or predicted by a model) fixes, for every molecule
``k``, the rigid motion ``x ↦ R_k x + t_k`` (proper or improper) that maps the central molecule onto
it. Two molecules with the same orientation are related by a pure translation, so the differences of
their centres are lattice vectors. Those vectors give a basis of the translation lattice
(least-squares fitted, Niggli-reduced). In that basis every motion's rotation is an integer matrix
``W_k``; the ``W_k`` are closed into the crystal's point group (which fills in orientations the
cluster does not hold), and the operators' translations are solved, in the least-squares sense, from
the cluster's motions and the group law ``w(W_a W_b) = W_a w_b + w_a`` (mod 1). The result is an
exactly symmetric :class:`~crystalflow.structure.crystal.SymmetricCrystal` — the central molecule and
the space group's operators — whose space group spglib names.

The lattice found is the primitive (translation) lattice, so ``Z`` counts molecules per primitive
cell (2 for a C-centred cell with 4 molecules in the conventional cell).

When the cluster does not describe a crystal — fewer than three independent translations (its
molecules lie in one layer), translations that are not integer combinations of one basis within
``tol``, motions that are no symmetry of the lattice — :class:`LatticeError` is raised with a one-line
reason; a noisy cluster that still fits reports its misfit in ``RecoveredCrystal.residual``.
Planar molecules fix their motions only up to the reflection through their plane; the one that is a
symmetry of the lattice is taken.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import spglib

from crystalflow.structure.crystal import SYMPREC, SymmetricCrystal
from crystalflow.structure.geometry import batched_rotations, kabsch
from crystalflow.structure.molecules import centre_of_mass

#: Å: a translation vector off the fitted lattice, or a duplicate molecule off its image, by more fails
LATTICE_TOL = 0.3
#: degrees: two molecules whose relative rotation is smaller have the same orientation
ANGLE_TOL = 5.0
#: Å: a lattice vector shorter than this would overlap a molecule with its own image
MIN_TRANSLATION = 2.5
#: a basis vector must stand this far (Å) off the line / plane of the previous ones to be independent
MIN_INDEPENDENCE = 1.0
#: smallest/largest extent below which a molecule counts as planar (its motions are not composed)
PLANAR_REL = 0.05
#: translations from composed motions are kept up to this multiple of the cluster's radius
COMPOSED_REACH = 4.0
#: rounds of multiplying motions by the cluster's (products of up to this many + 1 motions)
COMPOSED_ROUNDS = 2
#: denominators tried when the shortest independent translations span only a sublattice
DENOMINATORS = (1, 2, 3, 4, 6)
#: the largest crystallographic point group
MAX_POINT_GROUP = 48
#: Tolerances for noisy clusters (model predictions): translations off the lattice by up to 1.5 Å,
#: orientations off by up to 30° (distinct operators of a point group differ by ≥ 60° or in handedness)
NOISY_TOL, NOISY_ANGLE_TOL = 1.5, 30.0
#: fractions: how far the solved translations may break the group law (≈ 0.01 Å in a 10 Å cell)
GROUP_LAW_TOL = 1e-3
#: translations tried as basis vectors by the robust (noisy-cluster) lattice fit
ROBUST_CANDIDATES = 10
#: a noisy cluster must keep at least this fraction of its molecules on the symmetric crystal
MIN_INLIER_FRACTION = 0.5


class LatticeError(ValueError):
    """The cluster does not define a consistent crystal lattice (the message says why, in one line)."""


@dataclass
class RecoveredCrystal:
    """A periodic crystal recovered from a cluster."""

    crystal: SymmetricCrystal  #: the central molecule and the space group's operators in the reduced cell
    sg_number: int  #: international space-group number (spglib at ``symprec``)
    sg_symbol: str  #: Hermann–Mauguin symbol
    lattice_residual: float  #: RMS distance (Å) of the cluster's translations from the fitted lattice
    symmetry_residual: float  #: RMS distance (Å) of the cluster's molecule centres from the symmetric crystal's
    rigid_rmsd: float  #: largest Kabsch RMSD (Å) of the central molecule superposed on another
    ops: np.ndarray  #: [M] for each cluster molecule, the operator of ``crystal`` that makes it
    shifts: np.ndarray  #: [M, 3] and the integer lattice shift added after the operator
    inliers: int  #: cluster molecules within ``tol`` of their molecule in ``crystal`` (all, unless robust)

    @property
    def lattice(self) -> np.ndarray:
        """[3, 3] Niggli-reduced lattice vectors a, b, c as rows (Å), right-handed."""
        return self.crystal.lattice

    @property
    def n_molecules(self) -> int:
        """Z: molecules in the (primitive, reduced) cell."""
        return self.crystal.n_molecules

    @property
    def frac(self) -> np.ndarray:
        """[Z·n, 3] fractional coordinates of every atom in the cell, in [0, 1)."""
        return self.crystal.cell_atoms()[0]

    @property
    def z(self) -> np.ndarray:
        """[Z·n] atomic numbers of the cell's atoms."""
        return self.crystal.cell_atoms()[1]

    @property
    def residual(self) -> float:
        """Overall misfit (Å): the largest of the lattice and symmetry residuals and the rigid-motion RMSD."""
        return max(self.lattice_residual, self.symmetry_residual, self.rigid_rmsd)

    @property
    def cell_parameters(self) -> tuple[float, float, float, float, float, float]:
        """(a, b, c, α, β, γ) in Å and degrees."""
        return cell_parameters(self.lattice)

    @property
    def cart(self) -> np.ndarray:
        """[Z·n, 3] Cartesian coordinates (Å)."""
        return self.frac @ self.lattice

    def cluster_like_input(self, crystal: SymmetricCrystal | None = None) -> np.ndarray:
        """[M, n, 3] the input cluster's molecules, in its order, rebuilt from ``crystal`` (default: the
        recovered one; pass a relaxed copy to get the relaxed cluster). Cartesian, in the crystal's frame."""
        crystal = self.crystal if crystal is None else crystal
        f = crystal.molecule_frac()
        img = np.einsum("mij,nj->mni", crystal.rotations[self.ops], f) + (crystal.translations[self.ops] + self.shifts)[:, None, :]
        return img @ crystal.lattice


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


def rigid_motions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Motions ``x ↦ R x + t`` of molecule 0 onto each molecule: ``R`` [M, 3, 3] (improper where a
    reflection fits better), ``t`` [M, 3] and Kabsch RMSDs [M] (Å)."""
    m = x.shape[0]
    rots, trans, rmsd = np.empty((m, 3, 3)), np.empty((m, 3)), np.empty(m)
    for k in range(m):
        rots[k], trans[k], rmsd[k] = kabsch(x[0], x[k], allow_reflection=True)
    return rots, trans, rmsd


def _turn_distance(angle_deg: float) -> float:
    """Frobenius distance ‖R₁ − R₂‖ of two rotations that differ by a turn of ``angle_deg`` degrees."""
    return 2.0 * math.sqrt(2.0) * math.sin(math.radians(angle_deg) / 2.0)


def orientation_classes(rots: np.ndarray, angle_tol: float = ANGLE_TOL) -> np.ndarray:
    """A class label per rotation [M, 3, 3]: molecules with the same label are related by a pure
    translation (relative rotation under ``angle_tol`` degrees; a proper and an improper one never
    share a label at such tolerances); labels number the classes in order of first appearance, each
    rotation joining the first class whose first member is near it (vectorised)."""
    limit = _turn_distance(angle_tol)
    labels = np.full(len(rots), -1)
    n = 0
    while (labels < 0).any():
        k = int(np.flatnonzero(labels < 0)[0])
        near = np.linalg.norm(rots - rots[k], axis=(1, 2)) < limit
        labels[(labels < 0) & near] = n
        n += 1
    return labels


def translate_classes(x: np.ndarray, angle_tol: float = ANGLE_TOL) -> np.ndarray:
    """A class label per molecule of ``x`` [M, n, 3]: molecules with the same label are translates of
    each other (the proper rotation superposing them, same atom order, is under ``angle_tol`` degrees).
    Unlike comparing motions of the central molecule, this needs no handedness, so it holds for planar
    molecules too. Labels number the classes in order of first appearance."""
    m = len(x)
    j, k = np.triu_indices(m, 1)
    rel = batched_rotations(x[j], x[k], proper=True)
    angle = np.degrees(np.arccos(np.clip((np.einsum("mii->m", rel) - 1.0) / 2.0, -1.0, 1.0)))
    same = np.zeros((m, m), dtype=bool)
    same[j, k] = same[k, j] = angle < angle_tol
    labels = np.full(m, -1)
    n_labels = 0
    for a in range(m):
        if labels[a] < 0:
            labels[a] = n_labels
            labels[(labels < 0) & same[a]] = n_labels
            n_labels += 1
    return labels


def _class_differences(centres: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Differences of centres within each class (later minus earlier), [p, 3]."""
    out = [np.zeros((0, 3))]
    for label in np.unique(labels):
        p = centres[labels == label]
        j, k = np.tril_indices(len(p), -1)
        out.append(p[j] - p[k])
    return np.concatenate(out)


def _class_translations(r_all: np.ndarray, t_all: np.ndarray, angle_tol: float, max_length: float) -> np.ndarray:
    """Differences of translations of motions with the same rotation, one per vector up to sign."""
    vectors = _class_differences(t_all, orientation_classes(r_all, angle_tol))
    norm = np.linalg.norm(vectors, axis=1)
    vectors = vectors[(norm > MIN_INDEPENDENCE) & (norm <= max_length)]
    vectors = vectors * np.where((vectors @ np.array([1.0, 1e-3, 1e-6])) < 0, -1.0, 1.0)[:, None]
    return vectors[np.unique(np.round(vectors, 2), axis=0, return_index=True)[1]]


def composed_translations(rots: np.ndarray, trans: np.ndarray, angle_tol: float = ANGLE_TOL,
                          max_length: float = np.inf, rounds: int = COMPOSED_ROUNDS) -> np.ndarray:
    """Lattice vectors from products of the cluster's motions: two motions (or products of motions) with
    the same rotation differ by a pure translation of the crystal, ``t_a − t_b``. This reaches the
    stacking direction of a cluster whose same-orientation molecules span only a layer (an orientation
    the cluster lacks appears as a product). Products of up to ``rounds`` + 1 motions are formed, fewer
    when the vectors span three dimensions sooner; vectors longer than ``max_length`` Å are dropped."""
    r_all, t_all = rots, trans
    vectors = np.zeros((0, 3))
    for _ in range(rounds):
        r_all = np.concatenate([r_all, np.einsum("aij,bjk->abik", r_all, rots).reshape(-1, 3, 3)])
        t_all = np.concatenate([t_all, (np.einsum("aij,bj->abi", r_all[: len(t_all)], trans)
                                        + t_all[:, None, :]).reshape(-1, 3)])
        keep = np.unique(np.round(np.concatenate([r_all.reshape(-1, 9), t_all], axis=1), 2), axis=0,
                         return_index=True)[1]
        r_all, t_all = r_all[np.sort(keep)], t_all[np.sort(keep)]
        vectors = _class_translations(r_all, t_all, angle_tol, max_length)
        if len(vectors) and np.linalg.matrix_rank(vectors, tol=MIN_INDEPENDENCE) == 3:
            break
    return vectors


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
    """The shortest vector, the shortest off its line, the shortest off their plane (by more than
    :data:`MIN_INDEPENDENCE` Å)."""
    v = vectors[np.argsort(np.linalg.norm(vectors, axis=1), kind="stable")]
    basis = [v[0]] if len(v) else []
    while basis and len(basis) < 3:
        q, _ = np.linalg.qr(np.stack(basis).T)
        off = np.linalg.norm(v - (v @ q) @ q.T, axis=1)
        far = np.flatnonzero(off > MIN_INDEPENDENCE)
        if not len(far):
            break
        basis.append(v[far[0]])
    if len(basis) < 3:
        raise LatticeError(f"only {len(basis)} independent translation(s) among the cluster's molecules (need 3)")
    return np.stack(basis)


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


def fit_lattice_robust(vectors: np.ndarray, tol: float) -> tuple[np.ndarray, float, int]:
    """Basis (rows) of the lattice that the most translation ``vectors`` [m, 3] are integer combinations
    of (within ``tol`` Å), for noisy clusters where some vectors join molecules of wrongly guessed
    orientation: every independent triple of the shortest :data:`ROBUST_CANDIDATES` vectors is tried
    and scored by a soft inlier count (Σ max(0, 1 − (error/tol)²), so a loose lattice that fits many
    vectors badly loses to one that fits most exactly), the best refitted by least squares on its inliers. Returns (basis, RMS misfit of the inliers, inliers)."""
    v = vectors[np.linalg.norm(vectors, axis=1) >= MIN_TRANSLATION]
    v = v * np.where((v @ np.array([1.0, 1e-3, 1e-6])) < 0, -1.0, 1.0)[:, None]  # one sign per vector
    distinct = v[np.sort(np.unique(np.round(v, 1), axis=0, return_index=True)[1])]
    cand = distinct[np.argsort(np.linalg.norm(distinct, axis=1), kind="stable")][:ROBUST_CANDIDATES]
    best = None
    for i, j, k in itertools.combinations(range(len(cand)), 3):
        basis = cand[[i, j, k]]
        if abs(np.linalg.det(basis)) < MIN_INDEPENDENCE * MIN_TRANSLATION**2:
            continue
        frac = v @ np.linalg.inv(basis)
        err = np.linalg.norm((frac - np.round(frac)) @ basis, axis=1)
        inl = err <= tol
        key = float(np.sum(np.clip(1.0 - (err / tol) ** 2, 0.0, None)))  # soft inlier count (MSAC)
        if best is None or key > best[0] + 1e-9:
            best = (key, basis, inl)
    if best is None:
        raise LatticeError("fewer than 3 independent translations among the cluster's molecules")
    _, basis, inl = best
    coeff = np.round(v[inl] @ np.linalg.inv(basis))
    fitted, *_ = np.linalg.lstsq(coeff, v[inl], rcond=None)
    err = np.linalg.norm(coeff @ fitted - v[inl], axis=1)
    return fitted, float(np.sqrt(np.mean(err**2))), int(inl.sum())


def is_planar(x: np.ndarray, rel: float = PLANAR_REL) -> bool:
    """Whether points [n, 3] are (near-)planar: their rigid motion is then known only up to the
    reflection through their plane, and motions cannot be composed reliably."""
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return bool(s[-1] <= rel * s[0])


def _metric_symmetric(lattice: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """The lattice nearest ``lattice`` (rows) whose metric the integer ``rotations`` [h, 3, 3] keep."""
    g = lattice @ lattice.T
    g_sym = np.mean(np.einsum("hji,jk,hkl->hil", rotations, g, rotations), axis=0)
    c = np.linalg.cholesky(g_sym)
    u, _, vt = np.linalg.svd(np.linalg.solve(c, lattice))
    return c @ (u @ vt)


def _close_group(rotations: list[np.ndarray]) -> np.ndarray:
    """The group generated by integer matrices (identity first); :class:`LatticeError` when it is not a
    finite crystallographic point group."""
    group = [np.eye(3, dtype=np.int64)]
    keys = {group[0].tobytes()}
    frontier = [r for r in rotations]
    while frontier:
        new = []
        for r in frontier:
            for g in list(group):
                for p in (r @ g, g @ r):
                    if p.tobytes() not in keys:
                        if len(group) >= MAX_POINT_GROUP or abs(round(np.linalg.det(p))) != 1 or np.abs(p).max() > 3:
                            raise LatticeError("the motions' rotations do not close into a crystallographic point group")
                        keys.add(p.tobytes())
                        group.append(p)
                        new.append(p)
        frontier = new
    return np.stack(group)


def _index_of(group: np.ndarray) -> dict[bytes, int]:
    return {g.tobytes(): i for i, g in enumerate(group)}


def _solve_translations(group: np.ndarray, observed: list[tuple[int, np.ndarray]], lattice: np.ndarray,
                        check: bool = True) -> np.ndarray:
    """Operator translations [h, 3] (fractional) closest, in Å, to the ``observed`` (op index, w) while
    obeying the group law ``w(W_a W_b) = W_a w_b + w_a`` mod 1 exactly (least squares)."""
    h = len(group)
    index = _index_of(group)
    table = np.array([[index[(group[a] @ group[b]).tobytes()] for b in range(h)] for a in range(h)])
    w = np.full((h, 3), np.nan)
    w[0] = 0.0
    for i, t in observed:  # first estimates: one observation per operator, then compositions
        if np.isnan(w[i, 0]):
            w[i] = t
    for _ in range(h):
        if not np.isnan(w).any():
            break
        for a in range(h):
            for b in range(h):
                c = table[a, b]
                if np.isnan(w[c, 0]) and not np.isnan(w[a, 0]) and not np.isnan(w[b, 0]):
                    w[c] = group[a] @ w[b] + w[a]
    metric = lattice.T  # fractional column → Cartesian
    for _ in range(3):  # integer offsets from the current estimate, then least squares
        rows, rhs = [], []
        for a in range(h):
            for b in range(h):
                c = table[a, b]
                n = np.round(w[c] - group[a] @ w[b] - w[a])
                row = np.zeros((3, 3 * h))
                row[:, 3 * c:3 * c + 3] += np.eye(3)
                row[:, 3 * b:3 * b + 3] -= group[a]
                row[:, 3 * a:3 * a + 3] -= np.eye(3)
                rows.append(100.0 * row)  # the group law is a constraint: weighted far above observations
                rhs.append(100.0 * n)
        for i, t in observed:
            n = np.round(w[i] - t)
            row = np.zeros((3, 3 * h))
            row[:, 3 * i:3 * i + 3] = metric
            rows.append(row)
            rhs.append(metric @ (t + n))
        sol, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)
        w = sol.reshape(h, 3)
    w = w - w[0]  # the identity's translation is a lattice vector: zero
    law = np.einsum("aij,bj->abi", group, w) + w[:, None, :] - w[table]
    off = float(np.abs(law - np.round(law)).max())
    if check and off > GROUP_LAW_TOL:
        raise LatticeError(f"the motions fit no single space group (group law off by {off:.2g} in fractions)")
    return w


def _op_candidates(r: np.ndarray, t: np.ndarray, mirror: np.ndarray | None, c0: np.ndarray):
    """The motion (r, t) and, for a planar molecule, the same motion after the reflection ``mirror``
    through the molecule's plane (which holds ``c0``): both map the molecule's atoms alike."""
    yield r, t
    if mirror is not None:
        yield r @ mirror, t + r @ c0 - r @ mirror @ c0


def _symmetry(x, rots, trans, lattice, angle_tol, planar, robust=False):
    """Point group (integer [h, 3, 3]), per cluster molecule its operator (-1: an outlier, robust only)
    and the observed fractional translations."""
    inv = np.linalg.inv(lattice)
    c0 = x[0].mean(axis=0)
    mirror = None
    if planar:
        normal = np.linalg.svd(x[0] - c0)[2][-1]
        mirror = np.eye(3) - 2.0 * np.outer(normal, normal)
    limit = _turn_distance(angle_tol)
    ints, ts = [], []
    for r, t in zip(rots, trans):
        best = None
        for rr, tt in _op_candidates(r, t, mirror, c0):
            w = inv.T @ rr @ lattice.T  # f' = W f + w with x = Lᵀ f
            wi = np.rint(w).astype(np.int64)
            off = float(np.linalg.norm(lattice.T @ wi @ inv.T - rr))
            if best is None or off < best[0]:
                best = (off, wi, tt @ inv)
        if best[0] > limit and not robust:
            raise LatticeError(f"a motion of the cluster is no symmetry of the fitted lattice (off by {best[0]:.2f})")
        ints.append(best[1] if best[0] <= limit else None)
        ts.append(best[2])
    group = _close_group([w for w in ints if w is not None])
    index = _index_of(group)
    ops = np.array([index[w.tobytes()] if w is not None else -1 for w in ints])
    return group, ops, np.array(ts)


def _lattice_of(x, rots, trans, centres, tol, angle_tol, planar, robust=False):
    """Reduced lattice and its residual from the translations among the cluster's molecules (and, when
    those span fewer than 3 dimensions and the molecule is not planar, among composed motions)."""
    labels = translate_classes(x, angle_tol) if planar else orientation_classes(rots, angle_tol)
    vectors = _class_differences(centres, labels)
    if not (len(vectors) and np.linalg.matrix_rank(vectors, tol=MIN_INDEPENDENCE) == 3) and not planar:
        reach = COMPOSED_REACH * float(np.linalg.norm(centres - centres[0], axis=1).max())
        vectors = np.concatenate([vectors, composed_translations(rots, trans, angle_tol, reach)])
    if not len(vectors):
        raise LatticeError("no two molecules share an orientation: no translations")
    short = np.linalg.norm(vectors, axis=1).min()
    if short < MIN_TRANSLATION and not robust:  # the robust fit leaves such vectors out
        raise LatticeError(f"two molecules with the same orientation are {short:.2f} Å apart (< {MIN_TRANSLATION} Å)")
    if robust:
        basis, residual, _ = fit_lattice_robust(vectors, tol)
    else:
        basis, residual = fit_lattice(vectors, tol)
    if np.linalg.det(basis) < 0:
        basis = -basis
    return niggli_cell(basis), residual


def _nearest_images(crystal: SymmetricCrystal, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each centre [M, 3] (Cartesian), the operator and lattice shift of the crystal's molecule
    whose centre of mass is nearest, and that distance (Å)."""
    inv = np.linalg.inv(crystal.lattice)
    c0 = centre_of_mass(crystal.molecule, crystal.z) @ inv
    img = np.einsum("hij,j->hi", crystal.rotations, c0) + crystal.translations  # [h, 3]
    f = centres @ inv  # [M, 3]
    shift = np.round(f[:, None, :] - img[None])  # [M, h, 3]
    d = np.linalg.norm((img[None] + shift - f[:, None, :]) @ crystal.lattice, axis=2)  # [M, h]
    op = d.argmin(axis=1)
    rows = np.arange(len(f))
    return op, shift[rows, op].astype(np.int64), d[rows, op]


def recover_crystal(
    x: np.ndarray, z: np.ndarray, tol: float = LATTICE_TOL, angle_tol: float = ANGLE_TOL, symprec: float = SYMPREC,
    robust: bool = False,
) -> RecoveredCrystal:
    """The periodic crystal implied by a cluster ``x`` [M, n, 3] of identical molecules, atomic numbers ``z`` [n].

    ``tol`` (Å) bounds how far a translation may lie off the fitted lattice, ``angle_tol`` (degrees)
    how far two molecules may be rotated against each other and still count as translates (and how far
    a motion may be off a symmetry of the lattice), and ``symprec`` (Å) is spglib's tolerance for the
    space group. ``robust`` is for noisy clusters (model predictions; see :func:`fit_crystal`): the
    lattice is the one most translations fit, molecules off the symmetric crystal are outliers as long
    as at least :data:`MIN_INLIER_FRACTION` of them lie on it. Raises :class:`LatticeError` when no
    consistent lattice exists.

    Example::

        crystal = read_cif(path)
        molecules, _, _ = select(crystal, BuildSettings())
        cluster = build_cluster(crystal, molecules)
        rec = recover_crystal(cluster.x, cluster.z)
        rec.sg_number, rec.sg_symbol, rec.cell_parameters, rec.n_molecules   # e.g. 14, 'P2_1/c', (...), 4
        rec.crystal                                                          # a SymmetricCrystal
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.int64)
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[1] != len(z) or x.shape[0] < 4:
        raise LatticeError(f"need a cluster [M >= 4, n, 3] with n = len(z) = {len(z)}, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise LatticeError("the cluster has non-finite coordinates")
    rots, trans, rmsd = rigid_motions(x)
    centres = centre_of_mass(x, z)  # [M, 3]
    planar = is_planar(x[0])
    lattice, lattice_residual = _lattice_of(x, rots, trans, centres, tol, angle_tol, planar, robust)
    group, ops, w_obs = _symmetry(x, rots, trans, lattice, angle_tol, planar, robust)
    lattice = _metric_symmetric(lattice, group)
    if not np.all(np.isfinite(lattice)) or abs(np.linalg.det(lattice)) < MIN_TRANSLATION**3:
        raise LatticeError("the fitted lattice is degenerate")
    observed = [(int(o), w) for o, w in zip(ops, w_obs) if o >= 0]
    if robust:
        # per operator, the observation closest to its others first (it seeds the integer offsets), then drop,
        # one at a time, the observation farthest from the law-bound solution while it is an outlier
        def spread(i: int, t: np.ndarray) -> float:
            return sum(np.linalg.norm(((t - u + 0.5) % 1.0 - 0.5) @ lattice) for o, u in observed if o == i)

        observed.sort(key=lambda item: (item[0], spread(*item)))
        while len(observed) > 1:
            w = _solve_translations(group, observed, lattice, check=False)
            off = [np.linalg.norm(((w[o] - t + 0.5) % 1.0 - 0.5) @ lattice) for o, t in observed]
            worst = int(np.argmax(off))
            if off[worst] <= tol:
                break
            observed.pop(worst)
    w = _solve_translations(group, observed, lattice)
    crystal = SymmetricCrystal(lattice, group, w % 1.0, x[0], z)
    # each cluster molecule: the crystal's molecule nearest to it (an operator's image plus a lattice shift)
    ops, shifts, dist = _nearest_images(crystal, centres)
    inliers = dist <= tol
    if robust:
        if inliers.sum() < MIN_INLIER_FRACTION * len(x):
            raise LatticeError(f"only {int(inliers.sum())} of {len(x)} molecules lie within {tol:g} Å of one "
                               "symmetric crystal")
        symmetry_residual = float(np.sqrt(np.mean(dist[inliers] ** 2)))
    else:
        symmetry_residual = float(np.sqrt(np.mean(dist**2)))
        if symmetry_residual > max(tol, 1e-9) * 2.0:
            raise LatticeError(f"the molecules are {symmetry_residual:.2f} Å (RMS) off any symmetric crystal "
                               "with this lattice")
    frac, z_cell = crystal.cell_atoms()
    dataset = spglib.get_symmetry_dataset((lattice, frac, z_cell), symprec=symprec)
    if dataset is None:
        raise LatticeError(f"spglib found no space group: {spglib.get_error_message()}")
    return RecoveredCrystal(
        crystal=crystal,
        sg_number=int(dataset.number),
        sg_symbol=str(dataset.international),
        lattice_residual=lattice_residual,
        symmetry_residual=symmetry_residual,
        rigid_rmsd=float(rmsd.max()),
        ops=ops,
        shifts=shifts,
        inliers=int(inliers.sum()),
    )


def fit_crystal(x: np.ndarray, z: np.ndarray, symprec: float = SYMPREC) -> RecoveredCrystal:
    """The crystal of a cluster that may be a noisy prediction: the exact recovery first, then the robust
    one with the tolerances for noisy clusters (:data:`NOISY_TOL`, :data:`NOISY_ANGLE_TOL`). The
    exact recovery's reason is reported when both fail.

    Example::

        rec = fit_crystal(pred[0], z)          # a predicted cluster [17, n, 3]
        rec.sg_symbol, rec.inliers, rec.residual
    """
    try:
        return recover_crystal(x, z, symprec=symprec)
    except LatticeError as exact:
        try:
            return recover_crystal(x, z, tol=NOISY_TOL, angle_tol=NOISY_ANGLE_TOL, symprec=symprec, robust=True)
        except LatticeError as noisy:
            raise LatticeError(f"{exact} (noisy fit: {noisy})") from None


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
