"""Tests of crystalflow.flow.paths: end points, finite-difference velocities, hand values and the path interface."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toys import toy_cluster

from crystalflow.data.dataset import collate
from crystalflow.flow.paths import (
    MIN_REMAINING_TIME,
    AffinePath,
    LerpScheduler,
    PathSample,
    VEScheduler,
    VPScheduler,
    cluster_mean,
    lerp_path,
    rigid_path,
    ve_path,
    vp_path,
)
from crystalflow.nn.rigid import rigid_velocity, superpose_conformer

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

N_ATOMS = 12
FD_STEP = 1e-6  #: central-difference step in t (float64)
FD_TOL = 1e-6
EXACT = 1e-12


def tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_w = torch.randn(N_ATOMS, 3, generator=g, dtype=torch.float64) * 5
    x_s = torch.randn(N_ATOMS, 3, generator=g, dtype=torch.float64) * 5
    noise = torch.randn(N_ATOMS, 3, generator=g, dtype=torch.float64)
    return x_w, x_s, noise


def full(t: float) -> torch.Tensor:
    return torch.full((N_ATOMS, 1), t, dtype=torch.float64)


def fd_velocity(path, x_w, x_s, noise, t: float) -> torch.Tensor:
    """Central difference d x_t / dt at fixed ε."""
    hi = path.sample_xt(x_w, x_s, full(t + FD_STEP), noise)
    lo = path.sample_xt(x_w, x_s, full(t - FD_STEP), noise)
    return (hi - lo) / (2 * FD_STEP)


TIMES = [0.1, 0.37, 0.5, 0.9]


# ---------------------------------------------------------------------------------------- LERP


def test_lerp_end_points():
    x_w, x_s, noise = tensors()
    noiseless = lerp_path(sigma=0.0)
    torch.testing.assert_close(noiseless.sample_xt(x_w, x_s, full(0.0), noise), x_w, atol=EXACT, rtol=0)
    torch.testing.assert_close(noiseless.sample_xt(x_w, x_s, full(1.0), noise), x_s, atol=EXACT, rtol=0)
    noisy = lerp_path(sigma=0.2, sigma_min=1e-3)
    torch.testing.assert_close(noisy.sample_xt(x_w, x_s, full(0.0), noise), x_w + 0.2 * noise, atol=EXACT, rtol=0)
    torch.testing.assert_close(noisy.sample_xt(x_w, x_s, full(1.0), noise), x_s + 0.2e-3 * noise, atol=EXACT, rtol=0)


@pytest.mark.parametrize("t", TIMES)
def test_lerp_target_is_paper_velocity_and_fd_without_noise(t):
    x_w, x_s, noise = tensors()
    path = lerp_path(sigma=0.1)
    torch.testing.assert_close(path.target_velocity(x_w, x_s, full(t), noise), x_s - x_w, atol=EXACT, rtol=0)
    noiseless = lerp_path(sigma=0.0)
    torch.testing.assert_close(noiseless.target_velocity(x_w, x_s, full(t), noise),
                               fd_velocity(noiseless, x_w, x_s, noise, t), atol=FD_TOL, rtol=0)
    exact = AffinePath(LerpScheduler(0.1), "x_w", 0.1, noise_in_target=True)  # + σ̇_t ε: the exact d x_t / dt
    torch.testing.assert_close(exact.target_velocity(x_w, x_s, full(t), noise),
                               fd_velocity(exact, x_w, x_s, noise, t), atol=FD_TOL, rtol=0)


def test_lerp_hand_values():
    x_w, x_s, noise = tensors()
    sched = LerpScheduler(sigma=0.1, sigma_min=1e-3)
    c = sched(torch.tensor(0.25, dtype=torch.float64))
    assert float(c.sigma_t) == pytest.approx(0.1 * (1 - 0.999 * 0.25))
    x_t = lerp_path(0.1, 1e-3).sample_xt(x_w, x_s, full(0.25), noise)
    torch.testing.assert_close(x_t, 0.75 * x_w + 0.25 * x_s + 0.1 * (1 - 0.999 * 0.25) * noise, atol=EXACT, rtol=0)


# ------------------------------------------------------------------------------------------ VE


def test_ve_end_points():
    x_w, x_s, noise = tensors()
    path = ve_path(sigma_min=0.01, sigma_max=20.0)
    torch.testing.assert_close(path.sample_xt(x_w, x_s, full(1.0), noise), x_s + 0.01 * noise, atol=EXACT, rtol=0)
    torch.testing.assert_close(path.sample_xt(x_w, x_s, full(0.0), noise), x_s + 20.0 * noise, atol=1e-10, rtol=0)


@pytest.mark.parametrize("t", TIMES)
def test_ve_target_fd_and_eq29(t):
    x_w, x_s, noise = tensors()
    path = ve_path(sigma_min=0.01, sigma_max=20.0)
    target = path.target_velocity(x_w, x_s, full(t), noise)
    torch.testing.assert_close(target, fd_velocity(path, x_w, x_s, noise, t), atol=1e-5, rtol=1e-7)
    x_t = path.sample_xt(x_w, x_s, full(t), noise)
    # eq. 29 with the 1 − t reparametrisation: u_t = −ln(σ_max/σ_min) (x − x_s), towards the crystal
    torch.testing.assert_close(target, -math.log(20.0 / 0.01) * (x_t - x_s), atol=1e-10, rtol=1e-12)
    torch.testing.assert_close(path.velocity_from_xt(x_t, x_w, x_s, full(t)), target, atol=1e-10, rtol=1e-12)


def test_ve_hand_values():
    c = VEScheduler(0.01, 20.0)(torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(c.sigma_t, torch.tensor([math.sqrt(0.01 * 20.0), 20.0, 0.01], dtype=torch.float64))
    torch.testing.assert_close(c.d_sigma_t, -math.log(2000.0) * c.sigma_t)


# ------------------------------------------------------------------------------------------ VP


def test_vp_end_points():
    x_w, x_s, noise = tensors()
    path = vp_path(beta_min=0.1, beta_max=20.0, scale=2.5)
    torch.testing.assert_close(path.sample_xt(x_w, x_s, full(1.0), noise), x_s, atol=EXACT, rtol=0)
    alpha_1 = math.exp(-0.25 * (0.1 + 20.0))  # α(u=1) = exp(−T(1)/2), T(1) = (β_min + β_max)/2
    x_0 = path.sample_xt(x_w, x_s, full(0.0), noise)
    torch.testing.assert_close(x_0, alpha_1 * x_s + 2.5 * math.sqrt(1 - alpha_1**2) * noise, atol=EXACT, rtol=0)
    assert alpha_1 < 7e-3
    assert path.t_max < 1.0


@pytest.mark.parametrize("t", TIMES)
def test_vp_target_fd_and_affine_form(t):
    x_w, x_s, noise = tensors()
    path = vp_path()
    target = path.target_velocity(x_w, x_s, full(t), noise)
    torch.testing.assert_close(target, fd_velocity(path, x_w, x_s, noise, t), atol=1e-5, rtol=1e-7)
    x_t = path.sample_xt(x_w, x_s, full(t), noise)
    torch.testing.assert_close(path.velocity_from_xt(x_t, x_w, x_s, full(t)), target, atol=1e-9, rtol=1e-9)


def test_vp_hand_values():
    t = 0.5
    u = 1 - t
    T = u * 0.1 + 0.5 * u * u * (20.0 - 0.1)
    alpha = math.exp(-T / 2)
    d_alpha = 0.5 * (0.1 + u * 19.9) * alpha
    sigma = math.sqrt(1 - alpha**2)
    scale = 10.0  # the process runs on x / scale
    c = VPScheduler(0.1, 20.0, scale)(torch.tensor(t, dtype=torch.float64))
    assert float(c.alpha_t) == pytest.approx(alpha, rel=1e-12)
    assert float(c.sigma_t) == pytest.approx(scale * sigma, rel=1e-12)
    assert float(c.d_alpha_t) == pytest.approx(d_alpha, rel=1e-12)
    assert float(c.d_sigma_t) == pytest.approx(-scale * alpha * d_alpha / sigma, rel=1e-12)


# ----------------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize("sched", [LerpScheduler(0.3, 1e-3), VEScheduler(0.01, 20.0), VPScheduler(0.1, 20.0)])
def test_scheduler_derivatives_match_finite_differences(sched):
    t = torch.tensor(TIMES, dtype=torch.float64)
    c, hi, lo = sched(t), sched(t + FD_STEP), sched(t - FD_STEP)
    for name in ("alpha_t", "omega_t", "sigma_t"):
        fd = (getattr(hi, name) - getattr(lo, name)) / (2 * FD_STEP)
        torch.testing.assert_close(getattr(c, "d_" + name), fd, atol=1e-5, rtol=1e-6)


# ------------------------------------------------------------------------------- priors, times


def test_cluster_mean():
    x = torch.tensor([[0.0, 0, 0], [2, 0, 0], [1, 1, 1], [3, 3, 3], [5, 5, 5]], dtype=torch.float64)
    graph = torch.tensor([0, 0, 1, 1, 1])
    torch.testing.assert_close(cluster_mean(x, graph, 2), torch.tensor([[1.0, 0, 0], [3, 3, 3]], dtype=torch.float64))


def test_priors():
    n = 20000
    g = torch.Generator().manual_seed(0)
    x_w = torch.randn(n, 3, generator=g, dtype=torch.float64) * 3 + torch.tensor([10.0, 0, 0], dtype=torch.float64)
    batch = SimpleNamespace(x_w=x_w, graph=torch.zeros(n, dtype=torch.long), num_graphs=1)  # what prior() reads
    centre = x_w.mean(0)
    ve = ve_path(sigma_max=20.0).prior(batch, torch.Generator().manual_seed(1))
    assert torch.allclose(ve.mean(0), centre, atol=0.5) and ve.std(0).sub(20.0).abs().max() < 0.5
    vp = vp_path(scale=1.0).prior(batch, torch.Generator().manual_seed(1))
    assert torch.allclose(vp.mean(0), centre, atol=0.05) and vp.std(0).sub(1.0).abs().max() < 0.05
    vp10 = vp_path().prior(batch, torch.Generator().manual_seed(1))  # default unit: 10 Å
    assert vp10.std(0).sub(10.0).abs().max() < 0.5
    noise = torch.randn(x_w.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lerp = lerp_path(sigma=0.1).prior(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(lerp, x_w + 0.1 * noise)
    torch.testing.assert_close(rigid_path(sigma=0.1).prior(batch, torch.Generator().manual_seed(1)), lerp)


def test_sample_t_range():
    for path in (lerp_path(), ve_path(), vp_path()):
        t = path.sample_t(1000, torch.Generator().manual_seed(0))
        assert t.shape == (1000,) and float(t.min()) >= 0.0 and float(t.max()) <= path.t_max


# ------------------------------------------------------------------------------------ the interface

MOL = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3]])
Z = np.array([6, 6, 8, 7])


def toy_batch():
    return collate([toy_cluster(MOL, Z, 5, seed=1, half_width=1), toy_cluster(MOL, Z, 3, seed=2, half_width=1)]).to(
        "cpu", torch.float64)


@pytest.mark.parametrize("path", [lerp_path(), ve_path(), vp_path()], ids=["lerp", "ve", "vp"])
def test_affine_paths_sample_the_formulas_and_leave_states_and_outputs_alone(path):
    b = toy_batch()
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    noise = torch.randn(b.x_w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = path.sample(b.x_w, b.x_s, t, noise, b)
    assert isinstance(s, PathSample) and s.t is t and s.x_1 is b.x_s
    t_atom = t[b.graph, None]
    torch.testing.assert_close(s.x_t, path.sample_xt(b.x_w, b.x_s, t_atom, noise), atol=0, rtol=0)
    torch.testing.assert_close(s.target, path.target_velocity(b.x_w, b.x_s, t_atom, noise), atol=0, rtol=0)
    out = torch.randn_like(b.x_w)
    assert path.constrain(s.x_t, b) is s.x_t and path.project(out, s.x_t, b) is out


def test_lerp_endpoint_velocity_points_at_the_end_point():
    b = toy_batch()
    path = lerp_path()
    x_t = b.x_w + 0.1
    t = torch.tensor([0.5, 1.0], dtype=torch.float64)  # at t = 1 the remaining time is held at its minimum
    v = path.endpoint_velocity(x_t, b.x_s - x_t, t, b)
    first = b.graph == 0
    torch.testing.assert_close(v[first], (b.x_s - x_t)[first] / 0.5)
    torch.testing.assert_close(v[~first], (b.x_s - x_t)[~first] / MIN_REMAINING_TIME)


def test_rigid_path_constrains_projects_and_samples_rigid_states():
    b = toy_batch()
    path = rigid_path(sigma=0.1)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    noise = torch.randn(b.x_w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = path.sample(b.x_w, b.x_s, t, noise, b)
    mol, g = b.mol, b.num_molecules
    torch.testing.assert_close(s.x_t, superpose_conformer(b.x_w, s.x_t, mol, g, proper=True))  # a rigid state
    torch.testing.assert_close(s.x_1, path.constrain(b.x_s, b))
    motion = path.motion(b.x_w, b.x_s, mol, g)
    torch.testing.assert_close(s.target, path.rigid_field(s.x_t, motion, mol, g))
    out = torch.randn_like(b.x_w)
    torch.testing.assert_close(path.project(out, s.x_t, b), rigid_velocity(out, s.x_t, mol, g))
    # the endpoint velocity is the rigid field of the motion onto the superposed end point, over 1 − t
    v = path.endpoint_velocity(s.x_t, b.x_s - s.x_t, t, b)
    end = path.constrain(b.x_s, b)
    expect = path.rigid_field(s.x_t, path.motion(s.x_t, end, mol, g), mol, g) / (1 - t)[b.graph, None]
    torch.testing.assert_close(v, expect)
