"""What block-by-block compression refuses, each in one line and exit status 2 before any work."""

from __future__ import annotations

import json
import re

import pytest
import torch

from netshrink.cli import main
from tests.streaming.conftest import ARCH, recipe_file, write_checkpoint


def lenet_checkpoint(path) -> None:
    from safetensors.torch import save_file

    from netshrink.zoo import build_model

    save_file(build_model("lenet5").state_dict(), str(path), metadata={"netshrink_model": "lenet5"})


CASES = {
    "missing": (lambda p: None, [], "no such file"),
    "corrupt": (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"), [], "not JSON"),
    "truncated": (lambda p: p.write_bytes(write_and_read(p)[:-100]), [], "impossible|byte range"),
    "missing tensor": (lambda p: write_checkpoint(p, drop="model.layers.1.mlp.up_proj.weight"), [], "lacks 1"),
    "wrong shape": (write_checkpoint, ["--arch", json.dumps({**ARCH, "ffn": 40})], "the model expects"),
    "unnamed model": (lambda p: p.write_bytes(unnamed()), [], "does not name its model"),
    "no block structure": (lenet_checkpoint, [], "no block structure"),
    "retraining step": (write_checkpoint, ["--recipe", "lenet5-dc"], "iterative_prune cannot compress block by"),
    "unknown model": (write_checkpoint, ["--model", "gpt9"], "unknown model"),
}


def write_and_read(path) -> bytes:
    write_checkpoint(path)
    return path.read_bytes()


def unnamed() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.zeros(2)})


@pytest.mark.parametrize("case", list(CASES))
def test_refused_in_one_line(tmp_path, capsys, case) -> None:
    make, extra, message = CASES[case]
    path = tmp_path / "ckpt.safetensors"
    make(path)
    recipe = [] if "--recipe" in extra else ["--recipe", "oneshot-palette5"]
    assert main(["compress", str(path), "--stream", "-o", str(tmp_path / "o.nsk"), *recipe, *extra]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("netshrink: error:")
    assert re.search(message, error), error
    assert not (tmp_path / "o.nsk").exists()


def test_a_global_prune_is_refused_with_the_way_to_stream_it(tmp_path, capsys, checkpoint) -> None:
    recipe = recipe_file(tmp_path, "global", "  - prune: {sparsity: 0.5, scope: global}\n")
    assert main(["compress", str(checkpoint), "--stream", "--recipe", str(recipe), "-o", str(tmp_path / "o.nsk")]) == 2
    assert "use scope: layer" in capsys.readouterr().err


def test_stream_options_need_stream(tmp_path, capsys, checkpoint) -> None:
    assert main(["compress", str(checkpoint), "--resume", "-o", str(tmp_path / "o.nsk")]) == 2
    assert "--resume: only with --stream" in capsys.readouterr().err
