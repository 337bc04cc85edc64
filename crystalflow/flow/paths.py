"""Probability paths from the input x_w (t=0) to the crystal x_s (t=1), per CrystalFlow Appendix B.

Every path is affine in x_s, x_w and a Gaussian noise ε:

    x_t = α_t x_s + ω_t x_w + σ_t ε

A *scheduler* gives the coefficients (α_t, ω_t, σ_t) and their time derivatives; :class:`AffinePath`
turns them into samples x_t and velocity targets. Every path — affine or :class:`RigidPath` — offers the
same interface (:class:`ProbabilityPath`), so the model never asks which kind it holds:

- ``sample_t(B)`` training times and ``sample(x_w, x_s, t, noise, batch)`` → :class:`PathSample`
  (x_t, the velocity target, the clean end point x_1, t);
- ``prior(batch)`` the start x_0 of sampling, ``t_max`` the end time;
- ``constrain(x, batch)`` the positions a state must have (identity; rigid: the input conformer
  superposed on each molecule), ``project(out, x_t, batch)`` a network output turned into a velocity
  (identity; rigid: its rigid part), ``endpoint_velocity(x_t, x̂_1 − x_t, t, batch)`` the velocity
  towards a predicted end point.

- **LERP** (CrystalFlow-LERP, eqs. 36/37): α_t = t, ω_t = 1 − t, σ_t = s·(1 − (1 − σ_min) t) with a
  noise scale ``s`` (Å). The target is the paper's x_s − x_w (its loss ||x_s − x_w − v_θ||²), without
  the σ̇_t ε = −s(1 − σ_min) ε of the exact conditional velocity. Limits: x_t = x_w + sε at t=0 (= x_w
  only when s = 0) and x_s + s σ_min ε at t=1.
- **VE** (CrystalSDE-VE, eqs. 28/29): μ_t = x_s, σ_t = σ(1−t) with σ(u) = σ_min (σ_max/σ_min)^u.
  Target u_t(x|x_s) = −(σ'(1−t)/σ(1−t))(x − x_s) with σ' = dσ/du = ln(σ_max/σ_min) σ, i.e.
  u_t = −ln(σ_max/σ_min)(x − x_s), pointing towards the crystal (= σ̇_t ε with σ̇_t = dσ_t/dt < 0).
  Limits: σ_1 = σ_min at t=1 (x_t = x_s + σ_min ε), σ_0 = σ_max at t=0; the prior
  N(centre of x_w, σ_max²) replaces x_s + σ_max ε, exact only as σ_max ≫ the cluster's extent.
- **VP** (CrystalSDE-VP, eqs. 31–33): μ_t = α(1−t) x_s, σ_t = sqrt(1 − α(1−t)²),
  α(u) = exp(−T(u)/2), T(u) = u β_min + ½u²(β_max − β_min). Target ẋ = (σ̇_t/σ_t)(x − μ_t) + μ̇_t.
  VP contracts towards the origin, so it must be used in cluster-centred coordinates (the model
  subtracts each cluster's mean of x_w first). Limits: x_t = x_s exactly at t=1; at t=0 α(1) =
  exp(−(β_min + β_max)/4) ≈ 6.6e-3 for the defaults, so x_0 ≈ N(0, s²I) up to 0.0066 x_s, where the
  length unit s = ``VP_SCALE`` (10 Å) makes the process run on x / s as the paper's does on normalised data. σ_t → 0 at
  t=1 makes σ̇_t/σ_t diverge, so training times are drawn from [0, 1 − ``VP_T_EPS``].

The scheduler and the tensor-level formulas (``sample_xt``, ``target_velocity``, ``geodesic``) are
elementwise: pass ``t`` already broadcast to the atoms (e.g. ``t[batch.graph, None]``); ``sample`` and
``endpoint_velocity`` take one time per cluster [B].

- **Rigid** (CrystalFlow-Rigid, ours; :class:`RigidPath`): not affine in atom coordinates. Each molecule
  moves along the geodesic of SE(3) from its pose in x_w to its pose in x_s — the LERP of its centre and
  of its rotation vector — so every intermediate molecule keeps the input conformer (the atom-wise LERP
  squeezes a molecule turning by 180° through a line). The target velocity is a rigid field, and
  ``project`` maps the network's output onto rigid fields (:func:`crystalflow.nn.rigid.rigid_velocity`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from crystalflow.data.dataset import Batch
from crystalflow.nn.graph import segment_mean
from crystalflow.nn.rigid import fit_rotations, rigid_velocity, so3_exp, so3_log, superpose_conformer

#: LERP: default noise scale (Å) — about the rms thermal displacement of atoms in organic crystals
#: (U_iso ≈ 0.01–0.05 Å²), far below bond lengths (~1.0–1.5 Å) and the x_w → x_s displacements (several Å)
LERP_SIGMA = 0.1
#: LERP: σ_min of the paper's σ_t = 1 − (1 − σ_min) t
LERP_SIGMA_MIN = 1e-3
#: VE: smallest noise (Å), reached at t = 1
VE_SIGMA_MIN = 0.01
#: VE: largest noise (Å), at t = 0; ≫ the per-axis spread of a 17-molecule cluster (≈ 6 Å, rms radius ≈ 10 Å)
VE_SIGMA_MAX = 20.0
#: VP: β_min, β_max of the linear β schedule (Song et al. 2021 defaults)
VP_BETA_MIN = 0.1
VP_BETA_MAX = 20.0
#: VP: length unit (Å) of the VP process: it runs on x / VP_SCALE, so its N(0, I) prior spans a cluster
#: (rms radius ≈ 10 Å) instead of collapsing 17 molecules into a 1 Å ball (which also makes contact
#: graphs dense and sampling slow)
VP_SCALE = 10.0
#: VP: training times are drawn from [0, 1 − VP_T_EPS] because σ̇_t/σ_t diverges at t = 1
VP_T_EPS = 1e-3
#: endpoint velocities divide by 1 − t; an adaptive solver may ask at t = 1, so 1 − t is held at least this
MIN_REMAINING_TIME = 1e-2


@dataclass(frozen=True)
class SchedulerOutput:
    """Coefficients of x_t = α_t x_s + ω_t x_w + σ_t ε and their time derivatives."""

    alpha_t: Tensor
    omega_t: Tensor
    sigma_t: Tensor
    d_alpha_t: Tensor
    d_omega_t: Tensor
    d_sigma_t: Tensor


class Scheduler(Protocol):
    """Maps times t (any shape) to :class:`SchedulerOutput` of the same shape."""

    def __call__(self, t: Tensor) -> SchedulerOutput: ...


@dataclass(frozen=True)
class LerpScheduler:
    """CrystalFlow-LERP: μ_t = (1 − t) x_w + t x_s, σ_t = sigma · (1 − (1 − sigma_min) t)."""

    sigma: float = LERP_SIGMA
    sigma_min: float = LERP_SIGMA_MIN

    def __call__(self, t: Tensor) -> SchedulerOutput:
        one = torch.ones_like(t)
        slope = self.sigma * (1.0 - self.sigma_min)
        return SchedulerOutput(
            alpha_t=t, omega_t=1.0 - t, sigma_t=self.sigma - slope * t,
            d_alpha_t=one, d_omega_t=-one, d_sigma_t=-slope * one,
        )


@dataclass(frozen=True)
class VEScheduler:
    """CrystalSDE-VE: μ_t = x_s, σ_t = σ(1 − t), σ(u) = sigma_min (sigma_max / sigma_min)^u."""

    sigma_min: float = VE_SIGMA_MIN
    sigma_max: float = VE_SIGMA_MAX

    @property
    def log_ratio(self) -> float:
        """ln(σ_max / σ_min) = σ'(u) / σ(u)."""
        return math.log(self.sigma_max / self.sigma_min)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        sigma = self.sigma_min * torch.exp((1.0 - t) * self.log_ratio)
        one, zero = torch.ones_like(t), torch.zeros_like(t)
        return SchedulerOutput(
            alpha_t=one, omega_t=zero, sigma_t=sigma,
            d_alpha_t=zero, d_omega_t=zero, d_sigma_t=-self.log_ratio * sigma,
        )


