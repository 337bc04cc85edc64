"""Data-parallel training: 2 CPU processes (gloo) end with identical weights; divergence stops every rank."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from crystalflow.flow import model as models
from crystalflow.training import distributed
from crystalflow.training.checkpoint import CHECKPOINT, LOG
from crystalflow.training.config import TrainConfig
from crystalflow.training.trainer import TrainingDivergedError, train

if not distributed.is_available("gloo"):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

NPROCS = 2
LAUNCH_TIMEOUT_S = 180.0  #: a guard against a hang, far above the ~15 s the launch needs
BATCH = 2  #: per process: 12 train clusters / (2 processes x 2) -> 3 steps per epoch
STEPS_PER_EPOCH = 3


@pytest.fixture(scope="module")
def dataset(tiny_dataset: Path) -> Path:
    """The session's shared ``tiny_dataset``: 8 crystals x 2 draws, 12 train clusters (see BATCH)."""
    return tiny_dataset


class TinyFlow(nn.Module):
    """Stand-in with the CrystalModel API (see tests/training/test_trainer.py); NaN loss at training call ``nan_at``."""

    def __init__(self, hidden: int = 16, nan_at: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, hidden)
        self.net = nn.Sequential(nn.Linear(4 + hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3))
        self.nan_at = nan_at
        self.calls = 0

    def loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        t = torch.rand(batch.num_graphs, 1, generator=generator)[batch.graph]
        x_t = (1 - t) * batch.x_w + t * batch.x_s + 0.1 * torch.randn(batch.x_w.shape, generator=generator)
        v = self.net(torch.cat([x_t / 10, t, self.embed(batch.z)], dim=-1))
        loss = ((v - (batch.x_s - batch.x_w) / 10) ** 2).mean()
        if self.training:
            self.calls += 1
            if self.calls == self.nan_at:
                loss = loss * math.nan
        return loss


#: the smallest real model: the DDP run trains a real CrystalModel
TINY_MODEL = {"method": "lerp", "backbone": {"variant": "fast", "hidden": 8, "layers": 1}}
_MODELS: list[nn.Module] = []


def _real_model(config: TrainConfig) -> nn.Module:
    """build_model, keeping the instances (the model and its EMA) so the worker can save their weights."""
    _MODELS.append(models.build_model(config.model))
    return _MODELS[-1]


def _nan_on_rank_1(config: TrainConfig) -> nn.Module:
    return TinyFlow(nan_at=2 if os.environ["RANK"] == "1" else None)


def _worker(dataset: str, tmp: str, config: TrainConfig) -> dict:
    """One rank: a run of a real tiny model (then save this rank's weights), and a stand-in whose loss turns NaN
    on rank 1 only.

    The process group is joined here once, so both train() calls share it (one process start-up for both).
    """
    torch.set_num_threads(1)
    distributed.init(distributed.env_info(), torch.device("cpu"))
    summary = train(dataset, os.path.join(tmp, "run"), config, progress=False, model_fn=_real_model)
    torch.save([m.state_dict() for m in _MODELS], os.path.join(tmp, f"rank{os.environ['RANK']}.pt"))
    try:
        train(dataset, os.path.join(tmp, "diverging"), config, progress=False, model_fn=_nan_on_rank_1)
        message = "no error"
    except TrainingDivergedError as exc:
        message = str(exc)
    return {"summary": summary, "divergence": message}


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=1, batch_size=BATCH, lr=1e-2, warmup_steps=0, log_every=1, seed=3,
                                 threads=1, device="cpu", model=models.ModelConfig.from_dict(TINY_MODEL)), **kw})


@pytest.fixture(scope="module")
def ddp_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("ddp-run")
    results = distributed.launch(_worker, NPROCS, str(dataset), str(tmp), cfg(), timeout=LAUNCH_TIMEOUT_S)
    return tmp, results


def test_two_processes_end_with_identical_weights(ddp_run: tuple[Path, list[dict]]) -> None:
    tmp, results = ddp_run
    summaries = [r["summary"] for r in results]
    assert [s["world_size"] for s in summaries] == [NPROCS] * NPROCS
    assert all(s["steps"] == STEPS_PER_EPOCH for s in summaries)
    assert summaries[0]["last_val_loss"] == summaries[1]["last_val_loss"]  # reduced over both ranks
    rank0, rank1 = (torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(NPROCS))
    ckpt = torch.load(tmp / "run" / CHECKPOINT, weights_only=True)
    assert len(rank0) == len(rank1) == 2  # the model and its EMA

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    for a, b in zip(rank0, rank1):
        assert same(a, b)
    assert [same(m, ckpt["model"]) for m in rank0] == [True, False]
    assert [same(m, ckpt["ema"]) for m in rank0] == [False, True]
    torch.manual_seed(cfg().seed)  # the seed train() builds the model with
    assert not same(rank0[0], models.build_model(cfg().model).state_dict())  # it did train
    assert ckpt["world_size"] == NPROCS and len(ckpt["ranks"]) == NPROCS
    assert not torch.equal(ckpt["ranks"][0]["rng"]["loss_generator"], ckpt["ranks"][1]["rng"]["loss_generator"])
    with open(tmp / "run" / LOG, newline="") as f:  # one writer: every step once (the last is the epoch row)
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_divergence_on_one_rank_stops_all(ddp_run: tuple[Path, list[dict]]) -> None:
    for r in ddp_run[1]:
        msg = r["divergence"]
        assert "epoch 1, step 2" in msg and "on rank 1" in msg and "loss = nan" in msg, msg
