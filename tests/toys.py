"""Toy clusters shared by the backbone and model tests, and toy predictions for the evaluation tests."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from crystalflow.data.shards import ClusterRecord

#: two small made-up molecules (Å) with atomic numbers
MOL_A = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3], [0.3, -0.9, 0.9]])
Z_A = np.array([6, 6, 8, 7, 1])
MOL_B = np.array([[0.0, 0.0, 0.0], [1.2, 0.3, 0.0], [-0.4, 1.1, -0.2]])
Z_B = np.array([8, 1, 1])

SPACING = 4.5  #: distance between neighbouring molecule centres in x_s (Å), so contacts < 4 Å exist


def toy_cluster(template: np.ndarray, z: np.ndarray, n_mol: int, seed: int, half_width: int = 2) -> ClusterRecord:
    """Randomly rotated copies of ``template`` on the nearest points of a cubic grid (x_s, grid indices
    −half_width..half_width), each rotated again, spread by 1.6 and displaced by 1.5 Å (x_w)."""
    rng = np.random.default_rng(seed)
    axis = np.arange(-half_width, half_width + 1)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) * SPACING
    centres = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")[:n_mol]]
    body = template - template.mean(0)
    rot_s = Rotation.random(n_mol, random_state=rng.integers(1 << 31)).as_matrix()
    rot_w = Rotation.random(n_mol, random_state=rng.integers(1 << 31)).as_matrix()
    x_s = np.einsum("mij,nj->mni", rot_s, body) + centres[:, None]
    new_centres = 1.6 * centres + rng.normal(0.0, 1.5, centres.shape)
    x_w = np.einsum("mij,mnj->mni", rot_w, x_s - centres[:, None]) + new_centres[:, None]
    return ClusterRecord(x_s=x_s, x_w=x_w, z=z)


PREDICTION_SEED = 7


def toy_prediction_cluster(rng: np.random.Generator, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A toy cluster: m copies of a rigid n-atom molecule on a coarse grid, and its atomic numbers."""
    mol = rng.normal(scale=0.7, size=(n, 3))
    offsets = np.array([[i % 3, (i // 3) % 3, i // 9] for i in range(m)], dtype=float) * 6.0
    z = rng.choice([1, 6, 7, 8], size=n)
    return (mol[None] + offsets[:, None]).astype(np.float32), z


def toy_predictions(n_items: int = 5):
    """Synthetic clusters with varying M, n, K and optional trajectories."""
    rng = np.random.default_rng(PREDICTION_SEED)
    out = []
    for c in range(n_items):
        m, n, k = 3 + c, 4 + 2 * c, 1 + c % 3
        x_s, z = toy_prediction_cluster(rng, m, n)
        x_w = x_s + rng.normal(scale=0.5, size=x_s.shape).astype(np.float32)
        pred = x_s[None] + rng.normal(scale=0.3, size=(k, *x_s.shape)).astype(np.float32)
        traj = times = None
        if c % 2 == 0:
            t = 3 + c
            traj = rng.normal(size=(t, k, *x_s.shape)).astype(np.float32)
            times = np.linspace(0, 1, t) if c else None
        meta = {"index": c, "split": "test" if c % 2 else "valid", "key": f"toy-{c}", "density": 1.3}
        out.append((meta, x_w, x_s, z, pred, traj, times))
    return out
