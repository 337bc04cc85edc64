"""Toy clusters shared by the backbone and model tests."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from crystalflow.data.shards import ClusterRecord

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
