"""`netshrink.load(path, keep_compressed=True)`: palette and PQ layers run from their codes and give
the outputs of the dense decode, in a fraction of its memory; other codecs load as before."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import netshrink
from netshrink.errors import FormatError
from netshrink.format.codecs import Stream
from netshrink.format.container import read_nsk, write_nsk
from netshrink.inference import CompressedLinear, PaletteWeights, PQWeights, kernels
from netshrink.recipe import parse_recipe

IN, HIDDEN, OUT = 36, 64, 10


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)).eval()


def saved(tmp_path, step: dict, model: nn.Module | None = None) -> str:
    path = str(tmp_path / "model.nsk")
    netshrink.compress(model or mlp(), parse_recipe({"name": "r", "steps": [step]}), progress=False).save(path)
    return path


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's tensors (parameters and buffers, each tensor once)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def assert_same_outputs(path: str, rows: tuple[int, ...] = (1, 3, 40)) -> nn.Module:
    dense, kept = netshrink.load(path, model=mlp()), netshrink.load(path, model=mlp(), keep_compressed=True)
    for n in rows:
        x = torch.randn(n, IN, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            torch.testing.assert_close(kept(x), dense(x), rtol=1e-4, atol=1e-5)
    return kept


PALETTES = [
    *({"palette": {"bits": bits}} for bits in range(2, 9)),
    *({"palette": {"bits": bits, "per_channel": True}} for bits in (2, 3, 5, 8)),
    *({"palette": {"bits": bits, "per_channel": True, "group": 2}} for bits in (3, 4, 8)),
]


@pytest.mark.parametrize("step", PALETTES, ids=lambda s: str(s["palette"]))
def test_palette_layers_run_from_their_codes_with_the_outputs_of_the_dense_decode(tmp_path, step):
    kept = assert_same_outputs(saved(tmp_path, step))
    assert all(isinstance(kept[i], CompressedLinear) and isinstance(kept[i].weights, PaletteWeights) for i in (0, 2))
    assert all(not name.endswith("weight") for name, _ in kept.named_parameters())  # no dense weight kept
    packed = kept[0].weights.indices
    width = (IN + 1) // 2 if step["palette"]["bits"] <= 4 else -(-IN // 4) * 4
    assert packed.dtype == torch.uint8 and packed.shape == (HIDDEN, width)


@pytest.mark.parametrize("d", [2, 4, 9])
def test_pq_layers_run_from_their_codes_with_the_outputs_of_the_dense_decode(tmp_path, d):
    step = {"pq": {"objective": "weights", "epochs": 0, "d": d, "k": 32, "overrides": {"2": {"d": 4}}}}
    kept = assert_same_outputs(saved(tmp_path, step))
    assert isinstance(kept[0].weights, PQWeights) and kept[0].weights.labels.shape == (HIDDEN, IN // d)


def test_pq_of_eight_wide_sub_vectors(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)).eval()
    path = saved(tmp_path, {"pq": {"objective": "weights", "epochs": 0, "d": 8, "k": 16}}, model)
    dense, kept = netshrink.load(path, model=model), netshrink.load(path, model=model, keep_compressed=True)
    x = torch.randn(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(kept(x), dense(x), rtol=1e-4, atol=1e-5)
    assert isinstance(kept[2].weights, PQWeights)


def test_without_numba_the_torch_kernels_give_the_same_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "NUMBA", False)
    assert_same_outputs(saved(tmp_path, {"palette": {"bits": 3, "per_channel": True, "group": 2}}))
    assert_same_outputs(saved(tmp_path, {"palette": {"bits": 7}}))
    assert_same_outputs(saved(tmp_path, {"pq": {"objective": "weights", "epochs": 0, "d": 4, "k": 16}}))


def test_a_pruned_layer_loads_dense(tmp_path):
    kept = assert_same_outputs(saved(tmp_path, {"prune": {"sparsity": 0.5}}))
    assert isinstance(kept[0], nn.Linear) and kept[0].weight.shape == (HIDDEN, IN)


def test_a_three_bit_palette_model_takes_under_a_third_of_its_dense_memory(tmp_path):
    path = saved(tmp_path, {"palette": {"bits": 3}})
    dense, kept = netshrink.load(path, model=mlp()), netshrink.load(path, model=mlp(), keep_compressed=True)
    assert module_bytes(kept) <= module_bytes(dense) / 3


def test_labels_out_of_range_are_one_format_error_naming_the_tensor(tmp_path):
    path = saved(tmp_path, {"palette": {"bits": 3}})
    nsk = read_nsk(path)
    rec = nsk.tensors[0]
    assert rec.name == "0.weight" and rec.encoded.params["book"] == 8
    book = Stream("codebook", rec.encoded.streams["codebook"].data[:4])  # 2 values, labels up to 7
    enc = dataclasses.replace(
        rec.encoded,
        params={**rec.encoded.params, "book": 2},
        streams={**rec.encoded.streams, "codebook": book},
    )
    nsk.tensors[0] = dataclasses.replace(rec, encoded=enc)
    write_nsk(tmp_path / "bad.nsk", nsk)
    with pytest.raises(FormatError, match=r"bad\.nsk.*'0\.weight'"):
        netshrink.load(tmp_path / "bad.nsk", model=mlp(), keep_compressed=True)


def test_evaluate_and_the_command_line_run_a_file_kept_compressed(tmp_path, capsys):
    from netshrink import zoo
    from netshrink.cli import main
    from netshrink.data import ArrayDataset

    path = tmp_path / "lenet300.nsk"
    recipe = parse_recipe({"name": "r", "steps": [{"palette": {"bits": 4, "per_channel": True}}]})
    netshrink.compress(zoo.build_model("lenet300"), recipe, name="lenet300", progress=False).save(path)
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(64) % 10)
    dense = netshrink.evaluate(path, data, progress=False)
    kept = netshrink.evaluate(path, data, progress=False, keep_compressed=True)
    assert kept == dense and kept.n == 64
    assert main(["eval", str(path), "--keep-compressed", "--dataset", "nonexistent-set"]) == 2  # flag parsed
    assert "nonexistent-set" in capsys.readouterr().err
