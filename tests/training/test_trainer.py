"""Tests of training: config, run files, bit-for-bit resume, divergence errors, atomic checkpoints."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_CIFS, TINY_SAMPLES
from torch import nn

import crystalflow
from crystalflow.common.errors import UserError
from crystalflow.data.build import build_dataset
from crystalflow.data.pipeline import BuildSettings
from crystalflow.flow import model as models
from crystalflow.training.checkpoint import BEST, CHECKPOINT, CONFIG, LOG, LOG_COLUMNS, load_model
from crystalflow.training.config import TrainConfig, load_config
from crystalflow.training.trainer import Trainer, TrainingDivergedError, train

#: small, accepted COD crystals (fastest to process); 2 noise draws each -> 16 clusters, 12 of them train:
#: the contents of conftest's session-wide ``tiny_dataset``
SMALL_CIFS = TINY_CIFS
SAMPLES_PER_CRYSTAL = TINY_SAMPLES
BATCH = 4  #: 12 train clusters / 4 -> 3 steps per epoch
STEPS_PER_EPOCH = 3


def cod_dir() -> Path:
    """The COD CIFs embedded in the package."""
    return Path(crystalflow.embedded_cif_dir())


def make_dataset(root: Path, names: list[str] = SMALL_CIFS) -> Path:
    """Build a tiny dataset directory from a few CIFs."""
    cifs = root / "cifs"
    cifs.mkdir(parents=True)
    for name in names:
        shutil.copy(cod_dir() / name, cifs / name)
    out = root / "data"
    build_dataset(str(cifs), str(out), BuildSettings(samples_per_crystal=SAMPLES_PER_CRYSTAL), workers=1,
                  progress=False)
    return out


@pytest.fixture
def dataset(tiny_dataset: Path) -> Path:
    """The session's shared ``tiny_dataset`` (built from SMALL_CIFS, SAMPLES_PER_CRYSTAL draws each)."""
    return tiny_dataset


class SimulatedCrash(Exception):
    """Stands for a process killed in the middle of an epoch."""


class TinyFlow(nn.Module):
    """Stand-in with the CrystalModel API: a per-atom MLP velocity field, flow-matching loss.

    Uses the given generator for t and noise and the global RNG for dropout, so both random streams matter.
    ``bad_at`` = (training call number, "nan" | "inf_grad" | "crash") makes that call's loss NaN, its
    gradient inf, or raises :class:`SimulatedCrash` (a killed process).
    """

    def __init__(self, hidden: int = 16, bad_at: tuple[int, str] | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, hidden)
        self.net = nn.Sequential(nn.Linear(4 + hidden, hidden), nn.SiLU(), nn.Dropout(0.1), nn.Linear(hidden, 3))
        self.bad_at = bad_at
        self.calls = 0

    def loss(self, batch, generator: torch.Generator | None = None) -> torch.Tensor:
        t = torch.rand(batch.num_graphs, 1, generator=generator, device=batch.x_w.device)[batch.graph]
        noise = torch.randn(batch.x_w.shape, generator=generator, device=batch.x_w.device)
        x_t = (1 - t) * batch.x_w + t * batch.x_s + 0.1 * noise
        v = self.net(torch.cat([x_t / 10, t, self.embed(batch.z)], dim=-1))
        loss = ((v - (batch.x_s - batch.x_w) / 10) ** 2).mean()
        if self.training:
            self.calls += 1
            if self.bad_at is not None and self.calls == self.bad_at[0]:
                if self.bad_at[1] == "crash":
                    raise SimulatedCrash(f"killed at call {self.calls}")
                w = self.net[0].weight[0, 0]
                loss = loss * math.nan if self.bad_at[1] == "nan" else loss + torch.sqrt(w - w.detach())
        return loss


def tiny(config: TrainConfig) -> nn.Module:
    return TinyFlow()


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=BATCH, lr=3e-3, warmup_steps=2, ema_decay=0.9, log_every=2, seed=7,
                threads=1)
    return TrainConfig(**{**base, **kw})


def read_log(run: Path) -> list[dict]:
    with open(run / LOG, newline="") as f:
        return list(csv.DictReader(f))


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def ckpt(run: Path, name: str = CHECKPOINT) -> dict:
    return torch.load(run / name, map_location="cpu", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), ("optimizer", i, k)
    assert a["scheduler"] == b["scheduler"]
    assert (a["epoch"], a["step"], a["batch_in_epoch"]) == (b["epoch"], b["step"], b["batch_in_epoch"])


