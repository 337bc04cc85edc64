"""Random symmetric molecular crystals with Z' = 1: the starting points of crystal structure prediction.

One candidate is drawn as follows (all randomness from the caller's ``numpy.random.Generator``):

1. **Cell shape** respecting the crystal system: edge ratios log-uniform up to :data:`MAX_AXIS_RATIO`,
   free angles uniform in :data:`ANGLE_RANGES` (monoclinic β in 90–120°).
2. **Cell size** from the molecule's volume in the crystal, the sum of Hofmann's atomic volumes
   (:data:`crystalflow.structure.elements.HOFMANN_VOLUMES`), which already embodies the packing of a
   typical organic crystal (packing coefficient ≈ :data:`REFERENCE_PACKING`): the cell volume is
   ``Z · V_Hofmann · REFERENCE_PACKING / c`` with the packing coefficient ``c`` drawn from a normal
   distribution around :data:`REFERENCE_PACKING`.
3. A cell whose shortest lattice vector is shorter than the molecule's thinnest width (or one contact
   distance) is drawn again (:func:`min_lattice_vector`).
4. **Pose**: orientation uniform on SO(3), centre of mass uniform in the cell (fractional); the
   molecule sits on the general position, so Z = the number of operators. With ``site="inversion"`` a
   centrosymmetric molecule's centre is put on one of the group's inversion centres instead (drawn
   uniformly among :func:`crystalflow.search.spacegroups.inversion_centres`), so Z is half that and the
   cell volume target halves (Z' = ½: naphthalene, anthracene, trans-azobenzene in P2₁/c).
5. **Overlap removal**: the cell is scaled up uniformly (fractional centre and orientation kept)
   to the smallest factor at which no two heavy atoms of different molecules overlap by more than
   ``overlap`` Å (:mod:`crystalflow.structure.contacts`' rule, r_vdW(i) + r_vdW(j) − d) and no pair with
   a hydrogen by more than ``hydrogen_overlap`` Å. Uniform scaling moves only the molecules' centres
   (``s·Δc``), so each atom pair forbids an interval of scale factors (a quadratic in ``s``); the
   smallest allowed factor is found exactly from the union of those intervals. Every pair of
   molecules is a symmetry image of a pair with the asymmetric molecule, so testing the asymmetric
   molecule against its neighbours tests the whole crystal.
6. **Checks** on the result: :func:`crystalflow.structure.contacts.max_overlap` on the asymmetric
   molecule and its neighbours, no bond between molecules by
   :func:`crystalflow.structure.molecules.molecule_bonds`; candidates that had to grow by more than
   ``max_expansion`` in volume, or whose molecule sits on a symmetry element (two images coincide),
   are drawn again.

Example::

    rng = np.random.default_rng(0)
    crystals = random_crystals(molecule, z, "P21/c", 100, rng)
    crystals[0].space_group()         # (14, 'P2_1/c')
    crystals[0].cluster()             # [17, n, 3]
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import gemmi
import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.transform import Rotation

from crystalflow.search import spacegroups
from crystalflow.search.spacegroups import SpaceGroup
from crystalflow.structure.contacts import max_overlap
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import (
    COVALENT_RADIUS,
    HOFMANN_VOLUME,
    HYDROGEN,
    VDW_RADIUS,
    symbol,
)
from crystalflow.structure.molecules import (
    BOND_TOLERANCE,
    centre_of_mass,
    inversion_partners,
    molecule_bonds,
)

#: packing coefficient that Hofmann's atomic volumes correspond to (typical organic crystals: 0.65–0.77)
REFERENCE_PACKING = 0.70
#: mean and standard deviation of the drawn packing coefficient
PACKING_MEAN, PACKING_SD = 0.70, 0.03
#: drawn packing coefficients are clipped to this range
PACKING_RANGE = (0.60, 0.80)
#: Å: heavy-atom overlap allowed in a candidate (below the validity threshold 0.7 Å of structure.contacts)
OVERLAP = 0.5
#: Å: overlap allowed for pairs with a hydrogen (a hydrogen bond H···O at 1.8 Å overlaps 0.92 Å)
HYDROGEN_OVERLAP = 1.0
#: largest ratio of two cell edges
MAX_AXIS_RATIO = 4.0
#: degrees: range of each free cell angle, by crystal system
ANGLE_RANGES: dict[str, tuple[float, float]] = {"triclinic": (60.0, 120.0), "monoclinic": (90.0, 120.0)}
#: a triclinic cell with a smaller volume factor (V / abc) is drawn again (too skewed)
MIN_VOLUME_FACTOR = 0.5
#: candidates that need a larger volume expansion to remove overlaps are drawn again
MAX_EXPANSION = 2.0
#: rounds of compressing the three cell edges one at a time after the uniform expansion
COMPRESS_ROUNDS = 2
#: an edge is compressed to no less than this fraction of its length in one step
MIN_EDGE_FACTOR = 0.6
#: draws per requested crystal before giving up
MAX_ATTEMPTS = 50
#: Å: two images whose centres are closer coincide (the molecule sits on a symmetry element)
COINCIDENT = 1e-3
#: where the molecule sits: the general position (Z' = 1), or an inversion centre (Z' = ½, centrosymmetric molecules)
SITES = ("general", "inversion")
_SCALE_MARGIN = 1e-6
_PAIR_CHUNK = 2_000_000


class GenerationError(ValueError):
    """Bad input for the generator, or no valid crystal within the allowed attempts."""


@dataclass
class Generation:
    """What :func:`generate_crystals` produced: the crystals and how many draws were rejected, and why."""

    crystals: list[SymmetricCrystal]
    space_group: SpaceGroup
    n_drawn: int = 0  #: candidates drawn (accepted + rejected)
    rejected: dict[str, int] = field(default_factory=dict)  #: reason → count
    expansion: list[float] = field(default_factory=list)  #: per accepted crystal: volume / target volume
    seconds: float = 0.0

    @property
    def rejected_fraction(self) -> float:
        """Rejected draws / all draws."""
        return sum(self.rejected.values()) / self.n_drawn if self.n_drawn else 0.0


def molecular_volume(z: np.ndarray) -> float:
    """Sum of Hofmann's atomic volumes (Å³): the cell volume per molecule of a typical organic crystal."""
    v = HOFMANN_VOLUME[np.asarray(z, dtype=np.int64)]
    if np.isnan(v).any():
        missing = sorted({symbol(int(e)) for e in np.asarray(z)[np.isnan(v)]})
        raise GenerationError(f"no Hofmann volume for element(s) {', '.join(missing)}")
    return float(v.sum())


