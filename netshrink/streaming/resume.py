"""Where an interrupted block-by-block compression stands, kept next to its target so it can go on.

After every finished part the run saves, in `.NAME.nsk.resume/`: the writer's state (header records
so far, payload length and CRC-32; the payload itself grows in `payload.bin` there), the hidden
states the next part takes, the tensors a later part still needs (an embedding tied to the head),
the index of the next part and a fingerprint of the run (the checkpoint's size, time and a digest of
its header and of its first and last MiB; model, recipe, seed, calibration tokens). `--resume` loads it, cuts the payload back to the saved length
and goes on: every part is computed from exactly what an uninterrupted run had at that point, so
the file is byte-identical. A state from another run (a different fingerprint) is refused, and a
run without `--resume` starts over, replacing whatever state is there. Tensors are saved as
.safetensors (never pickled), the state as JSON renamed into place after its tensors are on disk.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from netshrink.errors import NetshrinkError
from netshrink.format.container import WriterState, write_atomically

STATE = "state.json"
PAYLOAD = "payload.bin"
HIDDEN = "hidden"


@dataclass
class ResumePoint:
    """The state of a run after its first `next_part` parts."""

    next_part: int = 0
    writer: WriterState = field(default_factory=WriterState)
    arch: dict[str, Any] = field(default_factory=dict)
    hidden: torch.Tensor | None = None
    kept: dict[str, torch.Tensor] = field(default_factory=dict)


def resume_folder(target: Path) -> Path:
    return target.parent / f".{target.name}.resume"


def start(folder: Path, fingerprint: dict[str, Any], resume: bool) -> ResumePoint:
    """Where the run begins: the saved point with `resume` (if there is one), else from scratch
    with a fresh folder. A saved point of another run is a NetshrinkError."""
    state_file = folder / STATE
    if resume and state_file.is_file():
        return _load(folder, fingerprint)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise NetshrinkError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return ResumePoint()


def save(folder: Path, fingerprint: dict[str, Any], point: ResumePoint) -> None:
    """Persist `point`: its tensors first, then the state that names them (renamed into place).
    The tensors kept for later parts (a tied embedding, final once its part is done) are written
    when they change, not after every block."""
    from safetensors.torch import save_file

    name = f"tensors.{point.next_part}.safetensors"
    save_file({HIDDEN: point.hidden.detach().contiguous()}, str(folder / name))
    kept_file = _kept_file(sorted(point.kept))
    if not (folder / kept_file).is_file():
        save_file({k: v.detach().contiguous() for k, v in point.kept.items()}, str(folder / kept_file))
    state = {
        "fingerprint": fingerprint,
        "next_part": point.next_part,
        "writer": point.writer.to_json(),
        "arch": point.arch,
        "tensors": name,
        "kept": kept_file,
    }
    text = json.dumps(state, sort_keys=True).encode()
    write_atomically(folder / STATE, lambda handle: handle.write(text))
    for old in [*folder.glob("tensors.*.safetensors"), *folder.glob("kept.*.safetensors")]:
        if old.name not in (name, kept_file):
            old.unlink(missing_ok=True)


def _kept_file(names: list[str]) -> str:
    return f"kept.{hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]}.safetensors"


def _load(folder: Path, fingerprint: dict[str, Any]) -> ResumePoint:
    from safetensors.torch import load_file

    try:
        state = json.loads((folder / STATE).read_text())
        if state["fingerprint"] != json.loads(json.dumps(fingerprint)):
            raise NetshrinkError(
                f"{folder} was left by a run with another checkpoint, model, recipe, seed or calibration: "
                "run without --resume to start over"
            )
        hidden = load_file(str(folder / state["tensors"]))[HIDDEN]
        kept = load_file(str(folder / state["kept"]))
        return ResumePoint(state["next_part"], WriterState.from_json(state["writer"]), state["arch"], hidden, kept)
    except NetshrinkError:
        raise
    except Exception as exc:  # a damaged state is not worth a traceback: the user can start over
        raise NetshrinkError(f"cannot resume from {folder} ({exc}): run without --resume to start over") from None


def finish(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
