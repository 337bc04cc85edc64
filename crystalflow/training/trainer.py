"""Training a crystallization model on a dataset directory: resumable bit-for-bit, optionally data-parallel.

:func:`train` writes a run directory (its files: :mod:`crystalflow.training.checkpoint`; its settings:
:mod:`crystalflow.training.config`). Each checkpoint holds the model, its EMA, the optimizer, the LR
scheduler, the counters, the log rows and the random states of every process, so ``train(..., resume=True)``
continues exactly where the run stopped: an interrupted run and its resumption give the same weights and the
same log (but for the wall-clock ``seconds``) as one uninterrupted run, on the same hardware, software and
process count. Why that holds:

- the shuffle order of epoch ``e`` is a function of (seed, e) alone (``DistributedSampler.set_epoch``), and a
  run stopped inside an epoch skips the batches it already trained on;
- the noise and times t of the loss come from one ``torch.Generator`` per process whose state is saved, as
  are the global torch / CUDA / numpy / python random states;
- validation draws from its own generator seeded with a constant (:data:`VAL_SEED`) per validation batch,
  inside ``torch.random.fork_rng``, so it neither depends on nor disturbs the training randomness, and val
  losses are comparable across epochs (and runs);
- the cosine schedule spans ``schedule_epochs`` (default ``epochs``); ``max_steps`` only stops early and
  does not change the schedule.

Distributed training (``torchrun --nproc_per_node=K -m crystalflow train ...`` or
:func:`crystalflow.training.distributed.launch`): one process per device, ``batch_size`` clusters per process and
step, gradients averaged by ``DistributedDataParallel`` around a :class:`LossModule` whose ``forward`` is
the model's ``loss``; only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import sys
import time
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import copy_file, write_json, write_text
from crystalflow.common.version import __version__
from crystalflow.data.dataset import Batch, ClusterDataset, FreshNoiseDataset, collate, dataset_noise
from crystalflow.data.shards import ClusterRecord
from crystalflow.training import distributed
from crystalflow.training.checkpoint import (
    BEST,
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    CONFIG,
    LOG,
    LOG_COLUMNS,
    load_checkpoint,
    model_for,
    save_checkpoint_file,
)
from crystalflow.training.config import RESUMABLE_FIELDS, TrainConfig, merge_for_resume
from crystalflow.training.device import derive_seed, seed_everything, select_device

#: fixed seed of the validation noise, independent of the training seed
VAL_SEED = 20240607
#: the EMA decay ramps up as min(ema_decay, (1 + step) / (EMA_WARMUP + step)) so early EMAs are not the init
EMA_WARMUP = 10
#: independent random streams derived from the seed
_STREAM_GLOBAL, _STREAM_LOSS, _STREAM_LOADER = 1, 2, 3
_SECONDS_DIGITS = 2
_EPOCH_DIGITS = 4  #: fractional epoch of intra-epoch log rows
_MAX_NAMES_IN_ERROR = 8
#: cuBLAS setting that deterministic CUDA matmuls need
_CUBLAS_DETERMINISTIC = ":4096:8"


class TrainingDivergedError(UserError):
    """The loss or the gradient became NaN or infinite; nothing was trained on it and no checkpoint was written."""



def _record_label(meta: dict, position: int) -> dict:
    """What an error message says about one cluster: its dataset index and source name."""
    name = meta.get("key") or meta.get("name") or meta.get("source") or ""
    label = {"index": int(meta.get("index", position)), "name": str(name)}
    if "sample" in meta:
        label["sample"] = int(meta["sample"])
    return label


class _Indexed(Dataset):
    """Items ``(i, record)`` of a dataset, so a batch knows which clusters it holds."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[int, ClusterRecord]:
        return i, self.dataset[i]


def collate_with_meta(items: Sequence[tuple[int, ClusterRecord]]) -> tuple[Batch, list[dict]]:
    """:func:`crystalflow.data.dataset.collate` plus each cluster's label (dataset index, source name)."""
    return collate([r for _, r in items]), [_record_label(r.meta or {}, i) for i, r in items]


