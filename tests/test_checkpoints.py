"""A .safetensors checkpoint as a model source: the model its metadata (or --model / --arch) names,
its weights loaded; a checkpoint that does not fit, or does not fit in memory, is one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import netshrink
import netshrink.api.checkpoints as checkpoints
from netshrink import zoo
from netshrink.api.models import resolve
from netshrink.cli import main
from netshrink.errors import ModelError, NetshrinkError

ARCH = dict(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, max_seq=16, tied=True)


def write_checkpoint(path, arch=ARCH, metadata=True, drop=("lm_head.weight",)):
    """A tiny llama's weights as safetensors, its tied head left out (as checkpoints of tied models do)."""
    torch.manual_seed(0)
    model = zoo.build_model("llama", **arch)
    state = {k: v.clone() for k, v in model.state_dict().items() if k not in drop}
    meta = {"netshrink_model": "llama", "arch": json.dumps(arch)} if metadata else None
    save_file(state, str(path), metadata=meta)
    return model


def test_the_model_the_metadata_names_is_loaded_with_its_weights(tmp_path):
    original = write_checkpoint(tmp_path / "ckpt.safetensors")
    source = resolve(tmp_path / "ckpt.safetensors")
    assert source.identity.name == "llama" and source.identity.arch["layers"] == 2
    for key, value in original.state_dict().items():
        assert torch.equal(source.module.state_dict()[key], value), key
    assert source.module.lm_head.weight is source.module.model.embed_tokens.weight
    compressed = netshrink.compress(tmp_path / "ckpt.safetensors", "oneshot-palette5", progress=False)
    assert compressed.identity.name == "llama"


def test_model_and_arch_name_a_checkpoint_without_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    write_checkpoint(path, metadata=False)
    with pytest.raises(ModelError, match="does not name its model"):
        resolve(path)
    assert resolve(path, identity={"name": "llama", "arch": ARCH}).module.config["layers"] == 2
    out = tmp_path / "out.nsk"
    args = ["compress", str(path), "--model", "llama", "--arch", json.dumps(ARCH), "--recipe", "oneshot-palette5"]
    assert main([*args, "--no-eval", "-o", str(out)]) == 0 and out.is_file()


@pytest.mark.parametrize(
    "arch,drop,offender",
    [
        ({**ARCH, "layers": 1}, (), "model.layers.1.input_layernorm.weight"),  # a layer short
        ({**ARCH, "ffn": 40}, (), "model.layers.0.mlp.gate_proj.weight"),
        (ARCH, ("lm_head.weight", "model.norm.weight"), "model.norm.weight"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_tensor(tmp_path, capsys, arch, drop, offender):
    path = tmp_path / "ckpt.safetensors"
    write_checkpoint(path, arch, metadata=False, drop=drop)
    code = main(
        [
            "compress",
            str(path),
            "--model",
            "llama",
            "--arch",
            json.dumps(ARCH),
            "--no-eval",
            "-o",
            str(tmp_path / "o.nsk"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and offender in err, err


def test_a_model_larger_than_the_memory_left_is_one_line_pointing_to_stream(tmp_path, monkeypatch, capsys):
    path = tmp_path / "ckpt.safetensors"
    write_checkpoint(path)
    monkeypatch.setattr(checkpoints, "available_bytes", lambda: 1000)
    assert main(["compress", str(path), "--no-eval", "-o", str(tmp_path / "o.nsk")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory loading" in err and "--stream" in err

    def failing_read(self, name):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(checkpoints, "available_bytes", lambda: None)
    monkeypatch.setattr(checkpoints.SafetensorsCheckpoint, "read", failing_read)
    with pytest.raises(NetshrinkError, match="out of memory loading .*--stream"):
        resolve(path)
