"""Crystal structure search for one rigid molecule: random crystals → relaxation → ranked, distinct candidates.

:func:`search_crystals` runs the rule-based search:

1. **Schedule.** Each of ``n_candidates`` draws picks a space group, at random in proportion to the
   CSD frequencies of the searched groups (:func:`crystalflow.search.spacegroups.space_group_weights`);
   the draws of one group are cut into batches of ``batch_size``, and the batches are run round by
   round (the first batch of every group, then the second, ...), so that a time budget (checked before
   each batch and each relaxation) cuts all groups alike. Every batch has its own seed, drawn from ``rng`` up front: the result is deterministic given
   the seed (with a ``time_budget_s``, how many batches fit depends on the machine).
2. **Generation** of each batch by :func:`crystalflow.search.generate.generate_crystals` (Z' = 1, the
   molecule rigid, no overlap beyond its tolerance). With ``inversion_fraction`` > 0 a centrosymmetric
   molecule (:func:`crystalflow.structure.molecules.inversion_partners`) is put on an inversion centre
   (Z' = ½) in that share of the batches of the groups that have them (P2₁/c, P-1, C2/c, Pbca).
3. **Relaxation** of each crystal (:func:`crystalflow.physics.relax.relax_crystal`, one force field for all,
   ``relax_batch`` crystals per call; pose and cell free under the space group) to a minimum of the lattice
   energy.
4. **Validity**: a relaxed crystal whose 17-molecule cluster (:meth:`SymmetricCrystal.cluster`) has two
   heavy atoms of different molecules overlapping by :data:`~crystalflow.structure.contacts.VALIDITY_OVERLAP`
   Å or more (:func:`crystalflow.structure.contacts.max_overlap`), or whose energy is not finite, is dropped.
5. **De-duplication** as each batch comes in (:class:`Deduplicator`, so it runs within the time budget): a
   candidate within :data:`ENERGY_TOLERANCE` kJ/mol and :data:`DENSITY_TOLERANCE` (relative) of one already
   kept, and whose cheap fingerprint (:func:`shell_distances`) is close to its, is compared with it by
   OXtalign (:func:`crystalflow.evaluation.matching.packing_match`, RMSD_15 of the two clusters); when all
   :data:`~crystalflow.evaluation.matching.SHELL` molecules overlay within :data:`DUPLICATE_RMSD` Å it is the
   same structure, counted on the kept one (``duplicates``), whose lower-energy copy stands for it.
6. **Ranking** by lattice energy per molecule, lowest first.

Each :class:`Candidate` carries the relaxed crystal, its energy, density, packing coefficient, the space
group spglib finds after relaxation, and how it was made (the group it was drawn in, its draw index, the
unrelaxed energy, the relaxation's steps and convergence).

The packing coefficient is that of :mod:`crystalflow.search.generate`: ``REFERENCE_PACKING · Z · V_Hofmann / V_cell``
(Hofmann's atomic volumes describe a crystal of packing coefficient 0.70), so a generated crystal's value
is the one it was drawn with before overlap removal.

Example::

    from crystalflow.search.pipeline import search_crystals

    result = search_crystals(molecule, z, n_candidates=60, rng=0)
    best = result.candidates[0]
    best.energy, best.density, best.space_group, best.crystal.cluster().shape
"""
from __future__ import annotations

import bisect
import itertools
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL
from crystalflow.evaluation.matching import SHELL, ClusterTopology, packing_match
from crystalflow.physics.energy import EnergySettings
from crystalflow.physics.forcefield import assign
from crystalflow.physics.relax import GTOL, relax_crystal
from crystalflow.search import spacegroups
from crystalflow.search.generate import (
    REFERENCE_PACKING,
    GenerationError,
    generate_crystals,
    molecular_volume,
)
from crystalflow.search.refine import refine_crystals
from crystalflow.search.spacegroups import (
    COMMON_SPACE_GROUPS,
    SpaceGroup,
    SpaceGroupError,
    inversion_centres,
    space_group_weights,
)
from crystalflow.structure.contacts import VALIDITY_OVERLAP, max_overlap
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import VDW_RADIUS
from crystalflow.structure.molecules import centre_of_mass, inversion_partners

