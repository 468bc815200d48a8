"""The command line: JSON outputs, honest sizes, and one-line errors with exit status 2."""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from netshrink.arguments import build_parser
from netshrink.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "lenet5.nsk"
    assert main(["train", "lenet5", "--dataset", "mnist5k", "--epochs", "1", "-o", str(path), "--json"]) == 0
    return path


def test_train_writes_a_checkpoint_that_evaluates(capsys, checkpoint):
    code, out, _ = run(capsys, "eval", str(checkpoint), "--json")
    result = json.loads(out)
    assert code == 0 and result["metric"] == "top1" and result["value"] > 0.85  # one epoch on 4,000 digits


def test_compress_json_is_honest(capsys, checkpoint, tmp_path):
    out_path = tmp_path / "c.nsk"
    code, out, _ = run(
        capsys, "compress", str(checkpoint), "--recipe", "oneshot-palette5", "-o", str(out_path), "--json"
    )
    result = json.loads(out)
    assert code == 0
    assert result["file_bytes"] == os.stat(out_path).st_size
    assert result["ratio"] == pytest.approx(result["original_bytes"] / result["file_bytes"])
    assert result["original_bytes"] == 4 * (20 * 25 + 20 + 50 * 500 + 50 + 800 * 500 + 500 + 5000 + 10)
    assert result["weights_ratio"] > result["ratio"] > 5
    assert result["metric"] == "top1" and result["after"] > result["before"] - 0.02
    code, out, _ = run(capsys, "eval", str(out_path), "--json")
    assert json.loads(out)["value"] == pytest.approx(result["after"])


