"""Predict the crystal structure of a new molecule by crystal-structure search: ranked periodic crystals.

``crystalflow predict MOLECULE -o OUT_DIR`` (the default ``--mode search``) and
:func:`crystalflow.apps.predict.predict` with ``mode="search"`` call :func:`predict_crystals`:

1. The molecule: SMILES → RDKit conformers (:func:`crystalflow.structure.molecule_input.smiles_conformers`;
   one, from :func:`~crystalflow.structure.molecule_input.read_molecule`, unless ``conformers`` > 1: by default
   1 for ≤ :data:`RIGID_ROTATABLE` rotatable bonds, else :data:`FLEXIBLE_CONFORMERS`); a file keeps its coordinates.
2. :func:`crystalflow.search.pipeline.search_crystals` for each conformer (kept rigid), the candidate count
   and time budget split evenly among the conformers: random Z' = 1 crystals in the searched space groups,
   relaxed (W99 exp-6 + atomic charges, ``charges``), invalid ones dropped, duplicates merged.
3. Ranking by ``energy`` = lattice energy per molecule + the conformer's force-field energy above the
   lowest conformer (MMFF94, 0 with one conformer), or with ``ranking="learned"`` by the shipped learned
   ranker's score (:mod:`crystalflow.search.ranking`: energy, packing, how often the search found the
   structure, its space group, its electrostatic share and the search model's shift); the top ``samples``
   are kept.
4. With ``pxrd`` a measured powder pattern (:func:`crystalflow.structure.pxrd.read_pattern`) is compared with
   each kept candidate's simulated one (de Gelder similarity), and ``ranking_pxrd.csv`` orders them by it.

Files per candidate ``candidate_NN`` (rank 01 first: the lowest energy, or the best learned score): ``.cif`` (standard setting; energy,
density, packing as ``_crystalflow_*`` items), ``.xyz``/``.pdb`` (its 17-molecule cluster) and
``_pxrd.csv`` (simulated Cu Kα pattern); then ``summary.csv``, ``overview.png``, ``viewer.html``
(offline 3Dmol.js, each candidate's unit cell), ``notes.txt`` and ``predict.json`` (settings, counts, seconds).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from crystalflow.apps.viz import candidate_page_template
from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import atomic_open, write_csv, write_json, write_text
from crystalflow.common.vocabulary import (
    CHARGE_MODELS,
    DEFAULT_CHARGE_MODEL,
    DEFAULT_SEARCH_CANDIDATES,
    DEFAULT_SEARCH_RANKING,
    DEFAULT_SEARCH_SECONDS,
    DEFAULT_TOP,
    SEARCH_RANKINGS,
)
from crystalflow.structure.molecule_input import Molecule3D, read_molecule

#: molecules with at most this many rotatable bonds are searched with one conformer by default
RIGID_ROTATABLE = 2
#: conformers searched by default for more flexible molecules
FLEXIBLE_CONFORMERS = 3
#: kept candidates whose simulated patterns the overview draws
OVERVIEW_PATTERNS = 3
SUMMARY_COLUMNS = ("rank", "energy", "lattice_energy", "density", "packing", "space_group", "space_group_number",
                   "a", "b", "c", "alpha", "beta", "gamma", "Z", "valid", "max_overlap", "conformer",
                   "generated_in", "duplicates", "converged", "pxrd_similarity", "score")
PXRD_COLUMNS = ("pxrd_rank", "rank", "pxrd_similarity", "energy", "density", "space_group")
TABLE_HEADER = "rank  energy(kJ/mol)  density  packing  space group  conformer" + "  pxrd"


@dataclass
class CrystalCandidate:
    """One predicted periodic crystal (rank 1 first: lowest energy, or best learned score)."""

    rank: int
    crystal: object = field(repr=False)  #: the relaxed SymmetricCrystal
    energy: float  #: kJ/mol per molecule: lattice energy + conformer energy above the lowest conformer
    lattice_energy: float  #: kJ/mol per molecule (W99 exp-6 + the search's atomic charges)
    density: float  #: g/cm³
    packing: float  #: packing coefficient (search.pipeline)
    space_group: tuple[int, str]  #: spglib's (number, symbol) after relaxation
    cell: tuple[float, ...]  #: a, b, c (Å), α, β, γ (°) of the standard setting the CIF is written in
    z_cell: int  #: molecules in that cell (Z)
    max_overlap: float  #: Å, largest heavy-atom vdW overlap in its 17-molecule cluster
    conformer: int  #: 1-based index of the conformer it was searched with
    generated_in: str = ""
    duplicates: int = 0
    converged: bool = True
    pxrd_similarity: float = float("nan")  #: with a measured pattern: de Gelder similarity to it
    pattern: object = field(default=None, repr=False)  #: its simulated PowderPattern
    score: float = float("nan")  #: with the learned ranking: the ranker's score (higher ranks first)

    @property
    def valid(self) -> bool:
        from crystalflow.structure.contacts import VALIDITY_OVERLAP

        return self.max_overlap < VALIDITY_OVERLAP

    def row(self) -> dict:
        """The summary.csv row."""
        a, b, c, al, be, ga = self.cell
        return {"rank": self.rank, "energy": round(self.energy, 3), "lattice_energy": round(self.lattice_energy, 3),
                "density": round(self.density, 4), "packing": round(self.packing, 4),
                "space_group": self.space_group[1], "space_group_number": self.space_group[0],
                "a": round(a, 4), "b": round(b, 4), "c": round(c, 4), "alpha": round(al, 3), "beta": round(be, 3),
                "gamma": round(ga, 3), "Z": self.z_cell, "valid": int(self.valid),
                "max_overlap": round(self.max_overlap, 3), "conformer": self.conformer,
                "generated_in": self.generated_in, "duplicates": self.duplicates, "converged": int(self.converged),
                "pxrd_similarity": "" if math.isnan(self.pxrd_similarity) else round(self.pxrd_similarity, 4),
                "score": "" if math.isnan(self.score) else round(self.score, 4)}

    def table_line(self) -> str:
        """This candidate as a line under :data:`TABLE_HEADER`."""
        pxrd = "" if math.isnan(self.pxrd_similarity) else f"  {self.pxrd_similarity:.3f}"
        return (f"{self.rank:4d}  {self.energy:14.2f}  {self.density:7.3f}  {self.packing:7.3f}  "
                f"{self.space_group[1]:>11s}  {self.conformer:9d}{pxrd}")


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"crystalflow predict: {message}", file=sys.stderr, flush=True)


def cell_parameters(crystal) -> tuple[tuple[float, ...], int]:  # noqa: ANN001 (SymmetricCrystal)
    """(a, b, c, α, β, γ) of the standard setting :func:`crystalflow.structure.cif_write.write_cif` writes, and Z."""
    from crystalflow.structure.cif_write import standard_setting

    _, lattice, _, _ = standard_setting(crystal)
    lengths = np.linalg.norm(lattice, axis=1)

    def angle(i: int, j: int) -> float:
        return math.degrees(math.acos(float(np.clip(lattice[i] @ lattice[j] / lengths[i] / lengths[j], -1, 1))))

    z_cell = int(round(crystal.n_molecules * abs(np.linalg.det(lattice)) / crystal.volume))
    return (*map(float, lengths), angle(1, 2), angle(0, 2), angle(0, 1)), z_cell


def default_conformers(molecule: str | os.PathLike | Molecule3D) -> int:
    """1 for a file, a Molecule3D or a SMILES with ≤ RIGID_ROTATABLE rotatable bonds, else FLEXIBLE_CONFORMERS."""
    from crystalflow.structure.molecule_input import input_kind, rotatable_bonds

    if isinstance(molecule, Molecule3D) or input_kind(os.fspath(molecule)) != "smiles":
        return 1
    return 1 if rotatable_bonds(os.fspath(molecule)) <= RIGID_ROTATABLE else FLEXIBLE_CONFORMERS


def molecule_conformers(molecule: str | os.PathLike | Molecule3D, conformers: int | None, seed: int = 0
                        ) -> list[tuple[Molecule3D, float]]:
    """The conformers to search, ``(molecule, energy above the lowest in kJ/mol)``; see the module docstring."""
    from crystalflow.structure.molecule_input import input_kind, smiles_conformers

    n = default_conformers(molecule) if conformers is None else conformers
    if n < 1:
        raise UserError(f"conformers must be >= 1, got {n}")
    if isinstance(molecule, Molecule3D):
        if n > 1:
            raise UserError("several conformers need a SMILES input (a Molecule3D is one conformer)")
        return [(molecule, 0.0)]
    spec = os.fspath(molecule)
    if n == 1:
        return [(read_molecule(spec, seed=seed), 0.0)]
    if input_kind(spec) != "smiles":
        raise UserError(f"several conformers need a SMILES input; {spec!r} is a file, searched with its coordinates")
    return smiles_conformers(spec, n, seed=seed)


def predict_crystals(
    molecule: str | os.PathLike | Molecule3D, out_dir: str | None = None, *, candidates: int = DEFAULT_SEARCH_CANDIDATES,
    seconds: float | None = DEFAULT_SEARCH_SECONDS, samples: int = DEFAULT_TOP, space_groups=None, seed: int = 0,
    conformers: int | None = None, pxrd: str | os.PathLike | None = None, max_steps: int | None = None,
    progress: bool = True, workers: int = 1, refine=None, ranking: str | None = None, charges: str | None = None,
) -> list[CrystalCandidate]:
    """The ``samples`` lowest-energy crystals found by searching ``candidates`` random crystals of ``molecule``.

    ``seconds``: time budget of the whole search (None: none); ``space_groups``: numbers or symbols (default the
    11 common ones, CSD-weighted); ``conformers``: see the module docstring; ``pxrd``: a measured pattern
    file to compare with; ``max_steps``: L-BFGS steps per relaxation (default the search's); ``workers``:
    processes relaxing at once; ``refine``: a flow model, a run/model directory or True (the shipped search
    model, :func:`crystalflow.search.refine.load_refiner`) that refines the lowest candidates within a quarter
    of the time (off by default: no gain measured, ``docs/search.md``); ``ranking``: one of
    :data:`~crystalflow.common.vocabulary.SEARCH_RANKINGS` (default
    :data:`~crystalflow.common.vocabulary.DEFAULT_SEARCH_RANKING`); ``charges``: the force field's atomic charges,
    one of :data:`~crystalflow.common.vocabulary.CHARGE_MODELS` (default
    :data:`~crystalflow.common.vocabulary.DEFAULT_CHARGE_MODEL`). With ``out_dir``
    every file of the module docstring is written there. Bad input raises :class:`UserError`.

    Example::

        from crystalflow.apps.predict_crystals import predict_crystals

        best = predict_crystals("c1ccccc1", "benzene", candidates=12, seconds=60)[0]
        best.energy, best.density, best.space_group, best.cell
    """
    from crystalflow.search.pipeline import MAX_STEPS, SearchError, search_crystals
    from crystalflow.search.spacegroups import COMMON_SPACE_GROUPS, SpaceGroupError, space_group
    from crystalflow.structure.pxrd import PatternError, read_pattern

    t_start = time.time()
    for name, value in (("candidates", candidates), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
        raise UserError(f"seconds must be a positive number, got {seconds!r}")
    measured = None
    if pxrd is not None:
        try:
            measured = read_pattern(pxrd)
        except PatternError as exc:
            raise UserError(f"bad powder pattern: {exc}") from None
    groups = COMMON_SPACE_GROUPS if space_groups is None else space_groups
    try:  # checked before any work
        [space_group(g) for g in ((groups,) if isinstance(groups, (str, int)) else groups)]
    except SpaceGroupError as exc:
        raise UserError(str(exc)) from None
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    ranking = DEFAULT_SEARCH_RANKING if ranking is None else ranking
    if ranking not in SEARCH_RANKINGS:
        raise UserError(f"ranking must be one of {', '.join(SEARCH_RANKINGS)}, got {ranking!r}")
    charges = DEFAULT_CHARGE_MODEL if charges is None else charges
    if charges not in CHARGE_MODELS:
        raise UserError(f"charges must be one of {', '.join(CHARGE_MODELS)}, got {charges!r}")
    refine_model = None if refine is None or refine is False else refine
    if refine is True or isinstance(refine, (str, os.PathLike)):
        from crystalflow.search.refine import load_refiner

        refine_model = load_refiner(None if refine is True else os.fspath(refine))
    confs = molecule_conformers(molecule, conformers, seed)
    mol = confs[0][0]
    if out_dir is not None:
        prepare_output_dir(out_dir)
    _say(progress, f"{mol.name}: {mol.formula}, {mol.n_atoms} atoms, {len(confs)} conformer(s)")
    n_conf = len(confs)
    shares = [candidates // n_conf + (1 if k < candidates % n_conf else 0) for k in range(n_conf)]
    seeds = np.random.SeedSequence(int(seed)).generate_state(n_conf, dtype=np.uint32)
    results, found = [], []
    t_search = time.time()
    for k, ((conf, conf_energy), share, s) in enumerate(zip(confs, shares, seeds), start=1):
        if share == 0:
            continue
        left = sum(shares[k - 1:])  # the time left is shared by the conformers still to search
        budget = None if seconds is None else max((seconds - (time.time() - t_search)) * share / left, 1e-3)
        _say(progress, f"conformer {k}: searching {share} crystals"
                       + (f" within {budget:.0f} s" if budget is not None else ""))
        try:
            result = search_crystals(conf.x, conf.z, share, space_groups=groups, rng=int(s), time_budget_s=budget,
                                     max_steps=MAX_STEPS if max_steps is None else max_steps, progress=progress,
                                     workers=workers, refine_model=refine_model, charge_model=charges)
        except SearchError as exc:
            raise UserError(f"crystal search: {exc}") from None
        results.append((k, result))
        found += [(c.energy + conf_energy, k, conf_energy, c) for c in result.candidates]
    if not found:
        raise UserError(f"no valid crystal found for {mol.name} among "
                        f"{sum(r.n_generated for _, r in results)} generated: give a larger --candidates or --seconds")
    found.sort(key=lambda item: (item[0], item[1], item[3].index))
    scores = [math.nan] * len(found)
    if ranking == "learned":
        from crystalflow.search.ranking import RANK_TOP, load_ranker, ranking_order

        _say(progress, f"ranking the {min(len(found), RANK_TOP)} lowest of {len(found)} crystals by the learned ranker")
        order, s = ranking_order([c for *_, c in found], load_ranker(), energies=[e for e, *_ in found],
                                 charge_model=charges)
        found, scores = [found[i] for i in order], [float(s[i]) for i in order]  # NaN beyond RANK_TOP
    kept = []
    for rank, ((energy, k, conf_energy, c), score) in enumerate(zip(found[:samples], scores), start=1):
        cell, z_cell = cell_parameters(c.crystal)
        kept.append(CrystalCandidate(rank=rank, crystal=c.crystal, energy=energy, lattice_energy=c.energy,
                                     density=c.density, packing=c.packing, space_group=c.space_group, cell=cell,
                                     z_cell=z_cell, max_overlap=c.max_overlap, conformer=k, generated_in=c.generated_in,
                                     duplicates=c.duplicates, converged=c.converged, score=score))
    _simulate_patterns(kept, measured)
    seconds_used = time.time() - t_start
    best = kept[0]
    _say(progress, f"done in {seconds_used:.1f} s; best: {best.energy:.1f} kJ/mol, {best.density:.3f} g/cm³, "
                   f"{best.space_group[1]}")
    if out_dir is not None:
        info = {"molecule": mol.name, "formula": mol.formula, "source": mol.source, "seed": seed,
                "candidates": candidates, "seconds_budget": seconds, "samples": samples,
                "space_groups": list(results[0][1].space_groups), "max_steps": max_steps or MAX_STEPS,
                "conformers": [{"index": k, "energy": e, "notes": m.notes} for k, (m, e) in enumerate(confs, 1)],
                "searches": [{"conformer": k, "requested": r.n_requested, "generated": r.n_generated,
                              "relaxed": r.n_relaxed, "invalid": r.n_invalid, "duplicates": r.n_duplicates,
                              "distinct": len(r), "per_group": r.per_group, "seconds": r.seconds,
                              "timed_out": r.timed_out, "summary": r.summary()} for k, r in results],
                "pxrd": None if pxrd is None else os.fspath(pxrd), "seconds": seconds_used, "workers": workers,
                "refined": refine_model is not None, "ranking": ranking, "charges": charges}
        write_crystal_outputs(out_dir, mol, kept, [(e, k, c) for e, k, _, c in found], info, measured)
        _say(progress, f"wrote {len(kept)} crystals to {out_dir} (open viewer.html or overview.png)")
    return kept


def _simulate_patterns(kept: list[CrystalCandidate], measured) -> None:  # noqa: ANN001
    from crystalflow.structure.pxrd import PatternError, pattern_similarity, powder_pattern

    for c in kept:
        frac, z = c.crystal.cell_atoms()
        c.pattern = powder_pattern(c.crystal.lattice, frac, z, name=f"candidate {c.rank}")
        if measured is not None:
            try:
                c.pxrd_similarity = pattern_similarity(c.pattern, measured)
            except PatternError as exc:
                raise UserError(f"cannot compare with the measured pattern: {exc}") from None


# ------------------------------------------------------------------------------------------ outputs
def file_stem(rank: int, total: int) -> str:
    """``candidate_NN`` (at least two digits)."""
    return f"candidate_{rank:0{max(2, len(str(total)))}d}"


def pxrd_ranking(kept: list[CrystalCandidate]) -> list[CrystalCandidate]:
    """The candidates by decreasing similarity to the measured pattern (ties: lower energy rank first)."""
    return sorted(kept, key=lambda c: (-c.pxrd_similarity, c.rank))


def write_crystal_outputs(out_dir: str, mol: Molecule3D, kept: list[CrystalCandidate], found: list, info: dict,
                          measured=None) -> dict[str, str]:  # noqa: ANN001
    """Write every file of :func:`predict_crystals` into ``out_dir``; ``found``: (energy, conformer, search
    Candidate) of all distinct candidates, for the overview. Returns {kind: path}."""
    from crystalflow.apps.viz import cluster_to_pdb, cluster_to_xyz
    from crystalflow.structure.cif_write import write_cif

    prepare_output_dir(out_dir)
    paths: dict[str, str] = {}
    for c in kept:
        stem = os.path.join(out_dir, file_stem(c.rank, len(kept)))
        write_cif(c.crystal, stem + ".cif", name=os.path.basename(stem),
                  items={"_crystalflow_energy_kJ_mol": c.energy, "_crystalflow_lattice_energy_kJ_mol": c.lattice_energy,
                         "_crystalflow_density_g_cm3": c.density, "_crystalflow_packing_coefficient": c.packing,
                         "_crystalflow_rank": c.rank, "_crystalflow_conformer": c.conformer})
        x = c.crystal.cluster()
        comment = (f"crystalflow crystal {c.rank} of {mol.name}: {c.space_group[1]} energy {c.energy:.3f} kJ/mol "
                   f"density {c.density:.4f} g/cm3 (17-molecule cluster)")
        write_text(stem + ".xyz", cluster_to_xyz(x, c.crystal.z, comment))
        write_text(stem + ".pdb", cluster_to_pdb(x, c.crystal.z, chain="A", resname="MOL", bonds=mol.bonds,
                                                 title=f"crystal {c.rank} of {mol.name}"))
        c.pattern.write_xy(stem + "_pxrd.csv")
    paths["summary"] = os.path.join(out_dir, "summary.csv")
    write_csv(paths["summary"], (c.row() for c in kept), SUMMARY_COLUMNS)
    if measured is not None:
        paths["ranking_pxrd"] = os.path.join(out_dir, "ranking_pxrd.csv")
        write_csv(paths["ranking_pxrd"],
                  ({"pxrd_rank": k, "rank": c.rank, "pxrd_similarity": round(c.pxrd_similarity, 4),
                    "energy": round(c.energy, 3), "density": round(c.density, 4), "space_group": c.space_group[1]}
                   for k, c in enumerate(pxrd_ranking(kept), 1)), PXRD_COLUMNS)
    paths["overview"] = overview_png(kept, found, mol, os.path.join(out_dir, "overview.png"), measured)
    paths["viewer"] = crystals_html(kept, mol, os.path.join(out_dir, "viewer.html"))
    paths["notes"] = os.path.join(out_dir, "notes.txt")
    write_text(paths["notes"], _notes_text(mol, kept, info, measured))
    paths["info"] = os.path.join(out_dir, "predict.json")
    best = kept[0]
    write_json(paths["info"], {**info, "best": {"energy": best.energy, "density": best.density,
                                                "space_group": best.space_group[1]},
                               "kept": len(kept), "distinct": len(found)})
    return paths


def _notes_text(mol: Molecule3D, kept: list[CrystalCandidate], info: dict, measured) -> str:  # noqa: ANN001
    budget = "none" if info["seconds_budget"] is None else f"{info['seconds_budget']:g} s"
    lines = [
        f"crystalflow predict (crystal-structure search): {mol.name}",
        f"molecule: {mol.formula}, {mol.n_atoms} atoms, {mol.mass:.2f} g/mol (input: {mol.source})",
        f"settings: {info['candidates']} candidates, time budget {budget}, "
        f"seed {info['seed']}, top {info['samples']} kept, L-BFGS max {info['max_steps']} steps per relaxation",
        f"space groups searched (CSD-weighted): {', '.join(info['space_groups'])}",
        "ranked by " + ("the learned ranker (crystalflow.search.ranking; summary.csv: score)"
                        if info.get("ranking") == "learned" else "energy, lowest first"),
        f"{len(info['conformers'])} conformer(s), kept rigid in the search:",
    ]
    for c in info["conformers"]:
        lines.append(f"  conformer {c['index']}: {c['energy']:.2f} kJ/mol above the lowest; " + "; ".join(c["notes"]))
    lines.append("searches (search_crystals):")
    for s in info["searches"]:
        groups = ", ".join(f"{g} {n}" for g, n in s["per_group"].items())
        lines.append(f"  conformer {s['conformer']}: {s['requested']} requested, {s['summary']}; generated per "
                     f"group: {groups}")
    lines += [
        f"total {info['seconds']:.1f} s",
        "",
        f"energy: lattice energy per molecule (W99 exp-6 + {info['charges']} charges, rigid molecule) plus the conformer's",
        "  MMFF94 energy above the lowest conformer; density in g/cm³; packing: 0.70 Z V_Hofmann / V_cell;",
        "  space group: spglib's after relaxation; cell: the CIF's standard setting.",
    ]
    if measured is not None:
        best = pxrd_ranking(kept)[0]
        lines.append(f"measured pattern {info['pxrd']}: most similar candidate {best.rank} (de Gelder "
                     f"{best.pxrd_similarity:.3f}); ranking_pxrd.csv orders all by similarity")
    lines += ["", TABLE_HEADER, *[c.table_line() for c in kept], "",
              "Predicted by a force field from random starting crystals: proposals, not determined structures."]
    return "\n".join(lines) + "\n"


def overview_png(kept: list[CrystalCandidate], found: list, mol: Molecule3D, path_png: str, measured=None) -> str:  # noqa: ANN001
    """Energy vs density of every distinct relaxed candidate (kept ones marked and numbered) and the simulated
    patterns of the best :data:`OVERVIEW_PATTERNS` (and the measured one); return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6))
    FigureCanvasAgg(fig)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.scatter([c.density for _, _, c in found], [e for e, _, _ in found], s=14, c="#999999",
               label=f"all {len(found)} distinct relaxed")
    ax.scatter([c.density for c in kept], [c.energy for c in kept], s=40, facecolors="none", edgecolors="#d62728",
               label=f"top {len(kept)}")
    for c in kept:
        ax.annotate(str(c.rank), (c.density, c.energy), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("density (g/cm³)")
    ax.set_ylabel("energy (kJ/mol per molecule)")
    ax.set_title(f"{mol.name[:50]} ({mol.formula})", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    shown = kept[:OVERVIEW_PATTERNS]
    offset = 0.0
    if measured is not None:
        bx.plot(measured.two_theta, measured.intensity, lw=0.8, color="black", label="measured")
        offset = 110.0
    for k, c in enumerate(shown):
        sim = "" if math.isnan(c.pxrd_similarity) else f", S = {c.pxrd_similarity:.2f}"
        bx.plot(c.pattern.two_theta, c.pattern.intensity + offset + 110.0 * k, lw=0.8,
                label=f"#{c.rank} {c.space_group[1]} {c.energy:.1f} kJ/mol{sim}")
    bx.set_xlabel("2θ (degrees, Cu Kα)")
    bx.set_yticks([])
    bx.set_title("simulated powder patterns (offset)", fontsize=10)
    bx.legend(fontsize=7, frameon=False, loc="upper right")
    fig.tight_layout()
    with atomic_open(path_png, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path_png


_PAGE = candidate_page_template(
    ["rank", "energy kJ/mol", "density g/cm³", "space group", "a b c Å", "α β γ °", "Z", "PXRD"],
    ["rank", "energy", "density", "space_group", "abc", "angles", "z", "pxrd"],
    """    viewer.removeAllShapes();
    var model = viewer.addModel(data.candidates[k].cif, "cif",
                                { doAssembly: true, normalizeAssembly: true, duplicateAssemblyAtoms: true });
    viewer.setStyle({}, { stick: { radius: data.stick, colorscheme: data.scheme },
                          sphere: { scale: data.sphere, colorscheme: data.scheme } });
    viewer.addUnitCell(model, { box: { color: "black" } });""",
)


def viewer_cif(crystal, name: str) -> str:  # noqa: ANN001 (SymmetricCrystal)
    """The CIF text of :func:`crystalflow.structure.cif_write.cif_document` with its operators also under the
    older tag ``_symmetry_equiv_pos_as_xyz``, the one 3Dmol.js reads to fill the cell."""
    import gemmi

    from crystalflow.structure.cif_write import cif_document

    doc = cif_document(crystal, name)
    block = doc.sole_block()
    ops = list(block.find_loop("_space_group_symop_operation_xyz"))
    loop = block.init_loop("_symmetry_equiv_pos_", ["as_xyz"])
    for op in ops:
        loop.add_row([gemmi.cif.quote(gemmi.cif.as_string(op))])
    return doc.as_string()


def crystals_html(kept: list[CrystalCandidate], mol: Molecule3D, path_html: str) -> str:
    """A self-contained offline page: the candidates' table, and the unit cell of the one clicked (3Dmol.js
    reads its CIF, fills the cell by symmetry and draws the cell box). Status element as in viz."""
    from crystalflow.apps import viz

    entries = []
    for c in kept:
        a, b, cc, al, be, ga = c.cell
        entries.append({"rank": c.rank, "energy": f"{c.energy:.2f}", "density": f"{c.density:.3f}",
                        "space_group": c.space_group[1], "abc": f"{a:.2f} {b:.2f} {cc:.2f}",
                        "angles": f"{al:.1f} {be:.1f} {ga:.1f}", "z": c.z_cell,
                        "pxrd": "" if math.isnan(c.pxrd_similarity) else f"{c.pxrd_similarity:.3f}",
                        "cif": viewer_cif(c.crystal, file_stem(c.rank, len(kept)))})
    data = {"candidates": entries, "stick": viz.STICK_RADIUS, "sphere": viz.SPHERE_SCALE,
            "scheme": viz.VIEWER_SCHEMES[0]}
    title = f"crystalflow: {len(kept)} predicted crystals of {mol.name}"
    note = (f"{mol.formula}; click a row to show that crystal's unit cell (the cell's contents, filled by its "
            "symmetry); drag to rotate, scroll to zoom. Lowest energy first. Force-field proposals, not "
            "determined structures.")
    return viz.write_3dmol_page(_PAGE, path_html, title, note, data)