def _seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy and python seeds from the per-worker torch seed (itself seeded)."""
    seed = torch.initial_seed() % (1 << 32)
    np.random.seed(seed)
    random.seed(seed)


class LossModule(nn.Module):
    """``forward(batch, generator) = model.loss(batch, generator)``: the module DDP wraps.

    DDP synchronises gradients of what its ``forward`` computed, so the model's ``loss`` must run through
    the wrapper's ``forward`` (calling ``ddp.module.model.loss`` directly would skip the all-reduce).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.loss(batch, generator=generator)


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied), kept as a module.

    ``average`` is a second instance of the model's architecture (not a deepcopy: a model may hold bound or
    compiled methods that a deepcopy would leave pointing at the original); it starts as a copy of ``model``.
    """

    def __init__(self, model: nn.Module, average: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = average.eval()
        self.module.load_state_dict(model.state_dict())
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model`` after optimizer step number ``step`` (0-based)."""
        decay = min(self.decay, (1.0 + step) / (EMA_WARMUP + step))
        for avg, p in zip(self.module.parameters(), model.parameters()):
            avg.lerp_(p.detach(), 1.0 - decay)
        for avg, b in zip(self.module.buffers(), model.buffers()):
            avg.copy_(b)


#: warmup never takes more than 1/MAX_WARMUP_FRACTION of the scheduled steps (short runs)
MAX_WARMUP_FRACTION = 10


