"""`--nproc`: checked before anything starts; a rank that dies stops the run with one clear line
and leaves nothing at the target path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from parallel.ranks import TIMEOUT_S, environment, error_lines, start_ranks

from netshrink.cli import main
from netshrink.parallel.command import without_nproc
from netshrink.parallel.runtime import collective_failure

#: A retraining recipe long enough to be killed in the middle of it.
LONG_RECIPE = """
name: retrain-long
description: pruning with retraining for a while
steps:
  - iterative_prune: {sparsity: 0.8, rounds: 2, epochs: 30, lr: 0.01}
"""


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "100000"])
def test_a_bad_nproc_is_one_line_and_exit_2(capsys, tmp_path, value):
    code = main(["compress", "--nproc", value, "-o", str(tmp_path / "x.nsk")])
    err = capsys.readouterr().err
    assert code == 2 and len(error_lines(err)) == 1 and err.startswith("netshrink: error: --nproc")
    assert not (tmp_path / "x.nsk").exists()


def test_nproc_is_refused_inside_a_torchrun_process(capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compress", "--nproc", "2"]) == 2
    assert "torchrun" in capsys.readouterr().err


def test_the_processes_run_the_command_without_nproc():
    argv = ["compress", "m.nsk", "--nproc", "2", "-o", "x.nsk", "--nproc=3", "--json"]
    assert without_nproc(argv) == ["compress", "m.nsk", "-o", "x.nsk", "--json"]


def test_a_plain_runtime_error_of_one_process_is_not_a_collective_failure():
    assert collective_failure(RuntimeError("Connection closed by peer")) is None


def _wait_then_kill(victim: subprocess.Popen, seconds: float) -> float:
    time.sleep(seconds)  # long enough for the ranks to meet and start training
    assert victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    return time.monotonic()


def test_a_killed_rank_stops_the_other_with_one_line(tmp_path, checkpoint):
    recipe = tmp_path / "long.yaml"
    recipe.write_text(LONG_RECIPE)
    folder = tmp_path / "out"
    folder.mkdir()
    argv = ["-m", "netshrink", "compress", str(checkpoint), "--recipe", str(recipe), "-o", str(folder / "m.nsk")]
    survivor, victim = start_ranks(argv, 2, cwd=tmp_path)
    killed = _wait_then_kill(victim, 8)
    _, err = survivor.communicate(timeout=TIMEOUT_S + 30)
    assert time.monotonic() - killed < TIMEOUT_S + 10  # bounded: a closed connection errors at once
    assert survivor.returncode == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("netshrink: error: process 0 of 2 lost the other"), err
    assert list(folder.iterdir()) == []  # no file, no temporary file


def _rank_process(marker: str, rank: int, deadline: float) -> int:
    """The pid of the launched process with `marker` in its environment and RANK=rank."""
    wanted = {f"NETSHRINK_TEST_RUN={marker}".encode(), f"RANK={rank}".encode()}
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                variables = set((entry / "environ").read_bytes().split(b"\0"))
            except (OSError, ValueError):
                continue
            if wanted <= variables:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no process of rank {rank} started")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in /proc")
def test_the_launcher_names_the_rank_that_died(tmp_path, checkpoint):
    recipe = tmp_path / "long.yaml"
    recipe.write_text(LONG_RECIPE)
    folder = tmp_path / "out"
    folder.mkdir()
    marker = f"{os.getpid()}-{time.time()}"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "netshrink", "compress", str(checkpoint), "--recipe", str(recipe)]
        + ["--nproc", "2", "-o", str(folder / "m.nsk")],
        env=environment(NETSHRINK_TEST_RUN=marker),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = _rank_process(marker, 1, time.monotonic() + 30)
    time.sleep(8)
    os.kill(victim, signal.SIGKILL)
    _, err = launcher.communicate(timeout=TIMEOUT_S + 30)
    assert launcher.returncode == 128 + signal.SIGKILL
    assert "netshrink: error: process 1 of 2 was killed by SIGKILL" in err.splitlines()
    assert "Traceback" not in err and all(line.startswith("netshrink: error:") for line in error_lines(err)), err
    assert list(folder.iterdir()) == []
