"""`netshrink generate`: text from a GGUF file, a folder or a .nsk file compressed from them, the
tokenizer found from the header; a missing tokenizer or a prompt too long is one line, exit 2."""

from __future__ import annotations

import json
import logging

import pytest
from lm.tiny_models import ARCH, tiny_llama, write_folder, write_gguf

from netshrink.cli import main

pytest.importorskip("gguf")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_from_a_gguf_file_prints_json(capsys, tmp_path):
    path = write_gguf(tiny_llama(), tmp_path / "m.gguf")
    code, out, err = run(capsys, "generate", path, "--prompt", "hello", "--max-new-tokens", 5, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["prompt_tokens"] == 2 and result["new_tokens"] <= 5
    assert result["tokens_per_second"] > 0


def test_a_compressed_folder_model_finds_its_tokenizer(capsys, tmp_path):
    folder = write_folder(tiny_llama(), tmp_path / "m")
    nsk = tmp_path / "m.nsk"
    code, _, err = run(capsys, "compress", folder, "--recipe", "fp16", "-o", nsk, "--no-eval")
    assert code == 0, err
    code, out, err = run(capsys, "generate", nsk, "--prompt", "hello world", "--max-new-tokens", 3)
    assert code == 0, err
    assert out.startswith("hello world")


def test_without_a_tokenizer_it_says_what_to_pass(capsys, tmp_path):
    folder = write_folder(tiny_llama(), tmp_path / "m")
    (folder / "tokenizer.json").unlink()
    code, _, err = run(capsys, "generate", folder, "--prompt", "hi")
    assert code == 2
    assert err.count("\n") == 1 and "no tokenizer.json" in err


def test_a_prompt_longer_than_the_context_is_one_line(capsys, tmp_path):
    path = write_gguf(tiny_llama(), tmp_path / "m.gguf")
    code, _, err = run(capsys, "generate", path, "--prompt", "hello " * 60)
    assert code == 2
    assert err.count("\n") == 1 and "exceed the model's context" in err


def test_a_gguf_model_is_compressed_block_by_block_without_being_asked(capsys, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="netshrink")  # said with --verbose, not as a warning
    path = write_gguf(tiny_llama(), tmp_path / "m.gguf")
    nsk = tmp_path / "m.nsk"
    code, out, err = run(capsys, "compress", path, "--recipe", "fp16", "-o", nsk, "--no-eval", "--json")
    assert code == 0, err
    assert "block by block" in caplog.text
    assert json.loads(out)["blocks"] == ARCH["layers"]
    code, out, err = run(capsys, "generate", nsk, "--prompt", "hello world", "--max-new-tokens", 3)
    assert code == 0, err


def test_an_empty_prompt_is_refused_before_the_model_is_read(capsys, tmp_path):
    code, _, err = run(capsys, "generate", tmp_path / "absent.gguf", "--prompt", "")  # never opened
    assert code == 2
    assert err.count("\n") == 1 and "prompt is empty" in err
