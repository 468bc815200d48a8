"""The Python API: typed results of every flow, one decode per file, the identity a header records,
and an import that does not wait for PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import random_images

import netshrink
from netshrink import api, zoo
from netshrink.cli import main
from netshrink.errors import FormatError
from netshrink.format.container import read_nsk
from netshrink.identity import ModelIdentity, OriginalSize

FLOWS = {"compress", "compress_to_target", "evaluate", "sensitivity", "load", "inspect", "train"}


def test_import_is_lazy_and_exports_every_flow():
    code = (
        "import sys, netshrink; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "print(sorted(netshrink.__all__)); netshrink.compress; assert 'torch' in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert FLOWS <= set(json.loads(proc.stdout.replace("'", '"')))
    assert all(callable(getattr(netshrink, name)) for name in FLOWS)


def test_evaluate_stays_the_api_function_beside_its_submodule():
    from netshrink.evaluate import EvalResult  # imports the submodule netshrink/evaluate.py

    assert netshrink.evaluate is api.evaluate and EvalResult is netshrink.EvalResult


@pytest.fixture
def count_decodes(monkeypatch):
    """How many times each file was decoded: every decode goes through netshrink.decoding, all at
    once (decode_state) or one tensor at a time into a module (fill_module)."""
    import netshrink.decoding as decoding

    counts: dict[str, int] = {}

    def counting(real, path_at):
        def wrapper(*args, **kwargs):
            path = str(args[path_at])
            counts[path] = counts.get(path, 0) + 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(decoding, "decode_state", counting(decoding.decode_state, 1))
    monkeypatch.setattr(decoding, "fill_module", counting(decoding.fill_module, 2))
    return counts


@pytest.mark.parametrize("via", ["api", "cli"])
def test_compress_decodes_each_file_once(tmp_path, count_decodes, via):
    """Input and output are each read and decoded once, for the scores, sizes, energy and the report."""
    torch.manual_seed(0)
    ckpt, out, html = tmp_path / "l5.nsk", tmp_path / "out.nsk", tmp_path / "r.html"
    netshrink.save(zoo.build_model("lenet5"), ckpt, name="lenet5", dataset="mnist5k")
    count_decodes.clear()
    if via == "api":
        result = netshrink.compress(
            str(ckpt), "oneshot-palette5", output=out, evaluate=True, report=html, progress=False
        )
        payload = result.to_json()
    else:
        assert (
            main(
                ["compress", str(ckpt), "--recipe", "oneshot-palette5", "-o", str(out), "--report", str(html), "--json"]
            )
            == 0
        )
        payload = None
    assert count_decodes == {str(ckpt): 1, str(out): 1}
    if payload is not None:
        assert payload["file_bytes"] == out.stat().st_size and payload["energy"]["available"]
        assert payload["before"] is not None and payload["after"] is not None and payload["report"] == str(html)


def test_inspect_decodes_once_and_reports_energy(tmp_path, count_decodes):
    path = tmp_path / "l5.nsk"
    netshrink.compress(zoo.build_model("lenet5"), "oneshot-palette5", name="lenet5", progress=False).save(path)
    count_decodes.clear()
    report = netshrink.inspect(path)
    assert count_decodes == {str(path): 1}
    assert report.energy.to_json()["available"] and "energy ratio" in report.to_text()
    assert report.to_json()["file_bytes"] == path.stat().st_size


def test_compress_in_memory_then_save(tiny_net, tmp_path):
    compressed = netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False)
    assert isinstance(compressed, api.CompressedModel) and compressed.file is None
    assert compressed.to_json()["recipe"] == "oneshot-prune50-palette5" and "file_bytes" not in compressed.to_json()
    report = compressed.save(tmp_path / "t.nsk")
    assert report.file_bytes == compressed.nbytes() == (tmp_path / "t.nsk").stat().st_size


def test_evaluate_a_module_on_a_dataset_object(tiny_net):
    result = netshrink.evaluate(tiny_net, random_images(32, 8, seed=0), progress=False)
    assert result.to_json()["n"] == 32 and result.metric == "top1" and result.model == "TinyNet"


def test_model_identity_round_trips_the_header_exactly(tmp_path):
    path = tmp_path / "l5.nsk"
    netshrink.compress(
        zoo.build_model("lenet5"), "oneshot-palette5", name="lenet5", dataset="mnist", progress=False
    ).save(path)
    header = read_nsk(path).model
    identity = ModelIdentity.from_json(header, str(path))
    assert identity.name == "lenet5" and identity.dataset == "mnist" and identity.arch["head"] == "fc"
    assert isinstance(identity.original, OriginalSize) and identity.original.weight_numel == 430_500
    assert json.dumps(identity.to_json(), sort_keys=True) == json.dumps(header, sort_keys=True)
    assert netshrink.api.read_identity(path) == identity


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("arch", 5, "'arch' must be an object"),
        ("name", 5, "'name' must be a string"),
        ("original", {"fp32_bytes": -1, "weight_numel": 0}, "non-negative integers"),
    ],
)
def test_malformed_identity_fields_are_format_errors(field, value, message):
    with pytest.raises(FormatError, match=message):
        ModelIdentity.from_json({"name": "lenet5", "class": "x", field: value}, "f.nsk")


def test_unknown_identity_fields_are_kept():
    header = {"name": None, "class": "my.Net", "dataset": "d", "note": {"run": 3}}
    assert ModelIdentity.from_json(header).to_json() == header


def test_zoo_capabilities_are_protocols():
    assert zoo.models_with(zoo.GapHeadSwitch) == ("lenet5",)
    resnet = zoo.build_skeleton("resnet20")
    assert isinstance(resnet, zoo.HasHead) and isinstance(resnet, zoo.DescribesArch)
    assert not isinstance(resnet, zoo.GapHeadSwitch)
