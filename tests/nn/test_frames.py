"""Tests of crystalflow.nn.frames: anchor points, Gram-Schmidt and molecule frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toys import MOL_A, Z_A, toy_cluster

from crystalflow.data.dataset import collate
from crystalflow.nn.frames import anchor_points, gram_schmidt, in_frame, molecule_frames

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")


def batch64(n_mol: int = 7, seed: int = 1):
    return collate([toy_cluster(MOL_A, Z_A, n_mol, seed=seed), toy_cluster(MOL_A[:4], Z_A[:4], 5, seed=seed + 1)]).to(
        "cpu", torch.float64)


@pytest.mark.parametrize("n", [3, 4, 5, 12, 60, 200])
def test_anchor_points_span_space(n):
    w = anchor_points(torch.arange(n), torch.float64)
    sv = torch.linalg.svdvals(w - w.mean(0))
    # a unique best rotation needs rank >= 2 (three centred points are always planar); never near-degenerate
    assert sv[: min(n - 1, 3)].min() > 0.1 * np.sqrt(n)


def test_frames_of_rigid_copies_give_identical_local_coordinates_and_rotate_with_input():
    b = batch64()
    frames, c = molecule_frames(b.x_s, b)
    torch.testing.assert_close(torch.linalg.det(frames), torch.ones(len(frames), dtype=torch.float64))
    local = in_frame(frames[b.mol], b.x_s - c[b.mol])
    first = local[b.mol == 0]
    for g in range(1, 7):  # every molecule of the first cluster is a rigid copy of the first one
        torch.testing.assert_close(local[b.mol == g], first, atol=1e-5, rtol=0)  # float32 data
    q = torch.tensor(Rotation.random(random_state=3).as_matrix())
    moved, _ = molecule_frames(b.x_s @ q.T + 5.0, b)
    torch.testing.assert_close(moved, q @ frames, atol=1e-9, rtol=0)


def test_gram_schmidt_gives_rotations_along_the_first_vector():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, 3, generator=g, dtype=torch.float64)
    r = gram_schmidt(a, b)
    torch.testing.assert_close(r.transpose(1, 2) @ r, torch.eye(3, dtype=torch.float64).expand(10, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(r[:, :, 0], a / a.norm(dim=-1, keepdim=True))
    normal = torch.linalg.cross(a, b)  # the second column lies in the (a, b) plane
    torch.testing.assert_close((r[:, :, 1] * normal).sum(-1), torch.zeros(10, dtype=torch.float64), atol=1e-12, rtol=0)
    q = torch.tensor(Rotation.random(random_state=1).as_matrix())
    torch.testing.assert_close(gram_schmidt(a @ q.T, b @ q.T), q @ r)  # equivariant
