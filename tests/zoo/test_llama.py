"""The Llama-style decoder: causal, rotary positions (relative), grouped-query attention equal to
full attention with repeated key/value heads, a tied head, the Hugging Face names, checked shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from netshrink.errors import ModelError
from netshrink.zoo import BlockStructure, build_model, build_skeleton, model_info
from netshrink.zoo.llama import apply_rotary, rotary_angles

ARCH = dict(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, max_seq=16, tied=True)


def small(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("llama", **{**ARCH, **changes}).eval()


def reference_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """Attention written out position by position: softmax over earlier keys only."""
    b, t, _ = x.shape
    hd, group = attn.head_dim, attn.heads // attn.kv_heads
    q = attn.q_proj(x).view(b, t, attn.heads, hd)
    k = attn.k_proj(x).view(b, t, attn.kv_heads, hd)
    v = attn.v_proj(x).view(b, t, attn.kv_heads, hd)
    out = torch.zeros(b, t, attn.heads, hd)
    for h in range(attn.heads):
        for i in range(t):
            qi = rotate(q[:, i, h], i)
            scores = torch.stack([(qi * rotate(k[:, j, h // group], j)).sum(-1) for j in range(i + 1)], -1)
            weights = F.softmax(scores / math.sqrt(hd), -1)
            out[:, i, h] = (weights[..., None] * v[:, : i + 1, h // group]).sum(1)
    return attn.o_proj(out.reshape(b, t, -1))


def rotate(vec: torch.Tensor, position: int) -> torch.Tensor:
    """RoFormer rotation of pairs (i, i + d/2) by position * base^(-2i/d)."""
    half = vec.shape[-1] // 2
    theta = position * 10000.0 ** (-torch.arange(half, dtype=torch.float32) * 2 / vec.shape[-1])
    a, b = vec[..., :half], vec[..., half:]
    return torch.cat((a * theta.cos() - b * theta.sin(), a * theta.sin() + b * theta.cos()), -1)


def test_attention_matches_written_out_reference() -> None:
    model = small()
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        assert torch.allclose(attn(x), reference_attention(attn, x), atol=1e-5)


def test_causal_later_tokens_do_not_change_earlier_logits() -> None:
    model = small()
    tokens = torch.randint(0, 64, (2, 10))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 64
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert a.shape == (2, 10, 64)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-3)


def test_rotary_scores_depend_on_relative_position_only() -> None:
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = rotary_angles(12, 16, torch.device("cpu"))

    def score(i: int, j: int) -> float:
        return float((apply_rotary(q, cos[i], sin[i]) * apply_rotary(k, cos[j], sin[j])).sum())

    assert score(5, 2) == pytest.approx(score(9, 6), abs=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_grouped_query_equals_full_attention_with_repeated_heads() -> None:
    grouped = small()
    full = small(kv_heads=4)
    state = grouped.state_dict()
    for key in list(state):
        if key.endswith(("k_proj.weight", "v_proj.weight")):  # kv head h serves query heads 2h, 2h+1
            state[key] = state[key].view(2, 8, 32).repeat_interleave(2, 0).reshape(32, 32)
    full.load_state_dict(state)
    tokens = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        assert torch.allclose(grouped(tokens), full(tokens), atol=1e-5)


def test_tied_head_is_the_embedding_and_names_follow_hugging_face() -> None:
    model = small()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    untied = small(tied=False)
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    names = set(model.state_dict())
    assert {"model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight", "model.norm.weight"} <= names
    assert "model.layers.0.mlp.gate_proj.weight" in names and "lm_head.weight" in names
    assert model.state_dict()["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    assert not list(model.buffers())  # nothing a checkpoint does not give


def test_block_structure_runs_like_forward() -> None:
    model = small()
    assert isinstance(model, BlockStructure)
    layout = model.block_layout()
    assert layout.blocks == "model.layers" and layout.prefix == ("model.embed_tokens",)
    tokens = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        hidden = model.embed(tokens)
        for block in model.get_submodule(layout.blocks):
            hidden = model.run_block(block, hidden)
        assert torch.equal(model.head(hidden), model(tokens))


def test_skeleton_is_on_meta_and_info_describes_it() -> None:
    skeleton = build_skeleton("llama", **ARCH)
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert skeleton.arch_options() == ARCH
    assert model_info("llama").input_shape == (2048,) and not model_info("llama").has_pretrained


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(dim=30), "even width"),
        (dict(heads=4, kv_heads=3), "multiple"),
        (dict(layers=0), "layers"),
        (dict(vocab=0), "positive"),
    ],
)
def test_impossible_shapes_are_model_errors(bad, message) -> None:
    with pytest.raises(ModelError, match=message):
        build_model("llama", **{**ARCH, **bad})


def test_too_long_or_wrong_inputs_are_model_errors() -> None:
    model = small()
    with pytest.raises(ModelError, match="max_seq"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ModelError, match="shape"):
        model(torch.zeros(5, dtype=torch.long))