@dataclass(frozen=True)
class VPScheduler:
    """CrystalSDE-VP: μ_t = α(1 − t) x_s, σ_t = s·sqrt(1 − α(1 − t)²), α(u) = exp(−T(u)/2).

    ``scale`` s is the length unit: the paper's VP process applied to x / s, written back in Å.
    """

    beta_min: float = VP_BETA_MIN
    beta_max: float = VP_BETA_MAX
    scale: float = VP_SCALE

    def T(self, u: Tensor) -> Tensor:  # noqa: N802 (the paper's name)
        """T(u) = u β_min + ½ u² (β_max − β_min)."""
        return u * self.beta_min + 0.5 * u * u * (self.beta_max - self.beta_min)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        u = 1.0 - t
        alpha = torch.exp(-0.5 * self.T(u))
        # d/dt α(1 − t) = −α'(u) = ½ T'(u) α(u)
        d_alpha = 0.5 * (self.beta_min + u * (self.beta_max - self.beta_min)) * alpha
        unit_sigma = torch.sqrt(1.0 - alpha * alpha)
        zero = torch.zeros_like(t)
        return SchedulerOutput(
            alpha_t=alpha, omega_t=zero, sigma_t=self.scale * unit_sigma,
            d_alpha_t=d_alpha, d_omega_t=zero, d_sigma_t=-self.scale * alpha * d_alpha / unit_sigma,
        )


