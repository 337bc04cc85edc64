"""Evaluation metrics for predicted molecular clusters.

A *cluster* holds ``M`` copies of one molecule with ``n`` atoms in the same atom order
(central molecule first); positions are arrays ``x`` of shape ``[M, n, 3]`` in Å and ``z`` is the
``[n]`` array of atomic numbers. Predictions may carry ``K`` samples, shape ``[K, M, n, 3]``.

Metrics (all vectorised over atom pairs with numpy):

* ``pm_atom`` / ``pm_center``: packing matching (CrystalFlow / AssembleFlow definition), lower is better.
* ``solved``: the field's criterion — the sample matches the crystal (OXtalign: ≥ 8 of 15 molecules,
  RMSD_15 < 2 Å; :mod:`crystalflow.evaluation.matching`) **and** is physically valid; 1 when any of the ``K``
  samples solves it (its mean over clusters, in %, is Sol_C@K), ``solved_top1`` for sample 0.
* ``valid`` / ``max_overlap``: no heavy-atom vdW overlap ≥ 0.7 Å between molecules, and the largest
  overlap (:mod:`crystalflow.structure.contacts`).
* ``n_matched`` / ``rmsd15`` / ``matched``: the OXtalign packing match of one sample (``rmsd15`` is
  NaN, so left out of means, when fewer than 8 molecules overlay).
* ``collision_pairs``: % of inter-molecular atom pairs closer than the sum of covalent radii (a
  density of clashes; one clash already makes a structure invalid, see ``valid``).
* ``separation``: % of molecule pairs that do not interpenetrate, higher is better.
* ``compactness``: 100 if the cluster fits within ``max_extent`` Å, else 0.
* ``rigidity``: RMS change of intramolecular distances, 0 for rigid molecules.
* ``rmsd_matched``: RMSD after optimal molecule assignment and rigid superposition.
* ``orientation``: mean angle (degrees) by which the molecules' orientations relative to the central
  molecule are off, 0 when every relative orientation is right, about 126° for random orientations.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import gemmi
import numpy as np
from scipy.optimize import linear_sum_assignment

from crystalflow.evaluation.matching import MIN_MATCHED, ClusterTopology, packing_match
from crystalflow.structure.contacts import VALIDITY_OVERLAP, max_overlap
from crystalflow.structure.elements import HYDROGEN
from crystalflow.structure.geometry import batched_rotations, kabsch

#: default tolerance (Å) below which two molecules count as interpenetrating in :func:`separation`
SEPARATION_THRESHOLD = 0.5
#: default largest atom-atom distance (Å) of a cluster still counted as compact
MAX_EXTENT = 100.0
#: percentage scale used by the %-valued metrics
PERCENT = 100.0
#: maximal number of (superpose, reassign) rounds in :func:`rmsd_matched`
MATCH_ROUNDS = 10
#: heavy atoms whose second singular value is below this fraction of the first count as collinear
COLLINEAR_TOL = 0.05


# --------------------------------------------------------------------------------------------- helpers
def _as_samples(pred: np.ndarray) -> np.ndarray:
    """View a prediction ``[M, n, 3]`` or ``[K, M, n, 3]`` as ``[K, M, n, 3]`` float64."""
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 3:
        p = p[None]
    if p.ndim != 4 or p.shape[-1] != 3:
        raise ValueError(f"prediction must have shape [M, n, 3] or [K, M, n, 3], got {p.shape}")
    return p


def _as_cluster(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Check and convert one cluster ``[M, n, 3]`` to float64."""
    c = np.asarray(x, dtype=np.float64)
    if c.ndim != 3 or c.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [M, n, 3], got {c.shape}")
    return c


