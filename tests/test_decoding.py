"""Loading a file tensor by tensor into a module built on the meta device: the same tensors as
decoding the whole file, ties kept, every tensor placed, the device checked, memory bounded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import netshrink
from netshrink import decoding, zoo
from netshrink.errors import NetshrinkError
from tests.conftest import REPO
from tests.format.test_container import TiedLM

TINY_LLAMA = dict(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, max_seq=16, tied=True)


def whole_file_load(path, model=None):
    """How files were loaded before: the whole file decoded into a state dict, then load_state_dict."""
    nsk, identity = decoding.read_file(path)
    module = model if model is not None else decoding.zoo_module(identity, nsk.tensors, path)
    return decoding.loaded(module, decoding.decoded(nsk, identity, path))


def assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("recipe", ["oneshot-prune50-palette5", "oneshot-palette5"])
def test_load_gives_the_tensors_of_decoding_the_whole_file(tmp_path, recipe):
    torch.manual_seed(0)
    path = tmp_path / "r20.nsk"
    netshrink.compress(zoo.build_model("resnet20"), recipe, progress=False, name="resnet20").save(path)
    loaded = netshrink.load(path, device="cpu")
    assert_same_tensors(loaded, whole_file_load(path))
    assert not loaded.training and torch.equal(loaded.normalize.mean, zoo.build_model("resnet20").normalize.mean)
    assert_same_tensors(netshrink.load(path, model=zoo.build_model("resnet20")), loaded)


def test_a_tiny_llama_gets_every_tensor_and_keeps_its_head_tied(tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model("llama", **TINY_LLAMA)
    path = tmp_path / "llama.nsk"
    netshrink.save(model, path, name="llama")
    loaded = netshrink.load(path)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert_same_tensors(loaded, model)
    tokens = torch.randint(0, 64, (2, 8))
    assert torch.equal(loaded(tokens), model.eval()(tokens))


def test_a_tie_the_module_does_not_have_is_copied_not_tied(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tied.nsk"
    netshrink.compress(TiedLM(), "oneshot-palette5", progress=False).save(path)
    untied = TiedLM()
    untied.head.weight = torch.nn.Parameter(untied.embed.weight.detach().clone())
    loaded = netshrink.load(path, model=untied)
    assert loaded.head.weight is not loaded.embed.weight
    assert torch.equal(loaded.head.weight, loaded.embed.weight)
    tied = netshrink.load(path, model=TiedLM())
    assert tied.head.weight is tied.embed.weight and torch.equal(tied.embed.weight, loaded.embed.weight)


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "nonsense:x"])
def test_a_missing_device_is_one_line_before_the_file_is_read(tmp_path, device):
    with pytest.raises(NetshrinkError, match="device") as caught:
        netshrink.load(tmp_path / "does-not-exist.nsk", device=device)
    assert "\n" not in str(caught.value)


@pytest.mark.device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_onto_a_gpu(tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model("llama", **TINY_LLAMA)
    netshrink.save(model, tmp_path / "llama.nsk", name="llama")
    loaded = netshrink.load(tmp_path / "llama.nsk", device="cuda")
    assert {t.device.type for t in loaded.state_dict().values()} == {"cuda"}
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.model.embed_tokens.weight.cpu(), model.model.embed_tokens.weight)


PEAK_SCRIPT = (
    """
import json, sys
import torch, netshrink
def peak_kib():  # VmHWM: this process's own peak (ru_maxrss keeps the parent's across fork + exec)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
before = peak_kib()
model = """
    + "{load}"
    + """
print(json.dumps({"growth_kib": peak_kib() - before}))
"""
)


def peak_growth(path, load: str) -> int:
    """Bytes by which a fresh process's peak resident memory grows while `load` runs."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT.replace("{load}", load), str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])["growth_kib"] * 1024


def test_loading_a_model_takes_about_its_size_not_two_or_three_times(tmp_path):
    """A 130 MB model in a 130 MB file: decoding the file whole held file + state dict + model (~3x);
    tensor by tensor, the process grows by the model and one tensor (~1.1x)."""
    torch.manual_seed(0)
    arch = dict(vocab=8192, dim=1024, layers=2, heads=8, kv_heads=8, ffn=2816, max_seq=16, tied=True)
    model = zoo.build_model("llama", **arch)
    model_bytes = sum(p.numel() * 4 for p in model.parameters())
    path = tmp_path / "big.nsk"
    netshrink.save(model, path, name="llama")
    del model
    tensor_by_tensor = peak_growth(path, "netshrink.load(sys.argv[1])")
    whole = peak_growth(path, "__import__('tests.test_decoding').test_decoding.whole_file_load(sys.argv[1])")
    assert model_bytes > 100e6
    assert tensor_by_tensor < 1.6 * model_bytes < whole, (tensor_by_tensor, whole, model_bytes)