def cosine_lambda(total_steps: int, warmup_steps: int, final_ratio: float) -> Callable[[int], float]:
    """LR factor: linear warmup to 1 over ``warmup_steps``, then cosine down to ``final_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _csv_text(rows: list[dict]) -> str:
    lines = [",".join(LOG_COLUMNS)]
    lines += [",".join(str(r[c]) for c in LOG_COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


def _rng_state(loss_gen: torch.Generator, device: torch.device) -> dict:
    """The random states of this process, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
        "loss_generator": loss_gen.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, loss_gen: torch.Generator, device: torch.device) -> None:
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    loss_gen.set_state(state["loss_generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuples(x: Any) -> Any:
    """Lists back to tuples (python's random state must be nested tuples)."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


@contextlib.contextmanager
def _torch_settings(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run, restored afterwards."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    if config.threads:
        torch.set_num_threads(config.threads)
    # CPU kernels are deterministic for a fixed thread count already; the switch matters on CUDA only (and
    # costs seconds: it imports torch._inductor)
    switch = config.deterministic and device.type == "cuda"
    if switch:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_DETERMINISTIC)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if switch:
            torch.use_deterministic_algorithms(det, warn_only=det_warn)
            torch.backends.cudnn.benchmark = benchmark


# ----------------------------------------------------------------------------------------------- trainer


class Trainer:
    """One training run (one process of it when distributed); :func:`train` is the usual entry point."""

    def __init__(
        self,
        dataset_dir: str,
        out_dir: str,
        config: TrainConfig,
        resume: bool = False,
        progress: bool = True,
        model_fn: Callable[[TrainConfig], nn.Module] | None = None,
    ) -> None:
        self.dataset_dir = dataset_dir
        self.out_dir = out_dir
        self.config = config
        self.resume = resume
        self.progress = progress
        self.model_fn = model_fn or model_for
        self.info = distributed.env_info()
        self.device = select_device(config.device, self.info)
        self.ckpt_path = os.path.join(out_dir, CHECKPOINT)
        self.best_path = os.path.join(out_dir, BEST)
        self.log_path = os.path.join(out_dir, LOG)
        self.config_path = os.path.join(out_dir, CONFIG)
        # counters and history (restored from the checkpoint when resuming)
        self.epoch = 0  #: finished epochs
        self.batch_in_epoch = 0  #: steps done in the unfinished epoch
        self.step = 0  #: optimizer steps in all
        self.history: list[dict] = []
        self.best_val = math.inf
        self.best_epoch: int | None = None
        self.last_val: float | None = None
        self.seconds_before = 0.0
        self.acc = {"epoch_sum": 0.0, "epoch_n": 0, "win_sum": 0.0, "win_n": 0}
        self.resumed_from: int | None = None
        self.saved_epoch = 0  #: the epoch of the checkpoint on disk
        self.last_lr = math.nan  #: the learning rate of the last step
        self.t_start = time.time()

    # -- setup ------------------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        if self.info.is_main:
            warnings.warn(message, stacklevel=3)

    def _read_checkpoint(self) -> dict | None:
        exists = os.path.exists(self.ckpt_path)
        if exists and not self.resume:
            raise UserError(
                f"{self.out_dir} already holds a training run ({CHECKPOINT}); pass --resume to continue it "
                "or choose another output directory"
            )
        if not exists:
            if self.resume:
                self._warn(f"nothing to resume in {self.out_dir} (no {CHECKPOINT}): starting a new run")
            return None
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise UserError(
                f"{self.ckpt_path} has checkpoint format {ckpt.get('format')}, expected {CHECKPOINT_FORMAT}"
            )
        saved = TrainConfig.from_dict(ckpt["config"])
        self.config, ignored = merge_for_resume(saved, self.config)
        if ignored:
            self._warn(
                f"resuming {self.out_dir}: keeping the checkpoint's {', '.join(ignored)} "
                f"(a resumed run may change only {', '.join(RESUMABLE_FIELDS)})"
            )
        return ckpt

    def _datasets(self) -> tuple[Dataset, Dataset]:
        train_ds: Dataset = ClusterDataset(self.dataset_dir, "train")
        if len(train_ds) == 0:
            raise UserError(f"the train split of {self.dataset_dir} is empty")
        val_ds = ClusterDataset(self.dataset_dir, "valid")
        if len(val_ds) == 0:
            self._warn(f"the valid split of {self.dataset_dir} is empty: validating on the train split")
            val_ds = train_ds
        if self.config.fresh_noise:
            train_ds = FreshNoiseDataset(train_ds, dataset_noise(self.dataset_dir), self.config.seed)
        return train_ds, val_ds

    def _dataset_info(self) -> dict:
        return {"dir": os.path.abspath(self.dataset_dir), "train": len(self.train_ds), "valid": len(self.val_ds)}

    def setup(self) -> None:
        """Build data, model, EMA, optimizer and schedule; restore a checkpoint when resuming."""
        ckpt = self._read_checkpoint()
        cfg = self.config
        self.train_ds, self.val_ds = self._datasets()
        if self.info.is_main:
            prepare_output_dir(self.out_dir)
        self.sampler = DistributedSampler(
            self.train_ds, num_replicas=self.info.world_size, rank=self.info.rank, shuffle=True, seed=cfg.seed,
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        seed_everything(cfg.seed)  # the same initial weights in every process
        self.model = self.model_fn(cfg).to(self.device)
        self.ema = EMA(self.model, self.model_fn(cfg).to(self.device), cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.total_steps = (cfg.schedule_epochs or cfg.epochs) * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            cosine_lambda(self.total_steps, min(cfg.warmup_steps, self.total_steps // MAX_WARMUP_FRACTION),
                          cfg.final_lr_ratio),
        )
        self.loss_module: nn.Module = LossModule(self.model)
        if self.info.enabled:
            self.loss_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                static_graph=True,  # the same parameters take part in every step (some may never): no per-step search
            )
        self.loss_gen = torch.Generator(device=self.device)
        self.loss_gen.manual_seed(derive_seed(cfg.seed, _STREAM_LOSS, self.info.rank))
        seed_everything(derive_seed(cfg.seed, _STREAM_GLOBAL, self.info.rank))
        if ckpt is not None:
            self._restore(ckpt)
        if self.info.is_main:
            write_json(self.config_path, self.config.to_dict())
            write_text(self.log_path, _csv_text(self.history))

    def _restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.module.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.batch_in_epoch, self.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        self.history = list(ckpt["history"])
        self.best_val = ckpt["best_val_loss"] if ckpt["best_val_loss"] is not None else math.inf
        self.best_epoch, self.last_val = ckpt["best_epoch"], ckpt["last_val_loss"]
        self.seconds_before = ckpt["seconds"]
        self.resumed_from = self.step
        if ckpt["dataset"]["train"] != len(self.train_ds):
            self._warn(
                f"the checkpoint was trained on {ckpt['dataset']['train']} train clusters "
                f"({ckpt['dataset']['dir']}), this dataset has {len(self.train_ds)}"
            )
        if ckpt["total_steps"] != self.total_steps:
            self._warn(
                f"the LR schedule now spans {self.total_steps} steps instead of {ckpt['total_steps']} "
                "(set schedule_epochs to keep it): the run will differ from an uninterrupted one"
            )
        per_rank = ckpt["ranks"]
        if len(per_rank) == self.info.world_size:
            state = per_rank[self.info.rank]
            _set_rng_state(state["rng"], self.loss_gen, self.device)
            self.acc = dict(state["acc"])
        else:
            self._warn(
                f"the checkpoint was written by {len(per_rank)} processes, this run has {self.info.world_size}: "
                "random streams restart from the seed and the unfinished epoch's running loss is lost"
            )
            if self.batch_in_epoch:
                self._warn("the batches of the unfinished epoch are split differently across processes now")

    # -- training -----------------------------------------------------------------------------------------

    def _loader(
        self, dataset: Dataset, batches: list[list[int]], generator: torch.Generator | None = None
    ) -> DataLoader:
        """Batches of ``(Batch, labels)`` in the given index lists (the caller decides order and sharding)."""
        workers = self.config.num_workers
        return DataLoader(
            _Indexed(dataset), batch_sampler=batches, collate_fn=collate_with_meta, num_workers=workers,
            generator=generator, worker_init_fn=_seed_worker if workers else None,
        )

    def _epoch_batches(self) -> list[list[int]]:
        """This process's batches of the current epoch, without those already trained on."""
        self.sampler.set_epoch(self.epoch)
        if isinstance(self.train_ds, FreshNoiseDataset):
            self.train_ds.set_epoch(self.epoch)
        order = list(self.sampler)
        bs = self.config.batch_size
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        return batches[self.batch_in_epoch :]

    def _check_finite(self, what: str, value: torch.Tensor, labels: list[dict]) -> None:
        """Raise :class:`TrainingDivergedError` in every process when ``value`` is not finite in any."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(value).all()) else 1.0], dtype=torch.float64,
                           device=self.device)
        if not distributed.active():
            if bad.item():
                self._diverged(what, [(self.info.rank, float(value), labels)])
            return
        distributed.all_reduce_sum(bad)
        if bad.item():
            mine = (self.info.rank, float(value), labels) if not bool(torch.isfinite(value).all()) else None
            self._diverged(what, [x for x in distributed.all_gather_object(mine) if x is not None])

    def _diverged(self, what: str, culprits: list[tuple[int, float, list[dict]]]) -> None:
        parts = []
        for rank, value, labels in culprits:
            names = ", ".join(
                f"#{lab['index']} {lab['name']}" + (f" sample {lab['sample']}" if "sample" in lab else "")
                for lab in labels[:_MAX_NAMES_IN_ERROR]
            )
            more = f" and {len(labels) - _MAX_NAMES_IN_ERROR} more" if len(labels) > _MAX_NAMES_IN_ERROR else ""
            where = f" on rank {rank}" if self.info.enabled else ""
            parts.append(f"{what} = {value}{where} for the batch of clusters [{names}{more}]")
        kept = (f"the last good checkpoint ({self.ckpt_path}, epoch {self.saved_epoch}) is unchanged"
                if os.path.exists(self.ckpt_path) else "no checkpoint was written")
        raise TrainingDivergedError(
            f"training diverged at epoch {self.epoch + 1}, step {self.step + 1}: {'; '.join(parts)}; "
            f"nothing was trained on it and {kept}. Lower lr, set grad_clip, or check those clusters"
        )

    def _train_step(self, batch: Batch, labels: list[dict]) -> float:
        batch = batch.to(self.device)
        loss = self.loss_module(batch, self.loss_gen)
        self._check_finite("loss", loss.detach(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self._check_finite("gradient norm", grad_norm.detach(), labels)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return float(loss.detach())

    def _reduced_mean(self, total: float, count: float) -> float:
        t = distributed.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64, device=self.device))
        return float(t[0] / t[1]) if t[1] > 0 else math.nan

    def _row(self, epoch: float | int, train_loss: float, val_loss: float | None) -> dict:
        return {
            "epoch": epoch, "step": self.step, "train_loss": repr(train_loss),
            "val_loss": "" if val_loss is None else repr(val_loss), "lr": repr(self.last_lr),
            "seconds": round(self.seconds_before + time.time() - self.t_start, _SECONDS_DIGITS),
        }

    def _append_row(self, row: dict) -> None:
        self.history.append(row)
        if self.info.is_main:
            with open(self.log_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=LOG_COLUMNS).writerow(row)

    def _stop_requested(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def _run_epoch(self) -> bool:
        """Train on the rest of the current epoch; True when it finished (False: stopped at max_steps)."""
        cfg = self.config
        batches = self._epoch_batches()
        loader_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, _STREAM_LOADER, self.epoch, self.info.rank))
        bar = tqdm(
            total=self.steps_per_epoch, initial=self.batch_in_epoch, unit="batch", leave=False, file=sys.stderr,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not (self.progress and self.info.is_main),
        )
        self.model.train()
        for batch, labels in self._loader(self.train_ds, batches, loader_gen):
            loss = self._train_step(batch, labels)
            weight = batch.num_graphs
            for k in ("epoch", "win"):
                self.acc[f"{k}_sum"] += loss * weight
                self.acc[f"{k}_n"] += weight
            self.batch_in_epoch += 1
            bar.update(1)
            bar.set_postfix(loss=f"{self.acc['win_sum'] / max(1, self.acc['win_n']):.4g}",
                            lr=f"{self.last_lr:.3g}", refresh=False)
            last = self.batch_in_epoch == self.steps_per_epoch
            if cfg.log_every and self.step % cfg.log_every == 0 and not last:
                mean = self._reduced_mean(self.acc["win_sum"], self.acc["win_n"])
                self.acc["win_sum"], self.acc["win_n"] = 0.0, 0
                self._append_row(self._row(round(self.step / self.steps_per_epoch, _EPOCH_DIGITS), mean, None))
            if self._stop_requested() and not last:
                bar.close()
                return False
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not last:
                self.save_checkpoint()
        bar.close()
        return True

    @torch.no_grad()
    def validate(self) -> float:
        """Mean validation loss of the EMA weights; the same noise at every call (and any process count)."""
        model = self.ema.module.eval()
        bs = self.config.batch_size
        n = len(self.val_ds)  # type: ignore[arg-type]
        batches = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
        mine = list(range(self.info.rank, len(batches), self.info.world_size))
        total = torch.zeros(2, dtype=torch.float64)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            loader = self._loader(self.val_ds, [batches[b] for b in mine])
            for b, (batch, _) in zip(mine, loader):
                gen = torch.Generator(device=self.device).manual_seed(derive_seed(VAL_SEED, b))
                loss = model.loss(batch.to(self.device), generator=gen)
                total += torch.tensor([float(loss) * batch.num_graphs, batch.num_graphs], dtype=torch.float64)
        return self._reduced_mean(float(total[0]), float(total[1]))

    def _end_of_epoch(self) -> None:
        cfg = self.config
        self.epoch += 1
        self.batch_in_epoch = 0
        val = None
        if self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs:
            val = self.last_val = self.validate()
        train_loss = self._reduced_mean(self.acc["epoch_sum"], self.acc["epoch_n"])
        self.acc = {"epoch_sum": 0.0, "epoch_n": 0, "win_sum": 0.0, "win_n": 0}
        row = self._row(self.epoch, train_loss, val)
        self._append_row(row)
        improved = val is not None and val < self.best_val
        if improved:
            self.best_val, self.best_epoch = val, self.epoch
        self.save_checkpoint(best=improved)
        if self.progress and self.info.is_main:
            val_text = f" val {val:.4g}" if val is not None else ""
            tqdm.write(
                f"epoch {self.epoch}/{cfg.epochs} step {self.step} train {train_loss:.4g}{val_text} "
                f"lr {float(row['lr']):.3g} ({row['seconds']:.0f} s)" + (" *best*" if improved else ""),
                file=sys.stderr,
            )

    def checkpoint_state(self) -> dict:
        """Everything :meth:`_restore` needs (rank 0's view plus every process's random state); {} elsewhere.

        Every process must call it (it gathers the random states).
        """
        ranks = distributed.all_gather_object(
            {"rng": _rng_state(self.loss_gen, self.device), "acc": dict(self.acc)}
        )
        if not self.info.is_main:
            return {}
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "history": list(self.history),
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "best_epoch": self.best_epoch,
            "last_val_loss": self.last_val,
            "seconds": self.seconds_before + time.time() - self.t_start,
            "world_size": self.info.world_size,
            "sampler": {"seed": self.config.seed, "epoch": self.epoch, "shuffle": True},
            "dataset": self._dataset_info(),
            "ranks": ranks,
        }

    def save_checkpoint(self, best: bool = False) -> None:
        """Write checkpoint.pt (and best.pt) atomically from rank 0; every process must call it."""
        state = self.checkpoint_state()
        if self.info.is_main:
            save_checkpoint_file(state, self.ckpt_path)
            if best:
                copy_file(self.ckpt_path, self.best_path)
        self.saved_epoch = self.epoch
        distributed.barrier()

    def fit(self) -> dict:
        """Set up, train until ``epochs`` (or ``max_steps``), return the summary."""
        self.t_start = time.time()
        self.setup()
        self.saved_epoch = self.epoch
        cfg = self.config
        stopped = "epochs"
        if self.epoch >= cfg.epochs:
            self._warn(f"{self.out_dir} has already trained {self.epoch} of {cfg.epochs} epochs: nothing to do")
        elif self._stop_requested():
            self._warn(
                f"{self.out_dir} has already trained max_steps={cfg.max_steps} steps: nothing to do "
                "(set a larger max_steps, or null, in the config to continue)"
            )
        while self.epoch < cfg.epochs:
            if self._stop_requested():
                stopped = "max_steps"
                break
            if self._run_epoch():
                self._end_of_epoch()
            else:
                self.save_checkpoint()
                stopped = "max_steps"
                break
        return self.summary(stopped)

    def summary(self, stopped: str) -> dict:
        """What the run produced, with the paths of its files."""
        if self.batch_in_epoch:  # stopped inside an epoch: its running mean
            last_train = self._reduced_mean(self.acc["epoch_sum"], self.acc["epoch_n"])
        else:
            last_train = next((float(r["train_loss"]) for r in reversed(self.history) if isinstance(r["epoch"], int)),
                              None)
        return {
            "run_dir": self.out_dir,
            "checkpoint": self.ckpt_path,
            "best_checkpoint": self.best_path if self.best_epoch is not None else None,
            "config": self.config_path,
            "log": self.log_path,
            "epochs": self.epoch,
            "steps": self.step,
            "stopped_by": stopped,
            "seconds": round(self.seconds_before + time.time() - self.t_start, _SECONDS_DIGITS),
            "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
            "best_epoch": self.best_epoch,
            "last_val_loss": self.last_val,
            "last_train_loss": last_train,
            "device": str(self.device),
            "world_size": self.info.world_size,
            "resumed_from_step": self.resumed_from,
        }


def train(
    dataset_dir: str,
    out_dir: str,
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    model_fn: Callable[[TrainConfig], nn.Module] | None = None,
) -> dict:
    """Train on ``dataset_dir`` (train split; valid split for validation) into the run directory ``out_dir``.

    With ``resume``, continue from ``out_dir/checkpoint.pt`` with the checkpoint's settings, except the
    fields in :data:`RESUMABLE_FIELDS` that ``config`` sets (all of them for a config built in code, the
    explicitly given ones for one from :func:`load_config`). Under torchrun (``WORLD_SIZE > 1``) this joins
    the process group and trains data-parallel. ``model_fn`` replaces ``build_model(config.model)`` (tests).
    Returns a summary: best/last validation loss, epochs, steps, seconds, and the paths written.

    Example::

        from crystalflow import TrainConfig, train

        summary = train("cod17", "run", TrainConfig(epochs=4))
        print(summary["best_val_loss"], summary["checkpoint"])
    """
    trainer = Trainer(dataset_dir, out_dir, config, resume=resume, progress=progress, model_fn=model_fn)
    created = distributed.init(trainer.info, trainer.device)
    try:
        with _torch_settings(trainer.config, trainer.device):
            return trainer.fit()
    finally:
        if created:
            distributed.cleanup()
