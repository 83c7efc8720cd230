"""Several processes under ``torchrun``: which rank does which work, gathering to rank 0, and failing loudly.

``torchrun --nproc-per-node N -m saliency_lib.<cli> ...`` starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` (``--nnodes`` and a rendezvous endpoint extend it to several machines). A command
line calls :func:`init_from_env` first: under torchrun it joins the process group (gloo on the CPU, nccl on GPUs),
otherwise (a plain ``python -m``) it returns a single-process :class:`Ranks` and sets nothing up.

Work is split in fixed *units* (e.g. chunks of guides) whose contents do not depend on the number of processes,
and the units are dealt to the ranks round-robin (:func:`shard`), so every unit is computed exactly as in a single
process. :func:`run_and_gather` runs a rank's share and gathers the results to rank 0; a rank whose work raises
fails at once with an error naming it, and torchrun then stops the others; every collective has a timeout
(``SALIENCY_NOISE_DIST_TIMEOUT_S``, 6 hours by default), so a job never hangs on a stuck rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch.distributed as dist

from .errors import SaliencyNoiseError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = float(os.environ.get("SALIENCY_NOISE_DIST_TIMEOUT_S", 6 * 3600))  # the longest a collective
# waits for the slowest rank, i.e. for a rank's whole share of the work (a stuck rank fails the job after this)


class RankFailed(RuntimeError):
    """Raised by a rank whose work failed (the message names the rank and the error), or when the gathered results
    do not cover every unit of work once."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0          # this process's rank (0 = the one that reports and writes)
    world_size: int = 1    # number of processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Ranks:
    """Join torchrun's process group (``WORLD_SIZE`` > 1 in the environment) with gloo on the CPU or nccl on CUDA,
    with ``timeout_s`` on every collective; without torchrun, a single process and no setup."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_available():
        raise SaliencyNoiseError("this torch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Ranks(dist.get_rank(), dist.get_world_size())


def shard(n_units: int, ranks: Ranks) -> list[int]:
    """The unit indices of this rank: ``rank, rank + world_size, ...`` below ``n_units`` (round-robin)."""
    return list(range(ranks.rank, n_units, ranks.world_size))


def run_and_gather(work: Callable[[], T], ranks: Ranks) -> list[T] | None:
    """Run this rank's ``work()`` and gather every rank's result to rank 0: a list indexed by rank there, None on
    the other ranks (single process: ``[work()]``).

    If ``work`` raises, this rank raises :class:`RankFailed` at once, naming itself and the error; its process exits
    with an error and torchrun stops the other ranks (its report names the failed rank as the root cause), so the job
    ends when a rank fails rather than when the others finish."""
    if not ranks.distributed:
        return [work()]
    try:
        result = work()
    except Exception as err:
        raise RankFailed(f"rank {ranks.rank} of {ranks.world_size} failed: {type(err).__name__}: {err}") from err
    gathered: list | None = [None] * ranks.world_size if ranks.is_main else None
    dist.gather_object(result, gathered, dst=0)
    return gathered


def merge_by_unit(gathered: Sequence[Sequence[tuple[int, T]]]) -> list[T]:
    """Flatten the ranks' ``[(unit index, result), ...]`` lists into one list ordered by unit index; every unit
    exactly once."""
    items = sorted(((u, r) for part in gathered for u, r in part), key=lambda item: item[0])
    units = [u for u, _ in items]
    if units != list(range(len(units))):
        raise RankFailed(f"the ranks returned units {units}, expected each of 0..{len(units) - 1} once")
    return [r for _, r in items]


def finish(ranks: Ranks) -> None:
    """Leave the process group (after the last collective)."""
    if ranks.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
