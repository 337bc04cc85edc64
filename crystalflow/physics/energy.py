"""Intermolecular energy of rigid molecules in torch (autograd, batched): finite clusters and Z' = 1 crystals.

Each pair of atoms (interaction sites, :attr:`ForceField.sites`) of *different* molecules at distance
r (Å) contributes, in kJ/mol,

* ``A exp(-B r) - C r^-6`` (:mod:`crystalflow.physics.forcefield`), multiplied by a quintic switch
  from ``cutoff - taper`` to ``cutoff``;
* Coulomb between the charges q_i q_j, damped shifted force (C. J. Fennell, J. D. Gezelter, J. Chem.
  Phys. 124, 234104 (2006), the Wolf sum made smooth): ``k q_i q_j [erfc(αr)/r − erfc(αR)/R +
  (erfc(αR)/R² + 2α/√π exp(−α²R²)/R)(r − R)]`` for r < R = ``cutoff``, energy and force zero at R;
* below a per-pair distance ``r_m`` the sum above is replaced by its tangent plus a parabola,
  ``E(r_m) + F_m (r_m − r) + ½ k_w (r_m − r)²``: the exp-6 turns over (the Buckingham catastrophe)
  and Coulomb diverges at short range, so overlapping molecules would fall into each other. ``r_m`` is
  the largest distance where the repulsive force reaches :attr:`EnergySettings.wall_force` (or where
  it peaks, when it stays below), far inside any real contact.

Intramolecular pairs are left out (molecules are rigid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from crystalflow.physics.forcefield import ForceField
from crystalflow.structure.crystal import SymmetricCrystal

#: kJ/mol · Å / e²: Coulomb's constant
COULOMB = 1389.35458


#: Å: a cell whose lattice planes come closer than this has collapsed (no molecular crystal has them)
MIN_PLANE_SPACING = 1.0


class CellError(ValueError):
    """A crystal's cell became unusable (collapsed) during an energy evaluation or relaxation."""


@dataclass(frozen=True)
class EnergySettings:
    """Cut-offs and the short-range wall (Å, kJ/mol)."""

    cutoff: float = 12.0  #: Å: every term is zero beyond
    taper: float = 2.0  #: Å: the exp-6 is switched off smoothly over the last ``taper`` before the cutoff
    alpha: float = 0.2  #: 1/Å: Coulomb damping
    charge_scale: float = 1.0  #: charges are multiplied by this
    wall_force: float = 1000.0  #: kJ/mol/Å: the repulsive force at which the short-range wall starts
    wall_stiffness: float = 5000.0  #: kJ/mol/Å²: curvature of the wall