# ----------------------------------------------------------------------------------------------- config


def test_config_round_trip(tmp_path: Path) -> None:
    c = cfg(grad_clip=None, max_steps=5, schedule_epochs=9)
    d = c.to_dict()
    assert d["model"] == c.model.to_dict()
    again = TrainConfig.from_dict(json.loads(json.dumps(d)))
    assert again == c and again.to_dict() == d
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 3, "lr": 0.01, "model": {"method": "ve"}}))
    loaded = load_config(str(path), seed=5, method=None, epochs=None)
    assert (loaded.epochs, loaded.lr, loaded.seed, loaded.model.method) == (3, 0.01, 5, "ve")
    assert loaded.batch_size == TrainConfig().batch_size  # defaults fill the rest
    assert load_config(None, method="vp").model.method == "vp"
    assert load_config(str(path), method="lerp").model.method == "lerp"  # overrides beat the file
    assert load_config(str(path), fresh_noise=True).fresh_noise and not loaded.fresh_noise
    from crystalflow.cli import make_parser

    assert make_parser().parse_args(["train", "d", "-o", "r", "--fresh-noise"]).fresh_noise
    with pytest.raises(UserError, match="unknown"):
        TrainConfig.from_dict({"epochs": 1, "bogus": 2})
    with pytest.raises(UserError, match="unknown"):
        load_config(None, bogus=1)
    with pytest.raises(UserError):
        load_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="JSON"):
        load_config(str(tmp_path / "bad.json"))
    with pytest.raises(UserError):
        TrainConfig(epochs=0)
    with pytest.raises(UserError, match="model"):
        TrainConfig.from_dict({"model": {"method": "bogus"}})


# ----------------------------------------------------------------------------------------------- runs