#: kJ/mol: candidates closer in lattice energy may be the same structure (then compared by RMSD_15)
ENERGY_TOLERANCE = 1.0
#: relative density difference below which candidates may be the same structure
DENSITY_TOLERANCE = 0.02
#: Å: RMSD_15 (all molecules of the shell overlaid) below which two candidates are the same structure
DUPLICATE_RMSD = 0.5
#: neighbours in the cheap fingerprint of de-duplication (:func:`shell_distances`)
SIGNATURE_NEIGHBOURS = 12
#: candidates whose fingerprints differ by more than this many DUPLICATE_RMSD (RMS, Å) are not compared by OXtalign
SIGNATURE_FACTOR = 2.0
#: candidates generated from one seed (a unit of the schedule and of the time budget)
BATCH_SIZE = 8
#: candidates relaxed together (one L-BFGS over their summed energies shares its line search: alone converges faster)
RELAX_BATCH = 1
#: L-BFGS iterations per relaxation
MAX_STEPS = 300
#: distinct candidates (lowest energy first) the model refines (:func:`refine_result`)
REFINE_TOP = 30
#: share of a search's time budget kept for the model's refinement
REFINE_FRACTION = 0.25
#: share of the batches in a group with inversion centres that put a centrosymmetric molecule on one (Z' = ½);
#: the rest keep it on the general position. Off: the general search reaches those crystals through index-2
#: subgroups, and ½ measured no gain (docs/search.md)
INVERSION_FRACTION = 0.0


class SearchError(ValueError):
    """Input the search cannot take (molecule shape, atomic numbers, space groups, counts)."""


@dataclass
class Candidate:
    """One relaxed, valid, distinct crystal of the search."""

    crystal: SymmetricCrystal  #: relaxed crystal (the input molecule's atom order)
    energy: float  #: lattice energy, kJ/mol per molecule
    density: float  #: g/cm³
    packing: float  #: packing coefficient (module docstring)
    space_group: tuple[int, str]  #: (number, symbol) spglib finds after relaxation
    generated_in: str  #: symbol of the space group it was drawn in
    index: int  #: position in the generation order (batch by batch)
    energy_unrelaxed: float  #: lattice energy of the generated crystal (kJ/mol per molecule)
    steps: int  #: L-BFGS iterations of its relaxation batch
    converged: bool  #: the batch's largest gradient fell below ``gtol``
    max_overlap: float  #: Å, largest heavy-atom overlap in its cluster
    duplicates: int = 0  #: other candidates found to be this structure
    rank: int = 0  #: 1 for the lowest energy
    seconds: float = 0.0  #: when it was found, seconds after the search started
    origin: str = "search"  #: "search" (generated and relaxed) or "refined" (a candidate moved by the model)


@dataclass
class SearchResult:
    """Ranked candidates (lowest energy first) and what the search did."""

    candidates: list[Candidate]
    space_groups: tuple[str, ...]  #: symbols of the groups searched
    n_requested: int
    n_generated: int = 0  #: crystals the generator produced
    n_relaxed: int = 0
    n_invalid: int = 0  #: dropped after relaxation (overlap or non-finite energy)
    n_duplicates: int = 0
    per_group: dict[str, int] = field(default_factory=dict)  #: symbol → crystals generated
    seconds: float = 0.0
    generate_seconds: float = 0.0
    relax_seconds: float = 0.0
    timed_out: bool = False  #: batches were left out because ``time_budget_s`` ran out
    seed: int | None = None
    found: list[Candidate] = field(default_factory=list, repr=False)  #: every valid relaxed crystal, before de-duplication
    n_refined: int = 0  #: candidates handed to the model (:func:`refine_result`)
    n_refined_kept: int = 0  #: refined crystals that relaxed, were valid and new
    refine_seconds: float = 0.0
    charge_model: str = DEFAULT_CHARGE_MODEL  #: atomic charges of the force field the candidates were relaxed with

    def __len__(self) -> int:
        return len(self.candidates)

    def summary(self) -> str:
        """One line: counts and times."""
        refined = (f"; {self.n_refined_kept} new of {self.n_refined} refined by the model" if self.n_refined else "")
        return (f"{len(self.candidates)} candidates from {self.n_generated} generated ({self.n_invalid} invalid, "
                f"{self.n_duplicates} duplicates{refined}) in {self.seconds:.1f} s"
                + (" (time budget reached)" if self.timed_out else ""))