def cluster_mean(x: Tensor, graph: Tensor, num_graphs: int) -> Tensor:
    """Per-cluster mean [B, 3] of atom positions x [N, 3] (``graph`` gives the cluster of each atom)."""
    return segment_mean(x, graph, num_graphs)


def remaining_time(t: Tensor, batch: Batch) -> Tensor:
    """Per-atom 1 − t [N, 1] for per-cluster times ``t`` [B], held at least :data:`MIN_REMAINING_TIME`."""
    return (1.0 - t).clamp(min=MIN_REMAINING_TIME)[batch.graph, None]


@dataclass(frozen=True)
class PathSample:
    """One draw from a conditional path: what a training loss needs."""

    x_t: Tensor  #: [N, 3] the point on the path at time t
    target: Tensor  #: [N, 3] the velocity the network regresses at x_t
    x_1: Tensor  #: [N, 3] the clean end point, regressed by endpoint prediction (x_s; rigid: x_w's conformer on x_s)
    t: Tensor  #: [B] the time of each cluster


class ProbabilityPath(Protocol):
    """What the model and the solver use of a path (see the module docstring)."""

    t_max: float

    def sample_t(self, num_graphs: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor: ...

    def sample(self, x_w: Tensor, x_s: Tensor, t: Tensor, noise: Tensor, batch: Batch) -> PathSample: ...

    def prior(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor: ...

    def constrain(self, x: Tensor, batch: Batch) -> Tensor: ...

    def project(self, out: Tensor, x_t: Tensor, batch: Batch) -> Tensor: ...

    def endpoint_velocity(self, x_t: Tensor, displacement: Tensor, t: Tensor, batch: Batch) -> Tensor: ...


class AffinePath:
    """A conditional probability path x_t = α_t x_s + ω_t x_w + σ_t ε from a scheduler.

    ``prior_mean`` is ``'x_w'`` (x_0 = x_w + prior_std ε) or ``'centre'`` (x_0 = cluster mean of x_w +
    prior_std ε). ``noise_in_target`` adds σ̇_t ε to the target velocity (the exact d x_t / dt).
    """

    def __init__(
        self, scheduler: Scheduler, prior_mean: str, prior_std: float, noise_in_target: bool = True,
        t_max: float = 1.0,
    ) -> None:
        if prior_mean not in ("x_w", "centre"):
            raise ValueError(f"prior_mean must be 'x_w' or 'centre', not {prior_mean!r}")
        self.scheduler = scheduler
        self.prior_mean = prior_mean
        self.prior_std = prior_std
        self.noise_in_target = noise_in_target
        self.t_max = t_max

    def sample_t(self, num_graphs: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Training times [B] ~ U(0, t_max), one per cluster."""
        return torch.rand(num_graphs, generator=generator, device=device, dtype=dtype) * self.t_max

    def sample_xt(self, x_w: Tensor, x_s: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = α_t x_s + ω_t x_w + σ_t ε (``t`` broadcast to the atoms, e.g. [N, 1])."""
        c = self.scheduler(t)
        return c.alpha_t * x_s + c.omega_t * x_w + c.sigma_t * noise

    def target_velocity(self, x_w: Tensor, x_s: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Regression target u_t = α̇_t x_s + ω̇_t x_w (+ σ̇_t ε when ``noise_in_target``)."""
        c = self.scheduler(t)
        u = c.d_alpha_t * x_s + c.d_omega_t * x_w
        return u + c.d_sigma_t * noise if self.noise_in_target else u

    def velocity_from_xt(self, x_t: Tensor, x_w: Tensor, x_s: Tensor, t: Tensor) -> Tensor:
        """The same exact target written without ε: (σ̇_t/σ_t)(x_t − μ_t) + μ̇_t (needs σ_t > 0)."""
        c = self.scheduler(t)
        mu = c.alpha_t * x_s + c.omega_t * x_w
        return c.d_sigma_t / c.sigma_t * (x_t - mu) + c.d_alpha_t * x_s + c.d_omega_t * x_w

    def sample(self, x_w: Tensor, x_s: Tensor, t: Tensor, noise: Tensor, batch: Batch) -> PathSample:
        """x_t and its target at per-cluster times ``t`` [B]; the end point is x_s."""
        t_atom = t[batch.graph, None]
        return PathSample(x_t=self.sample_xt(x_w, x_s, t_atom, noise),
                          target=self.target_velocity(x_w, x_s, t_atom, noise), x_1=x_s, t=t)

    def prior(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """x_0 [N, 3]: x_w or its cluster mean, plus prior_std · N(0, I)."""
        x_w = batch.x_w
        mean = x_w if self.prior_mean == "x_w" else cluster_mean(x_w, batch.graph, batch.num_graphs)[batch.graph]
        noise = torch.randn(x_w.shape, generator=generator, device=x_w.device, dtype=x_w.dtype)
        return mean + self.prior_std * noise

    def constrain(self, x: Tensor, batch: Batch) -> Tensor:
        """Every position is a state of an affine path: ``x`` unchanged."""
        return x

    def project(self, out: Tensor, x_t: Tensor, batch: Batch) -> Tensor:
        """The network's output is the velocity: ``out`` unchanged."""
        return out

    def endpoint_velocity(self, x_t: Tensor, displacement: Tensor, t: Tensor, batch: Batch) -> Tensor:
        """(x̂_1 − x_t)/(1 − t) for a predicted ``displacement`` x̂_1 − x_t (a path that ends at x_1: LERP)."""
        return displacement / remaining_time(t, batch)


def lerp_path(sigma: float = LERP_SIGMA, sigma_min: float = LERP_SIGMA_MIN) -> AffinePath:
    """CrystalFlow-LERP; x_0 = x_w + sigma ε, target x_s − x_w (the paper's)."""
    return AffinePath(LerpScheduler(sigma, sigma_min), "x_w", sigma, noise_in_target=False)


def ve_path(sigma_min: float = VE_SIGMA_MIN, sigma_max: float = VE_SIGMA_MAX) -> AffinePath:
    """CrystalSDE-VE as a flow; x_0 ~ N(cluster centre of x_w, σ_max²)."""
    return AffinePath(VEScheduler(sigma_min, sigma_max), "centre", sigma_max)


def vp_path(beta_min: float = VP_BETA_MIN, beta_max: float = VP_BETA_MAX, t_eps: float = VP_T_EPS,
            scale: float = VP_SCALE) -> AffinePath:
    """CrystalSDE-VP as a flow (cluster-centred coordinates, unit ``scale`` Å); x_0 ~ N(centre of x_w, scale²)."""
    return AffinePath(VPScheduler(beta_min, beta_max, scale), "centre", scale, t_max=1.0 - t_eps)


@dataclass(frozen=True)
class RigidMotion:
    """Per-molecule motion from x_w to x_s: start centre, centre shift and rotation vector ([G, 3] each)."""

    centre: Tensor
    shift: Tensor
    phi: Tensor


class RigidPath:
    """CrystalFlow-Rigid: every molecule follows the SE(3) geodesic from its pose in x_w to the crystal.

    With the molecule's centres c_w, c_s and the proper rotation R = exp([φ]×) superposing its atoms in
    x_w onto those in x_s (Kabsch):

        x_t = (1 − t) c_w + t c_s + exp(t[φ]×)(x_w − c_w) + σ_t ε,     σ_t as LERP's

    and the target at a (rigid) point x is the rigid field (c_s − c_w) + φ × (x − centre(x)): constant
    translation and angular velocity. x_1 = x_s when each molecule of x_s is a proper rigid motion of
    its x_w (always, except for the inversion variant's mirrored molecules, which end on their best
    proper superposition: a rigid motion cannot change handedness). Times, σ_t and the prior x_w + σ ε
    are LERP's; states are constrained to the input conformer (:meth:`constrain`), so the noisy sample
    and the prior become rigid copies of x_w's molecules before the network sees them.
    """

    def __init__(self, sigma: float = LERP_SIGMA, sigma_min: float = LERP_SIGMA_MIN) -> None:
        # times, noise schedule and prior x_w + σ ε are LERP's
        self._lerp = lerp_path(sigma, sigma_min)
        self.t_max = self._lerp.t_max
        self.sample_t = self._lerp.sample_t
        self.prior = self._lerp.prior

    @staticmethod
    def motion(x_w: Tensor, x_s: Tensor, mol: Tensor, num: int) -> RigidMotion:
        """The per-molecule motion (centre, shift, rotation vector) taking x_w to x_s."""
        c_w, c_s = segment_mean(x_w, mol, num), segment_mean(x_s, mol, num)
        r = fit_rotations(x_w - c_w[mol], x_s - c_s[mol], mol, num, proper=True)
        return RigidMotion(centre=c_w, shift=c_s - c_w, phi=so3_log(r))

    def geodesic(self, x_w: Tensor, motion: RigidMotion, t: Tensor, noise: Tensor, mol: Tensor) -> Tensor:
        """x_t on the geodesic plus σ_t ε (``t`` broadcast to the atoms, [N, 1])."""
        rot = so3_exp(t * motion.phi[mol])  # [N, 3, 3], one per atom
        p = x_w - motion.centre[mol]
        x = motion.centre[mol] + t * motion.shift[mol] + torch.einsum("nij,nj->ni", rot, p)
        return x + self._lerp.scheduler(t).sigma_t * noise

    @staticmethod
    def rigid_field(x: Tensor, motion: RigidMotion, mol: Tensor, num: int) -> Tensor:
        """The rigid target field at positions ``x``: shift + φ × (x − molecule centre)."""
        r = x - segment_mean(x, mol, num)[mol]
        return motion.shift[mol] + torch.linalg.cross(motion.phi[mol], r)

    def sample(self, x_w: Tensor, x_s: Tensor, t: Tensor, noise: Tensor, batch: Batch) -> PathSample:
        """The constrained geodesic point at per-cluster times ``t`` [B], its rigid target field and end point."""
        mol, g = batch.mol, batch.num_molecules
        motion = self.motion(x_w, x_s, mol, g)
        x_t = self.constrain(self.geodesic(x_w, motion, t[batch.graph, None], noise, mol), batch)
        return PathSample(x_t=x_t, target=self.rigid_field(x_t, motion, mol, g), x_1=self.constrain(x_s, batch), t=t)

    def constrain(self, x: Tensor, batch: Batch) -> Tensor:
        """The input conformer (``batch.x_w``) superposed on each molecule of ``x`` (proper rotations)."""
        return superpose_conformer(batch.x_w, x, batch.mol, batch.num_molecules, proper=True)

    def project(self, out: Tensor, x_t: Tensor, batch: Batch) -> Tensor:
        """The least-squares rigid part of the per-atom output ``out`` at ``x_t`` (a rigid velocity)."""
        return rigid_velocity(out, x_t, batch.mol, batch.num_molecules)

    def endpoint_velocity(self, x_t: Tensor, displacement: Tensor, t: Tensor, batch: Batch) -> Tensor:
        """The rigid field of the motion from ``x_t`` to the superposed x̂_1 = x_t + ``displacement``, over 1 − t."""
        g = batch.num_molecules
        motion = self.motion(x_t, self.constrain(x_t + displacement, batch), batch.mol, g)
        return self.rigid_field(x_t, motion, batch.mol, g) / remaining_time(t, batch)


def rigid_path(sigma: float = LERP_SIGMA, sigma_min: float = LERP_SIGMA_MIN) -> RigidPath:
    """CrystalFlow-Rigid: per-molecule SE(3) geodesics, σ_t as LERP's."""
    return RigidPath(sigma, sigma_min)
