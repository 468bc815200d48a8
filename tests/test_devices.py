"""Devices: names checked up front (one-line errors), batches moved to the model, CPU results unchanged
by `device="cpu"`, bf16 autocast training. Tests marked `device` need CUDA and skip without it
(benchmarks/gpu_check.py runs them on a GPU machine)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyNet
from torch import nn

import netshrink
from netshrink.cli import main
from netshrink.data import ArrayDataset
from netshrink.devices import autocast_context, model_device, placed_on, resolve_device, to_device
from netshrink.errors import NetshrinkError
from netshrink.evaluate import evaluate
from netshrink.recipe import parse_recipe
from netshrink.training.loop import TrainConfig, fit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def brightest_channel(n: int = 256, size: int = 8, seed: int = 0) -> ArrayDataset:
    """Images labelled by their brightest colour channel: learnable in a few steps by TinyNet."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ArrayDataset(x, x.float().mean((2, 3)).argmax(1), tuple("abcdefghij"))


def tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


# ---------------------------------------------------------------------------------------------- names


def test_no_device_named_means_cuda_when_there_is_one(monkeypatch):
    monkeypatch.delenv("NETSHRINK_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None).type == "cuda"
    monkeypatch.setenv("NETSHRINK_DEVICE", "cpu")  # the machine's setting
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setenv("NETSHRINK_DEVICE", "cuda:9")
    with pytest.raises(NetshrinkError, match="device cuda:9 is not available"):
        resolve_device(None)


def test_device_names_are_read_as_pytorch_spells_them():
    assert (
        resolve_device("cpu") == resolve_device(" CPU ") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("nonsense", "'nonsense' is not a device name: give cpu, cuda, cuda:N or mps"),
        ("cuda:x", "is not a device name"),
        ("gpu", "is not a device name"),
        ("cpu:1", "device cpu:1 is not available"),
    ],
)
def test_a_misspelt_device_is_a_one_line_error(name, message):
    with pytest.raises(NetshrinkError, match=message) as info:
        resolve_device(name)
    assert "\n" not in str(info.value)


