"""The .safetensors reader: tensors read from their byte ranges (in small chunks) equal safetensors'
own reading, the metadata names the model, and the fingerprint tells checkpoints apart."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from netshrink.streaming import checkpoint as reader
from netshrink.streaming.checkpoint import SafetensorsCheckpoint


def test_tensors_read_in_chunks_equal_safetensors(tmp_path, monkeypatch, checkpoint) -> None:
    monkeypatch.setattr(reader, "READ_CHUNK", 7)
    ckpt = SafetensorsCheckpoint.open(checkpoint)
    expected = load_file(str(checkpoint))
    assert set(ckpt.entries) == set(expected)
    for name, value in expected.items():
        assert torch.equal(ckpt.read(name), value)
    name, arch = ckpt.model_description()
    assert name == "llama" and arch["dim"] == 32


def test_dtypes_empty_tensors_and_fingerprints(tmp_path) -> None:
    tensors = {"h": torch.arange(6, dtype=torch.float16).reshape(2, 3), "e": torch.zeros(0, 4), "i": torch.arange(3)}
    save_file(tensors, str(tmp_path / "a.safetensors"))
    ckpt = SafetensorsCheckpoint.open(tmp_path / "a.safetensors")
    for name, value in tensors.items():
        back = ckpt.read(name)
        assert back.dtype == value.dtype and torch.equal(back, value)
    assert ckpt.model_description() == (None, {})
    save_file({**tensors, "h": tensors["h"] + 1}, str(tmp_path / "b.safetensors"))  # same header, other values
    save_file({**tensors, "x": torch.ones(1)}, str(tmp_path / "c.safetensors"))
    prints = [SafetensorsCheckpoint.open(tmp_path / f"{n}.safetensors").fingerprint for n in "abc"]
    assert len(set(prints)) == 3
    assert SafetensorsCheckpoint.open(tmp_path / "a.safetensors").fingerprint == prints[0]
