"""Learned refinement of searched crystals: a CrystalFlow model moves a candidate towards a crystal it learned.

A relaxed candidate of :func:`crystalflow.search.pipeline.search_crystals` sits in a minimum of the force
field, which may be a packing no real crystal of the molecule has. :func:`refine_crystals` hands each
candidate's 17-molecule cluster (:meth:`SymmetricCrystal.cluster`) to a flow model as its input x_w and
integrates the flow (``steps`` Euler steps, each molecule kept rigid: the input conformer superposed on the
prediction). The prediction breaks the crystal's symmetry, so no crystal is fitted to it: each cluster
molecule's predicted pose is pulled back through its symmetry operator and the estimates are averaged into
one new pose of the asymmetric molecule (:func:`symmetrised_update`; cell and operators kept), which
:func:`crystalflow.physics.relax.relax_crystal` relaxes again (at most ``max_seconds`` each). A model trained
on the ``melt`` noise (orientations within about 30° of the crystal, centres pushed about 0.6 Å) is meant to
take near-crystal packings into the experimental one; ``bench/predict_crystals.py`` measures whether it
does (``docs/search.md``: with the shipped model, it does not).

Example::

    from crystalflow.search.refine import load_refiner, refine_crystals

    model = load_refiner()                          # the shipped search model
    refined = refine_crystals([c.crystal for c in result.candidates[:10]], model)
    [r.energy_after for r in refined if r is not None]
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from crystalflow.data.shards import ClusterRecord
from crystalflow.evaluation.sampling import sample_records
from crystalflow.physics.energy import CellError
from crystalflow.physics.forcefield import ForceField, assign
from crystalflow.physics.relax import CrystalRelaxation, relax_crystal
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.elements import HYDROGEN
from crystalflow.structure.geometry import kabsch

#: Å: distance of the marker atom that fixes each cluster molecule's symmetry operator
MARKER_DISTANCE = 2.0
#: Euler steps of the flow per refinement
REFINE_STEPS = 10
#: clusters integrated in one batch of the model
REFINE_BATCH = 8
#: seconds a refined crystal may take to relax (one that needs longer is dropped)
REFINE_SECONDS = 8.0
#: L-BFGS iterations at most per refined crystal
REFINE_MAX_STEPS = 300


def load_refiner(model: str | None = None, device: torch.device | str = "cpu"):
    """The flow model refinement uses: ``model`` a training run or exported model directory, or None for
    the shipped search model (:func:`crystalflow.common.resources.search_model_dir`)."""
    from crystalflow.common.resources import search_model_dir
    from crystalflow.training.checkpoint import load_model

    net, _ = load_model(model or search_model_dir(), device=device)
    return net


def _marked(crystal: SymmetricCrystal) -> SymmetricCrystal:
    """The crystal with one marker atom (a hydrogen 2 Å off the molecule's centre along its flattest axis), so
    that every molecule of its cluster fixes its symmetry operator, handedness included (planar molecules)."""
    x = crystal.molecule
    c = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - c)
    marker = c + MARKER_DISTANCE * vt[-1] + 0.5 * MARKER_DISTANCE * vt[0]
    return replace(crystal, molecule=np.vstack([x, marker]), z=np.append(crystal.z, HYDROGEN))


def symmetrised_update(crystal: SymmetricCrystal, marked_cluster: np.ndarray, pred: np.ndarray) -> SymmetricCrystal:
    """The crystal whose asymmetric molecule takes the pose the prediction implies, averaged over all molecules.

    ``marked_cluster`` [17, n + 1, 3]: the cluster of :func:`_marked` (the last atom the marker); ``pred``
    [17, n, 3]: the model's prediction from ``marked_cluster[:, :-1]``. Molecule j of the cluster is the image
    ``g_j`` of the asymmetric one (an isometry, found exactly from the marked copies); its predicted copy
    pulled back by ``g_j⁻¹`` is one estimate of the asymmetric molecule's new pose; the estimates are averaged
    atom by atom and made rigid again (Kabsch). The cell and the operators are kept.
    """
    n = len(crystal.z)
    x0 = marked_cluster[0]
    estimates = []
    for xj, pj in zip(marked_cluster, pred):
        r, t, _ = kabsch(x0, xj, allow_reflection=True)  # x0 @ r.T + t = xj
        estimates.append((pj - t) @ r)  # g_j^-1 of the prediction
    mean = np.mean(estimates, axis=0)
    r, t, _ = kabsch(x0[:n], mean)
    moved = x0[:n] @ r.T + t
    return crystal.with_pose(molecule=crystal.molecule + (moved - x0[:n]))


def predicted_updates(crystals: list[SymmetricCrystal], model, steps: int = REFINE_STEPS, seed: int = 0,
                      batch: int = REFINE_BATCH) -> list[SymmetricCrystal]:
    """Each crystal with the asymmetric pose the model predicts from its cluster (:func:`symmetrised_update`)."""
    generator = torch.Generator().manual_seed(int(seed))
    device = next(model.parameters()).device
    out: list[SymmetricCrystal] = []
    for start in range(0, len(crystals), batch):
        part = crystals[start:start + batch]
        marked = [_marked(c).cluster() for c in part]
        records = [ClusterRecord(x_s=m[:, :-1].astype(np.float32), x_w=m[:, :-1].astype(np.float32), z=c.z)
                   for m, c in zip(marked, part)]
        with torch.no_grad():
            result = sample_records(model, records, samples=1, steps=steps, generator=generator, device=device,
                                    rigid=True)
        out.extend(symmetrised_update(c, m, p[0].numpy().astype(np.float64))
                   for c, m, p in zip(part, marked, result.pred))
    return out


def refine_crystals(crystals: list[SymmetricCrystal], model, ff: ForceField | None = None, *,
                    steps: int = REFINE_STEPS, seed: int = 0, max_steps: int = REFINE_MAX_STEPS,
                    max_seconds: float = REFINE_SECONDS, time_budget_s: float | None = None,
                    settings=None) -> list[CrystalRelaxation | None]:
    """Refine each crystal (module docstring): one relaxed crystal per input, or None where its relaxation
    fails (a collapsing cell), does not converge within ``max_seconds``, or ``time_budget_s`` (seconds for the
    whole call) ran out before it."""
    if not crystals:
        return []
    t0 = time.perf_counter()
    z = crystals[0].z
    ff = ff or assign(z, crystals[0].molecule)
    out: list[CrystalRelaxation | None] = [None] * len(crystals)
    for start in range(0, len(crystals), REFINE_BATCH):
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
        part = crystals[start:start + REFINE_BATCH]
        for k, moved in enumerate(predicted_updates(part, model, steps, seed + start)):
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
            limit = max_seconds
            if time_budget_s is not None:
                limit = min(max_seconds, max(time_budget_s - (time.perf_counter() - t0), 1e-3))
            try:
                res = relax_crystal(moved, ff=ff, max_steps=max_steps, max_seconds=limit, settings=settings)
            except CellError:
                continue
            if res.converged and np.isfinite(res.energy_after):
                out[start + k] = res
    return out
