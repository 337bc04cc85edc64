"""Rigid-body geometry of the molecules of a batch: superposition, SO(3) exp/log and rigid velocities.

Everything is batched over molecules with ``index_add_`` (atoms [N, 3], ``mol`` [N] the molecule of
each atom, ``num`` molecules). Rotations act on column vectors: ``q ≈ R p``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from crystalflow.nn.graph import segment_mean

#: rotation angles below this (rad) use Taylor expansions in exp/log
SMALL_ANGLE = 1e-4
#: angles within this of π (rad) take the rotation axis from R + Rᵀ instead of R − Rᵀ
NEAR_PI = 1e-3
#: inertia eigenvalues below this fraction of the largest are treated as zero (linear molecules, single atoms)
INERTIA_CUTOFF = 1e-6


def hat(v: Tensor) -> Tensor:
    """Skew matrices [..., 3, 3] with ``hat(v) @ w = v × w``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(phi: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] of rotation vectors ``phi`` [..., 3] (Rodrigues' formula)."""
    theta = phi.norm(dim=-1)[..., None, None]
    small = theta < SMALL_ANGLE
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1.0 - theta**2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta**2 / 24.0, (1.0 - torch.cos(safe)) / safe**2)
    k = hat(phi)
    eye = torch.eye(3, dtype=phi.dtype, device=phi.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def so3_log(r: Tensor) -> Tensor:
    """Rotation vectors [..., 3] (angle in [0, π]) of rotation matrices ``r`` [..., 3, 3]."""
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    vee = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    small = theta < SMALL_ANGLE
    safe_sin = torch.where(small, torch.ones_like(theta), torch.sin(theta))
    generic = torch.where(small, 0.5 + theta**2 / 12.0, theta / (2.0 * safe_sin))[..., None] * vee
    # near π, sin θ ≈ 0 loses the axis: take it from the symmetric part (R + Rᵀ)/2 = cos θ 1 + (1 − cos θ) a aᵀ
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    aat = ((r + r.transpose(-1, -2)) / 2.0 - cos[..., None, None] * eye) / (1.0 - cos).clamp(min=1e-12)[..., None, None]
    col = aat.diagonal(dim1=-2, dim2=-1).argmax(-1)
    axis = torch.gather(aat, -1, col[..., None, None].expand(*aat.shape[:-1], 1))[..., 0]
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    sign = torch.where((axis * vee).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(r.dtype)
    near_pi = (theta > math.pi - NEAR_PI)[..., None]
    return torch.where(near_pi, sign * axis * theta[..., None], generic)


def fit_rotations(p: Tensor, q: Tensor, mol: Tensor, num: int, proper: bool = True) -> Tensor:
    """Per-molecule orthogonal R [num, 3, 3] minimising Σ |R p_i − q_i|² (Kabsch; p, q already centred).

    ``proper`` restricts R to rotations (det +1); otherwise a reflection is used where it fits better.
    """
    h = p.new_zeros(num, 3, 3).index_add_(0, mol, p[:, :, None] * q[:, None, :])  # Σ p qᵀ
    u, _, vt = torch.linalg.svd(h)
    r = vt.transpose(1, 2) @ u.transpose(1, 2)
    if proper:
        d = torch.sign(torch.linalg.det(r))
        d = torch.where(d == 0, torch.ones_like(d), d)
        fix = torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1)
        r = (vt * fix[:, :, None]).transpose(1, 2) @ u.transpose(1, 2)
    return r


def superpose_conformer(ref: Tensor, x: Tensor, mol: Tensor, num: int, proper: bool = False) -> Tensor:
    """Each molecule of ``ref`` [N, 3] moved rigidly onto the same molecule of ``x`` [N, 3] (least squares).

    The result is exactly the conformer of ``ref`` at the position and orientation of ``x``; with
    ``proper=False`` a reflection is allowed where it fits better (undoing a mirrored input).
    """
    c_ref, c_x = segment_mean(ref, mol, num), segment_mean(x, mol, num)
    p, q = ref - c_ref[mol], x - c_x[mol]
    r = fit_rotations(p, q, mol, num, proper)
    return torch.einsum("nij,nj->ni", r[mol], p) + c_x[mol]


def rigid_velocity(v: Tensor, x: Tensor, mol: Tensor, num: int) -> Tensor:
    """Least-squares projection of per-atom velocities ``v`` onto per-molecule rigid motions at ``x``.

    Per molecule: translation u = mean v and angular velocity ω = I⁻¹ Σ r × (v − u) with r = x − centre
    and I = Σ (|r|² 1 − r rᵀ) (pseudo-inverse); returns u + ω × r per atom. Equivariant, and the identity on rigid fields.
    """
    c = segment_mean(x, mol, num)
    r = x - c[mol]
    u = segment_mean(v, mol, num)
    moment = x.new_zeros(num, 3).index_add_(0, mol, torch.linalg.cross(r, v - u[mol]))
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    rr = (r * r).sum(-1)[:, None, None] * eye - r[:, :, None] * r[:, None, :]
    inertia = x.new_zeros(num, 3, 3).index_add_(0, mol, rr)
    # pseudo-inverse: a linear molecule cannot spin about its axis, a single atom not at all
    lam, vec = torch.linalg.eigh(inertia.detach())
    keep = lam > INERTIA_CUTOFF * lam[:, -1:].clamp(min=1e-30)
    inv = torch.where(keep, 1.0 / torch.where(keep, lam, torch.ones_like(lam)), torch.zeros_like(lam))
    omega = torch.einsum("gij,gj,gkj,gk->gi", vec, inv, vec, moment)
    return u[mol] + torch.linalg.cross(omega[mol], r)