class PairTable:
    """Torch tensors of one molecule's pair parameters under some :class:`EnergySettings` ([n, n] each)."""

    def __init__(self, ff: ForceField, settings: EnergySettings | None = None,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        s = settings or EnergySettings()
        t = dict(dtype=dtype, device=device)
        self.settings = s
        self.A, self.B, self.C = (torch.as_tensor(v, **t) for v in (ff.A, ff.B, ff.C))
        q = torch.as_tensor(ff.charges, **t) * s.charge_scale
        self.qq = COULOMB * q[:, None] * q[None, :]
        self.sites = torch.as_tensor(ff.sites, **t)
        self.rm, self.em, self.fm = self._wall()

    def raw(self, r: torch.Tensor, A, B, C, qq) -> torch.Tensor:
        """The exp-6 (switched) + damped Coulomb at ``r`` (Å) without the wall (kJ/mol)."""
        s = self.settings
        rc, a = s.cutoff, s.alpha
        x = ((r - (rc - s.taper)) / s.taper).clamp(0.0, 1.0)
        switch = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
        exp6 = (A * torch.exp(-B * r) - C / r**6) * switch
        erfc_rc = math.erfc(a * rc)
        slope = erfc_rc / rc**2 + 2.0 * a / math.sqrt(math.pi) * math.exp(-(a * rc) ** 2) / rc
        coul = qq * (torch.special.erfc(a * r) / r - erfc_rc / rc + slope * (r - rc))
        return torch.where(r < rc, exp6 + coul, torch.zeros_like(r))

    def _wall(self):
        n = self.A.shape[0]
        iu, ju = torch.triu_indices(n, n, device=self.A.device)  # the pair parameters are symmetric
        grid = torch.arange(0.3, 3.5, 0.01, dtype=self.A.dtype, device=self.A.device)
        zero = torch.zeros(len(iu), dtype=self.A.dtype, device=self.A.device)
        bare = tuple(v[iu, ju] for v in (self.A, self.B, self.C, self.qq)) + (zero, zero, zero)  # r_m = 0: no wall
        idx = torch.arange(len(grid), device=grid.device)[:, None]
        rm = torch.empty(len(iu), dtype=self.A.dtype, device=self.A.device)
        step = max(1, (1 << 16) // len(grid))  # pairs per block: the [G, block] temporaries stay in cache
        for a in range(0, len(iu), step):
            part = tuple(v[a:a + step] for v in bare)
            _, de = self.energy_and_derivative(grid[:, None].expand(-1, len(part[0])), part)
            force = -de  # [G, block], repulsive > 0
            above = force >= self.settings.wall_force
            last_above = torch.where(above.any(0), (above * idx).amax(0), force.argmax(0))
            rm[a:a + step] = grid[last_above]
        em, dem = self.energy_and_derivative(rm, bare)
        out = []
        for v in (rm, em, -dem):
            m = torch.zeros(n, n, dtype=v.dtype, device=v.device)
            m[iu, ju] = v
            m[ju, iu] = v
            out.append(m)
        return tuple(out)

    def pair_params(self, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(A, B, C, qq, r_m, E_m, F_m) of the atom pairs ``i``, ``j`` (``[P]`` each): gathered once per pair list."""
        return tuple(v[i, j] for v in (self.A, self.B, self.C, self.qq, self.rm, self.em, self.fm))

    def energy_and_derivative(self, r: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair energies (kJ/mol) and their derivatives dE/dr (kJ/mol/Å) at distances ``r [P]`` of the pairs
        with ``params`` (:meth:`pair_params`), in closed form (the same function as :meth:`energy`)."""
        s = self.settings
        A, B, C, qq, rm, em, fm = params
        rc, a, taper = s.cutoff, s.alpha, s.taper
        with torch.no_grad():
            rr = torch.maximum(r, rm)
            inv = 1.0 / rr
            inv6 = (inv * inv) ** 3
            ex = A * torch.exp(-B * rr)
            f = ex - C * inv6
            fp = 6.0 * C * inv6 * inv - B * ex
            x = ((rr - (rc - taper)) / taper).clamp(0.0, 1.0)
            x2 = x * x
            sw = 1.0 - x2 * x * (10.0 - 15.0 * x + 6.0 * x2)
            swp = (-30.0 / taper) * x2 * (1.0 - x) ** 2
            erfc_rc = math.erfc(a * rc)
            slope = erfc_rc / rc**2 + 2.0 * a / math.sqrt(math.pi) * math.exp(-(a * rc) ** 2) / rc
            ec = torch.special.erfc(a * rr)
            coul = qq * (ec * inv - erfc_rc / rc + slope * (rr - rc))
            coulp = qq * (slope - ec * inv * inv - (2.0 * a / math.sqrt(math.pi)) * torch.exp(-(a * rr) ** 2) * inv)
            e = f * sw + coul
            de = fp * sw + f * swp + coulp
            beyond = rr >= rc
            e = e.masked_fill(beyond, 0.0)
            de = de.masked_fill(beyond, 0.0)
            dr = (rm - r).clamp(min=0.0)
            inside = r < rm
            k = s.wall_stiffness
            e = torch.where(inside, em + fm * dr + 0.5 * k * dr * dr, e)
            de = torch.where(inside, -fm - k * dr, de)
        return e, de

    def pair_energy(self, r: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:meth:`energy` of listed pairs (``params`` from :meth:`pair_params`), differentiable in ``r`` through
        the closed-form derivative (one multiplication in the backward pass, no graph of the terms)."""
        return _PairEnergy.apply(r, self, params)

    def energy(self, r: torch.Tensor, i: torch.Tensor | None = None, j: torch.Tensor | None = None,
               params: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Pair energies (kJ/mol) at distances ``r`` (Å) of atoms ``i`` of one molecule and ``j`` of another;
        without ``i``/``j``, ``r`` ends in ``[n, n]``; ``params`` (from :meth:`pair_params`) replaces ``i``/``j``."""
        if params is not None:
            A, B, C, qq, rm, em, fm = params
        elif i is None:
            A, B, C, qq, rm, em, fm = self.A, self.B, self.C, self.qq, self.rm, self.em, self.fm
        else:
            A, B, C, qq, rm, em, fm = self.pair_params(i, j)
        inside = r < rm
        e = self.raw(torch.maximum(r, rm), A, B, C, qq)
        dr = (rm - r).clamp(min=0.0)
        wall = em + fm * dr + 0.5 * self.settings.wall_stiffness * dr**2
        return torch.where(inside, wall, e)


class _PairEnergy(torch.autograd.Function):
    """Pair energies with the closed-form dE/dr saved for the backward pass (first derivatives only)."""

    @staticmethod
    def forward(ctx, r, table, params):
        e, de = table.energy_and_derivative(r, params)
        ctx.save_for_backward(de)
        return e

    @staticmethod
    def backward(ctx, grad):
        (de,) = ctx.saved_tensors
        return grad * de, None, None


def _distance(d: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((d * d).sum(-1) + 1e-12)


def _table(ff: ForceField | PairTable, settings, like: torch.Tensor) -> PairTable:
    if isinstance(ff, PairTable):
        return ff
    return PairTable(ff, settings, dtype=like.dtype, device=like.device)


@dataclass
class ClusterPairs:
    """Atom pairs of different molecules within ``reach`` Å in a batch of clusters ``[B, M, n, 3]``, listed
    from the molecule pairs whose centres are within ``reach`` + their two radii. Valid (gives the exact
    energy) while no interaction site moves more than ``(reach - cutoff) / 2`` from :attr:`sites`."""

    flat_a: torch.Tensor  #: [P] index of the first atom in the flattened sites [B·M·n]
    flat_b: torch.Tensor  #: [P] index of the second atom
    batch: torch.Tensor  #: [P] cluster of each pair
    params: tuple[torch.Tensor, ...]  #: per-pair parameters (:meth:`PairTable.pair_params`)
    sites: torch.Tensor  #: [B, M, n, 3] interaction sites when listed (detached)
    reach: float  #: Å

    def moved(self, sites: torch.Tensor) -> float:
        """Largest displacement (Å) of an interaction site since the list was built."""
        return float((sites.detach() - self.sites).norm(dim=-1).max()) if sites.numel() else 0.0


def _sites(x: torch.Tensor, table: PairTable) -> torch.Tensor:
    return torch.einsum("ij,bmjd->bmid", table.sites, x)


def cluster_pairs(x: torch.Tensor, table: PairTable, margin: float = 2.0) -> ClusterPairs:
    """The :class:`ClusterPairs` of clusters ``x [B, M, n, 3]`` (Å) within ``table.settings.cutoff + margin`` Å."""
    with torch.no_grad():
        x = torch.as_tensor(x, dtype=table.A.dtype).detach()
        sites = _sites(x if x.dim() == 4 else x[None], table)
        B, M, n = sites.shape[:3]
        reach = table.settings.cutoff + margin
        cen = sites.mean(2)
        rad = (sites - cen[:, :, None]).norm(dim=-1).amax(-1)  # [B, M]
        p, q = torch.triu_indices(M, M, offset=1, device=x.device)
        near = (cen[:, p] - cen[:, q]).norm(dim=-1) <= reach + rad[:, p] + rad[:, q]  # [B, P_mol]
        bb, kk = torch.nonzero(near, as_tuple=True)
        pp, qq = p[kk], q[kk]
        chunk = max(1, (1 << 22) // max(1, n * n))
        fa, fb, bt, ia, ja = [], [], [], [], []
        for s in range(0, len(bb), chunk):
            b_, p_, q_ = bb[s:s + chunk], pp[s:s + chunk], qq[s:s + chunk]
            d = (sites[b_, p_, :, None, :] - sites[b_, q_, None, :, :]).norm(dim=-1)  # [K, n, n]
            k, i, j = torch.nonzero(d < reach, as_tuple=True)
            b_k = b_[k]
            fa.append((b_k * M + p_[k]) * n + i)
            fb.append((b_k * M + q_[k]) * n + j)
            bt.append(b_k)
            ia.append(i)
            ja.append(j)
        cat = lambda v: torch.cat(v) if v else torch.zeros(0, dtype=torch.long, device=x.device)  # noqa: E731
        i, j = cat(ia), cat(ja)
        return ClusterPairs(flat_a=cat(fa), flat_b=cat(fb), batch=cat(bt), params=table.pair_params(i, j),
                            sites=sites, reach=reach)


def cluster_energy(x, ff: ForceField | PairTable, settings: EnergySettings | None = None,
                   pairs: ClusterPairs | None = None, dense: bool = False) -> torch.Tensor:
    """Intermolecular energy (kJ/mol) of finite clusters ``x [B, M, n, 3]`` (Å) → ``[B]``; ``[M, n, 3]`` → a scalar.

    Every pair of atoms of different molecules counts once. Differentiable in ``x``. The atom pairs within
    the cutoff come from ``pairs`` (:func:`cluster_pairs`, reused while no atom has moved more than half
    its margin: the energy is then exact) or, when not given, are listed here; ``dense`` sums over every
    atom pair of every molecule pair instead (the reference: same energy, slower).

    Example::

        ff = assign(z, x[0])
        e = cluster_energy(torch.as_tensor(x), ff)      # x: [17, n, 3] cluster
    """
    xt = torch.as_tensor(x, dtype=torch.float64) if not torch.is_tensor(x) else x
    single = xt.dim() == 3
    if single:
        xt = xt[None]
    if xt.dim() != 4 or xt.shape[-1] != 3:
        raise ValueError(f"cluster must have shape [B, M, n, 3] or [M, n, 3], got {tuple(xt.shape)}")
    table = _table(ff, settings, xt)
    if xt.shape[2] != table.A.shape[0]:
        raise ValueError(f"cluster has {xt.shape[2]} atoms per molecule, the force field {table.A.shape[0]}")
    sites = _sites(xt, table)
    if dense:
        m = xt.shape[1]
        p, q = torch.triu_indices(m, m, offset=1, device=xt.device)
        r = _distance(sites[:, p, :, None, :] - sites[:, q, None, :, :])  # [B, P, n, n]
        e = table.energy(r).sum(dim=(1, 2, 3))
    else:
        if pairs is None:
            pairs = cluster_pairs(xt, table, margin=0.0)
        flat = sites.reshape(-1, 3)
        r = _distance(flat.index_select(0, pairs.flat_a) - flat.index_select(0, pairs.flat_b))
        e = torch.zeros(len(xt), dtype=xt.dtype, device=xt.device).index_add(0, pairs.batch, table.pair_energy(r, pairs.params))
    return e[0] if single else e


# --- periodic crystals ----------------------------------------------------------------------------


@dataclass
class ImagePairs:
    """Atom pairs (reference molecule, one image) within reach, for a batch of crystals with the same operators."""

    batch: torch.Tensor  #: [P] candidate of each pair
    image: torch.Tensor  #: [P] index into the images
    i: torch.Tensor  #: [P] atom of the reference molecule
    j: torch.Tensor  #: [P] atom of the image
    image_batch: torch.Tensor  #: [K] candidate of each image
    image_op: torch.Tensor  #: [K] operator of each image
    image_shift: torch.Tensor  #: [K, 3] lattice shift of each image (fractional)
    reach: float  #: Å: pairs up to this distance are listed
    params: tuple[torch.Tensor, ...] | None = None  #: per-pair parameters, gathered at the first use


def molecule_ops(rotations: np.ndarray, translations: np.ndarray, lattice: np.ndarray, molecule: np.ndarray,
                 z: np.ndarray) -> np.ndarray:
    """Operators giving the distinct molecules of the cell, the identity standing for the molecule itself."""
    sc = SymmetricCrystal(lattice, rotations, translations, molecule, z)
    ops = sc.distinct_ops()
    site = set(sc.site_ops().tolist())
    ident = int(np.flatnonzero([np.array_equal(w, np.eye(3, dtype=np.int64)) and np.allclose(t, 0)
                                for w, t in zip(sc.rotations, sc.translations)])[0])
    return np.array([ident if int(k) in site else int(k) for k in ops], dtype=np.int64)


def image_pairs(sites: np.ndarray, lattice: np.ndarray, rotations: np.ndarray, translations: np.ndarray,
                ops: np.ndarray, reach: float) -> ImagePairs:
    """Pairs (reference atom i, image atom j) closer than ``reach`` Å, over the images (operator in
    ``ops``, lattice shift) of the molecule's sites ``[B, n, 3]`` (Cartesian) in cells ``lattice [B, 3, 3]``."""
    W = np.asarray(rotations, dtype=np.float64)
    w = np.asarray(translations, dtype=np.float64)
    ident = [k for k in ops if np.array_equal(W[k], np.eye(3)) and np.allclose(w[k], 0)]
    out = {k: [] for k in ("batch", "image", "i", "j")}
    img_b, img_op, img_t = [], [], []
    for b in range(len(sites)):
        L = np.asarray(lattice[b], dtype=np.float64)
        f = sites[b] @ np.linalg.inv(L)
        cen = f.mean(0)
        rmax = float(np.linalg.norm(sites[b] - sites[b].mean(0), axis=1).max())
        reach_c = reach + 2.0 * rmax
        heights = 1.0 / np.linalg.norm(np.linalg.inv(L), axis=0)
        if not np.all(np.isfinite(heights)) or heights.min() < MIN_PLANE_SPACING:
            raise CellError(f"the cell collapsed: lattice planes {np.nanmin(heights):.3g} Å apart "
                            f"(< {MIN_PLANE_SPACING} Å)")
        span = np.ceil(reach_c / heights).astype(int) + 1
        rng = [np.arange(-s, s + 1) for s in span]
        grid = np.stack(np.meshgrid(*rng, indexing="ij"), -1).reshape(-1, 3)
        cand_op, cand_t = [], []
        for k in ops:
            ck = W[k] @ cen + w[k]
            t = grid + np.round(cen - ck)
            dc = np.linalg.norm((ck + t - cen) @ L, axis=1)
            keep = dc <= reach_c
            if ident and k == ident[0]:
                keep &= np.any(t != 0, axis=1)
            cand_op.append(np.full(int(keep.sum()), k))
            cand_t.append(t[keep])
        op_k, t_k = np.concatenate(cand_op), np.concatenate(cand_t)
        img = (np.einsum("kij,nj->kni", W[op_k], f) + w[op_k][:, None, :] + t_k[:, None, :]) @ L  # [K, n, 3]
        s_b = sites[b]
        d2 = (s_b * s_b).sum(-1)[None, :, None] + (img * img).sum(-1)[:, None, :] - 2.0 * np.einsum("id,kjd->kij", s_b, img)
        kk, ii, jj = np.nonzero(d2 < reach * reach)  # [K, n, n] squared distances
        used, kk = np.unique(kk, return_inverse=True)
        out["batch"].append(np.full(len(ii), b))
        out["image"].append(kk + len(img_b))
        out["i"].append(ii)
        out["j"].append(jj)
        img_b += [b] * len(used)
        img_op += op_k[used].tolist()
        img_t += t_k[used].tolist()
    as_long = lambda v: torch.as_tensor(np.concatenate(v) if isinstance(v, list) and v and isinstance(v[0], np.ndarray) else np.asarray(v), dtype=torch.long)
    return ImagePairs(batch=as_long(out["batch"]), image=as_long(out["image"]), i=as_long(out["i"]), j=as_long(out["j"]),
                      image_batch=as_long(img_b), image_op=as_long(img_op),
                      image_shift=torch.as_tensor(np.asarray(img_t, dtype=np.float64).reshape(-1, 3)), reach=reach)


def lattice_energy(x: torch.Tensor, lattice: torch.Tensor, rotations, translations, ff: ForceField | PairTable,
                   settings: EnergySettings | None = None, pairs: ImagePairs | None = None,
                   margin: float = 2.0) -> torch.Tensor:
    """Lattice energy per molecule (kJ/mol) of Z' = 1 crystals → ``[B]``.

    ``x [B, n, 3]``: Cartesian atoms of the asymmetric molecule (Å); ``lattice [B, 3, 3]``: lattice vectors
    as rows (Å); ``rotations [h, 3, 3]``, ``translations [h, 3]``: the operators (fractional, shared by the
    batch). Energy = ½ Σ over the other molecules of the crystal of their interaction with the reference
    molecule. ``pairs`` (from :func:`image_pairs`, listed ``margin`` Å beyond the cutoff) is built here
    when not given; reuse it while the structure moves less than about ``margin / 2``. Differentiable in
    ``x`` and ``lattice``.
    """
    table = _table(ff, settings, x)
    W = torch.as_tensor(np.asarray(rotations), dtype=x.dtype, device=x.device)
    w = torch.as_tensor(np.asarray(translations), dtype=x.dtype, device=x.device)
    sites = torch.einsum("ij,bjd->bid", table.sites, x)
    if pairs is None:
        s_np, l_np = sites.detach().cpu().numpy(), lattice.detach().cpu().numpy()
        ops = molecule_ops(rotations, translations, l_np[0], x[0].detach().cpu().numpy(), ff_z(ff, x.shape[1]))
        pairs = image_pairs(s_np, l_np, np.asarray(rotations), np.asarray(translations), ops,
                            table.settings.cutoff + margin)
    dev = x.device
    f = sites @ torch.linalg.inv(lattice)  # [B, n, 3]
    ib, iop = pairs.image_batch.to(dev), pairs.image_op.to(dev)
    img_f = torch.einsum("kij,knj->kni", W[iop], f[ib]) + (w[iop] + pairs.image_shift.to(dev, x.dtype))[:, None, :]
    img = img_f @ lattice[ib]  # [K, n, 3]
    b, k, i, j = (v.to(dev) for v in (pairs.batch, pairs.image, pairs.i, pairs.j))
    if pairs.params is None or pairs.params[0].dtype != x.dtype or pairs.params[0].device != dev:
        pairs.params = table.pair_params(i, j)
    n = x.shape[1]
    r = _distance(sites.reshape(-1, 3).index_select(0, b * n + i) - img.reshape(-1, 3).index_select(0, k * n + j))
    e = table.pair_energy(r, pairs.params)
    return 0.5 * torch.zeros(len(x), dtype=x.dtype, device=dev).index_add(0, b, e)


def ff_z(ff: ForceField | PairTable, n: int) -> np.ndarray:
    """Atomic numbers for the distinct-molecule test (masses only weight centres; carbon when unknown)."""
    return ff.z if isinstance(ff, ForceField) else np.full(n, 6)


def crystal_energy(crystals: SymmetricCrystal | list[SymmetricCrystal], ff: ForceField | None = None,
                   settings: EnergySettings | None = None) -> np.ndarray:
    """Lattice energy per molecule (kJ/mol) of each crystal, as it stands (``[B]``; a float for one crystal).

    ``ff`` defaults to :func:`crystalflow.physics.forcefield.assign` on each crystal's molecule.
    """
    from crystalflow.physics.forcefield import assign

    one = isinstance(crystals, SymmetricCrystal)
    out = []
    for sc in [crystals] if one else crystals:
        f = ff or assign(sc.z, sc.molecule)
        x = torch.as_tensor(sc.molecule, dtype=torch.float64)[None]
        L = torch.as_tensor(sc.lattice, dtype=torch.float64)[None]
        with torch.no_grad():
            out.append(float(lattice_energy(x, L, sc.rotations, sc.translations, f, settings)[0]))
    return out[0] if one else np.array(out)