def test_a_missing_gpu_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(NetshrinkError, match="device cuda:3 is not available: PyTorch here has no CUDA"):
        resolve_device("cuda:3")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(NetshrinkError, match="device cuda is not available: no CUDA device is visible"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(NetshrinkError, match=r"device cuda:3 is not available: this machine has 1 CUDA device \("):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_mps_is_refused_where_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(NetshrinkError, match="device mps is not available"):
        resolve_device("mps")


@pytest.mark.parametrize("command", [["eval", "lenet5"], ["sensitivity", "lenet5"], ["compress", "lenet5"]])
@pytest.mark.parametrize("device", ["cuda:7", "nonsense"])
def test_cli_refuses_a_missing_device_in_one_line_before_any_work(capsys, monkeypatch, command, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("netshrink.api.flows.resolve", _must_not_run)  # no model is loaded first
    assert main([*command, "--device", device, "-o" if command[0] != "eval" else "--json", *_out(command)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"netshrink: error: device {device!r}" if device == "nonsense" else "netshrink: error: device"
    )
    assert err.count("\n") == 1


def test_cli_train_refuses_a_missing_device(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "lenet5", "--device", "cuda:7", "-o", str(tmp_path / "m.nsk")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netshrink: error: device cuda:7 is not available") and err.count("\n") == 1
    assert not (tmp_path / "m.nsk").exists()


def test_autocast_is_refused_with_a_target(capsys):
    assert main(["compress", "lenet5", "--target-ratio", "8", "--autocast", "bf16"]) == 2
    assert "--autocast" in capsys.readouterr().err


def _out(command: list[str]) -> list[str]:
    return [] if command[0] == "eval" else ["/tmp/netshrink-device-test.out"]


def _must_not_run(*args, **kwargs):
    raise AssertionError("the model was resolved before the device was checked")


# ---------------------------------------------------------------------------------------- helpers


def test_model_device_and_batches_moved_to_it():
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no tensors at all
    assert model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")  # buffers only
    x = torch.ones(2)
    moved = to_device({"ids": x, "pair": (x, [x]), "n": 3}, torch.device("cpu"))
    assert moved["ids"] is x and moved["pair"][0] is x and moved["pair"][1][0] is x and moved["n"] == 3
    assert isinstance(moved["pair"], tuple) and isinstance(moved["pair"][1], list)
    with placed_on(nn.Linear(2, 2), None) as module:
        assert model_device(module) == torch.device("cpu")


def test_autocast_setting_is_checked():
    with pytest.raises(ValueError, match="autocast"):
        TrainConfig(autocast="fp8")
    with pytest.raises(NetshrinkError, match="autocast"):
        autocast_context(torch.device("cpu"), "fp16")


# ------------------------------------------------------------------------------------- CPU results


def test_fit_on_cpu_named_equals_fit_where_the_model_is():
    data, config = brightest_channel(), TrainConfig(epochs=2, batch_size=32, lr=0.05)
    default, named = tiny(), tiny()
    losses = fit(default, data, config, progress=False).losses
    assert fit(named, data, config, progress=False, device="cpu").losses == losses
    for (name, a), b in zip(default.state_dict().items(), named.state_dict().values()):
        assert torch.equal(a, b), name


def test_compress_on_cpu_named_equals_the_default_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("NETSHRINK_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the default is cpu, on any machine
    steps = recipe(
        {"palette": {"bits": 3, "compensate": True, "calibration": 64}},
        {"pq": {"k": 8, "pointwise_d": 4, "calibration": 64, "epochs": 0.25, "batch_size": 32}},
    )
    data, model = brightest_channel(), tiny()
    files = []
    for index, device in enumerate((None, "cpu")):
        files.append(tmp_path / f"{index}.nsk")
        netshrink.compress(model, steps, data=data, progress=False, device=device, output=files[-1])
    assert files[0].read_bytes() == files[1].read_bytes()


def test_bf16_autocast_training_on_cpu_lowers_the_loss():
    data = brightest_channel(512)
    model = tiny()
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, autocast="bf16")
    losses = fit(model, data, config, progress=False, device="cpu").losses
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights in float32


def test_recipe_autocast_reaches_the_training_loop(monkeypatch):
    seen = []
    original = fit

    def spy(model, data, config, *args, **kwargs):
        seen.append(config.autocast)
        return original(model, data, config, *args, **kwargs)

    monkeypatch.setattr("netshrink.training.retraining.fit", spy)
    steps = recipe({"pq": {"objective": "weights", "k": 4, "epochs": 0.1, "batch_size": 32}})
    netshrink.compress(tiny(), steps, data=brightest_channel(), progress=False, autocast="bf16")
    assert seen == ["bf16"]


# ------------------------------------------------------------------------------------- on a GPU


@pytest.mark.device
@needs_cuda
def test_fit_on_cuda_trains_there():
    model = tiny()
    result = fit(model, brightest_channel(512), TrainConfig(epochs=3, batch_size=32, lr=0.05), device="cuda")
    assert model_device(model).type == "cuda"
    assert sum(result.losses[-5:]) < 0.6 * sum(result.losses[:5])


@pytest.mark.device
@needs_cuda
def test_bf16_autocast_on_cuda_lowers_the_loss():
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, autocast="bf16")
    result = fit(tiny(), brightest_channel(512), config, progress=False, device="cuda")
    assert sum(result.losses[-5:]) < 0.6 * sum(result.losses[:5])


def _output_error(compressed: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((compressed.cpu()(x) - model(x)).pow(2).mean())


@pytest.mark.device
@needs_cuda
@pytest.mark.parametrize(
    "step",
    [
        {"palette": {"bits": 3, "compensate": True, "calibration": 128}},
        {"pq": {"k": 16, "pointwise_d": 4, "calibration": 128, "epochs": 0, "feedback": True}},
        {"pq": {"k": 16, "pointwise_d": 4, "calibration": 128, "epochs": 0.5, "batch_size": 32}},
        {"pq": {"k": 16, "calibration": 128, "epochs": 0.5, "share_codebook": True, "reassign_every": 2}},
    ],
)
def test_calibrated_steps_on_cuda_match_cpu(step, tmp_path):
    data, model = brightest_channel(), tiny()
    x = brightest_channel(128, seed=1).images.float() / 255
    errors, weights = {}, {}
    for device in ("cpu", "cuda"):
        compressed = netshrink.compress(model, recipe(step), data=data, progress=False, device=device)
        assert model_device(compressed.model).type == device
        compressed.save(tmp_path / f"{device}.nsk")  # encoding a model on the GPU
        weights[device] = netshrink.load(tmp_path / f"{device}.nsk", copy.deepcopy(model)).state_dict()
        errors[device] = _output_error(compressed.model, model, x)
    assert errors["cuda"] <= 1.1 * errors["cpu"] + 1e-6
    names = [name for name in weights["cpu"] if name.endswith("weight")]
    same = [torch.isclose(weights["cpu"][n], weights["cuda"][n], atol=1e-3).float().mean() for n in names]
    assert min(same) > 0.8  # some assignments may differ where float sums round differently


@pytest.mark.device
@needs_cuda
def test_evaluate_on_cuda_scores_as_on_cpu_and_puts_the_model_back():
    model, data = tiny(), brightest_channel(300, seed=2)
    on_cpu = evaluate(model, data, progress=False)
    on_cuda = evaluate(model, data, progress=False, device=torch.device("cuda"))
    assert abs(on_cuda.value - on_cpu.value) <= 1 / 300
    assert model_device(model).type == "cpu"


@pytest.mark.device
@needs_cuda
def test_sensitivity_on_cuda_matches_cpu(tmp_path):
    from netshrink.budget.sensitivity import SensitivityConfig, measure

    model, data = tiny(), brightest_channel(300)
    config = SensitivityConfig(bits=(2, 4), sparsity=(0.5,), samples=100)
    on_cpu = measure(copy.deepcopy(model), data, config, dataset="x", progress=False)
    on_cuda = measure(copy.deepcopy(model).cuda(), data, config, dataset="x", progress=False)
    for a, b in zip(on_cpu.layers, on_cuda.layers):
        assert [t.bytes for t in a.bits] == [t.bytes for t in b.bits]
        assert [t.kl for t in a.bits] == pytest.approx([t.kl for t in b.bits], rel=0.05, abs=1e-4)
