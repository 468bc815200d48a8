"""Per-layer sensitivity: every layer and setting measured, through the real codecs, and cached."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_images

from netshrink import api
from netshrink.budget import sensitivity as sens_module
from netshrink.budget.curves import SensitivityResult
from netshrink.budget.sensitivity import SensitivityConfig, load_for_model, measure, sensitivity
from netshrink.data import ArrayDataset
from netshrink.errors import DataError
from netshrink.recipe import parse_recipe

CONFIG = SensitivityConfig(bits=(2, 4, 6), sparsity=(0.5, 0.9), samples=64)


@pytest.fixture
def calibration_data() -> ArrayDataset:
    """128 random 3x8x8 images with 10 named classes (TinyNet's output width)."""
    return random_images(128, 8, seed=1)


@pytest.fixture
def result(tiny_net, calibration_data):
    return measure(tiny_net, calibration_data, CONFIG, dataset="tiny", progress=False)


def test_every_layer_and_setting_is_measured(result):
    assert [layer.tensor for layer in result.layers] == ["conv.weight", "fc.weight"]
    for layer in result.layers:
        assert [t.setting for t in layer.bits] == [2, 4, 6]
        assert [t.setting for t in layer.sparsity] == [0.5, 0.9]
        assert len(layer.combined) == 6
        for trial in layer.bits + layer.sparsity:
            assert 0 <= trial.top1 <= 1 and trial.kl >= 0 and trial.bytes > 0
    assert result.samples == 64 and result.split == "train-holdout"


def test_damage_grows_as_bits_fall(result):
    kl = {b: sum(next(t.kl for t in layer.bits if t.setting == b) for layer in result.layers) for b in (2, 4, 6)}
    assert kl[2] > kl[4] > kl[6]
    fc = result.layers[1]
    assert fc.bits[0].bytes < fc.bits[1].bytes < fc.bits[2].bytes
    assert fc.sparsity[1].kl > fc.sparsity[0].kl


def test_bytes_are_what_the_file_stores(tiny_net, result):
    """The recorded bytes of fc at 4 bits and of fc pruned to 0.5 + 2 bits equal the file's encodings."""
    recipe = parse_recipe(
        {
            "name": "t",
            "steps": [
                {"palette": {"bits": 4, "per_channel": "auto", "include": ["fc"]}},
                {"prune": {"sparsity": 0.5, "include": ["conv"]}},
                {"palette": {"bits": 2, "per_channel": "auto", "include": ["conv"]}},
            ],
        }
    )
    plan = api.compress(tiny_net, recipe, progress=False).plan
    conv, fc = result.layers
    assert plan.entries["fc.weight"].encoded.nbits() // 8 == fc.bits[1].bytes
    combined = next(c for c in conv.combined if c.sparsity == 0.5 and c.bits == 2)
    assert plan.entries["conv.weight"].encoded.nbits() // 8 == combined.bytes


def test_model_is_left_unchanged(tiny_net, calibration_data):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    measure(tiny_net, calibration_data, CONFIG, dataset="tiny", progress=False)
    assert all(torch.equal(before[k], v) for k, v in tiny_net.state_dict().items())


def test_cache_is_reused_and_keyed_by_settings(tiny_net, calibration_data, tmp_path, monkeypatch):
    path = tmp_path / "sens.json"
    first = sensitivity(tiny_net, calibration_data, CONFIG, dataset="tiny", path=path, progress=False)
    assert not first.cached and json.loads(path.read_text())["key"] == first.key

    def fail(*args, **kwargs):
        raise AssertionError("measured again despite a matching cache")

    monkeypatch.setattr(sens_module, "measure", fail)
    again = sensitivity(tiny_net, calibration_data, CONFIG, dataset="tiny", path=path, progress=False)
    assert again.cached and again == first
    other = SensitivityConfig(bits=(3,), sparsity=(), samples=64)
    with pytest.raises(AssertionError, match="measured again"):
        sensitivity(tiny_net, calibration_data, other, dataset="tiny", path=path, progress=False)


def test_a_json_of_another_model_is_refused(tiny_net, calibration_data, tmp_path):
    path = tmp_path / "sens.json"
    sensitivity(tiny_net, calibration_data, CONFIG, dataset="tiny", path=path, progress=False)
    assert load_for_model(path, tiny_net).key
    with torch.no_grad():
        tiny_net.fc.weight.mul_(2)
    with pytest.raises(DataError, match="another model"):
        load_for_model(path, tiny_net)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="sparsities"):
        SensitivityConfig(sparsity=(1.5,))


def test_json_round_trip_is_exact(result, tmp_path):
    path = tmp_path / "sens.json"
    result.write(path)
    assert SensitivityResult.read(path) == result
    assert SensitivityResult.from_json(json.loads(path.read_text()), str(path)).to_json() == result.to_json()


@pytest.mark.parametrize("name", ["resnet20", "efficientnet_lite0"])
def test_committed_results_read(name):
    from conftest import REPO

    path = REPO / "benchmarks" / "results" / f"budget-sensitivity-{name}.json"
    result = SensitivityResult.read(path)
    raw = json.loads(path.read_text())
    assert result.model.name == name and len(result.layers) == len(raw["layers"]) > 0
    assert {k: v for k, v in result.to_json().items() if k != "cached"} == raw  # nothing lost or added


@pytest.mark.parametrize(
    "text,message",
    [
        ("{}", "not a `netshrink sensitivity` JSON"),
        ('{"format": "netshrink-sensitivity/2", "layers": [{"name": 1}]}', "malformed sensitivity JSON"),
        ("[1, 2", "not a readable JSON file"),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        SensitivityResult.read(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_token_windows_are_refused_by_name(tiny_net):
    from netshrink.data import TokenWindows

    with pytest.raises(DataError, match="sensitivity scores classifiers.*perplexity data set"):
        measure(tiny_net, TokenWindows(torch.zeros(8, 4, dtype=torch.long)), CONFIG, dataset="x", progress=False)
