"""Several processes on `torch.distributed` (started by `torchrun` or `netshrink compress --nproc`):
who this process is (`Ranks`), how work is split among the ranks, and how results are shared."""

from netshrink.parallel.runtime import (
    Ranks,
    barrier,
    broadcast_object,
    init_from_env,
    is_main,
    layer_seed,
    owner_of,
    ranks,
    share_work,
)

__all__ = [
    "Ranks",
    "barrier",
    "broadcast_object",
    "init_from_env",
    "is_main",
    "layer_seed",
    "owner_of",
    "ranks",
    "share_work",
]
