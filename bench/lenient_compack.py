"""The lenient COMPACK-style packing similarity crystalflow scored with before OXtalign (kept for bench/match_agreement.py).

Not part of the package: ``crystalflow evaluate`` scores matches with OXtalign (crystalflow.evaluation.matching).
This file stays beside the agreement benchmark so that its measured disagreement can be reproduced:
its centroid-geometry tolerances (20 % distance, 20° angles) accept clusters whose molecules sit 1–2 Å
off, and it compares relative rotations in the fixed atom order, so a molecule turned onto itself by
its own symmetry counts as 180° wrong.

After Chisholm & Motherwell, J. Appl. Cryst. 38, 228 (2005), re-implemented for non-periodic
clusters (``[M, n, 3]`` arrays, central molecule first, identical atom order in every molecule):

1. Hydrogens (``z == 1``) are ignored; centroids are heavy-atom means. Exception: when the heavy
   atoms of a central molecule are fewer than three or collinear (methanol, ethane, acetonitrile) they
   cannot fix an orientation, and all atoms are used instead. Truly linear molecules remain ambiguous
   about their axis; this implementation does not treat them specially.
2. Each structure keeps its central molecule (index 0) and the ``shell`` molecules nearest to it by
   centroid distance (fewer if the cluster is smaller).
3. Each shell molecule k is described relative to the centre by its centroid distance ``d_k``, its
   centroid vector ``v_k`` and its *relative rotation* ``R_k``: the Kabsch rotation mapping the centred
   heavy atoms of molecule 0 onto those of molecule k (fixed atom order). ``R_k`` is improper when a
   mirror image fits better by more than ``HANDEDNESS_MARGIN`` Å; otherwise it is proper (so planar
   molecules are always proper). A shell molecule k of A may be paired with shell molecule l of B when

   * distances agree: ``|d_k - d_l| <= dist_tol * (d_k + d_l) / 2``;
   * orientations agree: same handedness and the rotation angle of ``(Q R_k^A Q^T)(R_l^B)^T`` is below
     ``angle_tol``, where ``Q`` is the proper rotation superposing A's central molecule on B's (it puts
     both relative rotations into one frame, making the test independent of the clusters' poses);
   * positions agree in the central molecule's frame: the angle between ``Q v_k^A`` and ``v_l^B`` is at
     most ``angle_tol`` (COMPACK's triplets contain atoms of the central molecule, so a neighbour must
     sit on the same side of it; without this, lattices sharing only their symmetry operations match);
   * triplets agree with every pair already matched (k', l'): the angle at the central centroid between
     ``v_k`` and ``v_k'`` differs from the one between ``v_l`` and ``v_l'`` by at most ``angle_tol``.

   A depth-first branch-and-bound search (shell molecules of A in order of distance, candidates in
   order of cost) finds the largest consistent matching, ties broken by the smallest summed cost
   ``|Δd| / (d̄ dist_tol) + (rotation angle + direction angle) / angle_tol``; it stops after
   ``MAX_SEARCH_NODES`` nodes (keeping the best matching found so far).
4. The heavy atoms of the matched molecules (centre included) of A are superposed on B (Kabsch,
   proper rotation) and their RMSD is reported.
5. ``n_matched`` = central molecule + matched shell molecules, capped at ``shell`` (COMPACK reports
   "n of 15"), and ``success`` = ``n_matched >= SUCCESS_MIN_MATCHED and rmsd < SUCCESS_MAX_RMSD``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crystalflow.evaluation.metrics import orientation_atoms as _atom_mask
from crystalflow.structure.geometry import kabsch

#: default number of neighbours of the central molecule compared
SHELL = 15
#: default relative tolerance on centroid distances
DIST_TOL = 0.2
#: default tolerance (degrees) on centroid angles and relative orientations
ANGLE_TOL = 20.0
#: a mirror image counts as the better fit of a molecule only if its RMSD is lower by this much (Å)
HANDEDNESS_MARGIN = 0.1
#: fewest matched molecules (of ``shell``) for a successful comparison
SUCCESS_MIN_MATCHED = 8
#: largest RMSD (Å) of a successful comparison
SUCCESS_MAX_RMSD = 2.0
#: cap on the nodes visited by the matching search
MAX_SEARCH_NODES = 20_000
#: norms below this count as zero when normalising centroid vectors
EPS = 1e-12


@dataclass(frozen=True)
class CompackResult:
    """Outcome of a COMPACK comparison: ``n_matched`` of ``shell`` molecules matched with ``rmsd`` (Å)."""

    n_matched: int
    rmsd: float
    success: bool
    shell: int


@dataclass(frozen=True)
class _Shell:
    """Heavy-atom description of the central molecule and its nearest neighbours."""

    molecules: np.ndarray  # [S + 1, h, 3] heavy atoms, central molecule first
    distances: np.ndarray  # [S] centroid distance to the central molecule
    vectors: np.ndarray  # [S, 3] centroid vector from the central molecule
    angles: np.ndarray  # [S, S] angle (deg) at the central centroid between centroid vectors
    rotations: np.ndarray  # [S, 3, 3] relative rotation central -> shell molecule
    improper: np.ndarray  # [S] whether that relative rotation is a mirror operation


def _relative_rotation(ref: np.ndarray, mol: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rotation mapping centred ``ref`` onto centred ``mol`` and whether it is improper (a mirror)."""
    p, q = ref - ref.mean(axis=0), mol - mol.mean(axis=0)
    r_proper, _, rmsd_proper = kabsch(p, q)
    r_mirror, _, rmsd_mirror = kabsch(-p, q)  # q ~ (-p) R^T = p (-R)^T
    if rmsd_mirror + HANDEDNESS_MARGIN < rmsd_proper:
        return -r_mirror, True
    return r_proper, False


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Vectors ``[S, 3]`` scaled to unit length (zero vectors stay zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), EPS)


