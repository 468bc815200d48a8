"""--resume: a run killed after block k (SIGKILL, mid-way through the next block's writing) goes on
from there and writes the very bytes of an uninterrupted run; another run's state is refused, and a
run without --resume replaces a stale state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netshrink.cli import main
from netshrink.streaming import compress_streaming
from tests.streaming.conftest import recipe_file, write_checkpoint

#: Runs the CLI, SIGKILLing itself when the state after part KILL_AT + 1 is about to be saved: the
#: payload then holds a block more than the saved state says, as after a crash in the middle of a block.
KILLED_RUN = """
import os, signal, sys
from netshrink.streaming import resume
original = resume.save
def save(folder, fingerprint, point):
    if point.next_part == int(os.environ["KILL_AT"]) + 1:
        os.kill(os.getpid(), signal.SIGKILL)
    original(folder, fingerprint, point)
resume.save = save
from netshrink.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(args: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    if kill_at is not None:
        env["KILL_AT"] = str(kill_at)
        return subprocess.run([sys.executable, "-c", KILLED_RUN, *args], env=env, capture_output=True, text=True)
    return subprocess.run([sys.executable, "-m", "netshrink.cli", *args], env=env, capture_output=True, text=True)


def test_a_killed_run_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path) -> None:
    checkpoint = tmp_path / "llama.safetensors"
    write_checkpoint(checkpoint, layers=4, tied=True)  # the tied embedding is kept for the head
    recipe = recipe_file(tmp_path, "pq", "  - pq: {objective: output, epochs: 0, pointwise_d: 4, k: 16}\n")
    compress_streaming(checkpoint, recipe, output=tmp_path / "whole.nsk", progress=False)
    args = ["compress", str(checkpoint), "--stream", "--recipe", str(recipe), "-o", str(tmp_path / "r.nsk")]
    killed = run_cli(args, kill_at=2)  # parts: prefix, blocks 0-3, suffix; killed after block 1
    assert killed.returncode == -signal.SIGKILL
    folder = tmp_path / ".r.nsk.resume"
    state = json.loads((folder / "state.json").read_text())
    assert state["next_part"] == 2 and (folder / "payload.bin").stat().st_size > state["writer"]["payload_length"]
    assert not (tmp_path / "r.nsk").exists()
    resumed = run_cli([*args, "--resume", "--json"])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_at_part"] == 2
    assert (tmp_path / "r.nsk").read_bytes() == (tmp_path / "whole.nsk").read_bytes()
    assert not folder.exists()


def test_resuming_another_run_is_refused_and_a_fresh_run_replaces_stale_state(tmp_path, capsys) -> None:
    checkpoint = tmp_path / "llama.safetensors"
    write_checkpoint(checkpoint)
    args = ["compress", str(checkpoint), "--stream", "-o", str(tmp_path / "r.nsk")]
    assert run_cli([*args, "--recipe", "oneshot-palette5"], kill_at=1).returncode == -signal.SIGKILL
    assert main([*args, "--recipe", "fp16", "--resume"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "another checkpoint, model, recipe" in error
    assert main([*args, "--recipe", "fp16", "--seed", "0"]) == 0  # no --resume: starts over
    assert not (tmp_path / ".r.nsk.resume").exists()
    compress_streaming(checkpoint, "fp16", output=tmp_path / "fresh.nsk", progress=False)
    assert (tmp_path / "r.nsk").read_bytes() == (tmp_path / "fresh.nsk").read_bytes()


@pytest.mark.parametrize("damage", ["state", "tensors"])
def test_a_damaged_state_is_a_one_line_error(tmp_path, capsys, damage) -> None:
    checkpoint = tmp_path / "llama.safetensors"
    write_checkpoint(checkpoint)
    args = ["compress", str(checkpoint), "--stream", "--recipe", "fp16", "-o", str(tmp_path / "r.nsk")]
    assert run_cli(args, kill_at=1).returncode == -signal.SIGKILL
    folder = tmp_path / ".r.nsk.resume"
    target = folder / "state.json" if damage == "state" else next(folder.glob("tensors.*"))
    target.write_bytes(b"{not json")
    assert main([*args, "--resume"]) == 2
    assert "without --resume" in capsys.readouterr().err
