"""`netshrink compress --nproc N`: start the same command on N processes, as `torchrun` would.

The processes run on this machine, meeting at 127.0.0.1 on a free port, through PyTorch's elastic
launcher (the library `torchrun` is built on), so they see exactly the environment `torchrun`
gives them and join the group the same way (runtime.init_from_env). Rank 0 keeps this terminal:
its progress bars, results and error line. The other ranks' stderr goes to a temporary folder, so
an error they all hit (a bad recipe) is printed once, by rank 0.

When a process fails, the launcher stops the others and says in one line which rank failed and
how (the signal that killed it, or its exit status, and its own error line when it printed one);
the exit status is that rank's (128 + the signal number for a signal, as a shell reports it).
`--nproc` is checked before anything starts (`check_nproc`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from netshrink.errors import NetshrinkError

#: More processes than this many per CPU core is a typo, not a plan (each needs its own model copy).
MAX_PROCESSES_PER_CPU = 4


def check_nproc(text: str) -> int:
    """A --nproc value: a whole number from 1 to a few per CPU core. Raises NetshrinkError."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise NetshrinkError(f"--nproc takes a whole number of processes, got {text!r}") from None
    cores = os.cpu_count() or 1
    limit = max(8, MAX_PROCESSES_PER_CPU * cores)
    if value < 1:
        raise NetshrinkError(f"--nproc must be at least 1, got {value}")
    if value > limit:
        raise NetshrinkError(f"--nproc {value} is far more than this machine's {cores} CPU cores (at most {limit})")
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise NetshrinkError("--nproc starts processes itself: do not combine it with torchrun")
    return value


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m netshrink ARGV` on `nproc` processes; the exit status of the run."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _quiet_launcher_logs()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N processes share the cores
    with tempfile.TemporaryDirectory(prefix="netshrink-ranks-") as logs:
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nproc,
            run_id=uuid.uuid4().hex,
            rdzv_backend="c10d",
            rdzv_endpoint=f"127.0.0.1:{free_port()}",
            max_restarts=0,
            monitor_interval=0.2,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects={r: Std.ERR for r in range(1, nproc)}),
        )
        try:
            elastic_launch(config, sys.executable)("-u", "-m", "netshrink", *argv)
        except ChildFailedError as exc:
            return _report_failure(exc, nproc, Path(logs))
        except KeyboardInterrupt:
            print("netshrink: interrupted", file=sys.stderr)
            return 130
    return 0


def _report_failure(exc, nproc: int, logs: Path) -> int:
    """One line about the rank that failed first, preferring a crash (a signal, or a status other
    than netshrink's 2) over the ranks that then reported the loss of a peer; nothing when the
    ranks only stopped with a user error that rank 0 has already printed. Returns the exit status."""
    failures = exc.failures
    crashed = {rank: failure for rank, failure in failures.items() if failure.exitcode != 2}
    if not crashed and 0 in failures:
        return 2
    rank = min(crashed or failures, key=lambda r: (failures[r].timestamp, r))
    code = failures[rank].exitcode
    if code < 0:
        status, how = 128 - code, f"was killed by {_signal_name(-code)}"
    else:
        status, how = code, f"exited with status {code}"
    said = _last_error_line(logs, rank)
    print(f"netshrink: error: process {rank} of {nproc} {how}{f': {said}' if said else ''}", file=sys.stderr)
    return status


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_error_line(logs: Path, rank: int) -> str:
    """What a redirected rank said last: its `netshrink: error:` line without the prefix, else the
    last line of its stderr (a traceback ends with the exception). Empty for rank 0 (on screen)."""
    lines: list[str] = []
    for path in logs.glob(f"**/{rank}/stderr.log"):
        lines += [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("netshrink: error:")]
    if errors:
        return errors[-1].removeprefix("netshrink: error:").strip()
    return lines[-1][:300] if lines else ""


def _quiet_launcher_logs() -> None:
    """The elastic agent logs every start and failure with tracebacks; the one line above says it."""
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