def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(pred [K, M, n, 3], true [M, n, 3])`` after checking that their shapes agree."""
    p, t = _as_samples(pred), _as_cluster(true, "true")
    if p.shape[1:] != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} disagree in [M, n, 3]")
    return p, t


def _check_z(z: np.ndarray, n_atoms: int) -> np.ndarray:
    """Return ``z`` as an int array after checking it has one entry per atom of a molecule."""
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    if zz.shape[0] != n_atoms:
        raise ValueError(f"z has {zz.shape[0]} entries but molecules have {n_atoms} atoms")
    return zz


def pairwise_distances(points: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix ``[..., N, N]`` of points ``[..., N, 3]`` (exact zeros on the diagonal)."""
    diff = points[..., :, None, :] - points[..., None, :, :]
    return np.sqrt(np.einsum("...ijk,...ijk->...ij", diff, diff))


def _intermolecular_distances(x: np.ndarray) -> np.ndarray:
    """Atom-atom distances between all molecules, ``[M, M, n, n]`` (entry ``[a, b, i, j]``: atom i of a, j of b)."""
    diff = x[:, None, :, None, :] - x[None, :, None, :, :]
    return np.sqrt(np.einsum("abijk,abijk->abij", diff, diff))


def covalent_radii(z: np.ndarray) -> np.ndarray:
    """Covalent radii (Å, from gemmi) of the atomic numbers ``z``."""
    zz = np.asarray(z).astype(np.int64)
    unique, inverse = np.unique(zz, return_inverse=True)
    radii = np.array([gemmi.Element(int(u)).covalent_r for u in unique], dtype=np.float64)
    return radii[inverse].reshape(zz.shape)


def centers(x: np.ndarray) -> np.ndarray:
    """Molecule centres ``[..., M, 3]`` as the plain (unweighted) mean of atom positions ``[..., M, n, 3]``."""
    return np.asarray(x, dtype=np.float64).mean(axis=-2)


def _pm_rms(pred_points: np.ndarray, true_points: np.ndarray) -> np.ndarray:
    """RMS difference of full distance matrices, one value per sample of ``pred_points [K, N, 3]``."""
    d_true = pairwise_distances(true_points)
    # loop over samples keeps memory at one [N, N] matrix per sample
    return np.array([math.sqrt(np.mean((pairwise_distances(p) - d_true) ** 2)) for p in pred_points])