def test_inspect_bytes_sum_to_file(capsys, checkpoint):
    code, out, _ = run(capsys, "inspect", str(checkpoint), "--json")
    result = json.loads(out)
    assert code == 0 and result["file_bytes"] == os.stat(checkpoint).st_size
    assert result["header_bytes"] + sum(t["total_bytes"] for t in result["tensors"]) == result["file_bytes"]
    assert result["ratio"] == pytest.approx(result["original_bytes"] / result["file_bytes"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["inspect", "missing.nsk"], "missing.nsk: no such file"),
        (["eval", "resnet99"], "unknown model 'resnet99'"),
        (["compress", "lenet5", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["eval", "resnet20", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["compress", "lenet5", "--recipe", "oneshot-palette5"], "netshrink train"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_corrupt_file_is_one_line(capsys, tmp_path, checkpoint):
    bad = tmp_path / "bad.nsk"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    code, _, err = run(capsys, "eval", str(bad))
    assert code == 2 and "checksum mismatch" in err and err.count("\n") == 1


def test_console_script_exit_code_and_stderr(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "netshrink.cli", "inspect", str(tmp_path / "none.nsk")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("netshrink: error:") and "Traceback" not in proc.stderr


# --- arguments are checked before any work -----------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command loads a model, reads data or trains before refusing its arguments."""
    from netshrink.api import flows, models, targets

    def started(*_args, **_kwargs):
        raise AssertionError("work started before the arguments were checked")

    for module in (flows, models, targets):
        for name in ("resolve", "load_dataset", "fit", "_embedded_default", "initial_model", "open_module"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, started)


@pytest.mark.parametrize("option", ["--target-ratio", "--target-energy"])
@pytest.mark.parametrize("value", ["0", "nan", "inf", "1", "-4", "x"])
def test_bad_targets_are_refused_while_parsing(capsys, no_work, option, value):
    code, out, err = run(capsys, "compress", "lenet5", option, value)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("netshrink: error: argument " + option) and value in err


def test_output_path_is_checked_before_training(capsys, no_work):
    started = time.perf_counter()
    code, _, err = run(capsys, "train", "lenet5", "--dataset", "mnist5k", "-o", "/nonexistent/x.nsk")
    assert time.perf_counter() - started < 2
    assert (
        code == 2
        and err == "netshrink: error: cannot write checkpoint /nonexistent/x.nsk: folder /nonexistent does not exist\n"
    )


def test_a_wrong_output_path_fails_before_torch_is_imported(tmp_path):
    """A fresh process: arguments and output paths are checked before the seconds PyTorch takes to import."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "netshrink.cli", "train", "lenet5", "-o", "/nonexistent/x.nsk"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert time.perf_counter() - started < 1.5
    assert (
        proc.returncode == 2
        and proc.stderr
        == "netshrink: error: cannot write checkpoint /nonexistent/x.nsk: folder /nonexistent does not exist\n"
    )


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder no file can be created in: mode 0o555, and, as root (who may write there anyway),
    `os.access` answering as it does on a read-only mount."""
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os,
            "access",
            lambda path, mode, **kw: Path(path).resolve() != folder.resolve() and real_access(path, mode, **kw),
        )
    yield folder
    folder.chmod(0o755)


def _output_cases(checkpoint: Path, target: str) -> list[list[str]]:
    """Every output path of every command, pointed at `target` (the CLI args of each run)."""
    return [
        ["train", "lenet5", "-o", target],
        ["compress", str(checkpoint), "-o", target],
        ["compress", "--report", target],
        ["compress", "lenet5", "--target-ratio", "4", "--sensitivity", target],
        ["report", str(checkpoint), "-o", target],
        ["sensitivity", "lenet5", "-o", target],
    ]


@pytest.mark.parametrize(
    "where,message",
    [
        ("folder", "it is a folder"),
        ("proc", "kernel file system"),
        ("read-only", "is not writable"),
        ("missing", "does not exist"),
    ],
)
def test_every_output_path_is_checked_first(capsys, checkpoint, tmp_path, read_only_folder, no_work, where, message):
    target = {
        "folder": str(tmp_path),
        "proc": "/proc/x.nsk",
        "read-only": str(read_only_folder / "x.nsk"),
        "missing": str(tmp_path / "missing" / "x.nsk"),
    }[where]
    for argv in _output_cases(checkpoint, target):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert err.count("\n") == 1 and message in err and target in err, (argv, err)


def test_default_output_is_checked_first(capsys, read_only_folder, no_work, monkeypatch):
    monkeypatch.chdir(read_only_folder)
    code, _, err = run(capsys, "compress", "lenet5")
    assert code == 2 and "cannot write output file lenet5.nsk" in err and "not writable" in err


def test_default_output_never_replaces_the_input(capsys, checkpoint, no_work, monkeypatch):
    monkeypatch.chdir(checkpoint.parent)
    code, _, err = run(capsys, "compress", checkpoint.name)
    assert code == 2 and "is the input file itself" in err and err.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-5", "2.5", "x"])
def test_eval_limit_must_be_positive(capsys, no_work, value):
    code, out, err = run(capsys, "eval", "lenet5", "--limit", value)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("netshrink: error: argument --limit:") and "usage" not in err


def test_eval_limit_scores_that_many(capsys, checkpoint):
    code, out, _ = run(capsys, "eval", str(checkpoint), "--limit", "7", "--json")
    assert code == 0 and json.loads(out)["n"] == 7


@pytest.mark.parametrize("command", ["compress", "eval", "sensitivity"])
def test_a_folder_is_not_a_missing_file(capsys, tmp_path, command):
    code, _, err = run(capsys, command, str(tmp_path))
    assert code == 2 and f"{tmp_path} is a folder" in err and "no such file" not in err


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize("command", ["compress", "eval", "inspect"])
def test_a_torch_checkpoint_says_how_to_compress_it(capsys, tmp_path, zip_format, command):
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(3)}, path, _use_new_zipfile_serialization=zip_format)
    code, out, err = run(capsys, command, str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "netshrink.compress(model, recipe)" in err and "netshrink.save(model, 'model.nsk')" in err


def test_other_files_are_still_not_netshrink_files(capsys, tmp_path):
    path = tmp_path / "notes.nsk"
    path.write_text("hello, not a model\n")
    code, _, err = run(capsys, "eval", str(path))
    assert code == 2 and "not a netshrink file" in err and "torch.save" not in err


# --- help and listings -------------------------------------------------------------------------------


def test_bare_netshrink_prints_usage_and_a_hint(capsys):
    code, out, err = run(capsys)
    assert code == 2 and out == ""
    usage, hint = err.split("\nnetshrink: error: ")
    assert usage.startswith("usage: netshrink") and "--help" in hint and hint.count("\n") == 1


def _all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_option_and_positional_has_help():
    missing = [
        f"{parser.prog} {action.dest}"
        for parser in _all_parsers(build_parser())
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert all(choice.help for choice in subcommands._choices_actions)


def test_recipes_lists_one_short_line_each(capsys):
    from netshrink.recipe import list_recipes, load_recipe

    code, out, _ = run(capsys, "recipes")
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == list_recipes()
    assert max(map(len, lines)) <= 120
    assert re.search(
        r"^fp16 +Every floating-point tensor \(weights, biases, norm parameters, buffers\) stored in fp16\.$",
        out,
        re.MULTILINE,
    )  # a short description whole
    assert re.search(
        r"^lenet5-compound +The compound pipeline on LeNet-5, each stage retrained before the next\.$",
        out,
        re.MULTILINE,
    )  # the first sentence of a long one
    code, out, _ = run(capsys, "recipes", "--json")
    listing = json.loads(out)
    assert listing["recipes"] == list_recipes()
    description = listing["descriptions"]["lenet5-compound"]
    assert description == " ".join(load_recipe("lenet5-compound").description.split()) and len(description) > 200


def test_readme_shows_the_packaged_default_recipe():
    repo = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```yaml\n(.*?)```", (repo / "README.md").read_text(), re.DOTALL)
    packaged = (repo / "netshrink" / "recipes" / "oneshot-prune50-palette5.yaml").read_text()
    assert packaged in blocks
    assert all(block == packaged or "name: oneshot-prune50-palette5" not in block for block in blocks)
