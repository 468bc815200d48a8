"""What the command line does in a run on several processes, kept out of cli.py: drop `--nproc`
from the command the processes run, join the group under torchrun, tell rank 0, turn a failed
collective operation into one error line. Nothing here imports PyTorch until a run is distributed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line without `--nproc N` / `--nproc=N`: what every started process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def join_run(device: Any = None) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group, after every argument is checked
    (NCCL with one GPU per process when `device` is CUDA, else gloo).
    SIGTERM (the launcher stopping the run after another rank failed) then unwinds (runtime.Stopped)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return
    from netshrink.parallel.runtime import init_from_env, stop_on_sigterm

    init_from_env(device)
    stop_on_sigterm()


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that prints results."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def exit_if_collective_failed(exc: RuntimeError) -> None:
    """A collective operation failed (another process died or timed out): one line, and exit at
    once: a broken process group may hang the interpreter's own shutdown."""
    from netshrink.parallel.runtime import collective_failure

    message = collective_failure(exc)
    if message is None:
        return
    print(f"netshrink: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(2)


def stopped(exc: BaseException) -> bool:
    """`exc` is runtime.Stopped: SIGTERM from the launcher (another rank failed and said so)."""
    return type(exc).__name__ == "Stopped" and type(exc).__module__ == "netshrink.parallel.runtime"
