"""Learned ranking of searched crystals: which of a molecule's distinct candidates is its experimental packing.

The search ranks its candidates by lattice energy (:mod:`crystalflow.search.pipeline`). A force field often
puts another packing below the experimental one, and the lowest energies of a time-limited search are noisy;
other properties of a candidate also tell how likely it is to be the crystal a molecule forms. A
:class:`Ranker` scores each candidate by a weighted sum of standardised features (:data:`FEATURES`, computed by
:func:`candidate_features` over one molecule's candidates) and :func:`rank_candidates` orders the
:data:`RANK_TOP` lowest in energy by it, highest first.

Features of one candidate, relative to the molecule's candidates where they depend on the search:

- ``energy_gap``: log(1 + (E − E_min) / kJ/mol), its lattice energy above the lowest candidate's;
- ``packing``: its packing coefficient (:func:`crystalflow.search.pipeline.packing_coefficient`);
- ``basin``: log of the share of all relaxed crystals of the search that ended in it
  ((1 + ``duplicates``) over the candidates' total): how often random starts find it;
- ``space_group``: log of the CSD share of the space group spglib finds after relaxation
  (:data:`crystalflow.search.spacegroups.CSD_FREQUENCY`; :data:`RARE_GROUP_PERCENT` for the others);
- ``coulomb``: the electrostatic share of its lattice energy (E − E without charges) / |E|;
- ``hbonds``: the hydrogen bonds of its molecule with its neighbours
  (:func:`crystalflow.structure.contacts.hydrogen_bonds`);
- ``contacts`` (with a contact prior): how much its intermolecular contacts look like those of relaxed
  experimental crystals rather than like the search's other candidates'
  (:func:`crystalflow.search.contact_prior.contact_score`; the prior is saved with the ranker);
- ``model_shift`` (with a flow model): Å RMS by which the model moves the candidate's 17-molecule cluster in
  one endpoint prediction from it (:func:`model_shift`), the whole-cluster motion removed: how far from a
  crystal it has learned the candidate looks;
- ``model_recovery`` (with a flow model): mean orientation error (°) left after the model integrates the
  candidate's cluster with every molecule turned and moved independently (the ``melt`` noise the search model
  was trained on, :data:`RECOVERY_DRAWS` draws; :func:`model_recovery`): whether the model brings a melted
  copy of the candidate back to it, as it brings melted experimental clusters back to them.

:func:`fit_ranker` learns the weights from labelled searches (a pairwise logistic loss within each molecule:
every candidate that is the experimental crystal against every one that is not, molecules weighted alike),
as ``bench/learned_ranking.py`` does on the training molecules of the shipped model; a ranker is stored as
JSON (:meth:`Ranker.save`, :meth:`Ranker.load`).

Example::

    from crystalflow.search.ranking import load_ranker, rank_candidates

    ranker = load_ranker()                               # the shipped one (its card: held-out numbers)
    ranked = rank_candidates(result.candidates, ranker)  # a new list, best first; .rank renumbered
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from crystalflow.common.io import write_json
from crystalflow.common.vocabulary import DEFAULT_CHARGE_MODEL
from crystalflow.data.dataset import collate
from crystalflow.data.noise import apply_noise, noise_model
from crystalflow.data.shards import ClusterRecord
from crystalflow.evaluation.metrics import orientation_error
from crystalflow.evaluation.sampling import rigid_projection, sample_records
from crystalflow.physics.energy import EnergySettings, crystal_energy
from crystalflow.physics.forcefield import assign
from crystalflow.search.contact_prior import ContactPrior, ContactPriorError, contact_score
from crystalflow.search.spacegroups import CSD_FREQUENCY
from crystalflow.structure.contacts import hydrogen_bonds
from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import molecule_bonds

#: every feature a ranker may use, in this order (module docstring)
FEATURES = ("energy_gap", "packing", "basin", "space_group", "coulomb", "hbonds", "model_shift", "model_recovery",
            "contacts")
#: features computed with a flow model
MODEL_FEATURES = ("model_shift", "model_recovery")
#: % of the CSD given to a space group outside :data:`CSD_FREQUENCY` (about that of the next rarest ones)
RARE_GROUP_PERCENT = 0.3
#: lowest-energy candidates a ranker reorders (the rest follow in energy order): the ones it was trained on
RANK_TOP = 100
#: clusters per model call of :func:`model_shift`
SHIFT_BATCH = 16
#: noise preset of :func:`model_recovery` (the one the search model was trained on)
RECOVERY_NOISE = "melt"
#: noise draws per candidate of :func:`model_recovery`
RECOVERY_DRAWS = 2
#: Euler steps of the flow in :func:`model_recovery`
RECOVERY_STEPS = 10
#: format version of a saved ranker
RANKER_VERSION = 1


class RankerError(ValueError):
    """A ranker file or feature request that cannot be used."""


def model_shift(crystals, model, batch: int = SHIFT_BATCH) -> np.ndarray:
    """[K] Å: RMS displacement of each crystal's 17-molecule cluster under one endpoint prediction of the flow
    ``model``: the cluster as its input x_w and as x_0 (no prior noise), one Euler step over the whole path,
    each molecule the input conformer superposed on its prediction, then the prediction superposed as a whole
    on the input (its overall motion removed). Deterministic and independent of the frame."""
    device = next(model.parameters()).device
    out = []
    model.eval()
    for start in range(0, len(crystals), batch):
        records = []
        for c in crystals[start:start + batch]:
            cluster = c.cluster().astype(np.float32)
            records.append(ClusterRecord(x_s=cluster, x_w=cluster, z=c.z))
        b = collate(records).to(device)
        with torch.no_grad():
            x0 = model.constrain(b.x_w, b)
            x1 = rigid_projection(x0 + model.path.t_max * model.velocity(x0, 0.0, b), b)
        for g in range(len(records)):
            sl = slice(int(b.ptr[g]), int(b.ptr[g + 1]))
            x = x0[sl].double().cpu().numpy()
            y = x1[sl].double().cpu().numpy()
            out.append(kabsch(y, x)[2])
    return np.asarray(out, dtype=np.float64)


def model_recovery(crystals, model, draws: int = RECOVERY_DRAWS, steps: int = RECOVERY_STEPS, seed: int = 0,
                   batch: int = SHIFT_BATCH) -> np.ndarray:
    """[K] degrees: for each crystal, the mean over ``draws`` of the orientation error
    (:func:`crystalflow.evaluation.metrics.orientation_error`) between its 17-molecule cluster and the flow
    ``model``'s prediction (``steps`` Euler steps, molecules rigid) from a copy of the cluster with every
    molecule turned and moved independently by the :data:`RECOVERY_NOISE` noise (crystal k's draws seeded by
    ``[seed, k]``): small when the model returns a melted copy to the candidate. Deterministic."""
    noise = noise_model(RECOVERY_NOISE)
    device = next(model.parameters()).device
    jobs = []  # (crystal position, cluster, record)
    for k, c in enumerate(crystals):
        cluster = c.cluster()
        rng = np.random.default_rng([int(seed), k])
        for _ in range(draws):
            x_w = apply_noise(cluster, c.z, noise, rng).x_w
            jobs.append((k, cluster, ClusterRecord(x_s=cluster.astype(np.float32), x_w=x_w.astype(np.float32), z=c.z)))
    errors = np.zeros(len(crystals))
    generator = torch.Generator().manual_seed(int(seed))
    for start in range(0, len(jobs), batch):
        part = jobs[start:start + batch]
        with torch.no_grad():
            result = sample_records(model, [r for _, _, r in part], samples=1, steps=steps, generator=generator,
                                    device=device, rigid=True)
        for (k, cluster, r), pred in zip(part, result.pred):
            errors[k] += orientation_error(pred[0].double().cpu().numpy(), cluster, r.z) / draws
    return errors


def candidate_features(candidates, energies=None, model=None, features=FEATURES,
                       charge_model: str = DEFAULT_CHARGE_MODEL, prior: ContactPrior | None = None) -> np.ndarray:
    """[K, len(features)] features (module docstring) of one molecule's candidates
    (:class:`crystalflow.search.pipeline.Candidate`); ``energies`` [K] kJ/mol replace their lattice energies
    (e.g. with a conformer's strain added); ``model``: the flow model of :data:`MODEL_FEATURES` (needed only for them);
    ``charge_model``: the atomic charges the candidates were relaxed with (for ``coulomb``); ``prior``: the
    contact prior of ``contacts`` (needed only for it)."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise RankerError(f"unknown features {unknown}; known: {', '.join(FEATURES)}")
    k = len(candidates)
    if k == 0:
        return np.zeros((0, len(features)))
    e = np.asarray([c.energy for c in candidates] if energies is None else energies, dtype=np.float64)
    cols = {}
    if "energy_gap" in features:
        cols["energy_gap"] = np.log1p(np.maximum(e - e.min(), 0.0))
    if "packing" in features:
        cols["packing"] = np.asarray([c.packing for c in candidates], dtype=np.float64)
    if "basin" in features:
        counts = np.asarray([1 + c.duplicates for c in candidates], dtype=np.float64)
        cols["basin"] = np.log(counts / counts.sum())
    if "space_group" in features:
        cols["space_group"] = np.log([CSD_FREQUENCY.get(c.space_group[0], RARE_GROUP_PERCENT) for c in candidates])
    if "coulomb" in features:
        crystals = [c.crystal for c in candidates]
        ff = assign(crystals[0].z, crystals[0].molecule, charge_model=charge_model)
        lattice = np.asarray([c.energy for c in candidates], dtype=np.float64)
        neutral = np.asarray(crystal_energy(crystals, ff, EnergySettings(charge_scale=0.0)), dtype=np.float64)
        cols["coulomb"] = (lattice - neutral) / np.maximum(np.abs(lattice), 1e-6)
    if "hbonds" in features:
        bonds = molecule_bonds(candidates[0].crystal.molecule, candidates[0].crystal.z)
        cols["hbonds"] = np.asarray([hydrogen_bonds(c.crystal.cluster(), c.crystal.z, bonds) for c in candidates],
                                    dtype=np.float64)
    if any(f in features for f in MODEL_FEATURES) and model is None:
        raise RankerError(f"the features {', '.join(f for f in features if f in MODEL_FEATURES)} need a flow model")
    if "model_shift" in features:
        cols["model_shift"] = model_shift([c.crystal for c in candidates], model)
    if "model_recovery" in features:
        cols["model_recovery"] = model_recovery([c.crystal for c in candidates], model)
    if "contacts" in features:
        if prior is None:
            raise RankerError("the feature contacts needs a contact prior")
        cols["contacts"] = contact_score([c.crystal for c in candidates], prior)
    return np.stack([cols[f] for f in features], axis=1)


@dataclass
class Ranker:
    """A linear score of standardised features: higher is likelier the experimental crystal."""

    features: tuple[str, ...]
    weights: np.ndarray  #: [F], per standardised feature
    mean: np.ndarray  #: [F] feature means of the training candidates
    scale: np.ndarray  #: [F] feature standard deviations of the training candidates
    info: dict | None = None  #: how it was trained (free form, saved with it)
    prior: ContactPrior | None = None  #: the contact prior of the feature ``contacts`` (saved with it)

    @property
    def needs_model(self) -> bool:
        return any(f in MODEL_FEATURES for f in self.features)

    def score(self, x: np.ndarray) -> np.ndarray:
        """[K] scores of features ``x`` [K, F] (columns in :attr:`features` order)."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.weights

    def save(self, path: str) -> None:
        """Write the ranker as JSON (atomically, :func:`crystalflow.common.io.write_json`)."""
        write_json(path, {"version": RANKER_VERSION, "features": list(self.features), "weights": self.weights,
                          "mean": self.mean, "scale": self.scale, "info": self.info or {},
                          **({"contact_prior": self.prior.to_dict()} if self.prior is not None else {})})

    @classmethod
    def load(cls, path: str) -> "Ranker":
        try:
            with open(path) as f:
                d = json.load(f)
            ranker = cls(tuple(d["features"]), np.asarray(d["weights"], dtype=np.float64),
                         np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64),
                         d.get("info"), ContactPrior.from_dict(d["contact_prior"]) if "contact_prior" in d else None)
        except (OSError, ValueError, KeyError, TypeError, ContactPriorError) as exc:
            raise RankerError(f"cannot read ranker {path}: {exc}") from None
        if d.get("version") != RANKER_VERSION or not all(
                len(v) == len(ranker.features) for v in (ranker.weights, ranker.mean, ranker.scale)):
            raise RankerError(f"{path} is not a ranker of version {RANKER_VERSION} with one weight per feature")
        unknown = [f for f in ranker.features if f not in FEATURES]
        if unknown:
            raise RankerError(f"{path}: unknown features {unknown}")
        if "contacts" in ranker.features and ranker.prior is None:
            raise RankerError(f"{path}: uses the feature contacts but holds no contact prior")
        return ranker


def load_ranker(path: str | None = None) -> Ranker:
    """A saved ranker, or the shipped one (:func:`crystalflow.common.resources.ranker_path`)."""
    from crystalflow.common.resources import ranker_path

    return Ranker.load(path or ranker_path())


def fit_ranker(pools: list[tuple[np.ndarray, np.ndarray]], features=FEATURES, l2: float = 1.0,
               info: dict | None = None, prior: ContactPrior | None = None) -> Ranker:
    """The ranker whose scores best order labelled searches: ``pools`` of (features [K, F], solved [K] bools),
    one per molecule. Minimises the mean over molecules (those with both kinds of candidate) of the mean
    logistic loss log(1 + exp(s_j − s_i)) over pairs of a solving i and a non-solving j, plus
    ``l2``·|w|²/2; features standardised over all candidates."""
    from scipy.optimize import minimize

    usable = [(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=bool)) for x, y in pools]
    usable = [(x, y) for x, y in usable if y.any() and (~y).any()]
    if not usable:
        raise RankerError("no molecule has both a solving and a non-solving candidate: nothing to learn from")
    allx = np.concatenate([x for x, _ in usable])
    mean, scale = allx.mean(axis=0), allx.std(axis=0)
    scale[scale < 1e-9] = 1.0
    diffs = []  # per molecule: [pairs, F] of standardised x_i - x_j (i solves, j does not)
    for x, y in usable:
        z = (x - mean) / scale
        diffs.append((z[y][:, None, :] - z[~y][None, :, :]).reshape(-1, z.shape[1]))

    def loss(w):
        total, grad = 0.5 * l2 * w @ w, l2 * w
        for d in diffs:
            m = d @ w
            total += np.mean(np.logaddexp(0.0, -m)) / len(diffs)
            grad = grad - (d.T @ (1.0 / (1.0 + np.exp(m)))) / len(d) / len(diffs)
        return total, grad

    w0 = np.zeros(allx.shape[1])
    res = minimize(loss, w0, jac=True, method="L-BFGS-B")
    return Ranker(tuple(features), res.x, mean, scale, {**(info or {}), "molecules": len(usable), "l2": l2}, prior)


def ranking_order(candidates, ranker: Ranker, model=None, energies=None, top: int | None = RANK_TOP,
                  charge_model: str = DEFAULT_CHARGE_MODEL) -> tuple[list[int], np.ndarray]:
    """Positions of the candidates in ``ranker``'s order and their scores. The candidates come in the search's
    order (lowest energy first); the first ``top`` of them (all with None) are ordered by score, highest first
    (ties keep the given order), and the rest follow as given, with NaN scores. ``model``: the flow model
    when the ranker uses one of :data:`MODEL_FEATURES` (default: the shipped search model); ``charge_model``: the
    atomic charges the candidates were relaxed with."""
    n = len(candidates)
    head = n if top is None else min(n, top)
    scores = np.full(n, np.nan)
    if head == 0:
        return list(range(n)), scores
    if ranker.needs_model and model is None:
        from crystalflow.search.refine import load_refiner

        model = load_refiner()
    e = None if energies is None else list(energies)[:head]
    scores[:head] = ranker.score(candidate_features(candidates[:head], energies=e, model=model,
                                                    features=ranker.features, charge_model=charge_model,
                                                    prior=ranker.prior))
    return sorted(range(head), key=lambda i: (-scores[i], i)) + list(range(head, n)), scores


def rank_candidates(candidates, ranker: Ranker, model=None, energies=None, top: int | None = RANK_TOP,
                    charge_model: str = DEFAULT_CHARGE_MODEL) -> list:
    """A new list of the candidates in ``ranker``'s order (:func:`ranking_order`), each a copy with ``rank``
    renumbered from 1."""
    order, _ = ranking_order(candidates, ranker, model, energies, top, charge_model)
    return [replace(candidates[i], rank=r) for r, i in enumerate(order, start=1)]


def top_k_solved(scores: np.ndarray, solved: np.ndarray, k: int) -> bool:
    """Whether one of the ``k`` best-scored candidates solves (ties broken by position, i.e. energy order)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return bool(np.asarray(solved, dtype=bool)[order[:k]].any()) if len(scores) else False


__all__ = ["FEATURES", "MODEL_FEATURES", "Ranker", "RankerError", "candidate_features", "fit_ranker", "load_ranker",
           "model_recovery", "model_shift",
           "RANK_TOP", "rank_candidates", "ranking_order", "top_k_solved"]
