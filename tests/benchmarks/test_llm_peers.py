"""Peer weight-only quantizers (benchmarks/llm_peers.py) on a tiny random Llama: each peer's model
stays close to the original and closer with more bits, only the block Linears change (the head too
when asked, a tied one once), and every byte count is the size formula of its peer, worked by hand."""

from __future__ import annotations

import copy

import llm_peers
import pytest
import torch
from llm_peers import PeerResult, PeerUnavailable, fake_quantize, rtn_weight, run_peer, target_linears

from netshrink.zoo.llama import Llama

SHAPE = dict(vocab=256, dim=64, layers=2, heads=4, kv_heads=2, ffn=128)
#: (out, in) of each block Linear: q, k, v, o, gate, up, down.
LINEAR_SHAPES = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)] * SHAPE["layers"]
N = sum(rows * columns for rows, columns in LINEAR_SHAPES)  # 73728


@pytest.fixture(scope="module")
def tiny() -> tuple[Llama, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Llama(**SHAPE).eval()
    tokens = torch.randint(0, SHAPE["vocab"], (2, 16))
    with torch.no_grad():
        return model, tokens, model(tokens)


def logits_error(model: Llama, tokens: torch.Tensor, reference: torch.Tensor) -> float:
    with torch.no_grad():
        return ((model(tokens) - reference).norm() / reference.norm()).item()


def side_bits_per_peer(peer: str, bits: int) -> int:
    """The tables each peer stores for the tiny model, by hand (group 64 weights, or 16 channels)."""
    if peer == "coreml":  # one fp16 table of 2^bits entries per 16 output channels
        return sum(rows // 16 for rows, _ in LINEAR_SHAPES) * 2**bits * 16
    per_group = {"rtn": 16 + 16, "hqq": 16 + 16, "torchao": 16 + 8}[peer]  # scale + zero
    return N // 64 * per_group


def test_rtn_bytes_by_hand(tiny) -> None:
    model = copy.deepcopy(tiny[0])
    result = llm_peers.quantize_rtn(model, 2, 64)
    assert result.weights == N == 73728
    assert result.stored_bytes == (2 * N + 32 * N // 64) // 8 == 23040
    assert result.linear_bits_per_weight == 2.5


def test_rtn_groups_of_a_row() -> None:
    """Each group holds at most 2^bits values on an even grid, each within half a step of its weight;
    a row that the group does not divide ends in a shorter group (64 = 48 + 16: two groups a row)."""
    torch.manual_seed(1)
    weight = torch.randn(8, 64)
    dequantized, bits_stored = rtn_weight(weight, 3, 48)
    assert bits_stored == 3 * 512 + 8 * 2 * 32
    for group in (dequantized[:, :48], dequantized[:, 48:]):
        for row, original in zip(group, weight[:, :48] if group.shape[1] == 48 else weight[:, 48:]):
            levels = row.unique()
            assert len(levels) <= 8
            step = (original.max() - original.min()) / 7
            assert (row - original).abs().max() <= step / 2 + 1e-3
    constant, _ = rtn_weight(torch.full((2, 64), 0.25), 2, 64)
    assert torch.equal(constant, torch.full((2, 64), 0.25))


def test_only_block_linears_change_unless_the_head_is_asked(tiny) -> None:
    original = tiny[0]
    model = copy.deepcopy(original)
    result = llm_peers.quantize_rtn(model, 2, 64)
    after, before = model.state_dict(), original.state_dict()
    changed = {name for name in before if not torch.equal(after[name], before[name])}
    assert changed == {f"{name}.weight" for name in target_linears(original)}
    assert len(changed) == 14 and result.weights == N

    model = copy.deepcopy(original)
    result = llm_peers.quantize_rtn(model, 2, 64, include_head=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied, quantized once
    assert not torch.equal(model.lm_head.weight, original.lm_head.weight)
    assert result.weights == N + SHAPE["vocab"] * SHAPE["dim"]


PEER_RUNS = [("rtn", 64, None), ("coreml", 16, "coremltools"), ("hqq", 64, "hqq"), ("torchao", 64, "torchao")]


@pytest.mark.parametrize("peer, group, module", PEER_RUNS, ids=[run[0] for run in PEER_RUNS])
def test_peer_is_close_and_sized_by_its_formula(tiny, peer: str, group: int, module: str | None) -> None:
    if module:
        pytest.importorskip(module)
    original, tokens, reference = tiny
    errors = []
    for bits in (2, 3, 4):
        model = copy.deepcopy(original)
        result = run_peer(peer, model, bits, group)
        assert isinstance(result, PeerResult), result
        assert (result.bits, result.group, result.weights) == (bits, group, N)
        expected_bits = bits * N + side_bits_per_peer(peer, bits)
        assert result.stored_bytes == expected_bits // 8
        assert result.linear_bits_per_weight == pytest.approx(expected_bits / N)
        errors.append(logits_error(model, tokens, reference))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05, errors


def test_torchao_int4_reports_why_it_cannot_run(tiny) -> None:
    pytest.importorskip("torchao")
    original = tiny[0]
    model = copy.deepcopy(original)
    result = run_peer("torchao", model, 4, 64, kernel="int4")
    if isinstance(result, PeerResult):
        pytest.skip("torchao's int4 weight-only path runs here")
    assert result.startswith("torchao Int4WeightOnlyConfig") and "\n" not in result
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))


def test_a_failing_peer_leaves_the_model_unchanged(tiny) -> None:
    original = tiny[0]
    model = copy.deepcopy(original)
    calls = []

    def fails_on_the_third(weight: torch.Tensor, bits: int, group: int | None) -> tuple[torch.Tensor, int]:
        calls.append(weight.shape)
        if len(calls) == 3:
            raise PeerUnavailable("no kernel")
        return torch.zeros_like(weight), bits * weight.numel()

    with pytest.raises(PeerUnavailable):
        fake_quantize(model, "failing", 2, 64, fails_on_the_third)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))


def test_coreml_counts_vector_indices_and_channel_scales() -> None:
    """cluster_dim=2: one index per 2 weights, tables of 2-vectors; a per-channel scale is one fp16 a row."""
    pytest.importorskip("coremltools")
    torch.manual_seed(2)
    weight = torch.randn(32, 64)
    _, vector_bits = llm_peers.coreml_weight(weight.clone(), 3, 16, cluster_dim=2)
    assert vector_bits == 3 * 32 * 64 // 2 + 2 * 8 * 2 * 16  # 2 tables of 8 entries of 2 fp16
    dequantized, scaled_bits = llm_peers.coreml_weight(weight.clone(), 3, 16, enable_per_channel_scale=True)
    assert scaled_bits == 3 * 32 * 64 + 2 * 8 * 16 + 32 * 16
    assert ((dequantized - weight).norm() / weight.norm()).item() < 0.25
