"""The run directory of a training: its files, its checkpoints and the trained models in them.

A run directory holds::

    config.json     the full :class:`~crystalflow.training.config.TrainConfig` (model settings nested under "model")
    checkpoint.pt   the state at the end of the last finished epoch (or of the last step that
                    ``checkpoint_every`` or ``max_steps`` asked for)
    best.pt         the checkpoint of the epoch with the lowest validation loss
    log.csv         epoch, step, train_loss, val_loss, lr, seconds (see :data:`LOG_COLUMNS`)

Checkpoints are written atomically (:func:`save_checkpoint_file`), so a checkpoint that exists is whole.
:func:`load_model` reads a trained model back for inference (no training code needed),
:func:`export_model` writes an inference-only copy (config + EMA weights).
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable

import torch
from torch import nn

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import atomic_open, write_json
from crystalflow.common.vocabulary import DEFAULT_EXPORT_WEIGHTS, DEFAULT_WEIGHTS, EXPORT_WEIGHTS, WEIGHTS
from crystalflow.training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
CONFIG = "config.json"
LOG = "log.csv"
LOG_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "lr", "seconds"]
CHECKPOINT_FORMAT = 1
#: keys every crystalflow checkpoint holds (exported models too)
_CHECKPOINT_KEYS = ("config", "ema")
#: what torch.load raises on a truncated, corrupt or foreign file (junk bytes, cut files, flipped bytes)
_UNREADABLE_CHECKPOINT = (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, LookupError)
#: characters of torch's message kept in the one-line error
_MAX_DETAIL = 120


def save_checkpoint_file(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically: a checkpoint file is whole or not there."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str, device: torch.device | str = "cpu", mmap: bool = False) -> dict:
    """The checkpoint dict at ``path`` (``torch.load``, weights only), or :class:`UserError` naming the file.

    A missing, truncated or corrupt file, or one that is not a crystalflow checkpoint (a dict with the
    training config and the EMA weights), is a one-line error instead of torch's own text.
    """
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}") from None
    except _UNREADABLE_CHECKPOINT as exc:
        detail = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:_MAX_DETAIL]
        raise UserError(f"cannot read checkpoint {path} (truncated or corrupt?): {type(exc).__name__}"
                        + (f": {detail}" if detail else "")) from None
    if not isinstance(ckpt, dict) or not all(key in ckpt for key in _CHECKPOINT_KEYS):
        raise UserError(f"{path} is not a crystalflow checkpoint (it lacks {' and '.join(_CHECKPOINT_KEYS)})")
    return ckpt


def model_for(config: TrainConfig) -> nn.Module:
    """A new, untrained model of the architecture ``config.model`` describes."""
    from crystalflow.flow.model import build_model

    return build_model(config.model)


def load_model(
    run_dir: str,
    which: str = DEFAULT_WEIGHTS,
    model_fn: Callable[[TrainConfig], nn.Module] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, TrainConfig]:
    """A trained model (in eval mode) and its config from a run directory (or a checkpoint file).

    ``which``: ``ema`` (EMA weights of the last checkpoint, the default), ``best`` (EMA weights of best.pt,
    the epoch of lowest validation loss) or ``last`` (raw weights of the last checkpoint).

    Example::

        from crystalflow import load_model

        model, config = load_model("run", which="best")  # a run directory, or a checkpoint file
        print(config.model.method, sum(p.numel() for p in model.parameters()))
    """
    if which not in WEIGHTS:
        raise UserError(f"which must be {', '.join(WEIGHTS[:-1])} or {WEIGHTS[-1]}, not {which!r}")
    if os.path.isdir(run_dir):
        path = os.path.join(run_dir, BEST if which == "best" else CHECKPOINT)
    elif os.path.isfile(run_dir):
        path = run_dir
    else:
        raise UserError(f"no training run at {run_dir!r}")
    ckpt = load_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    key = "model" if which == "last" else "ema"
    if key not in ckpt:
        raise UserError(f"{path} holds no raw weights (an exported model keeps only the EMA ones): use ema")
    model = (model_fn or model_for)(config)
    try:
        model.load_state_dict(ckpt[key])
    except RuntimeError:  # torch lists every missing and unexpected tensor
        raise UserError(f"the weights in {path} do not fit the model its config describes "
                        "(a checkpoint of another crystalflow version?)") from None
    return model.to(device).eval(), config


def export_model(run_dir: str, out_dir: str, which: str = DEFAULT_EXPORT_WEIGHTS) -> str:
    """Write an inference-only model (config + EMA weights, no optimizer state) to ``out_dir``.

    The result (``checkpoint.pt`` + ``config.json``) loads with :func:`load_model` and is what the
    package ships as its default model. ``which``: ``best`` (lowest validation loss) or ``ema`` (last).
    """
    if which not in EXPORT_WEIGHTS:
        raise UserError(f"which must be {' or '.join(EXPORT_WEIGHTS)}, not {which!r}")
    path = run_dir if os.path.isfile(run_dir) else os.path.join(run_dir, BEST if which == "best" else CHECKPOINT)
    ckpt = load_checkpoint(path)
    prepare_output_dir(out_dir)
    slim = {"config": ckpt["config"], "ema": ckpt["ema"], "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
            "best_val_loss": ckpt.get("best_val_loss")}
    save_checkpoint_file(slim, os.path.join(out_dir, CHECKPOINT))
    write_json(os.path.join(out_dir, CONFIG), ckpt["config"])
    return out_dir
