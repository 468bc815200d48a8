"""Start the ranks of a run by hand, as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
one thread each, gloo on 127.0.0.1 at a free port, a short collective timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from netshrink.parallel.launch import free_port

REPO = Path(__file__).resolve().parents[2]

#: Seconds a rank may wait for a lost peer in these tests (the default is minutes).
TIMEOUT_S = 20


def environment(**extra: str) -> dict[str, str]:
    """The environment of a run's processes: this repository first on the path, one thread."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update({"NETSHRINK_DIST_TIMEOUT": str(TIMEOUT_S), **extra})
    return env


def start_ranks(args: list[str], world: int, cwd: Path | None = None) -> list[subprocess.Popen]:
    """`python ARGS` on `world` processes that join one group."""
    port = str(free_port())
    return [
        subprocess.Popen(
            [sys.executable, *args],
            env=environment(
                RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port
            ),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]


def netshrink(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m netshrink ARGV` (with --nproc: the launcher), as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "netshrink", *argv],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    """The lines of `stderr` that are not progress bars (netshrink's own lines, tracebacks)."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS.search(line)]


PROGRESS = re.compile(r"\d+/\d+ \[[^]]*\]")
