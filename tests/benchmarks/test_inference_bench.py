"""benchmarks/inference.py end to end on a tiny random Llama (a GGUF file and its 3-bit palette
file): every row measured in its own process, the same perplexity dense and kept compressed, and
the table written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from lm.tiny_models import tiny_llama, write_gguf

from netshrink.data.tokens import TokenWindows
from netshrink.streaming import compress_streaming

pytest.importorskip("gguf")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "inference.py"


def load_script():
    """The script by its path: `import inference` finds the tests' own `inference` package first."""
    spec = importlib.util.spec_from_file_location("inference_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_measures_each_file_dense_and_kept_compressed(tmp_path):
    source = write_gguf(tiny_llama(max_seq=128), tmp_path / "tiny.gguf")  # the prompt and new tokens fit
    nsk = tmp_path / "tiny-palette3.nsk"
    calibration = torch.randint(0, 300, (4, 64), generator=torch.Generator().manual_seed(0))
    compress_streaming(
        source, "smollm2-palette3", output=nsk, calibration=calibration, samples=4, length=64, progress=False
    )
    out = tmp_path / "inference.json"
    argv = ["--lm-files", str(source), str(nsk), "--threads", "1", "--repeats", "1", "--tokens", "4"]
    argv += ["--out", str(out)]
    windows = TokenWindows(torch.randint(0, 300, (3, 32), generator=torch.Generator().manual_seed(1)))
    inference = load_script()
    inference.run(inference.parse_args(argv), windows, argv)

    results = json.loads(out.read_text())
    rows = [(r["model"], r["mode"]) for r in results["lm"]]
    assert rows == [(str(source), "dense"), (str(nsk), "dense"), (str(nsk), "kept compressed")]
    gguf, dense, kept = results["lm"]
    assert all(r["tokens_per_second"] > 0 and r["new_tokens"] >= 1 for r in results["lm"])
    assert kept["kept_weights"] == kept["coded_weights"] > 0 and dense["kept_weights"] == 0
    assert kept["tensor_bytes"] < dense["tensor_bytes"] == gguf["tensor_bytes"]
    assert kept["file_bytes"] == nsk.stat().st_size
    assert results["baseline"]["kernels_peak_rss_mb"] > results["baseline"]["peak_rss_mb"] > 0
    (score,) = results["perplexity"]
    assert score["same"] and score["relative_difference"] <= 1e-4 and score["windows"] == 3
    table = out.with_suffix(".md").read_text()
    assert table.count("| tiny-palette3.nsk |") == 3 and "| tiny.gguf | dense |" in table
    assert out.with_suffix(".png").stat().st_size > 0
