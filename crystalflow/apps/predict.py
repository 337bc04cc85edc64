"""Predict the packing of a new molecule: the crystal-structure search (default) or K model clusters.

:func:`predict` with ``mode="search"`` (the default; ``crystalflow predict MOLECULE -o OUT_DIR``) hands over
to :mod:`crystalflow.apps.predict_crystals`: ranked, relaxed periodic crystals. ``mode="model"``
(``--mode model``, or a ``model`` given) runs the flow model on random starting clusters, as follows:

1. :func:`crystalflow.structure.molecule_input.read_molecule` turns SMILES or a file into one 3D conformer.
2. :func:`starting_clusters` builds K weakly-correlated inputs x_w the way training data were made: 17
   copies of the conformer on the central site and the 16 nearest sites of an fcc lattice whose volume
   per molecule matches a typical organic density (expanded until the copies do not overlap), then the
   training noise (:func:`crystalflow.data.noise.apply_noise`: random orientations, centres spread and
   displaced). There is no crystal to compare with: each record's ``x_s`` is this packed arrangement,
   a placeholder that the model never sees (flow models start from x_w) and that is never scored.
3. The model integrates each x_w to a crystal-like cluster (:func:`crystalflow.evaluation.sampling.sample_records`).
4. :func:`physical_score` ranks the candidates (lower is better)::

       score = W_OVERLAP · max_overlap + W_RIGIDITY · rigidity + W_DENSITY · density_gap + (EXPLODED if not compact)

   - ``max_overlap``: the largest van der Waals overlap (Å) of two heavy atoms of different molecules
     (:func:`crystalflow.structure.contacts.max_overlap`); a candidate is ``valid`` below 0.7 Å, as real
     crystals are (their heavy-atom contacts overlap by less than ~0.6 Å);
   - ``rigidity``: RMS change (Å) of intramolecular distances against the input conformer
     (:func:`crystalflow.evaluation.metrics.rigidity`); the model should move molecules rigidly;
   - ``density_gap``: how far (g/cm³) the estimated density lies outside the typical organic range
     :data:`DENSITY_RANGE` (1.2–1.5 g/cm³); 0 inside it;
   - ``compact``: the cluster fits within 100 Å (:func:`crystalflow.evaluation.metrics.compactness`); an
     exploded cluster gets :data:`EXPLODED_PENALTY`.

   With the weights below 1 point of score is 0.1 Å of overlap, 0.1 Å RMS distortion or 0.1 g/cm³
   outside the typical range. ``summary.csv`` also lists ``collision_pairs`` (% of inter-molecular
   atom pairs closer than the sum of covalent radii) and the shortest contact.

Density estimate (:func:`density_estimate`): 17 × molar mass / V with V = :data:`HULL_PACKING_CALIBRATION`
× the volume of the convex hull of the molecules' van der Waals spheres (Bondi radii). A 17-molecule
hull holds much empty space at its surface: on the true clusters of the 62 accepted crystals of the
embedded COD set, 17 × mass / hull volume is 0.68 ± 0.07 (mean ± std, range 0.55–0.85) of the crystal
density; the calibrated estimate is then 1.00 ± 0.11 (range 0.80–1.26) of the true density there.

With ``out_dir`` :func:`predict` writes ``candidate_01.xyz/.pdb`` ... (17 molecules, one PDB residue
per molecule, residue 1 the central one), ``summary.csv``, ``overview.png`` (the top candidates),
``viewer.html`` (a self-contained offline 3D viewer of all candidates), ``molecule.xyz`` (the input
conformer) and ``notes.txt``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from scipy.spatial import ConvexHull

from crystalflow.apps.viz import candidate_page_template
from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import atomic_open, write_csv, write_text
from crystalflow.common.resources import default_model_dir
from crystalflow.common.vocabulary import (
    DEFAULT_CANDIDATES,
    DEFAULT_NOISE_PRESET,
    DEFAULT_SEARCH_CANDIDATES,
    DEFAULT_SEARCH_SECONDS,
    DEFAULT_STEPS,
    DEFAULT_TOP,
    PREDICT_MODES,
)
from crystalflow.data.noise import NoiseModel, apply_noise, noise_model
from crystalflow.data.pipeline import DENSITY_FACTOR
from crystalflow.data.shards import ClusterRecord
from crystalflow.evaluation.metrics import collision_pairs, compactness, rigidity
from crystalflow.structure.cluster import N_NEIGHBOURS, nearest_images
from crystalflow.structure.contacts import VALIDITY_OVERLAP, max_overlap
from crystalflow.structure.elements import ATOMIC_MASS, VDW_RADIUS, symbol
from crystalflow.structure.molecule_input import Molecule3D, read_molecule
from crystalflow.structure.molecules import centre_of_mass
from crystalflow.training.checkpoint import (
    CHECKPOINT,
    CONFIG,
    load_checkpoint,
    load_model,
)

#: molecules per predicted cluster (the central one and its 16 nearest neighbours, as in COD-Cluster17)
N_MOLECULES = N_NEIGHBOURS + 1
#: density (g/cm³) of the placeholder lattice the starting clusters are made from
DEFAULT_DENSITY = 1.3
#: typical density range (g/cm³) of organic molecular crystals
DENSITY_RANGE = (1.2, 1.5)
#: score weights: per Å of the largest vdW overlap, per Å RMS distortion, per g/cm³ outside DENSITY_RANGE
W_OVERLAP, W_RIGIDITY, W_DENSITY = 10.0, 10.0, 10.0
#: score added when the cluster is not compact (larger than metrics.MAX_EXTENT)
EXPLODED_PENALTY = 100.0
#: (M × mass / vdW-sphere hull volume) / crystal density, mean over the embedded COD crystals' true clusters:
#: the fraction of the hull that a cluster's molecules own
HULL_PACKING_CALIBRATION = 0.68
#: points per atom on its van der Waals sphere for the hull
SPHERE_POINTS = 32
#: fcc: molecules per conventional cubic cell and their fractional positions
FCC_BASIS = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
#: placeholder copies must keep inter-molecular atom pairs at least this fraction of their vdW-radius sum apart
PLACEHOLDER_VDW_FRACTION = 0.75
#: factor by which the placeholder lattice grows until no copies overlap, and the largest growth allowed
LATTICE_GROWTH, MAX_LATTICE_SCALE = 1.02, 4.0
#: orientations of the molecule tried on the placeholder lattice (the densest one is kept)
ORIENTATION_TRIES = 12
#: independent random streams derived from the seed
_STREAM_PLACEHOLDER, _STREAM_NOISE = 1, 2
#: candidates drawn in the PNG overview, and its columns
OVERVIEW_MAX, OVERVIEW_COLUMNS = 8, 4
#: inches of the overview's title
OVERVIEW_TITLE_INCHES = 0.5
#: inches per overview panel and its resolution
OVERVIEW_PANEL_INCHES, OVERVIEW_DPI = 3.2, 100
#: marker area (pt²) per Å² of covalent radius, and bond width (pt) in the overview
OVERVIEW_MARKER_AREA, OVERVIEW_BOND_WIDTH = 40.0, 0.8
#: ways to predict: the crystal-structure search (default) or the flow model
MODES = PREDICT_MODES
#: file of a run directory that may name the noise the model was trained with ({"preset", "inversion"}
#: or NoiseModel fields)
NOISE_FILE = "noise.json"
#: keys of the placeholder lattice's description recorded in notes.txt
_PLACEHOLDER_KEYS = ("lattice", "target_density", "lattice_scale", "placeholder_density")
SUMMARY_COLUMNS = ("rank", "score", "valid", "max_overlap", "density", "min_contact", "collision_pairs", "rigidity",
                   "relax_mode", "energy",
                   "compact", "sample")
#: header of the candidate table printed by the CLI and written to notes.txt (rows: Candidate.table_line)
TABLE_HEADER = "rank  score     valid  max_overlap  density  min_contact  collision_pairs  rigidity  compact"


@dataclass
class Candidate:
    """One predicted cluster with its physical assessment (rank 1 = best score)."""

    rank: int
    x: np.ndarray  #: [17, n, 3] predicted positions (Å), centred on the cluster's mean molecule centre
    z: np.ndarray  #: [n] atomic numbers
    score: float  #: the physical score of :func:`physical_score` (lower is better)
    density: float  #: estimated density (g/cm³), see :func:`density_estimate`
    min_contact: float  #: shortest inter-molecular atom-atom distance (Å)
    collision_pairs: float  #: % inter-molecular atom pairs closer than the sum of covalent radii
    max_overlap: float  #: largest vdW overlap (Å) of heavy atoms of different molecules
    compact: bool  #: the cluster fits within metrics.MAX_EXTENT Å
    rigidity: float  #: RMS change (Å) of intramolecular distances vs the input conformer
    sample: int = 0  #: index of the starting cluster it came from
    start: np.ndarray | None = field(default=None, repr=False)  #: [17, n, 3] the starting cluster x_w
    relax_mode: str = ""  #: with ``relax``: "crystal" (a relaxed periodic crystal) or "cluster"
    energy: float = float("nan")  #: with ``relax``: kJ/mol per molecule after relaxation
    crystal: object = field(default=None, repr=False)  #: with ``relax`` and mode "crystal": its SymmetricCrystal

    @property
    def valid(self) -> bool:
        """No heavy-atom vdW overlap of :data:`crystalflow.structure.contacts.VALIDITY_OVERLAP` Å or more."""
        return self.max_overlap < VALIDITY_OVERLAP

    def row(self) -> dict:
        """The summary.csv row."""
        return {"rank": self.rank, "score": round(self.score, 4), "valid": int(self.valid),
                "max_overlap": round(self.max_overlap, 4), "density": round(self.density, 4),
                "min_contact": round(self.min_contact, 4), "collision_pairs": round(self.collision_pairs, 4),
                "rigidity": round(self.rigidity, 4), "compact": int(self.compact), "sample": self.sample,
                "relax_mode": self.relax_mode, "energy": round(self.energy, 3)}

    def table_line(self) -> str:
        """This candidate as a line of the table under :data:`TABLE_HEADER`."""
        return (f"{self.rank:4d}  {self.score:8.3f}  {'yes' if self.valid else 'no':>5s}  {self.max_overlap:11.2f}  "
                f"{self.density:7.3f}  {self.min_contact:11.2f}  {self.collision_pairs:15.3f}  {self.rigidity:8.3f}  "
                f"{'yes' if self.compact else 'no'}")


# ------------------------------------------------------------------------------------------ model
def _noise_from_dict(d: dict) -> NoiseModel:
    """A NoiseModel from {"preset"/"noise_preset": NAME, "inversion": ...} or from NoiseModel fields."""
    if "preset" in d or "noise_preset" in d:
        return noise_model(d.get("preset", d.get("noise_preset")), inversion=bool(d.get("inversion", False)))
    names = [f.name for f in fields(NoiseModel)]
    known = {f: d[f] for f in names if f in d}
    if not known:
        raise ValueError(f"give 'preset' or NoiseModel fields ({', '.join(names)})")
    return NoiseModel(**known)


def _read_noise_file(path: str) -> NoiseModel:
    """The NoiseModel of a ``noise.json`` ({"preset": NAME, "inversion": BOOL} or NoiseModel fields)."""
    try:
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise TypeError("not a JSON object")
        return _noise_from_dict(d)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"bad noise description {path!r}: {exc}") from None


def run_noise(run_dir: str) -> tuple[NoiseModel, str] | None:
    """The noise a run directory's model was trained with, and where it was found; None if not recorded.

    Looked up in ``RUN_DIR/noise.json`` (an error if malformed), then ``noise`` / ``noise_preset`` in
    ``RUN_DIR/config.json``, then the training dataset's ``summary.json`` / ``build.json`` named by the
    checkpoint (when that dataset is still there); the last two are best effort.
    """
    if not os.path.isdir(run_dir):
        return None
    path = os.path.join(run_dir, NOISE_FILE)
    if os.path.exists(path):
        return _read_noise_file(path), path
    try:
        path = os.path.join(run_dir, CONFIG)
        if os.path.exists(path):
            with open(path) as f:
                cfg = json.load(f)
            if isinstance(cfg.get("noise"), dict):
                return _noise_from_dict(cfg["noise"]), path
            if isinstance(cfg.get("noise_preset"), str):
                return _noise_from_dict(cfg), path
        ckpt_path = os.path.join(run_dir, CHECKPOINT)
        if os.path.exists(ckpt_path):
            ckpt = load_checkpoint(ckpt_path, mmap=True)
            data_dir = (ckpt.get("dataset") or {}).get("dir")
            for name in ("summary.json", "build.json"):
                path = os.path.join(data_dir or "", name)
                if data_dir and os.path.exists(path):
                    with open(path) as f:
                        info = json.load(f)
                    noise = info.get("noise") or (info.get("settings") or {}).get("noise")
                    if isinstance(noise, dict):
                        return _noise_from_dict(noise), path
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError, UserError):
        return None
    return None


def resolve_model(model: object = None) -> tuple[torch.nn.Module, str, NoiseModel, str]:
    """(model, description, training noise, where the noise came from) for ``model``.

    ``model``: None (the shipped default model), a run directory / checkpoint path, or a model object.
    """
    from crystalflow.flow.model import CrystalModel

    if isinstance(model, (CrystalModel, torch.nn.Module)):
        return (model.eval(), f"in-memory {type(model).__name__} ({_describe_config(model)})",
                noise_model(DEFAULT_NOISE_PRESET), f"default preset '{DEFAULT_NOISE_PRESET}'")
    if model is None:
        run_dir = default_model_dir()
        if not os.path.exists(os.path.join(run_dir, CHECKPOINT)):
            raise UserError("no pretrained model shipped; pass --model RUN_DIR")
        label = "the shipped default model"
    elif isinstance(model, (str, os.PathLike)):
        run_dir = os.fspath(model)
        if not os.path.exists(run_dir):
            raise UserError(f"no model at {run_dir!r} (give a training run directory or a checkpoint file)")
        label = f"run {run_dir}"
    else:
        raise UserError(f"model must be None, a run directory or a CrystalModel, not {type(model).__name__}")
    net, _ = load_model(run_dir, "ema")
    found = run_noise(run_dir if os.path.isdir(run_dir) else os.path.dirname(os.path.abspath(run_dir)))
    noise, where = found if found else (noise_model(DEFAULT_NOISE_PRESET), f"default preset '{DEFAULT_NOISE_PRESET}'")
    return net.eval(), f"{label} (EMA weights; {_describe_config(net)})", noise, where


def _describe_config(model: torch.nn.Module) -> str:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return "unknown configuration"
    net = cfg.backbone
    return f"method {cfg.method}, {net.variant} backbone, hidden {net.hidden}, layers {net.layers}"


# ------------------------------------------------------------------------------------------ geometry
def vdw_radii(z: np.ndarray) -> np.ndarray:
    """Bondi van der Waals radii (Å) of the atomic numbers ``z`` (:data:`crystalflow.structure.elements.VDW_RADIUS`)."""
    return VDW_RADIUS[np.asarray(z, dtype=np.int64).reshape(-1)]


def _sphere_points(k: int) -> np.ndarray:
    """``k`` nearly uniform unit vectors (Fibonacci sphere)."""
    i = np.arange(k) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / k)
    azimuth = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def density_estimate(x: np.ndarray, z: np.ndarray) -> float:
    """Density (g/cm³) of a cluster [M, n, 3]: M × mass / (HULL_PACKING_CALIBRATION × vdW-sphere hull volume)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.int64)
    r = vdw_radii(z)
    points = (x[:, :, None, :] + r[None, :, None, None] * _sphere_points(SPHERE_POINTS)[None, None]).reshape(-1, 3)
    volume = HULL_PACKING_CALIBRATION * ConvexHull(points).volume
    return float(x.shape[0] * ATOMIC_MASS[z].sum() * DENSITY_FACTOR / volume)


