"""Tests of crystalflow.nn.rigid and the rigid (SE(3) geodesic) path and model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from crystalflow.backbones.registry import BackboneConfig
from crystalflow.data.dataset import collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.flow.model import ModelConfig, build_model
from crystalflow.flow.paths import RigidPath
from crystalflow.flow.solver import integrate
from crystalflow.nn.graph import segment_mean
from crystalflow.nn.rigid import (
    fit_rotations,
    rigid_velocity,
    so3_exp,
    so3_log,
    superpose_conformer,
)

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

MOL = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3], [0.2, -0.9, -1.0]])
Z = np.array([6, 6, 8, 7, 1])
FD_STEP = 1e-6


def rigid_cluster(n_mol: int = 4, seed: int = 0, mirror: bool = False) -> ClusterRecord:
    """x_s: rotated copies of MOL on a line; x_w: each molecule of x_s rotated and moved (optionally mirrored)."""
    rng = np.random.default_rng(seed)
    body = MOL - MOL.mean(0)
    centres = np.arange(n_mol)[:, None] * np.array([5.0, 0.5, 0.0])
    x_s = np.einsum("mij,nj->mni", Rotation.random(n_mol, random_state=seed).as_matrix(), body) + centres[:, None]
    rot = Rotation.random(n_mol, random_state=seed + 1).as_matrix()
    local = x_s - x_s.mean(1, keepdims=True)
    if mirror:
        local = -local
    x_w = np.einsum("mij,mnj->mni", rot, local) + (1.5 * centres + rng.normal(0, 1.0, centres.shape))[:, None]
    return ClusterRecord(x_s=x_s, x_w=x_w, z=Z)


def batch_of(*records):
    """A float64 batch (records are stored in float32: exact comparisons with x_s hold to ~1e-6 Å)."""
    return collate(list(records)).to("cpu", torch.float64)


# ------------------------------------------------------------------------------------------- SO(3)


@pytest.mark.parametrize("angle", [0.0, 1e-6, 0.3, 2.0, math.pi - 1e-5, math.pi])
def test_so3_exp_matches_scipy_and_log_inverts_it(angle):
    axis = torch.tensor([0.3, -0.5, 0.81], dtype=torch.float64)
    phi = axis / axis.norm() * angle
    r = so3_exp(phi)
    expect = Rotation.from_rotvec(phi.numpy()).as_matrix()
    np.testing.assert_allclose(r.numpy(), expect, atol=1e-12)
    back = so3_log(r)
    if angle < math.pi - 1e-3:
        torch.testing.assert_close(back, phi, atol=1e-9, rtol=0)
    else:  # at π the axis sign is arbitrary; the rotation must be the same
        torch.testing.assert_close(so3_exp(back), r, atol=1e-6, rtol=0)


def test_so3_log_batched_random_rotations():
    mats = torch.tensor(Rotation.random(200, random_state=4).as_matrix())
    torch.testing.assert_close(so3_exp(so3_log(mats)), mats, atol=1e-9, rtol=0)
    assert (so3_log(mats).norm(dim=-1) <= math.pi + 1e-12).all()


# ----------------------------------------------------------------------------------- superposition


def test_fit_rotations_recovers_rotation_and_respects_handedness():
    b = batch_of(rigid_cluster(3, seed=2))
    g, mol = b.num_molecules, b.mol
    p = b.x_w - segment_mean(b.x_w, mol, g)[mol]
    q = b.x_s - segment_mean(b.x_s, mol, g)[mol]
    r = fit_rotations(p, q, mol, g)
    torch.testing.assert_close(torch.einsum("nij,nj->ni", r[mol], p), q, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(g, dtype=torch.float64))
    mirrored = fit_rotations(-p, q, mol, g, proper=False)
    torch.testing.assert_close(torch.linalg.det(mirrored), -torch.ones(g, dtype=torch.float64))
    assert (torch.linalg.det(fit_rotations(-p, q, mol, g, proper=True)) > 0).all()


def test_superpose_conformer_is_rigid_and_keeps_pose():
    b = batch_of(rigid_cluster(3, seed=3))
    noisy = b.x_s + 0.02 * torch.randn(b.x_s.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = superpose_conformer(b.x_w, noisy, b.mol, b.num_molecules, proper=True)
    torch.testing.assert_close(fit, superpose_conformer(b.x_w, b.x_s, b.mol, b.num_molecules), atol=0.1, rtol=0)
    torch.testing.assert_close(superpose_conformer(b.x_w, b.x_s, b.mol, b.num_molecules), b.x_s, atol=1e-5, rtol=0)
    for m in range(b.num_molecules):
        sel = b.mol == m
        torch.testing.assert_close(torch.cdist(fit[sel], fit[sel]), torch.cdist(b.x_w[sel], b.x_w[sel]))


# ---------------------------------------------------------------------------------- rigid velocity


def test_rigid_velocity_hand_computed_spin():
    """Two atoms at ±1 on x spinning about z with velocities ±(0, 2, 0) plus a drift: ω = (0, 0, 2)."""
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, 2.0, 1.0], [0.5, -2.0, 1.0]], dtype=torch.float64)
    mol = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(rigid_velocity(v, x, mol, 1), v, atol=1e-5, rtol=0)
    # a stretching field (atoms moving apart along x) has no rigid part but the mean
    stretch = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(rigid_velocity(stretch, x, mol, 1), torch.zeros_like(x), atol=1e-12, rtol=0)


def test_rigid_velocity_projection_properties():
    b = batch_of(rigid_cluster(4, seed=5))
    g, mol, x = b.num_molecules, b.mol, b.x_s
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    pv = rigid_velocity(v, x, mol, g)
    torch.testing.assert_close(rigid_velocity(pv, x, mol, g), pv, atol=1e-9, rtol=0)  # idempotent
    # the residual is orthogonal to every rigid field: no net force, no net torque per molecule
    res = v - pv
    r = x - segment_mean(x, mol, g)[mol]
    zeros = torch.zeros(g, 3, dtype=torch.float64)
    torch.testing.assert_close(zeros.clone().index_add_(0, mol, res), zeros, atol=1e-9, rtol=0)
    torch.testing.assert_close(zeros.clone().index_add_(0, mol, torch.linalg.cross(r, res)), zeros, atol=1e-9, rtol=0)
    # equivariance under a rotation
    q = torch.tensor(Rotation.random(random_state=9).as_matrix())
    torch.testing.assert_close(rigid_velocity(v @ q.T, x @ q.T, mol, g), pv @ q.T, atol=1e-9, rtol=0)


# --------------------------------------------------------------------------------------- the path


def test_rigid_path_end_points_rigidity_and_velocity():
    b = batch_of(rigid_cluster(4, seed=6))
    path = RigidPath(sigma=0.0)
    g, mol = b.num_molecules, b.mol
    motion = path.motion(b.x_w, b.x_s, mol, g)
    zero = torch.zeros_like(b.x_w)

    def xt(t: float) -> torch.Tensor:
        return path.geodesic(b.x_w, motion, torch.full((len(mol), 1), t, dtype=torch.float64), zero, mol)

    torch.testing.assert_close(xt(0.0), b.x_w, atol=1e-5, rtol=0)
    torch.testing.assert_close(xt(1.0), b.x_s, atol=1e-5, rtol=0)
    for t in (0.2, 0.5, 0.8):
        x = xt(t)
        for m in range(g):
            sel = mol == m
            torch.testing.assert_close(torch.cdist(x[sel], x[sel]), torch.cdist(b.x_w[sel], b.x_w[sel]))
        fd = (xt(t + FD_STEP) - xt(t - FD_STEP)) / (2 * FD_STEP)
        torch.testing.assert_close(path.rigid_field(x, motion, mol, g), fd, atol=1e-6, rtol=0)


def test_rigid_path_mirrored_input_ends_on_proper_superposition():
    b = batch_of(rigid_cluster(3, seed=7, mirror=True))
    path = RigidPath(sigma=0.0)
    motion = path.motion(b.x_w, b.x_s, b.mol, b.num_molecules)
    end = path.geodesic(b.x_w, motion, torch.ones(len(b.mol), 1, dtype=torch.float64), torch.zeros_like(b.x_w), b.mol)
    best = superpose_conformer(b.x_w, b.x_s, b.mol, b.num_molecules, proper=True)
    torch.testing.assert_close(end, best, atol=1e-9, rtol=0)


# -------------------------------------------------------------------------------------- the model


def tiny_rigid(**kw):
    torch.manual_seed(0)
    net = BackboneConfig(hidden=16, layers=2, n_rbf=8)
    return build_model(ModelConfig(method="rigid", backbone=net, **kw)).double()


def test_rigid_model_velocity_is_rigid_and_equivariant():
    model = tiny_rigid()
    b = batch_of(rigid_cluster(4, seed=8), rigid_cluster(3, seed=9))
    x = b.x_w + 0.3 * torch.randn(b.x_w.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        v = model.velocity(x, 0.4, b)
        xr = model.constrain(x, b)
        torch.testing.assert_close(rigid_velocity(v, xr, b.mol, b.num_molecules), v, atol=1e-6, rtol=0)
        q = torch.tensor(Rotation.random(random_state=3).as_matrix())
        rotated = batch_of(rigid_cluster(4, seed=8), rigid_cluster(3, seed=9))
        rotated.x_w, rotated.x_s = b.x_w @ q.T, b.x_s @ q.T
        torch.testing.assert_close(model.velocity(x @ q.T, 0.4, rotated), v @ q.T, atol=1e-8, rtol=0)


def test_rigid_model_predictions_keep_the_conformer():
    model = tiny_rigid()
    b = batch_of(rigid_cluster(4, seed=10))
    pred, _, _ = integrate(model, b, model.prior(b, torch.Generator().manual_seed(0)), steps=5)
    for m in range(b.num_molecules):
        sel = b.mol == m
        torch.testing.assert_close(torch.cdist(pred[sel], pred[sel]), torch.cdist(b.x_w[sel], b.x_w[sel]))