# ------------------------------------------------------------------------------------- packing match
def pm_atom_samples(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Packing matching on atoms for each sample, shape ``[K]`` (``[1]`` for a single prediction).

    ``sqrt(mean((D_pred - D_true)**2))`` where ``D`` is the full ``(M n) x (M n)`` distance matrix of all
    atoms, diagonal zeros included (the CrystalFlow / AssembleFlow definition).
    """
    p, t = _check_pair(pred, true)
    k, m, n, _ = p.shape
    return _pm_rms(p.reshape(k, m * n, 3), t.reshape(m * n, 3))


def pm_atom(pred: np.ndarray, true: np.ndarray) -> float:
    """Packing matching on atoms (Å); with ``K`` samples the minimum over samples. See :func:`pm_atom_samples`."""
    return float(pm_atom_samples(pred, true).min())


def pm_center_samples(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Packing matching on molecule centres for each sample, shape ``[K]``.

    Same as :func:`pm_atom_samples` on the ``[M, 3]`` centres; a centre is the plain (not mass-weighted)
    mean of the molecule's atom positions.
    """
    p, t = _check_pair(pred, true)
    return _pm_rms(centers(p), centers(t))


def pm_center(pred: np.ndarray, true: np.ndarray) -> float:
    """Packing matching on molecule centres (Å); with ``K`` samples the minimum over samples."""
    return float(pm_center_samples(pred, true).min())


# --------------------------------------------------------------------------------- physical validity
def _upper_pair_mask(m: int) -> np.ndarray:
    """Boolean ``[M, M]`` mask of molecule pairs ``a < b``."""
    return np.triu(np.ones((m, m), dtype=bool), k=1)


def collision_pairs(x: np.ndarray, z: np.ndarray, scale: float = 1.0) -> float:
    """Percentage of inter-molecular atom pairs in collision (not a validity test: see :func:`cluster_validity`).

    Counts pairs (atom i of molecule a, atom j of molecule b, a < b) closer than
    ``scale * (r_cov(i) + r_cov(j))``, over all ``M (M - 1) / 2 * n**2`` inter-molecular pairs.
    Intramolecular pairs are not counted. Returns 0 for a single molecule.
    """
    c = _as_cluster(x)
    m, n, _ = c.shape
    if m < 2:
        return 0.0
    r = covalent_radii(_check_z(z, n))
    limit = scale * (r[:, None] + r[None, :])  # [n, n]
    clash = _intermolecular_distances(c) < limit  # [M, M, n, n]
    n_clash = int(clash[_upper_pair_mask(m)].sum())
    return PERCENT * n_clash / (m * (m - 1) // 2 * n * n)


def separation(x: np.ndarray, threshold: float = SEPARATION_THRESHOLD) -> float:
    """Percentage of molecule pairs that do not interpenetrate (higher is better).

    A pair of molecules (a < b) is *separated* when its closest inter-molecular atom-atom distance is
    strictly greater than ``threshold`` Å. Returns 100 for a single molecule.
    """
    c = _as_cluster(x)
    m = c.shape[0]
    if m < 2:
        return PERCENT
    closest = _intermolecular_distances(c).min(axis=(2, 3))  # [M, M]
    return PERCENT * float(np.mean(closest[_upper_pair_mask(m)] > threshold))


def compactness(x: np.ndarray, max_extent: float = MAX_EXTENT) -> float:
    """100 if the largest atom-atom distance in the cluster is below ``max_extent`` Å, else 0.

    Averaged over clusters this is the percentage of compact (non-exploded) clusters.
    """
    c = _as_cluster(x).reshape(-1, 3)
    extent = float(pairwise_distances(c).max()) if len(c) else 0.0
    return PERCENT if extent < max_extent else 0.0


def rigidity(pred: np.ndarray, true: np.ndarray) -> float:
    """RMS change (Å) of intramolecular distances between ``pred`` and ``true`` (both ``[M, n, 3]``).

    ``sqrt(mean over molecules and atom pairs i < j of (d_pred - d_true)**2)``. Any rigid motion of a
    molecule, mirror images included, scores 0. Returns 0 for single-atom molecules.
    """
    p, t = _as_cluster(pred, "pred"), _as_cluster(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and true {t.shape} differ")
    n = p.shape[1]
    if n < 2:
        return 0.0
    iu, ju = np.triu_indices(n, k=1)
    diff = pairwise_distances(p)[:, iu, ju] - pairwise_distances(t)[:, iu, ju]
    return float(np.sqrt(np.mean(diff**2)))


# ---------------------------------------------------------------------------------- superposition
def _assign(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Hungarian assignment: ``perm[b]`` = predicted molecule placed on true molecule ``b``.

    The cost of placing predicted molecule a on true molecule b is the sum over atoms (fixed atom
    order) of squared distances.
    """
    diff = pred[:, None] - true[None, :]  # [M, M, n, 3]
    cost = np.einsum("abik,abik->ab", diff, diff)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[cols] = rows
    return perm


def _refine_assignment(pred: np.ndarray, true: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, float]:
    """Alternate superposition and Hungarian reassignment from ``perm``; return the best ``(perm, rmsd)``."""
    flat_true = true.reshape(-1, 3)
    best_perm, best_rmsd = perm, math.inf
    for _ in range(MATCH_ROUNDS):
        r, t, rmsd = kabsch(pred[perm].reshape(-1, 3), flat_true)
        if rmsd < best_rmsd:
            best_perm, best_rmsd = perm, rmsd
        new_perm = _assign(pred @ r.T + t, true)
        if np.array_equal(new_perm, perm):
            break
        perm = new_perm
    return best_perm, best_rmsd


def _starting_assignments(pred: np.ndarray, true: np.ndarray) -> list[np.ndarray]:
    """Initial assignments for :func:`rmsd_matched`.

    identity; Hungarian on molecule centres after centring both clusters; and, for each predicted
    molecule a, Hungarian after rigidly superposing molecule a onto the true central molecule (this
    anchors the orientation, so rotated *and* permuted copies are recovered).
    """
    m = pred.shape[0]
    starts = [np.arange(m)]
    c_pred, c_true = centers(pred), centers(true)
    c_pred, c_true = c_pred - c_pred.mean(0), c_true - c_true.mean(0)
    starts.append(_assign(c_pred[:, None, :], c_true[:, None, :]))
    for a in range(m):
        r, t, _ = kabsch(pred[a], true[0])
        starts.append(_assign(pred @ r.T + t, true))
    return starts


def _rmsd_matched_single(pred: np.ndarray, true: np.ndarray) -> float:
    """Best RMSD over all starting assignments for one predicted cluster."""
    unique: dict[bytes, np.ndarray] = {s.tobytes(): s for s in _starting_assignments(pred, true)}
    return min(_refine_assignment(pred, true, s)[1] for s in unique.values())


def rmsd_matched(pred: np.ndarray, true: np.ndarray, z: np.ndarray) -> float:
    """Permutation-invariant RMSD (Å) over all atoms of the cluster; with ``K`` samples the minimum.

    Molecules are identical, so predicted molecules are assigned to true molecules before a rigid
    (proper-rotation) superposition of the whole cluster. From several starts (see
    ``_starting_assignments``) we alternate (1) Kabsch superposition on all atoms under the current
    assignment and (2) Hungarian reassignment on molecule-to-molecule summed squared atom distances,
    for up to ``MATCH_ROUNDS`` rounds, and keep the lowest RMSD. ``z`` is only used to check shapes.
    """
    p, t = _check_pair(pred, true)
    _check_z(z, t.shape[1])
    return float(min(_rmsd_matched_single(sample, t) for sample in p))


def _is_collinear(points: np.ndarray) -> bool:
    """Whether points ``[N, 3]`` lie (almost) on one line, so that they fix no orientation."""
    if len(points) < 3:
        return True
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return bool(s[1] <= COLLINEAR_TOL * s[0])


def orientation_atoms(xa: np.ndarray, xb: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Atoms that fix orientations: the heavy ones, or all where a central molecule's heavy atoms are collinear."""
    heavy = z != HYDROGEN
    if heavy.any() and not (_is_collinear(xa[0, heavy]) or _is_collinear(xb[0, heavy])):
        return heavy
    return np.ones_like(heavy)


#: mean error of uniformly random orientations (degrees): E[angle] of a Haar-random rotation, π/2 + 2/π rad
RANDOM_ORIENTATION_DEG = math.degrees(math.pi / 2 + 2 / math.pi)


def orientation_error(pred: np.ndarray, true: np.ndarray, z: np.ndarray) -> float:
    """Mean angle (degrees) between predicted and true orientations of the molecules relative to the central one.

    The predicted cluster is turned so that its central molecule has the true one's orientation
    (proper Kabsch), then each other molecule's remaining rotation angle to its true orientation is
    averaged. Heavy atoms are used (all atoms where the heavy ones fix no orientation); 0 is perfect, :data:`RANDOM_ORIENTATION_DEG` (≈ 126.5°)
    is what random orientations score. With ``K`` samples the minimum.
    """
    p, t = _check_pair(pred, true)
    zz = _check_z(z, t.shape[1])
    if t.shape[0] < 2:
        return 0.0
    best = math.inf
    for sample in p:
        mask = orientation_atoms(sample, t, zz)
        a, b = sample[:, mask], t[:, mask]
        frame = batched_rotations(a[:1], b[:1])[0]  # central molecule: prediction -> truth
        rot = batched_rotations(a[1:] @ frame.T, b[1:])  # what is left per molecule
        cos = np.clip((np.trace(rot, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
        best = min(best, float(np.degrees(np.arccos(cos)).mean()))
    return best


# ------------------------------------------------------------------------------------ per-cluster
#: 0/1 per-cluster keys whose mean is reported in % (under the name on the right)
PERCENT_KEYS = {"solved": "sol_c", "solved_top1": "sol_top1", "valid": "valid", "matched": "matched"}


def cluster_validity(x: np.ndarray, z: np.ndarray) -> tuple[bool, float]:
    """``(valid, max_overlap)`` of one cluster ``[M, n, 3]`` (see :mod:`crystalflow.structure.contacts`)."""
    overlap = max_overlap(x, z)
    return overlap < VALIDITY_OVERLAP, overlap


def cluster_metrics(pred: np.ndarray, true: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """All metrics for one cluster.

    ``pred`` is ``[M, n, 3]`` or ``[K, M, n, 3]``. ``pm_atom`` and ``pm_center`` are minima over the
    ``K`` samples (each independently), ``solved`` is 1 when any sample is matched and valid and
    ``solved_top1`` when sample 0 is (samples are not ranked); every other metric is computed for the
    single sample with the lowest ``pm_atom``. ``valid``, ``matched`` and the solved keys are 0 or 1
    (:data:`PERCENT_KEYS` reports their means in %).

    Example::

        from crystalflow import ClusterDataset, cluster_metrics

        rec = ClusterDataset("cod17", "test")[0]
        scores = cluster_metrics(rec.x_w, rec.x_s, rec.z)  # the identity baseline: x_w as the prediction
        print(scores["pm_atom"], scores["valid"], scores["matched"])
    """
    p, t = _check_pair(pred, true)
    zz = _check_z(z, t.shape[1])
    pm_atoms = pm_atom_samples(p, t)
    k_best = int(np.argmin(pm_atoms))
    best = p[k_best]
    topology = ClusterTopology(t[0], zz)
    validity = [cluster_validity(x, zz) for x in p]
    # the packing match (the costly part) is needed only where it can solve the cluster and for the reported sample
    matches = {k: packing_match(p[k], t, zz, topology=topology)
               for k in range(len(p)) if validity[k][0] or k == k_best}
    solved = [k in matches and matches[k].matched and v for k, (v, _) in enumerate(validity)]
    match, (valid, overlap) = matches[k_best], validity[k_best]
    return {
        "pm_atom": float(pm_atoms.min()),
        "pm_center": pm_center(p, t),
        "solved": float(any(solved)),
        "solved_top1": float(solved[0]),
        "valid": float(valid),
        "max_overlap": overlap,
        "matched": float(match.matched),
        "n_matched": float(match.n_matched),
        "rmsd15": match.rmsd if match.n_matched >= MIN_MATCHED else math.nan,
        "collision_pairs": collision_pairs(best, zz),
        "separation": separation(best),
        "compactness": compactness(best),
        "rigidity": rigidity(best, t),
        "rmsd_matched": rmsd_matched(best, t, zz),
        "orientation": orientation_error(best, t, zz),
    }


def aggregate(rows: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (population, ddof=0) and count over clusters for every metric key.

    Non-finite values (NaN, inf) are left out of that key's statistics; ``n`` counts the values used.
    Keys appear in first-seen order; the 0/1 keys of :data:`PERCENT_KEYS` are reported in % under
    their names there (``solved`` → ``sol_c``).
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, []).append(float(value))
    out: dict[str, dict[str, float]] = {}
    for key, vals in values.items():
        arr = np.asarray(vals, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        scale = PERCENT if key in PERCENT_KEYS else 1.0
        mean = scale * float(arr.mean()) if arr.size else math.nan
        std = scale * float(arr.std()) if arr.size else math.nan
        out[PERCENT_KEYS.get(key, key)] = {"mean": mean, "std": std, "n": float(arr.size)}
    return out
