"""Samplers: torchdiffeq solvers, K samples, trajectories, and the rigid projection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crystalflow.backbones.registry import BackboneConfig
from crystalflow.data.dataset import collate
from crystalflow.data.noise import random_rotations
from crystalflow.data.shards import ClusterRecord
from crystalflow.evaluation.sampling import rigid_projection, sample_records
from crystalflow.flow.model import ModelConfig, build_model
from crystalflow.structure.geometry import kabsch


def toy_records(n_clusters: int = 2, seed: int = 0) -> list[ClusterRecord]:
    rng = np.random.default_rng(seed)
    mol = rng.normal(size=(5, 3)) * 1.2
    z = np.array([6, 7, 8, 1, 1])
    out = []
    for _ in range(n_clusters):
        centres = rng.normal(size=(4, 3)) * 5
        x_s = np.stack([mol @ r.T + c for r, c in zip(random_rotations(4, rng), centres)])
        x_w = np.stack([mol @ r.T + c * 1.5 for r, c in zip(random_rotations(4, rng), centres)])
        out.append(ClusterRecord(x_s=x_s.astype(np.float32), x_w=x_w.astype(np.float32), z=z))
    return out


def test_rigid_projection_is_rigid_and_exact_on_rigid_input():
    records = toy_records()
    batch = collate(records).to("cpu", torch.float64)
    noisy = batch.x_s + 0.3 * torch.randn(batch.x_s.shape, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)
    out = rigid_projection(noisy, batch)
    for m in range(batch.num_molecules):
        sel = batch.mol == m
        _, _, rmsd = kabsch(batch.x_w[sel].numpy(), out[sel].numpy(), allow_reflection=True)
        assert rmsd < 1e-9  # the input conformer, moved rigidly
    # a prediction that already is a rigid copy (here: the truth) is returned unchanged
    torch.testing.assert_close(rigid_projection(batch.x_s, batch), batch.x_s, atol=1e-5, rtol=0)  # float32 inputs
    # a mirrored copy is recovered with reflections allowed
    mirrored = -batch.x_s
    torch.testing.assert_close(rigid_projection(mirrored, batch), mirrored, atol=1e-5, rtol=0)


@pytest.mark.parametrize("solver", ["euler", "rk4", "dopri5"])
def test_sample_records_shapes(solver):
    records = toy_records()
    model = build_model(ModelConfig(method="lerp", backbone=BackboneConfig(hidden=8, layers=1)))
    result = sample_records(model, records, samples=3, steps=2, solver=solver, frames=2,
                            generator=torch.Generator().manual_seed(0), rigid=True)
    assert [p.shape for p in result.pred] == [(3, 4, 5, 3)] * 2
    assert result.trajectory[0].shape == (3, 3, 4, 5, 3) and result.times.shape == (3,)
    assert torch.isfinite(torch.stack(result.pred)).all()