def centrosymmetric(x: np.ndarray, z: np.ndarray) -> np.ndarray | None:
    """The molecule made exactly centrosymmetric about its centre of mass (each atom and its inversion partner,
    :func:`crystalflow.structure.molecules.inversion_partners`, moved to the mean of the two), or None when it
    has no inversion centre."""
    perm = inversion_partners(x, z)
    if perm is None:
        return None
    c = centre_of_mass(x, z)
    rel = np.asarray(x, dtype=np.float64) - c
    return c + 0.5 * (rel - rel[perm])


def _heavy(z: np.ndarray) -> np.ndarray:
    heavy = z != HYDROGEN
    return heavy if heavy.any() else np.ones_like(heavy)


def thickness(x: np.ndarray) -> float:
    """The molecule's thinnest width (Å): the smallest extent of its points over all directions (0 when planar)."""
    p = np.asarray(x, dtype=np.float64)
    p = p - p.mean(axis=0)
    directions = np.linalg.svd(p, full_matrices=False)[2] if len(p) > 1 else np.eye(3)
    try:
        directions = np.concatenate([directions, ConvexHull(p).equations[:, :3]])
    except (QhullError, ValueError):  # planar, collinear or fewer than four points
        pass
    proj = p @ directions.T
    return float((proj.max(axis=0) - proj.min(axis=0)).min())


