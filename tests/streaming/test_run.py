"""Block-by-block compression: the same file as compressing the whole model, a file that loads to
the logits the streamed model computed, calibration on carried activations, tied heads."""

from __future__ import annotations

import pytest
import torch

import netshrink
from netshrink.format.container import read_nsk
from netshrink.streaming import compress_streaming
from netshrink.streaming.calibration import calibration_tokens
from tests.streaming.conftest import recipe_file, write_checkpoint

PQ_OUTPUT = "  - pq: {objective: output, epochs: 0, pointwise_d: 4, k: 16, calibration: 8, calibration_batch: 4}\n"
PALETTE_COMPENSATE = "  - palette: {bits: 3, compensate: true, calibration: 8, exclude: [model.embed_tokens]}\n"


def first_batch_logits(path) -> torch.Tensor:
    tokens = calibration_tokens(None, 64, 8, 32, seed=0).tokens
    with torch.no_grad():
        return netshrink.load(path)(tokens[:4])


def test_one_shot_recipe_gives_the_bytes_of_whole_model_compression(tmp_path, checkpoint) -> None:
    model = write_checkpoint(checkpoint)
    result = compress_streaming(checkpoint, "oneshot-palette5", output=tmp_path / "s.nsk", progress=False)
    netshrink.compress(model, "oneshot-palette5", name="llama", progress=False).write(tmp_path / "whole.nsk")
    assert (tmp_path / "s.nsk").read_bytes() == (tmp_path / "whole.nsk").read_bytes()
    assert result.file_bytes == (tmp_path / "s.nsk").stat().st_size and result.blocks == 3
    assert "random tokens" in result.to_text()
    assert torch.equal(first_batch_logits(tmp_path / "s.nsk"), result.logits)
    assert not list(tmp_path.glob(".*"))  # no payload or resume state left


@pytest.mark.parametrize("steps", [PQ_OUTPUT, PALETTE_COMPENSATE], ids=["pq-output", "palette-compensate"])
def test_calibrated_recipes_load_to_the_streamed_logits(tmp_path, tied_checkpoint, steps) -> None:
    recipe = recipe_file(tmp_path, "calibrated", steps)
    result = compress_streaming(tied_checkpoint, recipe, output=tmp_path / "c.nsk", progress=False)
    assert torch.equal(first_batch_logits(tmp_path / "c.nsk"), result.logits)
    loaded = netshrink.load(tmp_path / "c.nsk")
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    tied = [t for t in read_nsk(tmp_path / "c.nsk").tensors if t.tied_to]
    assert [(t.name, t.tied_to) for t in tied] == [("lm_head.weight", "model.embed_tokens.weight")]


def test_blocks_calibrate_on_the_outputs_of_the_compressed_blocks_before(tmp_path, checkpoint, monkeypatch) -> None:
    """Block i's steps get X_i computed with blocks 0..i-1 already compressed (GPTQ's order)."""
    from netshrink.streaming import run

    seen = []
    original = run._compress_part

    def spy(skeleton, part, recipe, data, alias, seed):
        seen.append((part.name, data.values.clone()))
        return original(skeleton, part, recipe, data, alias, seed)

    monkeypatch.setattr(run, "_compress_part", spy)
    compress_streaming(checkpoint, "oneshot-palette5", output=tmp_path / "s.nsk", progress=False)
    assert [name for name, _ in seen] == ["prefix", "block 0", "block 1", "block 2", "suffix"]
    compressed = netshrink.load(tmp_path / "s.nsk")
    tokens = seen[0][1]
    with torch.no_grad():
        hidden = compressed.embed(tokens)
        assert torch.equal(seen[1][1], hidden)
        hidden = compressed.model.layers[0](hidden)
        assert torch.equal(seen[2][1], hidden)


def test_calibration_from_a_token_tensor_is_used_and_reported(tmp_path, checkpoint) -> None:
    tokens = torch.arange(64).reshape(4, 16)
    result = compress_streaming(
        checkpoint, "oneshot-palette5", output=tmp_path / "s.nsk", calibration=tokens, batch_size=2, progress=False
    )
    assert "given token tensor" in result.calibration
    with torch.no_grad():
        assert torch.equal(netshrink.load(tmp_path / "s.nsk")(tokens[:2]), result.logits)


def test_a_user_model_on_meta_streams_from_a_bf16_checkpoint(tmp_path) -> None:
    from safetensors.torch import save_file

    from netshrink.zoo import BlockLayout

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(50, 16)
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(2))
            self.out = torch.nn.Linear(16, 50)

        def block_layout(self) -> BlockLayout:
            return BlockLayout(prefix=("embedding",), blocks="blocks", suffix=("out",))

        def embed(self, tokens):
            return self.embedding(tokens)

        def run_block(self, block, hidden):
            return hidden + torch.tanh(block(hidden))

        def head(self, hidden):
            return self.out(hidden)

        def forward(self, tokens):
            hidden = self.embed(tokens)
            for block in self.blocks:
                hidden = self.run_block(block, hidden)
            return self.head(hidden)

    torch.manual_seed(0)
    original = Model()
    save_file({k: v.bfloat16() for k, v in original.state_dict().items()}, str(tmp_path / "user.safetensors"))
    with torch.device("meta"):
        skeleton = Model()
    result = compress_streaming(
        tmp_path / "user.safetensors", "oneshot-palette5", output=tmp_path / "u.nsk", model=skeleton, progress=False
    )
    loaded = netshrink.load(tmp_path / "u.nsk", model=Model())
    tokens = calibration_tokens(None, 50, 8, 64, seed=0).tokens
    with torch.no_grad():
        assert torch.equal(loaded(tokens[:4]), result.logits)
        reference = original(tokens[:4])
    assert (loaded(tokens[:4]) - reference).abs().mean() < 0.1 * reference.abs().mean()
