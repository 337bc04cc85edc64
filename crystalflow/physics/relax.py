"""Relaxation of rigid molecules under :mod:`crystalflow.physics.energy`: Z' = 1 crystals (pose and cell)
and finite clusters (one rigid motion per molecule).

Crystal variables, per candidate: the molecule's centre (moved in Å, kept as fractional coordinates),
its orientation (a rotation vector applied about its centre of mass to the input conformer) and the
cell, ``L = L0 (I + U)`` with a symmetric strain ``U`` that commutes with the Cartesian rotations of
the space group's operators, so that the metric ``G = L Lᵀ`` keeps ``Wᵀ G W = G`` and every image of the
molecule stays a rigid copy. ``L0`` is the input cell with its metric averaged over the point group
(an exact fit of the operators). A molecule on a special position moves only in the directions its
site symmetry allows. Optimiser: torch L-BFGS with strong-Wolfe line search, all candidates of a batch
(same molecule, same operators) at once; variables are scaled to Å (rotations × radius of gyration,
strains × cell size) so one tolerance ``gtol`` (kJ/mol/Å) applies to all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from crystalflow.physics.energy import (CellError, EnergySettings, ImagePairs, PairTable, cluster_energy,
                                        cluster_pairs, image_pairs, lattice_energy, molecule_ops)
from crystalflow.physics.forcefield import ForceField, assign
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import ATOMIC_MASS
from crystalflow.structure.molecules import centre_of_mass

#: kJ/mol/Å: largest gradient component at convergence
GTOL = 0.1
#: Å: pairs are listed this far beyond the cutoff; the list is rebuilt when atoms move half of it
MARGIN = 2.0
#: kJ/mol/Å: relax_cluster's default tolerance: on perturbed true clusters (bench/relax_speed.py) it keeps
#: every cluster valid with the largest overlap within 0.03 Å of gtol = 0.1, energies within 1.1 %, in about
#: half the iterations
CLUSTER_GTOL = 1.0
#: Å: the atom pairs of a cluster are listed this far beyond the cutoff (rebuilt when a site moves half of it)
CLUSTER_MARGIN = 1.0
#: L-BFGS iterations between checks of convergence and of the pair list
CHUNK = 25


class RelaxError(ValueError):
    """Input a relaxation cannot take (shapes, mixed molecules)."""


@dataclass
class CrystalRelaxation:
    """One relaxed crystal; energies are lattice energies per molecule (kJ/mol)."""

    crystal: SymmetricCrystal
    energy_before: float
    energy_after: float
    steps: int  #: L-BFGS iterations
    converged: bool  #: largest gradient below ``gtol``


@dataclass
class ClusterRelaxation:
    """Relaxed clusters ``x [B, M, n, 3]`` (Å) with intermolecular energies before/after (kJ/mol, [B], no restraint)."""

    x: np.ndarray
    energy_before: np.ndarray
    energy_after: np.ndarray
    steps: int
    converged: bool


def rotation_matrix(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of rotation vectors ``[..., 3]`` (radians; Rodrigues, smooth at 0)."""
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-30)
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / torch.where(small, torch.ones_like(theta2), theta2))
    o = omega
    zero = torch.zeros_like(o[..., 0])
    K = torch.stack([zero, -o[..., 2], o[..., 1], o[..., 2], zero, -o[..., 0], -o[..., 1], o[..., 0], zero], -1)
    K = K.reshape(*o.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=o.dtype, device=o.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def _range_basis(p: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the range of a group-averaged projection ``p [d, d]`` (eigenvalues 0 or 1)."""
    u, s, _ = np.linalg.svd(p)
    return u[:, s > 0.5].T


def symmetrised_lattice(lattice: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """The cell nearest ``lattice`` whose metric is invariant under the rotations (Wᵀ G W = G), same orientation."""
    L = np.asarray(lattice, dtype=np.float64)
    W = np.asarray(rotations, dtype=np.float64)
    G = np.einsum("kji,jl,klm->im", W, L @ L.T, W) / len(W)
    Li = np.linalg.inv(L)
    M = Li @ G @ Li.T
    vals, vecs = np.linalg.eigh(0.5 * (M + M.T))
    return L @ (vecs @ np.diag(np.sqrt(vals)) @ vecs.T)


def cartesian_rotations(lattice: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Cartesian rotations ``Lᵀ W L⁻ᵀ`` ``[h, 3, 3]`` (column vectors) of the fractional rotations."""
    L = np.asarray(lattice, dtype=np.float64)
    return np.einsum("ji,kjl,lm->kim", L, np.asarray(rotations, dtype=np.float64), np.linalg.inv(L).T)


def strain_basis(rc: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``[d, 3, 3]`` of the symmetric strains commuting with the rotations ``rc [h, 3, 3]``."""
    basis = []
    for a in range(3):
        for b in range(a, 3):
            e = np.zeros((3, 3))
            e[a, b] = e[b, a] = 1.0 if a == b else np.sqrt(0.5)
            basis.append(e)
    E = np.array(basis)  # [6, 3, 3]
    P = np.einsum("kij,sjl,kml->sim", rc, E, rc) / len(rc)  # projections
    coef = np.einsum("sij,tij->st", P, E)  # [6, 6] in the orthonormal basis
    rows = _range_basis(0.5 * (coef + coef.T))
    return np.einsum("ds,sij->dij", rows, E)


def _pose_bases(sc: SymmetricCrystal, rc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Allowed translation and rotation directions (orthonormal rows) of the molecule under its site symmetry."""
    site = sc.site_ops()
    r = rc[site]
    det = np.linalg.det(r)
    return _range_basis(r.mean(0)), _range_basis((det[:, None, None] * r).mean(0))


class _CrystalModel:
    """Variables → (molecule [B, n, 3], lattice [B, 3, 3]) for crystals of one molecule and one set of operators."""

    def __init__(self, crystals: list[SymmetricCrystal], relax_cell: bool) -> None:
        sc0 = crystals[0]
        self.rotations, self.translations = sc0.rotations, sc0.translations
        t = dict(dtype=torch.float64)
        L0 = np.stack([symmetrised_lattice(sc.lattice, sc.rotations) for sc in crystals])
        w = ATOMIC_MASS[sc0.z] / ATOMIC_MASS[sc0.z].sum()
        com = np.stack([centre_of_mass(sc.molecule, sc.z) for sc in crystals])
        body = np.stack([sc.molecule for sc in crystals]) - com[:, None, :]
        self.rg = float(np.sqrt((w * (body[0] ** 2).sum(-1)).sum())) or 1.0
        self.ell = float(np.mean([abs(np.linalg.det(L)) ** (1 / 3) for L in L0]))
        rc = cartesian_rotations(L0[0], sc0.rotations)
        tb, rb = _pose_bases(sc0.with_pose(lattice=L0[0]), rc)
        sb = strain_basis(rc) if relax_cell else np.zeros((0, 3, 3))
        self.L0 = torch.as_tensor(L0, **t)
        self.c0 = torch.as_tensor(np.einsum("bi,bij->bj", com, np.linalg.inv(L0)), **t)  # fractional
        self.body = torch.as_tensor(body, **t)
        self.tb, self.rb, self.sb = (torch.as_tensor(v, **t) for v in (tb, rb, sb))
        B = len(crystals)
        self.params = [torch.zeros(B, len(tb), **t, requires_grad=True),
                       torch.zeros(B, len(rb), **t, requires_grad=True),
                       torch.zeros(B, len(sb), **t, requires_grad=True)]

    def structure(self) -> tuple[torch.Tensor, torch.Tensor]:
        d, phi, s = self.params
        eye = torch.eye(3, dtype=torch.float64)
        U = torch.einsum("bd,dij->bij", s, self.sb) / self.ell
        L = self.L0 @ (eye + U)
        c = self.c0 + torch.einsum("bd,di,bij->bj", d, self.tb, torch.linalg.inv(self.L0))
        R = rotation_matrix(torch.einsum("bd,di->bi", phi, self.rb) / self.rg)
        x = self.body @ R.transpose(-1, -2) + (c[:, None, :] @ L)
        return x, L


#: pair lists of a crystal relaxation kept for reuse (a line search often returns near an earlier point)
LISTS_KEPT = 4
#: restarts of L-BFGS after a line search reached a non-finite energy or a collapsed cell
RESTARTS = 3


class _OutOfTime(Exception):
    """Raised inside the L-BFGS closure when ``max_seconds`` has passed."""


class _NonFinite(Exception):
    """Raised inside the L-BFGS closure when the energy is not finite (torch's line search cannot handle it)."""


def _lbfgs(params, energy_fn, max_steps: int, gtol: float, refresh=None,
           max_seconds: float | None = None) -> tuple[int, bool]:
    """Minimise ``energy_fn().sum()`` over ``params``; returns (iterations, converged). ``max_seconds``
    stops at the first energy evaluation after it has passed (not converged). ``refresh`` (relisting the
    pairs when atoms have moved) runs before every evaluation. A chunk of iterations whose line search reaches
    a non-finite energy or a collapsed cell (:class:`CellError`) is undone and the optimiser restarted from
    there with an empty history (its first step is short), at most :data:`RESTARTS` times; then it stops
    (not converged)."""
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    active = [p for p in params if p.numel()]
    if not active:
        return 0, True

    def optimiser():
        return torch.optim.LBFGS(active, lr=1.0, max_iter=CHUNK, history_size=20, line_search_fn="strong_wolfe",
                                 tolerance_grad=gtol, tolerance_change=1e-10)

    def closure():
        if deadline is not None and time.perf_counter() > deadline:
            raise _OutOfTime
        if refresh is not None:  # relist before the pair list goes stale (the energy stays exact)
            refresh()
        opt.zero_grad()
        e = energy_fn().sum()
        if not torch.isfinite(e):
            raise _NonFinite
        e.backward()
        return e

    opt, steps, restarts, done = optimiser(), 0, 0, 0
    while steps < max_steps:
        saved = [p.detach().clone() for p in active]
        try:
            opt.step(closure)
            n_iter = opt.state[opt._params[0]].get("n_iter", CHUNK)
            steps = done + n_iter
            closure()
            finite = all(bool(torch.isfinite(p).all()) for p in active)
        except _OutOfTime:  # the poses stay where the last evaluation left them
            return steps, False
        except (_NonFinite, CellError):  # the line search reached a non-finite energy or a collapsed cell
            finite = False
        if finite:
            g = max(float(p.grad.abs().max()) for p in active)
            if g < gtol:
                return steps, True
            continue
        with torch.no_grad():
            for p, v in zip(active, saved):
                p.copy_(v)
        if refresh is not None:
            refresh()
        restarts += 1
        if restarts > RESTARTS:
            return steps, False
        opt, done = optimiser(), steps
    return steps, False


def _check_group(crystals: list[SymmetricCrystal]) -> None:
    a = crystals[0]
    for sc in crystals[1:]:
        if sc.z.shape != a.z.shape or not np.array_equal(sc.z, a.z) or sc.rotations.shape != a.rotations.shape \
                or not np.array_equal(sc.rotations, a.rotations) or not np.allclose(sc.translations, a.translations):
            raise RelaxError("a batch must hold crystals of one molecule (same atoms) and one set of operators")


def relax_crystal(crystals: SymmetricCrystal | list[SymmetricCrystal], ff: ForceField | None = None,
                  max_steps: int = 300, gtol: float = GTOL, relax_cell: bool = True,
                  settings: EnergySettings | None = None,
                  max_seconds: float | None = None) -> CrystalRelaxation | list[CrystalRelaxation]:
    """Relax Z' = 1 crystals (rigid molecule; pose and, with ``relax_cell``, the cell) to a minimum of the
    lattice energy. A list is relaxed group by group: crystals of the same molecule and operators together.

    ``ff`` defaults to :func:`crystalflow.physics.forcefield.assign` on each group's first molecule.
    Returns one :class:`CrystalRelaxation` per crystal (energies per molecule, kJ/mol).

    Example::

        sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
        r = relax_crystal(sc)
        r.energy_before, r.energy_after, r.crystal.volume
    """
    one = isinstance(crystals, SymmetricCrystal)
    items = [crystals] if one else list(crystals)
    if not all(isinstance(c, SymmetricCrystal) for c in items):
        raise RelaxError("relax_crystal takes a SymmetricCrystal or a list of them")
    groups: dict[tuple, list[int]] = {}
    for k, sc in enumerate(items):
        key = (sc.z.tobytes(), sc.rotations.tobytes(), np.round(sc.translations, 6).tobytes())
        groups.setdefault(key, []).append(k)
    results: list[CrystalRelaxation | None] = [None] * len(items)
    for idx in groups.values():
        group = [items[k] for k in idx]
        _check_group(group)
        for k, res in zip(idx, _relax_group(group, ff, max_steps, gtol, relax_cell, settings, max_seconds)):
            results[k] = res
    return results[0] if one else results


def _relax_group(group, ff, max_steps, gtol, relax_cell, settings, max_seconds=None) -> list[CrystalRelaxation]:
    sc0 = group[0]
    f = ff or assign(sc0.z, sc0.molecule)
    model = _CrystalModel(group, relax_cell)
    table = PairTable(f, settings)
    reach = table.settings.cutoff + MARGIN
    ops = molecule_ops(sc0.rotations, sc0.translations, model.L0[0].numpy(), group[0].molecule, sc0.z)
    state: dict = {"lists": []}  # the last LISTS_KEPT pair lists, newest first: (x, L, pairs)

    def build():
        with torch.no_grad():
            x, L = model.structure()
            sites = torch.einsum("ij,bjd->bid", table.sites, x)
        state["pairs"] = image_pairs(sites.numpy(), L.numpy(), sc0.rotations, sc0.translations, ops, reach)
        state["lists"] = [(x, L, state["pairs"])] + state["lists"][:LISTS_KEPT - 1]

    def refresh():  # a list stays exact while no site has moved half the margin from where it was built
        with torch.no_grad():
            x, L = model.structure()
        for x0, L0, pairs in state["lists"]:  # a line search returning to an earlier point reuses its list
            if float((x - x0).norm(dim=-1).max()) + 2.0 * float((L - L0).norm(dim=-1).max()) <= MARGIN / 2:
                state["pairs"] = pairs
                return
        build()

    def energy():
        x, L = model.structure()
        return lattice_energy(x, L, sc0.rotations, sc0.translations, table, pairs=state["pairs"])

    build()
    with torch.no_grad():
        e0 = energy().numpy().copy()
    steps, converged = _lbfgs(model.params, energy, max_steps, gtol, refresh, max_seconds)
    build()
    with torch.no_grad():
        e1 = energy().numpy().copy()
        x, L = model.structure()
    return [CrystalRelaxation(crystal=sc.with_pose(lattice=L[b].numpy(), molecule=x[b].numpy()),
                              energy_before=float(e0[b]), energy_after=float(e1[b]), steps=steps, converged=converged)
            for b, sc in enumerate(group)]


def relax_cluster(x, z, ff: ForceField | None = None, restraint: float = 1.0, max_steps: int = 300,
                  gtol: float = CLUSTER_GTOL, settings: EnergySettings | None = None,
                  margin: float = CLUSTER_MARGIN) -> ClusterRelaxation:
    """Relax finite clusters ``x [M, n, 3]`` or ``[B, M, n, 3]`` (Å) of the molecule ``z [n]``, each molecule a
    rigid body (translation + rotation about its centre of mass).

    ``restraint`` (kJ/mol/Å²) ties each molecule's centre to its start harmonically (a cluster in vacuum
    otherwise contracts at its surface); 0 turns it off. Its first job: removing the collisions of
    predicted clusters. ``ff`` defaults to :func:`crystalflow.physics.forcefield.assign` on the first molecule.
    ``gtol`` (kJ/mol/Å, :data:`CLUSTER_GTOL`) is looser than :func:`relax_crystal`'s: enough to remove
    collisions; pass 0.1 for a tighter minimum. Atom pairs are listed ``margin`` Å beyond the cutoff and
    relisted when an interaction site has moved half of it (the energy stays exact).

    Example::

        out = relax_cluster(pred, z)           # pred: [17, n, 3]
        max_overlap(out.x[0], z)               # below VALIDITY_OVERLAP
    """
    xx = np.asarray(x, dtype=np.float64)
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    if xx.ndim == 3:
        xx = xx[None]
    if xx.ndim != 4 or xx.shape[-2:] != (zz.size, 3):
        raise RelaxError(f"cluster must have shape [M, {zz.size}, 3] or [B, M, {zz.size}, 3], got {np.shape(x)}")
    if not np.isfinite(xx).all():
        raise RelaxError("cluster has non-finite coordinates")
    f = ff or assign(zz, xx[0, 0])
    table = PairTable(f, settings)
    com = centre_of_mass(xx, zz)  # [B, M, 3]
    body = torch.as_tensor(xx - com[..., None, :])
    com_t = torch.as_tensor(com)
    w = ATOMIC_MASS[zz] / ATOMIC_MASS[zz].sum()
    rg = float(np.sqrt((w * (body[0, 0].numpy() ** 2).sum(-1)).sum())) or 1.0
    B, M = xx.shape[:2]
    d = torch.zeros(B, M, 3, dtype=torch.float64, requires_grad=True)
    phi = torch.zeros(B, M, 3, dtype=torch.float64, requires_grad=True)

    def coords():
        R = rotation_matrix(phi / rg)
        return body @ R.transpose(-1, -2) + (com_t + d)[..., None, :]

    state: dict = {}

    def listed(x):
        sites = torch.einsum("ij,bmjd->bmid", table.sites, x)
        if "pairs" not in state or state["pairs"].moved(sites) > margin / 2:
            state["pairs"] = cluster_pairs(x, table, margin)
        return state["pairs"]

    def energy():
        x = coords()
        return cluster_energy(x, table, pairs=listed(x)) + restraint * (d * d).sum(dim=(1, 2))

    with torch.no_grad():
        x = coords()
        e0 = cluster_energy(x, table, pairs=listed(x)).numpy().copy()
    steps, converged = _lbfgs([d, phi], energy, max_steps, gtol)
    with torch.no_grad():
        xr = coords()
        e1 = cluster_energy(xr, table, pairs=listed(xr)).numpy().copy()
    return ClusterRelaxation(x=xr.numpy(), energy_before=e0, energy_after=e1, steps=steps, converged=converged)