def _angles_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angles (degrees) ``[S, T]`` between every vector of ``u [S, 3]`` and of ``v [T, 3]``."""
    return np.degrees(np.arccos(np.clip(_unit(u) @ _unit(v).T, -1.0, 1.0)))


def _build_shell(heavy: np.ndarray, shell: int) -> _Shell:
    """Select the central molecule and its ``shell`` nearest neighbours and describe them."""
    centroids = heavy.mean(axis=1)
    dist = np.linalg.norm(centroids - centroids[0], axis=1)
    neighbours = np.argsort(dist[1:], kind="stable")[:shell] + 1
    molecules = heavy[np.concatenate([[0], neighbours])]
    vectors = centroids[neighbours] - centroids[0]
    rel = [_relative_rotation(molecules[0], mol) for mol in molecules[1:]]
    return _Shell(
        molecules=molecules,
        distances=dist[neighbours],
        vectors=vectors,
        angles=_angles_between(vectors, vectors),
        rotations=np.array([r for r, _ in rel]).reshape(-1, 3, 3),
        improper=np.array([m for _, m in rel], dtype=bool),
    )


def _pair_costs(
    a: _Shell, b: _Shell, frame: np.ndarray, dist_tol: float, angle_tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Feasibility ``[Sa, Sb]`` of pairing shell molecules on distance and orientation, and their costs."""
    d_a, d_b = a.distances[:, None], b.distances[None, :]
    rel_dist = np.abs(d_a - d_b) / np.maximum((d_a + d_b) / 2.0, EPS)
    rot_a = np.einsum("ij,kjl,ml->kim", frame, a.rotations, frame)  # Q R_k Q^T
    trace = np.einsum("kij,lij->kl", rot_a, b.rotations)  # trace(R_k^A (R_l^B)^T)
    rot_angle = np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))
    same_hand = a.improper[:, None] == b.improper[None, :]
    direction = _angles_between(a.vectors @ frame.T, b.vectors)  # in B's frame
    feasible = (rel_dist <= dist_tol) & same_hand & (rot_angle < angle_tol) & (direction <= angle_tol)
    cost = rel_dist / dist_tol + (rot_angle + direction) / angle_tol
    return feasible, cost


def _ordered_candidates(feasible_row: np.ndarray, cost_row: np.ndarray) -> list[int]:
    """Indices of feasible partners, cheapest first."""
    idx = np.flatnonzero(feasible_row)
    return idx[np.argsort(cost_row[idx], kind="stable")].tolist()