def min_contact(x: np.ndarray) -> float:
    """Shortest distance (Å) between atoms of different molecules of a cluster [M, n, 3]."""
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    best = np.inf
    for a in range(m - 1):
        others = x[a + 1 :].reshape(-1, 3)
        d = np.sqrt(((x[a][:, None, :] - others[None, :, :]) ** 2).sum(-1))
        best = min(best, float(d.min()))
    return float(best)


def physical_score(x: np.ndarray, z: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Score (lower is better) and its parts for a cluster [M, n, 3]; ``reference`` is the input conformer [n, 3].

    See the module docstring for the definition.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = np.broadcast_to(np.asarray(reference, dtype=np.float64), x.shape)
    overlap = max_overlap(x, z)
    rig = rigidity(x, ref)
    compact = compactness(x) > 0
    rho = density_estimate(x, z)
    low, high = DENSITY_RANGE
    gap = max(0.0, low - rho, rho - high)
    score = W_OVERLAP * overlap + W_RIGIDITY * rig + W_DENSITY * gap + (0.0 if compact else EXPLODED_PENALTY)
    return {"score": float(score), "density": rho, "min_contact": min_contact(x), "max_overlap": overlap,
            "collision_pairs": collision_pairs(x, z), "rigidity": float(rig), "compact": bool(compact)}


def _centred(mol: Molecule3D) -> np.ndarray:
    return mol.x - centre_of_mass(mol.x, mol.z)


def _lattice_offsets(volume: float) -> np.ndarray:
    """Centres [16, 3] (Å) of the 16 nearest fcc sites around the origin, for ``volume`` Å³ per molecule."""
    a = (len(FCC_BASIS) * volume) ** (1.0 / 3.0)
    lattice = a * np.eye(3)
    idx, shift, _ = nearest_images(FCC_BASIS, lattice, centre=0, k=N_NEIGHBOURS)
    return (FCC_BASIS[idx] + shift - FCC_BASIS[0]) @ lattice


def _overlap_free_scale(mol_x: np.ndarray, limit: np.ndarray, offsets: np.ndarray) -> float:
    """Smallest scale (a power of LATTICE_GROWTH) of ``offsets`` at which translated copies do not overlap."""
    diff = mol_x[:, None, :] - mol_x[None, :, :]  # [n, n, 3]; copies are translations of one orientation
    scale = 1.0
    while scale < MAX_LATTICE_SCALE:
        d = np.linalg.norm(diff[None] - scale * offsets[:, None, None, :], axis=-1)  # [16, n, n]
        if np.all(d >= limit[None]):
            return scale
        scale *= LATTICE_GROWTH
    return MAX_LATTICE_SCALE


def packed_arrangement(mol: Molecule3D, density: float = DEFAULT_DENSITY, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The placeholder crystal [17, n, 3]: copies of the conformer on the centre + 16 nearest fcc sites.

    The fcc cell is sized so that the volume per molecule matches ``density`` (g/cm³) and grown just enough
    that no two copies come closer than PLACEHOLDER_VDW_FRACTION of a vdW-radius sum; of
    ORIENTATION_TRIES orientations of the molecule the one needing the least growth is kept. Molecule 0
    is central (its centre of mass at the origin). Returns the cluster and a description.
    """
    if density <= 0:
        raise UserError(f"density must be > 0 g/cm³, got {density}")
    from crystalflow.data.noise import random_rotations

    x0 = _centred(mol)
    volume = mol.mass * DENSITY_FACTOR / density
    offsets = _lattice_offsets(volume)
    r = vdw_radii(mol.z)
    limit = PLACEHOLDER_VDW_FRACTION * (r[:, None] + r[None, :])
    rng = np.random.default_rng([seed, _STREAM_PLACEHOLDER])
    rotations = np.concatenate([np.eye(3)[None], random_rotations(ORIENTATION_TRIES - 1, rng)])
    best = None
    for rot in rotations:
        xr = x0 @ rot.T
        scale = _overlap_free_scale(xr, limit, offsets)
        if best is None or scale < best[0]:
            best = (scale, xr)
    scale, xr = best
    centres = np.concatenate([np.zeros((1, 3)), scale * offsets])
    cluster = xr[None, :, :] + centres[:, None, :]
    info = {"lattice": "fcc", "target_density": density, "lattice_scale": round(scale, 4),
            "placeholder_density": round(density / scale**3, 4)}
    return cluster, info


def starting_clusters(mol: Molecule3D, k: int, noise: NoiseModel | None = None, density: float = DEFAULT_DENSITY,
                      seed: int = 0) -> list[ClusterRecord]:
    """K weakly-correlated 17-molecule clusters x_w of ``mol``, made with the training noise.

    Each is :func:`packed_arrangement` noised by :func:`crystalflow.data.noise.apply_noise` with its own random
    draw (``noise`` defaults to the 'solution' preset). ``x_s`` of each record is the packed arrangement:
    a placeholder (there is no known crystal), never used for scoring.
    """
    if k < 1:
        raise UserError(f"the number of samples must be >= 1, got {k}")
    noise = noise if noise is not None else noise_model(DEFAULT_NOISE_PRESET)
    x_s, info = packed_arrangement(mol, density, seed)
    rng = np.random.default_rng([seed, _STREAM_NOISE])
    records = []
    for sample in range(k):
        x_w = apply_noise(x_s, mol.z, noise, rng).x_w
        meta = {"name": mol.name, "sample": sample, "x_s": "placeholder (packed arrangement, never scored)", **info}
        records.append(ClusterRecord(x_s=x_s.astype(np.float32), x_w=x_w.astype(np.float32), z=mol.z.copy(),
                                     meta=meta))
    return records


# ------------------------------------------------------------------------------------------ predict
def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"crystalflow predict: {message}", file=sys.stderr, flush=True)


def predict(molecule: str | os.PathLike | Molecule3D, model: object = None, samples: int | None = None,
            seed: int = 0, steps: int = DEFAULT_STEPS, out_dir: str | None = None, progress: bool = True,
            density: float = DEFAULT_DENSITY, noise: NoiseModel | None = None, rigid: bool = True,
            relax: bool = False, *, mode: str | None = None, candidates: int = DEFAULT_SEARCH_CANDIDATES,
            seconds: float | None = DEFAULT_SEARCH_SECONDS, space_groups=None, conformers: int | None = None,
            pxrd: str | os.PathLike | None = None, max_steps: int | None = None, workers: int = 1,
            refine=None, ranking: str | None = None, charges: str | None = None) -> list:
    """Predict the packing of ``molecule``: ranked periodic crystals (``mode="search"``) or model clusters.

    ``mode``: ``"search"`` (the default unless a ``model`` is given) runs the crystal-structure search of
    :func:`crystalflow.apps.predict_crystals.predict_crystals` (``candidates``, ``seconds``, ``space_groups``,
    ``conformers``, ``pxrd``, ``max_steps``, ``workers``, ``refine``, ``ranking``, ``charges``, ``samples`` = the
    top K kept, default 10) and returns its
    :class:`~crystalflow.apps.predict_crystals.CrystalCandidate` list; ``"model"`` (the default when ``model``
    is given) runs the flow model as described below and returns :class:`Candidate` clusters.

        best = predict("CC(=O)Oc1ccccc1C(=O)O", out_dir="aspirin")[0]        # crystal search
        best.energy, best.density, best.space_group

    Model mode: K = ``samples`` (default 8) candidate packings of ``molecule``, best (lowest score) first.

    ``rigid`` (default) replaces each predicted molecule by the input conformer superposed onto it,
    so candidates keep the molecule's geometry (see :func:`crystalflow.evaluation.sampling.rigid_projection`).

    ``molecule``: SMILES, a .sdf/.mol/.xyz/.pdb/.cif path, or a :class:`Molecule3D`. ``model``: None for
    the shipped default model, a training run directory, or a model object. ``noise`` overrides the
    noise of the starting clusters (default: the model's training noise when its run directory records
    it, else the 'solution' preset); ``density`` (g/cm³) sizes their placeholder lattice. With
    ``out_dir`` the candidates, summary.csv, overview.png, viewer.html and notes.txt are written there.
    ``relax`` relaxes every candidate (:func:`crystalflow.evaluation.relaxation.relax_prediction`: as a
    periodic crystal when the cluster implies one, then also written as ``candidate_NN.cif``; else as
    rigid bodies) and ranks valid candidates by energy.

    Example::

        from crystalflow import predict

        candidates = predict("CC(=O)Oc1ccccc1C(=O)O", samples=4, out_dir="aspirin", mode="model")  # shipped model
        print(candidates[0].table_line())
    """
    if mode is None:
        mode = "model" if model is not None else "search"
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "search":
        if model is not None:
            raise UserError("a model is used by mode 'model' only (the search needs none)")
        if relax:
            raise UserError("relax applies to mode 'model': searched crystals are always relaxed")
        from crystalflow.apps.predict_crystals import predict_crystals

        return predict_crystals(molecule, out_dir, candidates=candidates, seconds=seconds,
                                samples=DEFAULT_TOP if samples is None else samples, space_groups=space_groups,
                                seed=seed, conformers=conformers, pxrd=pxrd, max_steps=max_steps, progress=progress,
                                workers=workers, refine=refine, ranking=ranking, charges=charges)
    if any(v is not None for v in (pxrd, conformers, refine, ranking, charges)):
        raise UserError("pxrd, conformers, refine, ranking and charges apply to mode 'search'")
    samples = DEFAULT_CANDIDATES if samples is None else samples
    t_start = time.time()
    if samples < 1:
        raise UserError(f"samples must be >= 1, got {samples}")
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    mol = molecule if isinstance(molecule, Molecule3D) else read_molecule(os.fspath(molecule), seed=seed)
    _say(progress, f"{mol.name}: {mol.formula}, {mol.n_atoms} atoms")
    for note in mol.notes:
        _say(progress, f"  note: {note}")
    net, model_label, model_noise, noise_source = resolve_model(model)
    if out_dir is not None:
        prepare_output_dir(out_dir)
    if noise is None:
        noise = model_noise
    else:
        noise_source = "given by the caller"
    _say(progress, f"model: {model_label}")
    records = starting_clusters(mol, samples, noise, density=density, seed=seed)
    from crystalflow.evaluation.sampling import sample_records

    generator = torch.Generator().manual_seed(int(seed))
    device = next(net.parameters()).device
    _say(progress, f"sampling {samples} candidate cluster(s) of {N_MOLECULES} molecules, {steps} steps ...")
    t_model = time.time()
    result = sample_records(net, records, samples=1, steps=steps, generator=generator, device=device, rigid=rigid)
    model_seconds = time.time() - t_model
    reference = _centred(mol)
    scored = []
    for sample, (rec, pred) in enumerate(zip(records, result.pred)):
        x = pred[0].numpy().astype(np.float64)
        x = x - centre_of_mass(x, mol.z).mean(axis=0)
        if not np.all(np.isfinite(x)):
            raise UserError(f"the model produced non-finite coordinates for candidate {sample + 1}")
        relaxed = None
        if relax:
            from crystalflow.evaluation.relaxation import relax_prediction

            relaxed = relax_prediction(x, mol.z, np.asarray(rec.x_w, dtype=np.float64))
            x = relaxed.x - centre_of_mass(relaxed.x, mol.z).mean(axis=0)
        terms = physical_score(x, mol.z, reference)
        key = (terms["max_overlap"] >= VALIDITY_OVERLAP, relaxed.energy) if relaxed is not None else (terms["score"],)
        scored.append((key, sample, x, terms, rec.x_w, relaxed))
    scored.sort(key=lambda item: (item[0], item[1]))
    candidates = [
        Candidate(rank=rank, x=x, z=mol.z.copy(), score=t["score"], density=t["density"],
                  min_contact=t["min_contact"], collision_pairs=t["collision_pairs"], max_overlap=t["max_overlap"],
                  compact=t["compact"],
                  rigidity=t["rigidity"], sample=sample, start=np.asarray(x_w, dtype=np.float64),
                  relax_mode=r.mode if r else "", energy=r.energy if r else float("nan"),
                  crystal=r.crystal if r else None)
        for rank, (_, sample, x, t, x_w, r) in enumerate(scored, start=1)
    ]
    best = candidates[0]
    _say(progress, f"done in {time.time() - t_start:.1f} s (model {model_seconds:.1f} s); best: score "
                   f"{best.score:.3g}, density {best.density:.2f} g/cm³, max overlap {best.max_overlap:.2f} Å "
                   f"({sum(c.valid for c in candidates)} of {len(candidates)} valid)")
    if out_dir is not None:
        info = {"model": model_label, "noise": noise.to_dict(), "noise_source": noise_source, "seed": seed,
                "steps": steps, "samples": samples, "seconds": time.time() - t_start,
                "placeholder": {k: records[0].meta[k] for k in _PLACEHOLDER_KEYS},
                "model_seconds": model_seconds}
        write_outputs(out_dir, mol, candidates, info)
        _say(progress, f"wrote {len(candidates)} candidates to {out_dir} (open viewer.html or overview.png)")
    return candidates


# ------------------------------------------------------------------------------------------ command line
# ------------------------------------------------------------------------------------------ outputs
def _file_stem(rank: int, total: int) -> str:
    return f"candidate_{rank:0{max(2, len(str(total)))}d}"


def write_outputs(out_dir: str, mol: Molecule3D, candidates: list[Candidate], info: dict) -> dict[str, str]:
    """Write every output file of :func:`predict` into ``out_dir``; return {kind: path}."""
    from crystalflow.apps.viz import cluster_to_pdb, cluster_to_xyz

    prepare_output_dir(out_dir)
    paths: dict[str, str] = {}
    bonds = mol.bonds
    for c in candidates:
        stem = os.path.join(out_dir, _file_stem(c.rank, len(candidates)))
        comment = (f"crystalflow candidate {c.rank} of {mol.name}: score {c.score:.4g} density {c.density:.3f} "
                   f"valid {int(c.valid)} max_overlap {c.max_overlap:.2f} min_contact {c.min_contact:.2f} "
                   f"rigidity {c.rigidity:.3f}")
        write_text(stem + ".xyz", cluster_to_xyz(c.x, c.z, comment))
        write_text(stem + ".pdb", cluster_to_pdb(c.x, c.z, chain="A", resname="MOL", bonds=bonds,
                                                 title=f"candidate {c.rank} of {mol.name}"))
        if c.crystal is not None:
            from crystalflow.structure.cif_write import write_cif

            write_cif(c.crystal, stem + ".cif", name=os.path.basename(stem),
                      items={"_crystalflow_lattice_energy_kJ_mol": c.energy})
    paths["molecule"] = os.path.join(out_dir, "molecule.xyz")
    write_text(paths["molecule"], cluster_to_xyz(_centred(mol)[None], mol.z, f"input conformer of {mol.name}"))
    paths["summary"] = os.path.join(out_dir, "summary.csv")
    write_csv(paths["summary"], (c.row() for c in candidates), SUMMARY_COLUMNS)
    paths["overview"] = overview_png(candidates, mol, os.path.join(out_dir, "overview.png"))
    paths["viewer"] = candidates_html(candidates, mol, os.path.join(out_dir, "viewer.html"))
    paths["notes"] = os.path.join(out_dir, "notes.txt")
    write_text(paths["notes"], _notes_text(mol, candidates, info))
    return paths


def _notes_text(mol: Molecule3D, candidates: list[Candidate], info: dict) -> str:
    low, high = DENSITY_RANGE
    lines = [
        f"crystalflow predict: {mol.name}",
        f"molecule: {mol.formula}, {mol.n_atoms} atoms, {mol.mass:.2f} g/mol (input: {mol.source})",
        "input notes:",
        *([f"  - {n}" for n in mol.notes] or ["  (none)"]),
        f"model: {info.get('model')}",
        f"noise of the starting clusters: {info.get('noise')} (from {info.get('noise_source')})",
        f"starting lattice (placeholder x_s, never scored): {info.get('placeholder')}",
        f"seed {info.get('seed')}, {info.get('steps')} Euler steps, {info.get('samples')} candidates, "
        f"{info.get('seconds', 0.0):.1f} s (model {info.get('model_seconds', 0.0):.1f} s)",
        "",
        "score (lower is better) = "
        f"{W_OVERLAP:g} * max_overlap[Å] + {W_RIGIDITY:g} * rigidity[Å] + {W_DENSITY:g} * "
        f"(g/cm³ outside {low}-{high}) + {EXPLODED_PENALTY:g} if not compact",
        "  max_overlap: largest van der Waals overlap (Bondi radii) of two heavy atoms of different molecules;",
        f"    valid: below {VALIDITY_OVERLAP} Å (real crystals stay below ~0.6 Å)",
        "  collision_pairs: % of inter-molecular atom pairs closer than the sum of covalent radii",
        "  rigidity: RMS change of intramolecular distances vs the input conformer",
        f"  density: 17 x molar mass / ({HULL_PACKING_CALIBRATION} x vdW-sphere convex hull volume), about ±11 %",
        "  compact: the cluster fits within 100 Å",
        "",
        TABLE_HEADER,
    ]
    lines += [c.table_line() for c in candidates]
    lines += ["", "These are model proposals, not validated crystal structures."]
    return "\n".join(lines) + "\n"


def overview_png(candidates: list[Candidate], mol: Molecule3D, path_png: str) -> str:
    """A grid of the top candidates (at most OVERVIEW_MAX) drawn with matplotlib; return the path."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    from crystalflow.apps.viz import (
        CPK_COLORS,
        DEFAULT_COLOR,
        PANEL_ZOOM,
        TITLE_Y,
        VIEW_AZIM,
        VIEW_ELEV,
    )
    from crystalflow.structure.elements import COVALENT_RADIUS

    shown = candidates[:OVERVIEW_MAX]
    cols = min(OVERVIEW_COLUMNS, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig = Figure(figsize=(OVERVIEW_PANEL_INCHES * cols, OVERVIEW_PANEL_INCHES * rows + OVERVIEW_TITLE_INCHES))
    FigureCanvasAgg(fig)
    rgb = np.array([matplotlib.colors.to_rgb(CPK_COLORS.get(symbol(int(v)), DEFAULT_COLOR)) for v in mol.z])
    sizes = OVERVIEW_MARKER_AREA * COVALENT_RADIUS[mol.z] ** 2
    bonds = mol.bonds if mol.bonds is not None else np.zeros((0, 2), np.int64)
    for k, c in enumerate(shown):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        m = c.x.shape[0]
        colors = np.broadcast_to(rgb, (m, len(mol.z), 3)).copy()
        colors[0] = 0.5 * colors[0] + 0.5 * np.array(matplotlib.colors.to_rgb("#ff8c00"))  # the central molecule
        if len(bonds):
            segments = c.x[:, bonds].reshape(-1, 2, 3)
            ax.add_collection3d(Line3DCollection(segments, colors="#404040", linewidths=OVERVIEW_BOND_WIDTH))
        ax.scatter(*c.x.reshape(-1, 3).T, c=colors.reshape(-1, 3), s=np.tile(sizes, m), edgecolors="none",
                   depthshade=True)
        pts = c.x.reshape(-1, 3)
        centre, half = (pts.max(0) + pts.min(0)) / 2, float((pts.max(0) - pts.min(0)).max() / 2) or 1.0
        for setter, v in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            setter(v - half, v + half)
        ax.set_box_aspect((1, 1, 1), zoom=PANEL_ZOOM)
        ax.view_init(elev=VIEW_ELEV, azim=VIEW_AZIM)
        ax.set_axis_off()
        ax.set_title(f"#{c.rank}  score {c.score:.3g}\n{c.density:.2f} g/cm³, "
                     f"{'valid' if c.valid else 'invalid'} (overlap {c.max_overlap:.2f} Å)",
                     fontsize=9, y=TITLE_Y)
    fig.suptitle(f"crystalflow candidates for {mol.name[:60]} ({mol.formula})", fontsize=11)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1.0 - OVERVIEW_TITLE_INCHES / fig.get_figheight(),
                        wspace=0.0, hspace=0.12)
    os.makedirs(os.path.dirname(os.path.abspath(path_png)), exist_ok=True)
    with atomic_open(path_png, "wb") as f:
        fig.savefig(f, format="png", dpi=OVERVIEW_DPI)
    return path_png


_PAGE = candidate_page_template(
    ["rank", "score", "valid", "max overlap Å", "density g/cm³", "min contact Å", "rigidity Å"],
    ["rank", "score", "valid", "max_overlap", "density", "min_contact", "rigidity"],
    """    viewer.addModel(data.candidates[k].pdb, "pdb",
                    { keepH: true, assignBonds: false, noComputeSecondaryStructure: true });
    viewer.setStyle({}, { stick: { radius: data.stick, colorscheme: data.scheme },
                          sphere: { scale: data.sphere, colorscheme: data.scheme } });
    viewer.setStyle({ resi: 1 }, { stick: { radius: data.stick * 1.5, colorscheme: data.central },
                                   sphere: { scale: data.sphere * 1.2, colorscheme: data.central } });""",
)


def candidates_html(candidates: list[Candidate], mol: Molecule3D, path_html: str) -> str:
    """Write a self-contained offline HTML page showing every candidate (click a table row); return its path.

    3Dmol.js is inlined from the vendored copy, so the page needs no network. The page sets the text of
    the hidden element ``#cf-status`` to 'ok' ('no-webgl' without WebGL, 'error: ...' on a script error).
    """
    from crystalflow.apps import viz

    entries = [
        {"rank": c.rank, "score": f"{c.score:.3g}", "density": f"{c.density:.2f}",
         "min_contact": f"{c.min_contact:.2f}",
         "valid": "yes" if c.valid else "no", "max_overlap": f"{c.max_overlap:.2f}", "rigidity": f"{c.rigidity:.3f}",
         "pdb": viz.cluster_to_pdb(c.x, c.z, chain="A", bonds=mol.bonds, title=f"candidate {c.rank}")}
        for c in candidates
    ]
    data = {"candidates": entries, "stick": viz.STICK_RADIUS, "sphere": viz.SPHERE_SCALE,
            "scheme": viz.VIEWER_SCHEMES[0], "central": viz.CENTRAL_SCHEME}
    title = f"crystalflow: {len(candidates)} candidate packings of {mol.name}"
    n_mol = candidates[0].x.shape[0] if candidates else N_MOLECULES
    note = (f"{mol.formula}, {n_mol} molecules × {mol.n_atoms} atoms; click a row to show a candidate; the central "
            "molecule is thick with orange carbons; drag to rotate, scroll to zoom. Lower score is better. These are "
            "model proposals, not validated crystal structures.")
    return viz.write_3dmol_page(_PAGE, path_html, title, note, data)
