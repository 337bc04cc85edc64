"""The settings of a training run: :class:`TrainConfig` (saved as the run's config.json) and how they are read.

:func:`load_config` layers defaults, a JSON file and command-line overrides; :func:`merge_for_resume`
decides what a resumed run takes from its checkpoint (everything but :data:`RESUMABLE_FIELDS`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crystalflow.common.checks import check_field_types
from crystalflow.common.errors import UserError

if TYPE_CHECKING:
    from crystalflow.flow.model import ModelConfig

#: TrainConfig fields a resumed run may change; all others come from the checkpoint
RESUMABLE_FIELDS = (
    "epochs", "max_steps", "log_every", "val_every", "checkpoint_every", "num_workers", "device", "threads",
)


def _default_model_config() -> "ModelConfig":
    from crystalflow.flow.model import ModelConfig

    return ModelConfig()


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved as config.json; ``model`` is the model's own config).

    Example::

        from crystalflow import ModelConfig, TrainConfig

        config = TrainConfig(epochs=20, batch_size=4, model=ModelConfig(method="lerp"))
        same = TrainConfig.from_dict(config.to_dict())
    """

    epochs: int = 100
    batch_size: int = 8  #: clusters per step and process
    lr: float = 1e-3
    weight_decay: float = 0.0  #: AdamW decoupled weight decay (0: Adam)
    grad_clip: float | None = 1.0  #: max global gradient norm (None or 0: no clipping)
    ema_decay: float = 0.999
    warmup_steps: int = 100  #: linear LR warmup before the cosine decay (at most a tenth of the run)
    final_lr_ratio: float = 0.01  #: the cosine ends at lr * final_lr_ratio
    schedule_epochs: int | None = None  #: length of the cosine schedule (None: epochs)
    seed: int = 0
    num_workers: int = 0  #: DataLoader worker processes
    #: draw the training inputs x_w anew from x_s every epoch with the dataset's noise model (validation keeps
    #: the stored x_w); see :class:`crystalflow.data.dataset.FreshNoiseDataset`
    fresh_noise: bool = False
    log_every: int = 50  #: steps between intra-epoch log rows (0: one row per epoch)
    val_every: int = 1  #: epochs between validations (the last epoch is always validated)
    checkpoint_every: int = 0  #: also checkpoint every this many steps inside epochs (0: at epoch ends only)
    device: str = "auto"  #: auto (cuda if available), cpu or cuda
    threads: int | None = None  #: torch CPU threads (None: torch's default)
    max_steps: int | None = None  #: stop after this many optimizer steps in all (the schedule is unchanged)
    deterministic: bool = True  #: on CUDA: torch.use_deterministic_algorithms(True, warn_only=True) while training
    model: "ModelConfig" = field(default_factory=_default_model_config)
    #: keys set explicitly by :func:`load_config` (file or overrides); None when built in code
    explicit: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "val_every": self.val_every}
        for name, value in positive.items():
            if int(value) < 1:
                raise UserError(f"{name} must be >= 1, got {value}")
        for name in ("schedule_epochs", "max_steps", "threads"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise UserError(f"{name} must be >= 1 or null, got {value}")
        if self.lr <= 0 or self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip < 0):
            raise UserError("lr must be > 0, weight_decay and grad_clip >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if min(self.warmup_steps, self.num_workers, self.log_every, self.checkpoint_every) < 0:
            raise UserError("warmup_steps, num_workers, log_every and checkpoint_every must be >= 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise UserError(f"device must be auto, cpu or cuda[:N], not {self.device!r}")

    def to_dict(self) -> dict:
        """Plain, JSON-ready dict (the model config nested under "model")."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init and f.name != "model"}
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error."""
        from crystalflow.flow.model import ModelConfig

        if not isinstance(d, dict):
            raise UserError(f"training settings must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown training setting(s): {', '.join(unknown)}")
        try:
            check_field_types(cls, d)
        except TypeError as exc:
            raise UserError(f"bad training setting: {exc}") from None
        kwargs = dict(d)
        if "model" in kwargs and not isinstance(kwargs["model"], ModelConfig):
            if not isinstance(kwargs["model"], dict):
                raise UserError(f"bad model setting: must be a JSON object, got {kwargs['model']!r:.40}")
            try:
                kwargs["model"] = ModelConfig.from_dict(kwargs["model"])
            except (TypeError, ValueError) as exc:
                raise UserError(f"bad model setting: {exc}") from None
        return cls(**kwargs)


def load_config(path: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the JSON file at ``path`` (if any), then ``overrides`` whose value is not None.

    An override may name a TrainConfig field (``epochs``, ``seed``) or a model field (``method``).
    """
    from crystalflow.flow.model import ModelConfig

    data: dict = {}
    if path is not None:
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as exc:
            raise UserError(f"cannot read config {path!r}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"config {path!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("model", {}), dict):
            raise UserError(f"config {path!r} must be a JSON object (with an optional \"model\" object)")
    train_names = {f.name for f in dataclasses.fields(TrainConfig) if f.init}
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    model = dict(data.get("model", {}))
    top = {k: v for k, v in data.items() if k != "model"}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in train_names and key != "model":
            top[key] = value
        elif key in model_names:
            model[key] = value
        else:
            raise UserError(f"unknown setting {key!r}")
    config = TrainConfig.from_dict({**top, "model": {**_default_model_config().to_dict(), **model}})
    config.explicit = frozenset(top) | frozenset(f"model.{k}" for k in model)
    return config


def merge_for_resume(saved: TrainConfig, given: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """The checkpoint's config with the resumable fields the caller set; names of ignored differing settings."""
    explicit = given.explicit
    changes = {}
    ignored = []
    for f in dataclasses.fields(TrainConfig):
        if not f.init:
            continue
        mine, theirs = getattr(given, f.name), getattr(saved, f.name)
        if f.name in RESUMABLE_FIELDS:
            if explicit is None or f.name in explicit or f.name == "device":  # the device is where we run now
                changes[f.name] = mine
        elif f.name == "model":
            if mine != theirs and (explicit is None or any(k.startswith("model.") for k in explicit)):
                ignored.append("model")
        elif mine != theirs and (explicit is None or f.name in explicit):
            ignored.append(f.name)
    return dataclasses.replace(saved, **changes), ignored
