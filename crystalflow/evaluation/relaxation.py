"""Relaxing predicted clusters: a prediction → the nearest physically valid packing.

Each predicted sample is first made rigid (the input conformer superposed onto every predicted
molecule, reflections allowed), then relaxed with :mod:`crystalflow.physics`:

- **crystal**: when the cluster implies a crystal (:func:`crystalflow.structure.lattice.fit_crystal`:
  exact, or robust for noisy predictions), that Z' = 1 crystal is relaxed under its space group (pose
  and cell) and the relaxed crystal's own 17-molecule cluster replaces the prediction, its molecules
  put in the prediction's order (nearest centres);
- **cluster**: otherwise the cluster's molecules are relaxed as rigid bodies, each tied to its
  predicted centre by a weak harmonic restraint.

:func:`relax_pred_dir` does this for every sample of a PRED_DIR and writes a new PRED_DIR that
``evaluate`` scores like any other (``info.json`` says ``relaxed: true``; each cluster's meta gets a
``relax`` list with, per sample, the mode, energy, space group, the reason a crystal was not found,
and seconds). Finished clusters are kept in ``OUT.work/`` until the output is complete, so an
interrupted run continues where it stopped.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from crystalflow.common.errors import UserError
from crystalflow.common.io import atomic_path
from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL
from crystalflow.evaluation.predictions import (
    PredictionWriter,
    read_info,
    read_predictions,
)
from crystalflow.physics.energy import CellError
from crystalflow.physics.forcefield import ForceField, assign
from crystalflow.physics.relax import relax_cluster, relax_crystal
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.geometry import batched_rotations
from crystalflow.structure.lattice import LatticeError, fit_crystal
from crystalflow.structure.molecules import centre_of_mass

#: kJ/mol/Å²: restraint of each molecule's centre in a cluster relaxation
CLUSTER_RESTRAINT = 1.0
#: L-BFGS iterations at most, per relaxation
MAX_STEPS = 300
#: seconds a prediction's crystal may take to relax before it is relaxed as a cluster instead
CRYSTAL_SECONDS = 8.0


@dataclass
class RelaxedSample:
    """One relaxed prediction."""

    x: np.ndarray  #: [M, n, 3] relaxed cluster (Å), molecules in the prediction's order
    mode: str  #: "crystal" (relaxed periodic crystal) or "cluster" (rigid bodies in vacuum)
    energy: float  #: kJ/mol per molecule: lattice energy (crystal) or intermolecular energy / M (cluster)
    seconds: float
    crystal: SymmetricCrystal | None = None  #: the relaxed crystal (mode "crystal")
    sg_symbol: str = ""  #: its space group (spglib)
    reason: str = ""  #: why no crystal was used (mode "cluster")
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        """What goes into the PRED_DIR meta."""
        return {"mode": self.mode, "energy": round(self.energy, 4), "sg": self.sg_symbol,
                "reason": self.reason, "seconds": round(self.seconds, 3)}


def make_rigid(pred: np.ndarray, conformer: np.ndarray) -> np.ndarray:
    """[M, n, 3]: each molecule of ``conformer`` (the input, [M, n, 3]) superposed onto the predicted one
    (orthogonal Procrustes, reflections allowed), so relaxed molecules are the input conformer."""
    r = batched_rotations(conformer, pred, proper=False)  # [M, 3, 3]
    c_in = conformer.mean(axis=1, keepdims=True)
    return np.einsum("mij,mnj->mni", r, conformer - c_in) + pred.mean(axis=1, keepdims=True)


def _in_prediction_order(cluster: np.ndarray, pred: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The crystal's cluster [M, n, 3] with molecules reordered to the nearest predicted centres
    (central molecule first in both), placed on the predicted central molecule's centre."""
    c_pred = centre_of_mass(pred, z)
    c_pred = c_pred - c_pred[0]
    c_crys = centre_of_mass(cluster, z)
    cost = np.linalg.norm(c_pred[1:, None, :] - c_crys[None, 1:, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    order = np.concatenate([[0], 1 + cols[np.argsort(rows)]])
    return cluster[order] + centre_of_mass(pred[0], z)


def relax_prediction(pred: np.ndarray, z: np.ndarray, conformer: np.ndarray, ff: ForceField | None = None,
                     max_steps: int = MAX_STEPS, periodic: bool = True) -> RelaxedSample:
    """Relax one predicted cluster ``pred`` [M, n, 3] of the molecule ``z`` [n]; ``conformer`` [M, n, 3] is
    the input cluster (x_w) whose molecules are the rigid bodies. ``periodic=False`` skips the crystal."""
    t0 = time.perf_counter()
    z = np.asarray(z, dtype=np.int64)
    x = make_rigid(np.asarray(pred, dtype=np.float64), np.asarray(conformer, dtype=np.float64))
    ff = ff or assign(z, np.asarray(conformer[0], dtype=np.float64))
    reason, res = "periodic relaxation off", None
    if periodic:
        try:
            rec = fit_crystal(x, z)
        except LatticeError as exc:
            reason = str(exc)
        else:
            try:
                res = relax_crystal(rec.crystal, ff=ff, max_steps=max_steps, max_seconds=CRYSTAL_SECONDS)
            except CellError as exc:  # a noisy fit whose cell collapses: relaxed as a cluster instead
                res, reason = None, f"crystal relaxation failed: {exc}"
            if res is not None and not res.converged:  # a fit far from any minimum: relaxed as a cluster
                res, reason = None, f"crystal relaxation did not converge within {CRYSTAL_SECONDS:g} s"
        if res is not None and np.isfinite(res.energy_after):
            number, symbol = res.crystal.space_group()
            cluster = res.crystal.cluster(k=len(x) - 1)
            return RelaxedSample(x=_in_prediction_order(cluster, x, z), mode="crystal", energy=res.energy_after,
                                 seconds=time.perf_counter() - t0, crystal=res.crystal, sg_symbol=symbol,
                                 extra={"sg_number": number, "inliers": rec.inliers})
    res = relax_cluster(x, z, ff=ff, restraint=CLUSTER_RESTRAINT, max_steps=max_steps)
    return RelaxedSample(x=res.x[0], mode="cluster", energy=float(res.energy_after[0]) / len(x),
                         seconds=time.perf_counter() - t0, reason=reason)


def _work_file(work: str, index: int) -> str:
    return os.path.join(work, f"cluster-{index:07d}.npz")


def relax_pred_dir(pred_dir: str, output: str, progress: bool = True, overwrite: bool = False,
                   limit: int | None = None, periodic: bool = True, max_steps: int = MAX_STEPS,
                   charge_model: str = DEFAULT_CHARGE_MODEL) -> dict:
    """Relax every sample of the PRED_DIR ``pred_dir`` into the new PRED_DIR ``output`` (see the module
    docstring); returns its info. ``limit``: the first N clusters only; ``charge_model``: the force field's
    atomic charges (:data:`~crystalflow.common.vocabulary.CHARGE_MODELS`, recorded as ``relax_charges``).

    Example::

        info = relax_pred_dir("pred", "pred-relaxed")
        info["relax_modes"]                     # {"crystal": 12, "cluster": 48}
        evaluate("pred-relaxed")                # scored like any PRED_DIR
    """
    if charge_model not in CHARGE_MODELS:
        raise UserError(f"unknown charge model {charge_model!r}; known: {', '.join(CHARGE_MODELS)}")
    info = read_info(pred_dir)
    if os.path.abspath(pred_dir) == os.path.abspath(output):
        raise UserError("the output must be a new prediction directory, not the input")
    if os.path.exists(output) and not overwrite and (not os.path.isdir(output) or os.listdir(output)):
        raise UserError(f"{output!r} already exists; choose another output or pass --overwrite")
    work = os.path.abspath(output) + ".work"
    os.makedirs(work, exist_ok=True)
    marker = os.path.join(work, "charges.txt")  # a resumed run keeps the charges its saved clusters had
    if os.path.exists(marker):
        with open(marker) as f:
            before = f.read().strip()
        if before != charge_model:
            raise UserError(f"{work} holds clusters relaxed with {before} charges; resume with --charges {before} "
                            "or delete it")
    else:
        with atomic_path(marker) as tmp, open(tmp, "w") as f:
            f.write(charge_model)
    n = info.get("n_clusters") or 0
    total = min(n, limit) if limit else n
    new_info = {k: v for k, v in info.items() if k not in ("shards", "failures", "n_clusters", "created", "seconds")}
    new_info.update(relaxed=True, relaxed_from=os.path.abspath(pred_dir), relax_periodic=periodic,
                    relax_charges=charge_model, method=info.get("method"))
    t0 = time.time()
    modes = {"crystal": 0, "cluster": 0}
    with PredictionWriter(output, new_info, overwrite=overwrite) as writer:
        bar = tqdm(total=total, desc="relax", unit="cluster", disable=not progress)
        for index, item in enumerate(read_predictions(pred_dir)):
            if limit and index >= limit:
                break
            path = _work_file(work, index)
            if os.path.exists(path):
                with np.load(path) as saved:
                    relaxed, records = saved["x"], json.loads(str(saved["records"]))
            elif item.meta.get("failure") or not np.isfinite(item.pred).all():
                relaxed, records = item.pred, [{"mode": "none", "reason": "no prediction"}] * len(item.pred)
            else:
                ff = assign(item.z, item.x_w[0].astype(np.float64), charge_model=charge_model)
                done = [relax_prediction(p, item.z, item.x_w, ff=ff, max_steps=max_steps, periodic=periodic)
                        for p in item.pred]
                relaxed = np.stack([d.x for d in done]).astype(np.float32)
                records = [d.record() for d in done]
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, x=relaxed, records=json.dumps(records))
            for r in records:
                if r["mode"] in modes:
                    modes[r["mode"]] += 1
            writer.add({**item.meta, "relax": records}, item.x_w, item.x_s, item.z, relaxed)
            bar.update(1)
            bar.set_postfix(modes)
        bar.close()
        writer.info["seconds"] = round(time.time() - t0, 3)
        writer.info["relax_modes"] = dict(modes)
    shutil.rmtree(work, ignore_errors=True)
    return read_info(output)