def min_lattice_vector(molecule: np.ndarray, z: np.ndarray, overlap: float = OVERLAP) -> float:
    """Shortest lattice vector (Å) a cell of this molecule may have: the thinnest width of its heavy atoms,
    and at least the closest allowed distance of a heavy atom to its own translate, 2·r_vdW − ``overlap``
    (molecules interlock, so a translate may come closer than the width plus a contact)."""
    zz = np.asarray(z, dtype=np.int64)
    heavy = _heavy(zz)
    return max(thickness(np.asarray(molecule)[heavy]), 2.0 * float(VDW_RADIUS[zz[heavy]].max()) - overlap)


def shortest_vector(lattice: np.ndarray) -> float:
    """Length (Å) of the shortest non-zero lattice vector among the combinations with coefficients −1, 0, 1."""
    n = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3)
    n = n[np.any(n != 0, axis=1)]
    return float(np.linalg.norm(n @ lattice, axis=1).min())


def random_lattice(sg: SpaceGroup, volume: float, rng: np.random.Generator,
                   max_axis_ratio: float = MAX_AXIS_RATIO) -> np.ndarray | None:
    """[3, 3] lattice rows of the crystal system of ``sg`` with the given volume, or None for a too skewed draw."""
    lengths = np.exp(rng.uniform(0.0, math.log(max_axis_ratio), size=3))
    angles = {"alpha": 90.0, "beta": 90.0, "gamma": 90.0}
    for name in sg.free_angles:
        angles[name] = float(rng.uniform(*ANGLE_RANGES[sg.crystal_system]))
    cell = gemmi.UnitCell(*lengths, angles["alpha"], angles["beta"], angles["gamma"])
    lattice = np.array(cell.orth.mat.tolist(), dtype=np.float64).T
    v0 = float(np.linalg.det(lattice)) if np.all(np.isfinite(lattice)) else float("nan")
    if not v0 > MIN_VOLUME_FACTOR * float(np.prod(lengths)):
        return None
    return lattice * (volume / v0) ** (1.0 / 3.0)


@dataclass
class _Neighbours:
    """Images of the asymmetric molecule that may come near it: fractional centre offsets ``d`` [P, 3]
    and Cartesian atom offsets ``offsets`` [P, n, 3] from their own centres (the same on every cell of the
    crystal system: scaling cell edges leaves the Cartesian operators unchanged)."""

    d: np.ndarray
    offsets: np.ndarray

    def centres(self, lattice: np.ndarray) -> np.ndarray:
        """[P, 3] Cartesian centre offsets in the cell ``lattice``."""
        return self.d @ lattice


def _neighbours(lattice: np.ndarray, fixed: np.ndarray, moving: np.ndarray, bounds: tuple[float, float],
                sg: SpaceGroup, centre: np.ndarray, offsets: np.ndarray, cutoff: float,
                inversion_site: bool = False) -> _Neighbours | None:
    """The images whose centres come within ``cutoff`` of the asymmetric molecule's on the path of cells
    ``fixed + λ·moving``, λ in ``bounds`` (``lattice``: one cell of the path); None when two images coincide,
    except, with ``inversion_site`` (a centrosymmetric molecule on an inversion centre), the images by the
    inversions through its centre, which are the molecule itself and are left out."""
    inv = np.linalg.inv(lattice)
    cart_ops = np.einsum("ab,hcb,cd->had", inv, sg.rotations, lattice)  # x' = x @ A_h (row vectors)
    image_offsets = np.einsum("na,had->hnd", offsets, cart_ops)  # [h, n, 3]
    d = np.einsum("hij,j->hi", sg.rotations, centre) + sg.translations - centre
    d -= np.round(d)  # [h, 3] in [-0.5, 0.5]
    smallest = fixed + bounds[0] * moving  # heights only shrink with λ on these paths
    heights = 1.0 / np.linalg.norm(np.linalg.inv(smallest), axis=0)
    reach = np.ceil(cutoff / heights + 0.5).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1).reshape(-1, 3)
    h = np.repeat(np.arange(len(d)), len(grid))
    dp = d[h] + np.tile(grid, (len(d), 1))
    u, v = dp @ fixed, dp @ moving
    vv = np.einsum("pk,pk->p", v, v)
    lam = np.clip(-np.einsum("pk,pk->p", u, v) / np.where(vv > 0, vv, 1.0), *bounds)
    dist = np.linalg.norm(u + lam[:, None] * v, axis=1)  # closest approach on the path
    identity = np.all(sg.rotations[h] == np.eye(3, dtype=np.int64), axis=(1, 2)) & np.all(grid[np.arange(len(h)) % len(grid)] == 0, axis=1)
    identity &= np.all(sg.translations[h] == 0, axis=1)
    keep = (dist < cutoff) & ~identity
    coincident = np.linalg.norm(dp @ lattice, axis=1) < COINCIDENT
    if inversion_site:
        keep &= ~(coincident & np.all(sg.rotations[h] == -np.eye(3, dtype=np.int64), axis=(1, 2)))
    if np.any(coincident & keep):
        return None
    if inversion_site:  # the images by g and by g∘(inversion) are one molecule: keep one of each pair
        first = np.unique(np.round(dp[keep], 6), axis=0, return_index=True)[1]
        kept = np.flatnonzero(keep)
        keep = np.zeros_like(keep)
        keep[kept[np.sort(first)]] = True
    return _Neighbours(d=dp[keep], offsets=image_offsets[h[keep]])


