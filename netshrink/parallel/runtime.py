"""The process group of a run on several processes, and the few collective operations netshrink uses.

A run is distributed when `torchrun` (or `netshrink compress --nproc N`, which starts it) sets
WORLD_SIZE > 1 in the environment; `init_from_env` then joins the group (gloo on CPU, NCCL on CUDA)
with a bounded timeout, so a rank that dies makes the others fail within that time instead of
waiting forever. Without it every function here is a no-op for a single process: the code that
calls them reads the same in both cases.

Work is split by item index (`owner_of`), never by timing, and seeds come from item names
(`layer_seed`), never from the rank: the result of a one-shot step is the same for any world size.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from netshrink.errors import NetshrinkError

#: Seconds a collective operation may wait for the other ranks before the run stops with an error.
TIMEOUT_ENV = "NETSHRINK_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: `rank` of `world` processes (0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints results."""
        return self.rank == 0


def ranks() -> Ranks:
    """This process's ranks: from the joined process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks()


def is_main() -> bool:
    return ranks().main


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise NetshrinkError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise NetshrinkError(f"${TIMEOUT_ENV} must be positive, got {text!r}")
    return value


def init_from_env(device: torch.device | None = None) -> Ranks:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE > 1); a no-op for
    a single process or when already joined. NCCL when `device` is CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or dist.is_initialized():
        return ranks()
    if not dist.is_available():
        raise NetshrinkError("this PyTorch build has no torch.distributed; run on one process")
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if backend == "nccl":  # one GPU per process: NCCL's collectives run on the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError) as exc:
        raise NetshrinkError(f"cannot join the {world}-process group ({backend}): {exc}") from None
    return ranks()


def collective_device() -> torch.device:
    """Where small tensors of a collective operation live: the current GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if ranks().distributed:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """`obj` as rank `src` has it, on every rank (pickled: only between the ranks of one run)."""
    if not ranks().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def owner_of(index: int, world: int) -> int:
    """The rank that computes item `index` of a list: round robin, fixed by the index alone."""
    return index % world


def share_work(names: Sequence[str], compute: Callable[[str], T]) -> dict[str, T]:
    """`compute(name)` for every name, each computed by one rank (`owner_of`) and then known to all,
    in the order of `names`. With one process: computed in order, here."""
    here = ranks()
    if not here.distributed:
        return {name: compute(name) for name in names}
    mine = {name: compute(name) for i, name in enumerate(names) if owner_of(i, here.world) == here.rank}
    gathered: list[dict[str, T] | None] = [None] * here.world
    dist.all_gather_object(gathered, mine)
    merged: dict[str, T] = {}
    for part in gathered:
        merged.update(part or {})
    return {name: merged[name] for name in names}


def layer_seed(seed: int, name: str) -> int:
    """A seed for the work on item `name` (a layer), the same on every rank and for any world size."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class Stopped(BaseException):
    """SIGTERM in a distributed run (the launcher stopping the ranks after another one failed): raised
    where Python next runs, so `finally` blocks and atomic writes clean up (no temporary file stays
    next to the target). A BaseException, like KeyboardInterrupt: no `except Exception` swallows it."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Stopped` (main thread only; a no-op elsewhere)."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped()

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        pass


#: Words of the messages c10d (gloo, NCCL, the TCP store) raises when a peer is gone or late.
_COLLECTIVE_WORDS = ("gloo", "nccl", "c10d", "connection", "timed out", "timeout", "peer", "socket", "store")


def collective_failure(exc: BaseException) -> str | None:
    """The one-line message for an error of a collective operation in a distributed run (another
    process died, or did not answer within the timeout); None for any other exception."""
    here = ranks()
    if not here.distributed or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not isinstance(exc, dist.DistError) and not any(word in text.lower() for word in _COLLECTIVE_WORDS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". This is typically")[0]  # c10d's source location, advice
    return (
        f"process {here.rank} of {here.world} lost the other processes of the run (one stopped, or did not "
        f"answer within ${TIMEOUT_ENV}={timeout_seconds():g} s): {first[:200]}"
    )
