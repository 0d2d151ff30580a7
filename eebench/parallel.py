"""The torchrun world eebench runs in: which rank this process is, and how ranks wait.

Extraction at ImageNet size is GPU work, often on several GPUs or machines. eebench
does not schedule anything itself: it runs under PyTorch's own launcher
(``torchrun``), reads the rank and world size torchrun sets, and uses
``torch.distributed`` (gloo on CPUs, NCCL on GPUs) only to wait at barriers. The
logit store is the meeting point: every rank writes its own chunks of an extraction
into the store's ``.partial/`` folder, and rank 0 assembles and commits the entry,
which is therefore the same whatever the world size. Outside torchrun the world is
one process and every barrier returns at once.

Standard library only until a barrier is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

#: How long a barrier waits (training on rank 0 can take hours while the others wait).
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` processes (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op in a one-process world)."""
        if self.size > 1:
            import torch.distributed as dist

            _init_process_group()
            dist.barrier()

    def owns(self, index: int) -> bool:
        """Whether work item ``index`` (an extraction chunk) is this rank's: round robin."""
        return index % self.size == self.rank


def current() -> World:
    """The world torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``), or a world of one process."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        from eebench.errors import EebenchError

        raise EebenchError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({exc})") from None
    if size < 1 or not 0 <= rank < size:
        from eebench.errors import EebenchError

        raise EebenchError(f"RANK {rank} is outside a WORLD_SIZE of {size}")
    return World(rank, size, local)


def device_for(device: str, world: World) -> str:
    """``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``) in a multi-process world."""
    if device == "cuda" and world.size > 1:
        return f"cuda:{world.local_rank}"
    return device


def _init_process_group() -> None:
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("EEBENCH_BACKEND") != "gloo" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