def test_run_writes_checkpoint_config_log(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train(str(dataset), str(run), cfg(epochs=2), progress=False, model_fn=tiny)
    for name in (CHECKPOINT, BEST, CONFIG, LOG):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp*"))
    assert summary["epochs"] == 2 and summary["steps"] == 2 * STEPS_PER_EPOCH
    assert math.isfinite(summary["best_val_loss"]) and math.isfinite(summary["last_val_loss"])
    assert TrainConfig.from_dict(json.loads((run / CONFIG).read_text())) == cfg(epochs=2)
    rows = read_log(run)
    assert list(rows[0]) == LOG_COLUMNS
    epoch_rows = [r for r in rows if r["val_loss"]]
    assert [r["epoch"] for r in epoch_rows] == ["1", "2"]
    assert [int(r["step"]) for r in epoch_rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert len(rows) > len(epoch_rows)  # intra-epoch rows every log_every steps
    c = ckpt(run)
    assert c["epoch"] == 2 and c["step"] == 2 * STEPS_PER_EPOCH
    for key in ("model", "ema", "optimizer", "scheduler", "ranks", "history", "config"):
        assert key in c
    assert set(c["ranks"][0]["rng"]) >= {"torch", "numpy", "python", "loss_generator"}
    # EMA differs from the raw weights; load_model gives each
    ema, conf = load_model(str(run), "ema", model_fn=tiny)
    last, _ = load_model(str(run), "last", model_fn=tiny)
    best, _ = load_model(str(run), "best", model_fn=tiny)
    assert conf == cfg(epochs=2) and not ema.training
    assert all(torch.equal(p, c["ema"][k]) for k, p in ema.state_dict().items())
    assert all(torch.equal(p, c["model"][k]) for k, p in last.state_dict().items())
    assert all(torch.equal(p, ckpt(run, BEST)["ema"][k]) for k, p in best.state_dict().items())
    # an existing run is not overwritten without resume
    with pytest.raises(UserError, match="resume"):
        train(str(dataset), str(run), cfg(epochs=2), progress=False, model_fn=tiny)


def test_validation_is_deterministic_and_uses_ema(dataset: Path, tmp_path: Path) -> None:
    trainer = Trainer(str(dataset), str(tmp_path / "run"), cfg(epochs=1), progress=False, model_fn=tiny)
    summary = trainer.fit()
    rng = torch.get_rng_state()
    assert trainer.validate() == trainer.validate() == summary["last_val_loss"]
    assert torch.equal(rng, torch.get_rng_state())  # validation leaves the training randomness alone
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    assert trainer.validate() == summary["last_val_loss"]  # raw weights do not matter
    with torch.no_grad():
        for p in trainer.ema.module.parameters():
            p.add_(1.0)
    assert trainer.validate() != summary["last_val_loss"]


def test_resume_is_bit_for_bit(dataset: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(str(dataset), str(full), cfg(), progress=False, model_fn=tiny)
    # stopped after 2 of 4 epochs (the schedule still spans 4), then resumed
    part = tmp_path / "part"
    s1 = train(str(dataset), str(part), cfg(max_steps=2 * STEPS_PER_EPOCH), progress=False, model_fn=tiny)
    assert (s1["epochs"], s1["stopped_by"]) == (2, "max_steps")
    s2 = train(str(dataset), str(part), cfg(), resume=True, progress=False, model_fn=tiny)
    assert s2["epochs"] == 4 and s2["resumed_from_step"] == 2 * STEPS_PER_EPOCH
    assert_same_state(ckpt(full), ckpt(part))
    assert without_seconds(read_log(full)) == without_seconds(read_log(part))
    assert_same_state(ckpt(full, BEST), ckpt(part, BEST))


def test_fresh_noise_changes_inputs_and_resumes_bit_for_bit(dataset: Path, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    train(str(dataset), str(fixed), cfg(epochs=2), progress=False, model_fn=tiny)
    full = tmp_path / "full"
    train(str(dataset), str(full), cfg(fresh_noise=True), progress=False, model_fn=tiny)
    part = tmp_path / "part"
    train(str(dataset), str(part), cfg(fresh_noise=True, max_steps=2 * STEPS_PER_EPOCH), progress=False, model_fn=tiny)
    train(str(dataset), str(part), cfg(fresh_noise=True), resume=True, progress=False, model_fn=tiny)
    assert_same_state(ckpt(full), ckpt(part))
    # the first epochs' training losses differ from a run on the stored x_w (same seed, same order)
    loss = lambda run: [r["train_loss"] for r in read_log(run) if r["epoch"] in ("1", "2")]  # noqa: E731
    assert loss(full) != loss(fixed)


def test_resume_mid_epoch_and_extended_run(dataset: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(str(dataset), str(full), cfg(schedule_epochs=4), progress=False, model_fn=tiny)
    # stopped inside epoch 2, resumed
    mid = tmp_path / "mid"
    train(str(dataset), str(mid), cfg(schedule_epochs=4, max_steps=STEPS_PER_EPOCH + 1), progress=False,
          model_fn=tiny)
    assert ckpt(mid)["batch_in_epoch"] == 1
    train(str(dataset), str(mid), cfg(schedule_epochs=4), resume=True, progress=False, model_fn=tiny)
    assert_same_state(ckpt(full), ckpt(mid))
    assert without_seconds(read_log(full)) == without_seconds(read_log(mid))
    # a run of 2 epochs extended to 4 with --resume --epochs 4 (fixed schedule length)
    two = tmp_path / "two"
    train(str(dataset), str(two), cfg(epochs=2, schedule_epochs=4), progress=False, model_fn=tiny)
    train(str(dataset), str(two), cfg(epochs=4, schedule_epochs=4), resume=True, progress=False, model_fn=tiny)
    assert_same_state(ckpt(full), ckpt(two))
    assert without_seconds(read_log(full)) == without_seconds(read_log(two))


def test_crash_mid_epoch_resumes_from_step_checkpoint(dataset: Path, tmp_path: Path) -> None:
    """checkpoint_every saves inside epochs; a crash loses only the steps since, and resuming is exact."""
    full = tmp_path / "full"
    train(str(dataset), str(full), cfg(), progress=False, model_fn=tiny)
    run = tmp_path / "run"
    crash_call = 2 * STEPS_PER_EPOCH + 3  # third step of epoch 3; steps 2, 3, 4, 6, 8 are checkpointed
    with pytest.raises(SimulatedCrash):
        train(str(dataset), str(run), cfg(checkpoint_every=2), progress=False,
              model_fn=lambda c: TinyFlow(bad_at=(crash_call, "crash")))
    c = ckpt(run)
    assert (c["step"], c["epoch"], c["batch_in_epoch"]) == (8, 2, 2)
    train(str(dataset), str(run), cfg(checkpoint_every=2), resume=True, progress=False, model_fn=tiny)
    assert_same_state(ckpt(full), ckpt(run))
    assert without_seconds(read_log(full)) == without_seconds(read_log(run))


def test_resume_keeps_checkpoint_settings(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(str(dataset), str(run), cfg(epochs=1, lr=1e-3, schedule_epochs=3), progress=False, model_fn=tiny)
    with pytest.warns(UserWarning, match="keeping the checkpoint's lr"):
        summary = train(str(dataset), str(run), cfg(epochs=2, lr=5e-2), resume=True, progress=False, model_fn=tiny)
    assert summary["epochs"] == 2
    assert json.loads((run / CONFIG).read_text())["lr"] == 1e-3
    # a config from load_config only changes what it sets explicitly (here: nothing but epochs)
    explicit = load_config(None, epochs=3)
    summary = train(str(dataset), str(run), explicit, resume=True, progress=False, model_fn=tiny)
    assert summary["epochs"] == 3 and json.loads((run / CONFIG).read_text())["batch_size"] == BATCH


# ----------------------------------------------------------------------------------------------- failures


def _clusters(dataset: Path) -> dict[int, dict]:
    with open(dataset / "clusters.csv", newline="") as f:
        return {int(r["index"]): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("kind", ["nan", "inf_grad"])
def test_divergence_names_the_batch(dataset: Path, tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    bad_call = STEPS_PER_EPOCH + 2  # second step of epoch 2
    model_fn = lambda c: TinyFlow(bad_at=(bad_call, kind))  # noqa: E731
    with pytest.raises(TrainingDivergedError) as info:
        train(str(dataset), str(run), cfg(epochs=3), progress=False, model_fn=model_fn)
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert f"epoch 2, step {bad_call}" in msg
    assert ("loss = nan" if kind == "nan" else "gradient norm = inf") in msg
    named = re.findall(r"#(\d+) (\S+) sample (\d+)", msg)
    assert len(named) == BATCH
    rows = _clusters(dataset)
    for index, key, sample in named:
        assert rows[int(index)]["key"] == key and rows[int(index)]["sample"] == sample
        assert rows[int(index)]["split"] == "train"
    # the checkpoint of epoch 1 is intact and the log has no row of epoch 2
    c = ckpt(run)
    assert (c["epoch"], c["step"]) == (1, STEPS_PER_EPOCH)
    assert all(float(r["epoch"]) < 2 for r in read_log(run))


def test_checkpoint_never_half_written(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train(str(dataset), str(run), cfg(epochs=1, schedule_epochs=2), progress=False, model_fn=tiny)
    before = (run / CHECKPOINT).read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs) -> None:
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        train(str(dataset), str(run), cfg(epochs=2, schedule_epochs=2), resume=True, progress=False, model_fn=tiny)
    assert (run / CHECKPOINT).read_bytes() == before
    assert not list(run.glob("*.tmp*"))
    assert ckpt(run)["epoch"] == 1
    monkeypatch.setattr(torch, "save", real_save)
    summary = train(str(dataset), str(run), cfg(epochs=2, schedule_epochs=2), resume=True, progress=False,
                    model_fn=tiny)
    assert summary["epochs"] == 2 and ckpt(run)["epoch"] == 2


def test_empty_valid_split_falls_back_to_train(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", SMALL_CIFS[:2])  # 2 crystals: train only
    with pytest.warns(UserWarning, match="valid split"):
        summary = train(str(data), str(tmp_path / "run"), cfg(epochs=1, batch_size=2), progress=False,
                        model_fn=tiny)
    assert math.isfinite(summary["last_val_loss"])


def test_cpu_is_never_required_to_be_cuda(dataset: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(UserError, match="CUDA"):
        train(str(dataset), str(tmp_path / "run"), cfg(device="cuda"), progress=False, model_fn=tiny)
    summary = train(str(dataset), str(tmp_path / "auto"), cfg(epochs=1, device="auto"), progress=False,
                    model_fn=tiny)
    assert summary["device"] == "cpu"


# ----------------------------------------------------------------------------------------------- real model


def test_real_model_trains_and_loads(dataset: Path, tmp_path: Path) -> None:
    """build_model(ModelConfig) end to end: one short epoch, then load_model for sampling."""
    model_cfg = models.ModelConfig.from_dict({"method": "lerp", "backbone": {"variant": "fast", "hidden": 16, "layers": 1}})
    run = tmp_path / "run"
    config = cfg(epochs=1, max_steps=2, model=model_cfg)
    summary = train(str(dataset), str(run), config, progress=False)
    assert summary["steps"] == 2
    model, loaded = load_model(str(run), "ema")
    assert loaded.model == model_cfg and isinstance(model, nn.Module)