class _MatchSearch:
    """Branch-and-bound search for the largest triplet-consistent matching of shell molecules."""

    def __init__(
        self, feasible: np.ndarray, cost: np.ndarray, ang_a: np.ndarray, ang_b: np.ndarray, angle_tol: float
    ) -> None:
        self.cost, self.ang_a, self.ang_b, self.angle_tol = cost, ang_a, ang_b, angle_tol
        self.candidates = [_ordered_candidates(row, row_cost) for row, row_cost in zip(feasible, cost)]
        has_candidate = np.array([len(c) > 0 for c in self.candidates], dtype=int)
        # remaining[i]: how many of the A molecules i, i+1, ... could still be matched
        self.remaining = np.concatenate([np.cumsum(has_candidate[::-1])[::-1], [0]])
        self.best: list[tuple[int, int]] = []
        self.best_cost = math.inf
        self.nodes = 0

    def run(self) -> list[tuple[int, int]]:
        """Return the best matching as ``(shell index in A, shell index in B)`` pairs."""
        self._visit(0, [], set(), 0.0)
        return self.best

    def _consistent(self, k: int, l: int, pairs: list[tuple[int, int]]) -> bool:
        """Whether pairing (k, l) keeps every centroid angle with the matched pairs within tolerance."""
        if not pairs:
            return True
        ks, ls = np.array(pairs).T
        return bool(np.all(np.abs(self.ang_a[k, ks] - self.ang_b[l, ls]) <= self.angle_tol))

    def _visit(self, i: int, pairs: list[tuple[int, int]], used: set[int], cost: float) -> None:
        """Extend ``pairs`` with A molecule ``i`` matched to each free candidate, or left unmatched."""
        self.nodes += 1
        if len(pairs) > len(self.best) or (len(pairs) == len(self.best) and cost < self.best_cost):
            self.best, self.best_cost = list(pairs), cost
        bound = len(pairs) + int(self.remaining[i])
        if i == len(self.candidates) or self.nodes > MAX_SEARCH_NODES:
            return
        if bound < len(self.best) or (bound == len(self.best) and cost >= self.best_cost):
            return
        for l in self.candidates[i]:
            if l not in used and self._consistent(i, l, pairs):
                self._visit(i + 1, pairs + [(i, l)], used | {l}, cost + float(self.cost[i, l]))
        self._visit(i + 1, pairs, used, cost)


def _check_inputs(a: np.ndarray, b: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert and check ``a [Ma, n, 3]``, ``b [Mb, n, 3]`` and ``z [n]``."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    for name, x in (("a", xa), ("b", xb)):
        if x.ndim != 3 or x.shape[1:] != (zz.shape[0], 3):
            raise ValueError(f"{name} must have shape [M, {zz.shape[0]}, 3], got {x.shape}")
    return xa, xb, zz


def compack(
    a: np.ndarray,
    b: np.ndarray,
    z: np.ndarray,
    shell: int = SHELL,
    dist_tol: float = DIST_TOL,
    angle_tol: float = ANGLE_TOL,
) -> CompackResult:
    """COMPACK-style packing similarity of clusters ``a`` and ``b`` (see the module docstring).

    ``a`` is ``[Ma, n, 3]``, ``b`` is ``[Mb, n, 3]`` (central molecule first in both) and ``z`` the
    ``[n]`` atomic numbers. Returns how many molecules match (central one included, capped at
    ``shell``) and the heavy-atom RMSD (Å) of the matched molecules after superposition.
    """
    xa, xb, zz = _check_inputs(a, b, z)
    mask = _atom_mask(xa, xb, zz)
    shell_a = _build_shell(xa[:, mask], shell)
    shell_b = _build_shell(xb[:, mask], shell)
    frame, _, _ = kabsch(shell_a.molecules[0], shell_b.molecules[0])
    feasible, cost = _pair_costs(shell_a, shell_b, frame, dist_tol, angle_tol)
    pairs = _MatchSearch(feasible, cost, shell_a.angles, shell_b.angles, angle_tol).run()
    idx_a = [0] + [k + 1 for k, _ in pairs]
    idx_b = [0] + [l + 1 for _, l in pairs]
    _, _, rmsd = kabsch(shell_a.molecules[idx_a].reshape(-1, 3), shell_b.molecules[idx_b].reshape(-1, 3))
    n_matched = min(len(idx_a), shell)
    success = n_matched >= SUCCESS_MIN_MATCHED and rmsd < SUCCESS_MAX_RMSD
    return CompackResult(n_matched=n_matched, rmsd=float(rmsd), success=bool(success), shell=shell)