def _contact_distances(z: np.ndarray, overlap: float, hydrogen_overlap: float) -> np.ndarray:
    """[n, n] the closest allowed distance of each atom pair of two molecules."""
    r = VDW_RADIUS[z]
    hydrogen = (z[:, None] == HYDROGEN) | (z[None, :] == HYDROGEN)
    if not np.any(z != HYDROGEN):
        hydrogen = np.zeros_like(hydrogen)
    return r[:, None] + r[None, :] - np.where(hydrogen, hydrogen_overlap, overlap)


def smallest_allowed(u: np.ndarray, v: np.ndarray, image_offsets: np.ndarray, offsets: np.ndarray,
                     distance: np.ndarray, lower: float) -> float:
    """Smallest ``λ ≥ lower`` at which every atom pair of the asymmetric molecule (``offsets`` [n, 3]) and
    its neighbours (centres ``u + λ v`` [P, 3], atom offsets ``image_offsets`` [P, n, 3]) is at least
    ``distance`` [n, n] apart.

    Pair (i, j) of neighbour p is at ``|u + λ v + δ|`` (δ = o_pj − o_i); it is too close on the interval of
    λ between the roots of ``a λ² + 2 b λ + c = 0`` (a = |v|², b = v·(u + δ), c = |u + δ|² − D²).
    """
    lo_all, hi_all = [], []
    n = len(offsets)
    step = max(1, _PAIR_CHUNK // max(1, n * n))
    for start in range(0, len(u), step):
        sl = slice(start, start + step)
        w = u[sl, None, None, :] + image_offsets[sl, None, :, :] - offsets[None, :, None, :]  # [P, n, n, 3]
        a = np.einsum("pk,pk->p", v[sl], v[sl])[:, None, None]
        b = np.einsum("pk,pijk->pij", v[sl], w)
        c = np.einsum("pijk,pijk->pij", w, w) - distance[None] ** 2
        disc = b * b - a * c
        ok = (disc > 0) & (a > 0)
        root = np.sqrt(np.where(ok, disc, 0.0))
        safe = np.where(a > 0, a, 1.0)
        lo, hi = (-b - root) / safe, (-b + root) / safe
        ok &= hi > lower
        lo_all.append(lo[ok])
        hi_all.append(hi[ok])
    lo, hi = (np.concatenate(x) if x else np.zeros(0) for x in (lo_all, hi_all))
    if not len(lo):
        return lower
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(np.maximum(hi, lower))  # the allowed λ after the first k intervals
    if lo[0] > lower:
        return lower
    gap = np.flatnonzero(lo[1:] > reach[:-1])
    return float(reach[gap[0]] if len(gap) else reach[-1])


def _fit_cell(lattice: np.ndarray, sg: SpaceGroup, centre: np.ndarray, offsets: np.ndarray, distance: np.ndarray,
              cutoff: float, rounds: int, rng: np.random.Generator, inversion_site: bool = False) -> np.ndarray | None:
    """The cell scaled up uniformly to the smallest factor ≥ 1 without overlaps, then each edge shortened in turn
    (random order, ``rounds`` times) to its smallest length without overlaps; None on a special position."""
    zero = np.zeros((3, 3))
    nb = _neighbours(lattice, zero, lattice, (1.0, np.inf), sg, centre, offsets, cutoff, inversion_site)
    if nb is None:
        return None
    s = smallest_allowed(np.zeros_like(nb.d), nb.centres(lattice), nb.offsets, offsets, distance, 1.0)
    lattice = lattice * s * (1.0 + _SCALE_MARGIN)
    for _ in range(rounds):
        for i in rng.permutation(3):
            moving = np.zeros((3, 3))
            moving[i] = lattice[i]
            fixed = lattice - moving
            nb = _neighbours(lattice, fixed, moving, (MIN_EDGE_FACTOR, 1.0), sg, centre, offsets, cutoff,
                             inversion_site)
            lam = smallest_allowed(nb.centres(fixed), nb.centres(moving), nb.offsets, offsets, distance, MIN_EDGE_FACTOR)
            lattice = fixed + moving * min(1.0, lam * (1.0 + _SCALE_MARGIN))
    return lattice


def _bonded(molecule: np.ndarray, z: np.ndarray, others: np.ndarray, tolerance: float) -> bool:
    """Whether an atom of ``molecule`` bonds one of a neighbour (``others`` [P, n, 3]) by the bond rule."""
    n = len(z)
    zz = np.concatenate([z, z])
    for other in others:
        bonds = molecule_bonds(np.concatenate([molecule, other]), zz, tolerance)
        if np.any((bonds[:, 0] < n) != (bonds[:, 1] < n)):
            return True
    return False


def _check_input(molecule: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(molecule, dtype=np.float64)
    zz = np.asarray(z)
    if zz.ndim != 1 or not np.issubdtype(zz.dtype, np.integer) and not np.all(zz == np.round(zz)):
        raise GenerationError(f"z must be [n] atomic numbers, got shape {zz.shape}")
    zz = zz.astype(np.int64)
    if x.ndim != 2 or x.shape != (len(zz), 3) or len(zz) == 0:
        raise GenerationError(f"molecule must have shape [{len(zz)}, 3], got {x.shape}")
    if not np.isfinite(x).all():
        raise GenerationError("molecule has non-finite coordinates")
    if np.any(zz < 1) or np.any(zz >= len(VDW_RADIUS)):
        raise GenerationError("z holds an atomic number that is not an element")
    return x, zz


def generate_crystals(
    molecule: np.ndarray, z: np.ndarray, space_group: int | str | SpaceGroup, n: int, rng: np.random.Generator, *,
    packing: tuple[float, float] = (PACKING_MEAN, PACKING_SD), overlap: float = OVERLAP,
    hydrogen_overlap: float = HYDROGEN_OVERLAP, max_expansion: float = MAX_EXPANSION,
    max_axis_ratio: float = MAX_AXIS_RATIO, compress_rounds: int = COMPRESS_ROUNDS, max_attempts: int = MAX_ATTEMPTS,
    site: str = "general",
) -> Generation:
    """Up to ``n`` random crystals of the rigid ``molecule [n_atoms, 3]`` (atomic numbers ``z``) in ``space_group``,
    with the draw counts; stops after ``max_attempts · n`` draws (see the module docstring for the steps).
    ``site``: one of :data:`SITES`; ``"inversion"`` puts a centrosymmetric molecule (made exactly so first) on an
    inversion centre of the group (Z' = ½)."""
    x, zz = _check_input(molecule, z)
    sg = spacegroups.space_group(space_group)
    if n < 0:
        raise GenerationError(f"n must be ≥ 0, got {n}")
    if site not in SITES:
        raise GenerationError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    inversion = site == "inversion"
    centres = spacegroups.inversion_centres(sg) if inversion else None
    if inversion:
        x = centrosymmetric(x, zz)
        if x is None:
            raise GenerationError("site 'inversion' needs a centrosymmetric molecule")
        if not len(centres):
            raise GenerationError(f"{sg.symbol} has no inversion centre")
    t0 = time.perf_counter()
    v_target = sg.z * molecular_volume(zz) / (2 if inversion else 1)
    offsets0 = x - centre_of_mass(x, zz)
    distance = _contact_distances(zz, overlap, hydrogen_overlap)
    cutoff = 2.0 * float(np.linalg.norm(offsets0, axis=1).max()) + float(distance.max())
    min_vector = min_lattice_vector(x, zz, overlap)
    bond_reach = 2.0 * float(np.linalg.norm(offsets0, axis=1).max()) + 2.0 * float(COVALENT_RADIUS[zz].max()) + BOND_TOLERANCE
    out = Generation(crystals=[], space_group=sg)

    def reject(reason: str) -> None:
        out.rejected[reason] = out.rejected.get(reason, 0) + 1

    while len(out.crystals) < n and out.n_drawn < max_attempts * n:
        out.n_drawn += 1
        c = float(np.clip(rng.normal(*packing), *PACKING_RANGE))
        volume = v_target * REFERENCE_PACKING / c
        lattice = random_lattice(sg, volume, rng, max_axis_ratio)
        if lattice is None:
            reject("skewed_cell")
            continue
        if shortest_vector(lattice) < min_vector:
            reject("short_lattice_vector")
            continue
        rot = Rotation.from_quat(rng.normal(size=4)).as_matrix()
        offsets = offsets0 @ rot.T
        centre = centres[rng.integers(len(centres))] if inversion else rng.uniform(0.0, 1.0, size=3)
        lattice = _fit_cell(lattice, sg, centre, offsets, distance, cutoff, compress_rounds, rng, inversion)
        if lattice is None:
            reject("special_position")
            continue
        expansion = float(np.linalg.det(lattice)) / volume
        if expansion > max_expansion:
            reject("expansion")
            continue
        nb = _neighbours(lattice, lattice, np.zeros((3, 3)), (1.0, 1.0), sg, centre, offsets, cutoff, inversion)
        block = np.concatenate([offsets[None], nb.centres(lattice)[:, None, :] + nb.offsets])
        if max_overlap(block, zz) > overlap + 1e-6:
            reject("overlap")
            continue
        close = np.linalg.norm(nb.centres(lattice), axis=1) < bond_reach
        if _bonded(offsets, zz, block[1:][close], BOND_TOLERANCE):
            reject("bonded")
            continue
        out.crystals.append(SymmetricCrystal(lattice, sg.rotations, sg.translations, centre @ lattice + offsets, zz))
        out.expansion.append(expansion)
    out.seconds = time.perf_counter() - t0
    return out


def random_crystals(
    molecule: np.ndarray, z: np.ndarray, space_group: int | str | SpaceGroup, n: int, rng: np.random.Generator,
    **options,
) -> list[SymmetricCrystal]:
    """``n`` random crystals of the rigid ``molecule [n_atoms, 3]`` with atomic numbers ``z [n_atoms]`` in
    ``space_group`` (number or symbol of :data:`crystalflow.search.spacegroups.COMMON_SPACE_GROUPS`),
    molecule on the general position (Z' = 1); deterministic given ``rng``. ``options``: those of
    :func:`generate_crystals`. Raises :class:`GenerationError` when fewer than ``n`` could be made.

    Example::

        import numpy as np
        from crystalflow.search.generate import random_crystals

        crystals = random_crystals(molecule, z, "P21/c", 10, np.random.default_rng(0))
        print(crystals[0].density(), crystals[0].space_group())
    """
    gen = generate_crystals(molecule, z, space_group, n, rng, **options)
    if len(gen.crystals) < n:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(gen.rejected.items()))
        raise GenerationError(f"only {len(gen.crystals)} of {n} crystals in {gen.n_drawn} draws (rejected: {shown})")
    return gen.crystals
