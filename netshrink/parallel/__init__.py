"""Several processes on `torch.distributed` (started by `torchrun` or `netshrink compress --nproc`):
who this process is (`Ranks`), how work is split among the ranks, and how results are shared.

The names below are imported on first use (PEP 562), so the command line can use
`netshrink.parallel.command` and `netshrink.parallel.launch` before PyTorch is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("netshrink.parallel.runtime"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
