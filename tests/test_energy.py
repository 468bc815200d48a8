"""The energy model: MAC counts and shapes, bit-width scaling of its constants, energy falling with
fewer bits and with sparsity, .nsk round trips, and the energy object of `inspect --json`."""

import json

import pytest
import torch
from reference_archs import ALEXNET_INPUT, GOOGLENET_INPUT, AlexNet, GoogLeNet
from torch import nn

from netshrink import api, zoo
from netshrink.cli import main
from netshrink.energy import (
    EnergyConfig,
    WeightFormat,
    energy_of_file,
    energy_of_model,
    estimate,
    weight_format,
)
from netshrink.errors import ModelError
from netshrink.flops import layer_shapes
from netshrink.format.codecs import Dense, Palette, Sparse


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(8 * 8 * 8, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_layer_shapes_count_macs_by_hand():
    conv, fc = layer_shapes(TwoLayer(), (4, 16, 16))
    # 8 outputs x 8x8 positions, each a dot product over 4/2 channels x 3x3 taps.
    assert (conv.name, conv.macs, conv.output_shape, conv.kernel, conv.stride, conv.groups) == (
        "conv",
        8 * 8 * 8 * 2 * 9,
        (8, 8, 8),
        (3, 3),
        (2, 2),
        2,
    )
    assert conv.weight_numel == 8 * 2 * 9 and conv.input_numel == 4 * 16 * 16 and conv.output_width == 8
    assert (fc.name, fc.macs, fc.kernel, fc.output_width) == ("fc", 512 * 7, (), 1)


def test_reference_architectures_match_published_counts():
    with torch.device("meta"):
        alexnet, googlenet = AlexNet(), GoogLeNet()
    alex = layer_shapes(alexnet, ALEXNET_INPUT)
    convs = [s for s in alex if s.kernel]
    # Chen et al., ISSCC 2016: "AlexNet uses 2.3 million weights ... and requires 666 million MACs per 227x227 image".
    assert round(sum(s.macs for s in convs) / 1e6) == 666 and round(sum(s.weight_numel for s in convs) / 1e5) == 23
    goog = layer_shapes(googlenet, GOOGLENET_INPUT)
    # Szegedy et al. 2015, Table 1 ("ops" are MACs): inception (3a) 128M, (4e) 170M, conv2 incl. reduce 360M.
    for block, ops in ((".inception3a.", 128e6), (".inception4e.", 170e6), ("conv2", 360e6)):
        assert sum(s.macs for s in goog if block in s.name) == pytest.approx(ops, rel=0.01)


def test_full_adder_constant_reproduces_horowitz_integer_figures():
    fa = EnergyConfig().pj_per_full_adder
    # Horowitz ISSCC 2014 (45 nm): 8b mult 0.2 pJ, 8b add 0.03 pJ, 32b mult 3.1 pJ, 32b add 0.1 pJ.
    assert 8 * 8 * fa == pytest.approx(0.2, rel=0.05)
    assert 8 * fa == pytest.approx(0.03, rel=0.25)
    assert 32 * 32 * fa == pytest.approx(3.1)
    assert 32 * fa == pytest.approx(0.1, rel=0.05)


def test_mac_cost_scales_as_b_squared_plus_b_and_access_cost_linearly():
    config = EnergyConfig()
    for b in (2, 4, 8, 16, 32):
        assert config.mac_pj(b, b) == pytest.approx(config.pj_per_full_adder * (b * b + b))
    assert config.mac_pj(4, 16) == pytest.approx(config.pj_per_full_adder * (4 * 16 + 16))
    assert config.access_pj("dram", 32) == pytest.approx(2 * config.access_pj("dram", 16))
    assert config.access_pj("dram", 16) == pytest.approx(200 * config.mac_pj(16, 16))  # Eyeriss: DRAM 200x a MAC
    assert config.access_pj("buffer", 16) / config.access_pj("rf", 16) == pytest.approx(6)


def _formats(model: nn.Module, make) -> dict[str, WeightFormat]:
    return {name: weight_format(make().encode(t)) for name, t in model.state_dict().items() if name.endswith("weight")}


def test_energy_falls_with_fewer_bits_and_with_sparsity():
    torch.manual_seed(0)
    model = TwoLayer()
    shapes = layer_shapes(model, (4, 16, 16))
    totals = [
        estimate(shapes, _formats(model, make)).total()
        for make in (lambda: Dense("fp32"), lambda: Dense("fp16"), lambda: Palette(4), lambda: Palette(2))
    ]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4
    with torch.no_grad():
        model.fc.weight[:, ::2] = 0  # half the weights
        model.conv.weight[::2] = 0
    dense = estimate(shapes, _formats(model, lambda: Dense("fp16")))
    sparse = estimate(shapes, _formats(model, lambda: Sparse(Dense("fp16"))))
    assert sparse.total() < dense.total()
    for d, s in zip(dense.layers, sparse.layers):
        assert s.density == pytest.approx(0.5) and s.computation_pj == pytest.approx(d.computation_pj / 2)


def test_dense_fp32_model_is_its_own_original():
    energy = energy_of_model(TwoLayer(), (4, 16, 16))
    assert energy.ratio == pytest.approx(1.0)
    assert energy.total() == pytest.approx(sum(layer.total_pj for layer in energy.layers))
    assert set(energy.layers[0].levels_pj) == {"dram", "buffer", "array", "rf"}
    moved = energy.total("weights") + energy.total("activations")
    assert sum(sum(layer.levels_pj.values()) for layer in energy.layers) == pytest.approx(moved)


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("energy")
    model = zoo.build_model("lenet5")
    api.save(model, folder / "dense.nsk", name="lenet5")
    compressed = api.compress(model, "oneshot-prune50-palette5", name="lenet5", progress=False)
    compressed.save(folder / "small.nsk")
    return model, compressed, folder


def test_nsk_round_trip_gives_the_in_memory_estimate(lenet_files):
    model, compressed, folder = lenet_files
    shape = zoo.model_info("lenet5").input_shape
    assert energy_of_file(folder / "dense.nsk").total() == pytest.approx(energy_of_model(model, shape).total())
    formats = {rec.name: weight_format(rec.encoded) for rec in compressed.plan.encode_all(compressed.model)}
    in_memory = energy_of_model(compressed.model, shape, formats)
    from_file = energy_of_file(folder / "small.nsk")
    assert from_file.to_json() == in_memory.to_json()
    assert from_file.ratio > 3 and all(layer.density == pytest.approx(0.5, abs=0.01) for layer in from_file.layers)


def test_unknown_input_shape_is_an_error_not_a_guess(tmp_path):
    path = tmp_path / "two.nsk"
    api.save(TwoLayer(), path)
    with pytest.raises(ModelError, match="input shape"):
        energy_of_file(path)
    assert energy_of_file(path, input_shape=(4, 16, 16), model=TwoLayer()).ratio == pytest.approx(1.0)


def test_inspect_json_has_the_energy_object(capsys, lenet_files, tmp_path):
    _, _, folder = lenet_files
    assert main(["inspect", str(folder / "small.nsk"), "--json"]) == 0
    energy = json.loads(capsys.readouterr().out)["energy"]
    assert (
        energy["available"]
        and energy["ratio"] > 3
        and [row["name"] for row in energy["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    )
    assert energy["total_pj"] == pytest.approx(sum(row["total_pj"] for row in energy["layers"]))
    api.save(TwoLayer(), tmp_path / "two.nsk")
    assert main(["inspect", str(tmp_path / "two.nsk")]) == 0
    assert "energy unavailable" in capsys.readouterr().out
