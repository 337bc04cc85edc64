"""Multi-process data-parallel helpers around :mod:`torch.distributed` (no-ops in a single process).

Two ways to start K training processes:

- ``torchrun --nproc_per_node=K -m crystalflow train DATA -o RUN``: torchrun sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`crystalflow.training.trainer.train` sees ``WORLD_SIZE > 1``
  and calls :func:`init` itself.
- :func:`launch` (tests, notebooks): spawns K local processes with those variables set and calls ``fn`` in
  each; returns what every rank returned.

The backend is ``nccl`` when training on CUDA and ``gloo`` on CPU.
"""
from __future__ import annotations

import os
import queue
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from crystalflow.common.errors import UserError

#: environment variables of the torchrun protocol
ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"
ENV_MASTER_ADDR, ENV_MASTER_PORT = "MASTER_ADDR", "MASTER_PORT"
LOCALHOST = "127.0.0.1"
_JOIN_POLL_S = 0.1  #: how often launch() checks on its processes
_RESULT_TIMEOUT_S = 30.0  #: wait for results still in the queue after every process exited


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes logs and checkpoints (rank 0)."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment variables (defaults: single process)."""
    try:
        world = int(os.environ.get(ENV_WORLD_SIZE, "1"))
        rank = int(os.environ.get(ENV_RANK, "0"))
        local = int(os.environ.get(ENV_LOCAL_RANK, str(rank)))
    except ValueError as exc:
        raise UserError(f"bad distributed environment variable: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"bad distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def is_available(backend: str = "gloo") -> bool:
    """Whether torch.distributed and ``backend`` can be used in this build of torch."""
    if not dist.is_available():
        return False
    return {"gloo": dist.is_gloo_available, "nccl": dist.is_nccl_available}.get(backend, lambda: False)()


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(info: DistInfo, device: torch.device) -> bool:
    """Join the process group described by ``info`` (if it is distributed and not joined yet).

    Returns True when this call created the group (so the caller should :func:`cleanup` it).
    """
    if not info.enabled or dist.is_initialized():
        return False
    backend = backend_for(device)
    if not is_available(backend):
        raise UserError(f"distributed training needs torch.distributed with the {backend} backend")
    os.environ.setdefault(ENV_MASTER_ADDR, LOCALHOST)
    if ENV_MASTER_PORT not in os.environ:
        raise UserError(f"{ENV_MASTER_PORT} is not set: start distributed training with torchrun or launch()")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return True


def cleanup() -> None:
    """Leave the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes in place (identity in a single process); returns ``t``."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all processes (no-op in a single process)."""
    if active():
        dist.barrier()


def free_port() -> int:
    """A TCP port that is free on this machine right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _spawned(local_rank: int, nprocs: int, port: int, fn: Callable[..., Any], args: tuple, results: Any) -> None:
    """Body of one process started by :func:`launch`: set the torchrun variables, run ``fn``, report its result."""
    os.environ.update({
        ENV_RANK: str(local_rank), ENV_WORLD_SIZE: str(nprocs), ENV_LOCAL_RANK: str(local_rank),
        ENV_MASTER_ADDR: LOCALHOST, ENV_MASTER_PORT: str(port),
    })
    try:
        results.put((local_rank, fn(*args)))
    finally:
        cleanup()


def launch(fn: Callable[..., Any], nprocs: int, *args: Any, timeout: float | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``nprocs`` new local processes that form one process group; return their results.

    ``fn`` and ``args`` must be picklable (``fn`` defined at module level). Inside, ``fn`` sees the torchrun
    variables, so it can call :func:`crystalflow.training.trainer.train` unchanged. An exception in any process is
    re-raised here (``torch.multiprocessing.ProcessRaisedException``) with that process's traceback, and the
    other processes are stopped. After ``timeout`` seconds all processes are stopped and TimeoutError raised.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = mp.start_processes(_spawned, args=(nprocs, free_port(), fn, args, results), nprocs=nprocs,
                               join=False, start_method="spawn")
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list[Any] = [None] * nprocs
    received = 0

    def drain(block: bool) -> None:
        nonlocal received
        while received < nprocs:
            try:
                rank, value = results.get(timeout=_RESULT_TIMEOUT_S) if block else results.get_nowait()
            except queue.Empty:
                return
            out[rank] = value
            received += 1

    while not procs.join(timeout=_JOIN_POLL_S):  # drain while waiting: a full pipe would block a child's exit
        drain(block=False)
        if deadline is not None and time.monotonic() > deadline:
            for p in procs.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"launch: {nprocs} processes did not finish within {timeout} s")
    drain(block=True)
    return out
