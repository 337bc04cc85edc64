"""Small geometry shared by the pipeline and the metrics: optimal superposition (Kabsch)."""
from __future__ import annotations

import math

import numpy as np

#: smallest/largest singular value below which a point set counts as planar (handedness undetermined)
PLANAR_TOL = 1e-6


def kabsch(
    P: np.ndarray, Q: np.ndarray, allow_reflection: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Optimal superposition of points ``P`` onto ``Q`` (both ``[N, 3]``).

    Returns ``(R, t, rmsd)`` minimising ``|P @ R.T + t - Q|``; ``rmsd`` is the root mean square
    deviation after superposition. ``R`` is a proper rotation unless ``allow_reflection`` is set and an
    improper one fits strictly better; for (near-)planar or linear ``P`` both fit equally and the proper
    rotation is returned, so handedness is only reported when it is actually determined.
    """
    p, q = np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"P and Q must both have shape [N, 3], got {p.shape} and {q.shape}")
    p_mean, q_mean = p.mean(axis=0), q.mean(axis=0)
    u, s, vt = np.linalg.svd((p - p_mean).T @ (q - q_mean))
    improper = np.linalg.det(vt.T @ u.T) < 0
    planar = s[-1] <= PLANAR_TOL * s[0]
    sign = -1.0 if improper and (planar or not allow_reflection) else 1.0
    r = vt.T @ np.diag([1.0, 1.0, sign]) @ u.T
    t = q_mean - p_mean @ r.T
    rmsd = math.sqrt(float(np.mean(np.sum((p @ r.T + t - q) ** 2, axis=1))))
    return r, t, rmsd


def batched_rotations(p: np.ndarray, q: np.ndarray, proper: bool = True) -> np.ndarray:
    """Per set, the orthogonal ``R`` ``[M, 3, 3]`` minimising ``|R (p[m] − p̄) − (q[m] − q̄)|`` (``p``, ``q``: ``[M, a, 3]``).

    ``proper`` restricts ``R`` to rotations; otherwise a reflection is used where it fits better
    (orthogonal Procrustes). Vectorised :func:`kabsch` for many small point sets.
    """
    p = p - p.mean(axis=1, keepdims=True)
    q = q - q.mean(axis=1, keepdims=True)
    u, _, vt = np.linalg.svd(np.einsum("mai,maj->mij", p, q))
    if not proper:
        return np.einsum("mji,mkj->mik", vt, u)
    d = np.sign(np.linalg.det(np.einsum("mji,mkj->mik", vt, u)))
    d[d == 0] = 1.0
    return np.einsum("mji,mj,mkj->mik", vt, np.stack([np.ones_like(d), np.ones_like(d), d], -1), u)
