"""Sampling clusters and whole splits: predictions of a model, written as a PRED_DIR.

Flow models are integrated from t=0 (the input or the prior) to t=1 (the crystal) by
:func:`crystalflow.flow.solver.integrate` (solvers :data:`~crystalflow.flow.solver.SOLVERS`); gnn-md
predicts in one forward pass (:meth:`~crystalflow.flow.model.CrystalModel.regress`). K samples per
cluster are drawn by repeating clusters in the batch, each with its own start x_0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from crystalflow.data.dataset import Batch, collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.flow.model import CrystalModel
from crystalflow.flow.solver import SOLVERS, integrate
from crystalflow.nn.rigid import superpose_conformer

#: SOLVERS is re-exported: the solver names the sampling functions accept
__all__ = ["SOLVERS", "SampleResult", "rigid_projection", "sample_dataset", "sample_records"]


def rigid_projection(x: Tensor, batch: Batch, allow_reflection: bool = True) -> Tensor:
    """Replace each predicted molecule by the input conformer (from x_w) superposed onto it.

    Per molecule, the optimal orthogonal map (Kabsch; improper allowed by default, so a prediction
    can undo an inversion of the input) and translation take the molecule of ``batch.x_w`` onto ``x``.
    The result is exactly rigid (rigidity 0) and keeps the predicted position and orientation.
    """
    return superpose_conformer(batch.x_w, x, batch.mol, batch.num_molecules, proper=not allow_reflection)


@dataclass
class SampleResult:
    """Predictions [K, M, n, 3] per cluster, and optionally the trajectory [T, K, M, n, 3] with its times."""

    pred: list[Tensor]
    trajectory: list[Tensor] | None
    times: Tensor | None


def sample_records(
    model: CrystalModel, records: list[ClusterRecord], samples: int = 1, steps: int = 20, solver: str = "euler",
    frames: int = 0, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
    rigid: bool = False,
) -> SampleResult:
    """K = ``samples`` predictions for each cluster in ``records`` (one batch of len(records)·K clusters).

    ``rigid`` replaces each predicted molecule by the input conformer superposed onto it
    (:func:`rigid_projection`).
    """
    repeated = [r for r in records for _ in range(samples)]
    batch = collate(repeated).to(device)
    model.eval()
    if model.is_flow:
        x0 = model.prior(batch, generator)
        x1, traj, times = integrate(model, batch, x0, steps, solver, frames)
    else:
        x1, traj, times = model.regress(batch), None, None
    if rigid:
        x1 = rigid_projection(x1, batch)
    pred, trajectory = [], [] if traj is not None else None
    for c, rec in enumerate(records):
        m, n = rec.x_s.shape[:2]
        a = int(batch.ptr[c * samples])
        e = int(batch.ptr[(c + 1) * samples])
        pred.append(x1[a:e].reshape(samples, m, n, 3).cpu())
        if traj is not None:
            trajectory.append(traj[:, a:e].reshape(traj.shape[0], samples, m, n, 3).cpu())
    return SampleResult(pred=pred, trajectory=trajectory, times=times.cpu() if times is not None else None)


def sample_dataset(
    model: CrystalModel, dataset_dir: str, split: str, pred_dir: str, info: dict, samples: int = 1,
    steps: int = 20, solver: str = "euler", keep_trajectory: int = 0, batch_clusters: int = 4, seed: int = 0,
    limit: int | None = None, overwrite: bool = False, progress: bool = True, device: torch.device | str = "cpu",
    rigid: bool = False,
) -> str:
    """Predict ``samples`` crystals for every cluster of a split; write a PRED_DIR (see predictions.py).

    ``keep_trajectory`` > 0 stores that many + 1 evenly spaced frames of each trajectory. Flow models are
    integrated with ``solver`` in ``steps`` steps (:func:`crystalflow.flow.solver.integrate`); gnn-md is
    deterministic, so it gets one sample per cluster and no trajectory.

    Example::

        import crystalflow as cf

        model, config = cf.load_model("run")
        cf.sample_dataset(model, "cod17", "test", "pred", {"method": config.model.method}, samples=4, steps=20)
    """
    import time

    from tqdm import tqdm

    from crystalflow.common.errors import UserError
    from crystalflow.data.dataset import ClusterDataset
    from crystalflow.evaluation.predictions import PredictionWriter

    ds = ClusterDataset(dataset_dir, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise UserError(f"split {split!r} of {dataset_dir!r} has no clusters")
    if not model.is_flow:
        samples, keep_trajectory = 1, 0  # gnn-md is deterministic
    generator = torch.Generator(device=device).manual_seed(seed)
    info = {**info, "dataset_dir": dataset_dir, "split": split, "K": samples, "steps": steps, "solver": solver,
            "seed": seed, "trajectory_frames": keep_trajectory, "rigid": rigid}
    start = time.time()
    with PredictionWriter(pred_dir, info, overwrite=overwrite) as writer:
        bar = tqdm(total=n, unit="cluster", desc="sample", disable=not progress)
        for first in range(0, n, batch_clusters):
            records = [ds[i] for i in range(first, min(n, first + batch_clusters))]
            result = sample_records(model, records, samples, steps, solver, keep_trajectory, generator, device, rigid)
            for c, rec in enumerate(records):
                traj = result.trajectory[c].numpy() if result.trajectory is not None else None
                times = result.times.numpy() if result.times is not None else None
                writer.add(rec.meta, rec.x_w, rec.x_s, rec.z, result.pred[c].numpy(), traj, times)
            bar.update(len(records))
        bar.close()
        writer.info["seconds"] = round(time.time() - start, 2)
        writer.info["clusters_per_second"] = round(n / max(time.time() - start, 1e-9), 4)
    return pred_dir
