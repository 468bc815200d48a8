"""The command line: JSON outputs, honest sizes, and one-line errors with exit status 2."""

import json
import os
import subprocess
import sys

import pytest

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
    code, out, _ = run(capsys, "compress", str(checkpoint), "--recipe", "oneshot-palette5", "-o", str(out_path), "--json")
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


@pytest.mark.parametrize("argv,message", [
    (["inspect", "missing.nsk"], "missing.nsk: no such file"),
    (["eval", "resnet99"], "unknown model 'resnet99'"),
    (["compress", "lenet5", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["eval", "resnet20", "--data-dir", "/nonexistent"], "/nonexistent"),
    (["compress", "lenet5", "--recipe", "oneshot-palette5"], "netshrink train"),
])
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
    proc = subprocess.run([sys.executable, "-m", "netshrink.cli", "inspect", str(tmp_path / "none.nsk")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("netshrink: error:") and "Traceback" not in proc.stderr
