"""Where and with which seeds a run computes: the device choice and the seeding, for training and inference."""
from __future__ import annotations

import random

import numpy as np
import torch

from crystalflow.common.errors import UserError
from crystalflow.training.distributed import DistInfo

_SEED_BITS = 63


def derive_seed(*keys: int) -> int:
    """A well-mixed non-negative 63-bit seed from integers (independent streams for (seed, purpose, rank))."""
    state = np.random.SeedSequence([int(k) % (1 << _SEED_BITS) for k in keys]).generate_state(1, np.uint64)[0]
    return int(state) >> (64 - _SEED_BITS)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) global random generators."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def select_device(name: str, info: DistInfo = DistInfo()) -> torch.device:
    """The device to run on: ``auto`` picks CUDA when available; each distributed process takes its local GPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but CUDA is not available (set device to auto or cpu)")
    if name not in ("auto", "cuda"):
        return torch.device(name)
    if not info.enabled:
        return torch.device("cuda", torch.cuda.current_device())
    if info.local_rank >= torch.cuda.device_count():
        raise UserError(
            f"process {info.rank} (local rank {info.local_rank}) has no GPU of its own: "
            f"{torch.cuda.device_count()} visible; start at most that many processes per node or use device cpu"
        )
    return torch.device("cuda", info.local_rank)