def packing_coefficient(crystal: SymmetricCrystal) -> float:
    """``REFERENCE_PACKING · Z · V_Hofmann / V_cell`` of a crystal (module docstring)."""
    return REFERENCE_PACKING * crystal.n_molecules * molecular_volume(crystal.z) / crystal.volume


def _candidate(r, overlap: float, generated_in: str, index: int, seconds: float, origin: str = "search") -> Candidate:
    """The Candidate of a relaxation ``r`` (:class:`crystalflow.physics.relax.CrystalRelaxation`)."""
    return Candidate(crystal=r.crystal, energy=r.energy_after, density=r.crystal.density(),
                     packing=packing_coefficient(r.crystal), space_group=r.crystal.space_group(),
                     generated_in=generated_in, index=index, energy_unrelaxed=r.energy_before, steps=r.steps,
                     converged=r.converged, max_overlap=overlap, seconds=seconds, origin=origin)


def _check(molecule, z, n_candidates, space_groups, time_budget_s, batch_size) -> tuple[np.ndarray, np.ndarray, tuple[SpaceGroup, ...]]:
    x = np.asarray(molecule, dtype=np.float64)
    zz = np.asarray(z)
    if zz.ndim != 1 or zz.size == 0 or not np.all(np.isfinite(zz.astype(np.float64))) or not np.all(zz == np.round(zz)):
        raise SearchError(f"z must be [n] atomic numbers, got shape {zz.shape}")
    zz = zz.astype(np.int64)
    if x.shape != (len(zz), 3):
        raise SearchError(f"molecule must have shape [{len(zz)}, 3], got {x.shape}")
    if not np.isfinite(x).all():
        raise SearchError("molecule has non-finite coordinates")
    if np.any(zz < 1) or np.any(zz >= len(VDW_RADIUS)):
        raise SearchError("z holds an atomic number that is not an element")
    if isinstance(n_candidates, bool) or not isinstance(n_candidates, (int, np.integer)) or n_candidates < 1:
        raise SearchError(f"n_candidates must be a positive integer, got {n_candidates!r}")
    if time_budget_s is not None and not (isinstance(time_budget_s, (int, float)) and time_budget_s > 0):
        raise SearchError(f"time_budget_s must be a positive number of seconds or None, got {time_budget_s!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise SearchError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(space_groups, (str, int, SpaceGroup)):
        space_groups = (space_groups,)
    try:
        groups = tuple({g.number: g for g in map(spacegroups.space_group, space_groups)}.values())
        molecular_volume(zz)
    except (SpaceGroupError, GenerationError) as e:
        raise SearchError(str(e)) from None
    if not groups:
        raise SearchError("no space group to search")
    return x, zz, groups


def _schedule(groups: tuple[SpaceGroup, ...], n: int, batch_size: int, rng: np.random.Generator,
              inversion_fraction: float = 0.0) -> list[tuple[SpaceGroup, int, int, str]]:
    """(group, batch size, seed, site) of every batch, round by round over the groups (most frequent first);
    in a group with inversion centres, batch r (0-based) puts the molecule on one when
    ``floor((r + 1) f) > floor(r f)`` (f = ``inversion_fraction``: 0 never, ½ every second batch)."""
    draws = rng.choice(len(groups), size=n, p=space_group_weights(groups))
    counts = np.bincount(draws, minlength=len(groups))
    batches: list[list[int]] = [[batch_size] * (c // batch_size) + ([c % batch_size] if c % batch_size else []) for c in counts]
    centred = {g.number for g in groups if inversion_fraction > 0 and len(inversion_centres(g))}
    out = []
    for r in range(max((len(b) for b in batches), default=0)):
        for g, sizes in zip(groups, batches):
            if r < len(sizes):
                on_centre = (g.number in centred
                             and math.floor((r + 1) * inversion_fraction) > math.floor(r * inversion_fraction))
                out.append((g, sizes[r], int(rng.integers(2**63)), "inversion" if on_centre else "general"))
    return out


def same_structure(a: SymmetricCrystal, b: SymmetricCrystal, topology: ClusterTopology | None = None,
                   max_rmsd: float = DUPLICATE_RMSD) -> bool:
    """Whether two crystals of one molecule are the same structure: every molecule of the RMSD_15 shell
    overlays within ``max_rmsd`` Å (OXtalign, :func:`crystalflow.evaluation.matching.packing_match`)."""
    m = packing_match(b.cluster(), a.cluster(), a.z, topology=topology)
    return m.n_matched >= SHELL and m.rmsd < max_rmsd


def shell_distances(crystal: SymmetricCrystal, n: int = SIGNATURE_NEIGHBOURS, cluster: np.ndarray | None = None) -> np.ndarray:
    """The ``n`` shortest distances (Å) from the molecule's centre of mass to its neighbours' (a cheap
    fingerprint: invariant to the frame, and close for two crystals that overlay closely); ``cluster``: its
    :meth:`SymmetricCrystal.cluster` when already at hand."""
    com = centre_of_mass(crystal.cluster() if cluster is None else cluster, crystal.z)
    return np.sort(np.linalg.norm(com[1:] - com[0], axis=1))[:n]


def _order(c: Candidate) -> tuple[float, int]:
    """Where a candidate ranks: by energy, ties by generation order."""
    return (c.energy, c.index)


class Deduplicator:
    """Distinct candidates kept as they arrive (module docstring, step 5), lowest energy first in :attr:`kept`.

    :meth:`add` compares a new candidate only with kept ones within ``energy_tolerance`` (a bisection of the
    energy-sorted list) and ``density_tolerance``; pairs whose :func:`shell_distances` differ by more than
    :data:`SIGNATURE_FACTOR` · ``max_rmsd`` (RMS) are different structures without the OXtalign comparison (the
    centre of a molecule moves no more than its atoms' RMS, and sorted distances differ least). A duplicate is
    counted in the ``duplicates`` of the kept one it matched; when it is the lower in energy it takes that
    one's place (crystal, energy, and how it was found), so the kept structure is always its lowest-energy
    copy. ``distinct``: candidates already known distinct (kept as they are, not compared with each other).
    The search adds each relaxed batch as it comes, so de-duplication runs within its time budget.
    """

    def __init__(self, energy_tolerance: float = ENERGY_TOLERANCE, density_tolerance: float = DENSITY_TOLERANCE,
                 max_rmsd: float = DUPLICATE_RMSD, distinct: list[Candidate] = ()) -> None:
        self.energy_tolerance, self.density_tolerance, self.max_rmsd = energy_tolerance, density_tolerance, max_rmsd
        self.kept: list[Candidate] = []
        self._topologies: list[ClusterTopology] = []
        self._signatures: list[np.ndarray] = []
        self.removed = 0
        for c in sorted(distinct, key=_order):
            self._insert(c, c.crystal.cluster())

    def _insert(self, c: Candidate, cluster: np.ndarray, signature: np.ndarray | None = None) -> None:
        at = bisect.bisect(self.kept, _order(c), key=_order)
        self.kept.insert(at, c)
        self._topologies.insert(at, ClusterTopology(cluster[0], c.crystal.z))
        self._signatures.insert(at, shell_distances(c.crystal, cluster=cluster) if signature is None else signature)

    def add(self, c: Candidate) -> bool:
        """Keep ``c`` when it is a new structure (True), else count it on the kept one it matches (False)."""
        cluster = c.crystal.cluster()
        sig = shell_distances(c.crystal, cluster=cluster)
        lo = bisect.bisect_left(self.kept, (c.energy - self.energy_tolerance, -1), key=_order)
        hi = bisect.bisect_right(self.kept, (c.energy + self.energy_tolerance, math.inf), key=_order)
        for j in range(lo, hi):
            k = self.kept[j]
            if abs(c.density - k.density) > self.density_tolerance * k.density:
                continue
            if np.sqrt(np.mean((sig - self._signatures[j]) ** 2)) > SIGNATURE_FACTOR * self.max_rmsd:
                continue
            if not same_structure(k.crystal, c.crystal, self._topologies[j], self.max_rmsd):
                continue
            self.removed += 1
            if _order(c) < _order(k):  # the new copy is the lower: it stands for the structure
                c.duplicates += 1 + k.duplicates
                for store in (self.kept, self._topologies, self._signatures):
                    del store[j]
                self._insert(c, cluster, sig)
            else:
                k.duplicates += 1 + c.duplicates
            return False
        self._insert(c, cluster, sig)
        return True


def deduplicate(candidates: list[Candidate], energy_tolerance: float = ENERGY_TOLERANCE,
                density_tolerance: float = DENSITY_TOLERANCE, max_rmsd: float = DUPLICATE_RMSD,
                known_distinct: list[Candidate] = (), in_order: bool = False) -> tuple[list[Candidate], int]:
    """The distinct candidates in order of energy and the number removed (:class:`Deduplicator`), taken in
    order of energy, or as listed with ``in_order`` (the order a search found them in). Candidates of
    ``known_distinct`` (the same objects, e.g. the output of an earlier call) are not compared with each
    other again."""
    known = {id(c) for c in known_distinct}
    dedup = Deduplicator(energy_tolerance, density_tolerance, max_rmsd, distinct=list(known_distinct))
    rest = [c for c in candidates if id(c) not in known]
    for c in (rest if in_order else sorted(rest, key=_order)):
        dedup.add(c)
    return dedup.kept, dedup.removed


@dataclass
class _BatchJob:
    """One unit of the schedule: generate ``size`` crystals in ``group`` from ``seed`` and relax them."""

    x: np.ndarray
    z: np.ndarray
    group: int
    size: int
    seed: int
    ff: object
    max_steps: int
    gtol: float
    settings: EnergySettings | None
    relax_batch: int
    deadline: float | None  #: time.time() after which no relaxation starts
    generate_options: dict
    site: str = "general"  #: :data:`crystalflow.search.generate.SITES`


@dataclass
class _BatchOutput:
    relaxed: list  #: (CrystalRelaxation, max overlap) per relaxed crystal
    n_generated: int
    generate_seconds: float
    relax_seconds: float
    timed_out: bool


def _run_batch(job: _BatchJob) -> _BatchOutput:
    """Generate and relax one batch (in this process or a worker)."""
    out = _BatchOutput([], 0, 0.0, 0.0, False)
    if job.deadline is not None and time.time() > job.deadline:
        out.timed_out = True
        return out
    t = time.perf_counter()
    gen = generate_crystals(job.x, job.z, spacegroups.space_group(job.group), job.size,
                            np.random.default_rng(job.seed), site=job.site, **job.generate_options)
    out.generate_seconds = time.perf_counter() - t
    out.n_generated = len(gen.crystals)
    for start in range(0, len(gen.crystals), job.relax_batch):
        if job.deadline is not None and time.time() > job.deadline:
            out.timed_out = True
            break
        t = time.perf_counter()
        relaxed = relax_crystal(gen.crystals[start:start + job.relax_batch], job.ff, max_steps=job.max_steps,
                                gtol=job.gtol, settings=job.settings)
        out.relax_seconds += time.perf_counter() - t
        out.relaxed += [(r, max_overlap(r.crystal.cluster(), job.z)) for r in relaxed]
    return out


def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_batches(jobs: list[_BatchJob], workers: int):
    """(job, output) in schedule order: here (``workers`` = 1) or in ``workers`` spawned processes, at most
    two batches per worker in flight, none started after the deadline."""
    if workers <= 1:
        for job in jobs:
            out = _run_batch(job)
            yield job, out
            if out.timed_out:
                return
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
        pending = iter(jobs)
        flight = [(job, pool.submit(_run_batch, job)) for job in itertools.islice(pending, 2 * workers)]
        while flight:
            job, future = flight.pop(0)
            out = future.result()
            yield job, out
            if out.timed_out:
                for _, f in flight:
                    f.cancel()
                for j, f in flight:  # batches already running finish (each stops at the deadline)
                    if not f.cancelled():
                        yield j, f.result()
                return
            nxt = next(pending, None)
            if nxt is not None:
                flight.append((nxt, pool.submit(_run_batch, nxt)))


def search_crystals(
    molecule: np.ndarray, z: np.ndarray, n_candidates: int = 100, *,
    space_groups=COMMON_SPACE_GROUPS, rng: np.random.Generator | int | None = None,
    time_budget_s: float | None = None, max_steps: int = MAX_STEPS, gtol: float = GTOL,
    energy_settings: EnergySettings | None = None, batch_size: int = BATCH_SIZE, relax_batch: int = RELAX_BATCH,
    energy_tolerance: float = ENERGY_TOLERANCE, density_tolerance: float = DENSITY_TOLERANCE,
    duplicate_rmsd: float = DUPLICATE_RMSD, progress: bool = True, refine_model=None, refine_top: int = REFINE_TOP,
    refine_fraction: float = REFINE_FRACTION, workers: int = 1, charge_model: str = DEFAULT_CHARGE_MODEL,
    inversion_fraction: float = INVERSION_FRACTION, **generate_options,
) -> SearchResult:
    """Search the crystal structures of the rigid ``molecule [n, 3]`` (Å; atomic numbers ``z [n]``): ``n_candidates``
    random Z' = 1 crystals in ``space_groups`` (numbers, symbols or :class:`SpaceGroup`; default the 11 common
    ones, drawn as often as the CSD has them), relaxed, the invalid ones dropped, duplicates merged, ranked
    by lattice energy (see the module docstring).

    ``rng``: a seed or ``numpy.random.Generator`` (deterministic given the seed); ``time_budget_s``: no new
    batch or relaxation starts after that many seconds; ``batch_size``: crystals generated per seed (the schedule's unit);
    ``relax_batch``: crystals relaxed in one call; ``max_steps``, ``gtol``, ``energy_settings``: those of
    :func:`crystalflow.physics.relax.relax_crystal`; ``charge_model``: the atomic charges of the force field
    (:data:`~crystalflow.common.vocabulary.CHARGE_MODELS`); ``generate_options``: those of
    :func:`crystalflow.search.generate.generate_crystals`; ``progress``: a tqdm bar on stderr; ``workers``:
    processes that generate and relax batches at once (spawned, one torch thread each; from a script, call
    it under ``if __name__ == "__main__":``), the result the same as with one, but for where a time budget
    cuts; ``refine_model``: a flow model that refines the ``refine_top`` lowest candidates within
    ``refine_fraction`` of the time budget (:func:`refine_result`); ``inversion_fraction``: the share of batches
    that put a centrosymmetric molecule on an inversion centre (step 2; 0: general positions only). Raises
    :class:`SearchError` on bad input.

    Example::

        result = search_crystals(molecule, z, 60, rng=0, space_groups=["P21/c", "P-1"])
        for c in result.candidates[:5]:
            print(c.rank, round(c.energy, 1), round(c.density, 3), c.space_group)
    """
    x, zz, groups = _check(molecule, z, n_candidates, space_groups, time_budget_s, batch_size)
    if not isinstance(relax_batch, (int, np.integer)) or relax_batch < 1:
        raise SearchError(f"relax_batch must be a positive integer, got {relax_batch!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise SearchError(f"workers must be a positive integer, got {workers!r}")
    if charge_model not in CHARGE_MODELS:
        raise SearchError(f"unknown charge model {charge_model!r}; known: {', '.join(CHARGE_MODELS)}")
    seed = int(rng) if isinstance(rng, (int, np.integer)) else None
    gen_rng = np.random.default_rng(rng)
    t0 = time.perf_counter()
    search_budget = time_budget_s
    if refine_model is not None and time_budget_s is not None:
        search_budget = time_budget_s * (1.0 - refine_fraction)
    if not (isinstance(inversion_fraction, (int, float)) and 0.0 <= inversion_fraction <= 1.0):
        raise SearchError(f"inversion_fraction must be in [0, 1], got {inversion_fraction!r}")
    centrosymmetric = inversion_fraction > 0 and inversion_partners(x, zz) is not None
    schedule = _schedule(groups, int(n_candidates), int(batch_size), gen_rng,
                         inversion_fraction if centrosymmetric else 0.0)
    ff = assign(zz, x, charge_model=charge_model)
    result = SearchResult(candidates=[], space_groups=tuple(g.symbol for g in groups), n_requested=int(n_candidates),
                          seed=seed, charge_model=charge_model)
    found: list[Candidate] = []
    dedup = Deduplicator(energy_tolerance, density_tolerance, duplicate_rmsd)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=int(n_candidates), desc="search", unit="crystal", leave=False)
    deadline = None if search_budget is None else time.time() + search_budget - (time.perf_counter() - t0)
    jobs = [_BatchJob(x, zz, group.number, size, batch_seed, ff, max_steps, gtol, energy_settings, relax_batch,
                      deadline, generate_options, site) for group, size, batch_seed, site in schedule]
    try:
        for job, out in _run_batches(jobs, workers):
            result.generate_seconds += out.generate_seconds
            result.relax_seconds += out.relax_seconds
            result.n_generated += out.n_generated
            symbol = spacegroups.space_group(job.group).symbol
            result.per_group[symbol] = result.per_group.get(symbol, 0) + out.n_generated
            for r, overlap in out.relaxed:
                index = result.n_relaxed
                result.n_relaxed += 1
                if not math.isfinite(r.energy_after) or overlap >= VALIDITY_OVERLAP:
                    result.n_invalid += 1
                    continue
                found.append(_candidate(r, overlap, symbol, index, time.perf_counter() - t0))
                dedup.add(replace(found[-1]))
            if bar is not None:
                bar.update(job.size)
            if out.timed_out:
                result.timed_out = True
    finally:
        if bar is not None:
            bar.close()
    result.found = found
    result.candidates, result.n_duplicates = dedup.kept, dedup.removed
    for rank, c in enumerate(result.candidates, 1):
        c.rank = rank
    result.seconds = time.perf_counter() - t0
    if refine_model is not None:
        left = None if time_budget_s is None else max(time_budget_s - result.seconds, 0.0)
        result = refine_result(result, refine_model, top=refine_top, time_budget_s=left, ff=ff,
                               energy_settings=energy_settings, energy_tolerance=energy_tolerance,
                               density_tolerance=density_tolerance, duplicate_rmsd=duplicate_rmsd)
        result.seconds = time.perf_counter() - t0
    return result


def refine_result(result: SearchResult, model, top: int = REFINE_TOP, *, until: float | None = None,
                  time_budget_s: float | None = None, ff=None, energy_settings: EnergySettings | None = None,
                  seed: int = 0, energy_tolerance: float = ENERGY_TOLERANCE, density_tolerance: float = DENSITY_TOLERANCE,
                  duplicate_rmsd: float = DUPLICATE_RMSD) -> SearchResult:
    """A new :class:`SearchResult`: the distinct candidates of ``result`` found within ``until`` seconds (all
    when None), the ``top`` lowest in energy refined by ``model``
    (:func:`crystalflow.search.refine.refine_crystals`, within ``time_budget_s`` seconds), the valid refined
    crystals added (``origin="refined"``), all de-duplicated and ranked again by energy; ``ff``: the force field
    (default: that of the search, with its ``charge_model``).

    ``until`` replays a shorter search from a longer one (the schedule is the same): the search of
    ``until`` seconds plus refinement, set against the search of ``until`` + refinement seconds, is the
    equal-time ablation of ``bench/predict_crystals.py``.

    Example::

        from crystalflow.search.refine import load_refiner

        refined = refine_result(search_crystals(molecule, z, 200, rng=0), load_refiner(), top=30)
        [c.origin for c in refined.candidates[:10]]
    """
    t0 = time.perf_counter()
    found = [replace(c, duplicates=0, rank=0) for c in result.found if until is None or c.seconds <= until]
    if until is None:  # the result's own de-duplication
        distinct = [replace(c) for c in result.candidates]
    else:
        distinct, _ = deduplicate([replace(c) for c in found], energy_tolerance, density_tolerance, duplicate_rmsd,
                                  in_order=True)  # as the shorter search would have
    parents = distinct[:top]
    out = replace(result, candidates=[], found=found, n_refined=len(parents))
    if until is not None:  # the counts of the shorter search
        out.n_generated = out.n_relaxed = len(found)
        out.seconds = until
    if not parents:
        out.candidates, out.n_duplicates = distinct, 0
        return out
    z = parents[0].crystal.z
    ff = ff or assign(z, parents[0].crystal.molecule, charge_model=result.charge_model)
    refined = refine_crystals([c.crystal for c in parents], model, ff, seed=seed, time_budget_s=time_budget_s,
                              settings=energy_settings)
    start = (until if until is not None else result.seconds)
    new = []
    for parent, r in zip(parents, refined):
        if r is None:
            continue
        overlap = max_overlap(r.crystal.cluster(), z)
        if overlap >= VALIDITY_OVERLAP:
            continue
        new.append(_candidate(r, overlap, parent.generated_in, parent.index, start + time.perf_counter() - t0,
                              origin="refined"))
    out.refine_seconds = time.perf_counter() - t0
    out.seconds = start + out.refine_seconds
    candidates, out.n_duplicates = deduplicate(distinct + new, energy_tolerance, density_tolerance, duplicate_rmsd,
                                               known_distinct=distinct)
    out.n_refined_kept = sum(c.origin == "refined" for c in candidates)
    out.found = found + new
    for rank, c in enumerate(candidates, 1):
        c.rank = rank
    out.candidates = candidates
    return out
