"""Tests for netshrink.format.entropy: exact round trips, sizes against the entropy bound, hostile input."""

from __future__ import annotations

import numpy as np
import pytest

from netshrink.errors import CodecError, FormatError
from netshrink.format.entropy import (
    MODE_NAMES,
    decode_symbols,
    empirical_entropy_bits,
    encode_symbols,
    pack_bits,
    stream_mode,
    unpack_bits,
)

RNG_SEED = 1234


def _stream(kind: str, n: int, alphabet: int, seed: int = RNG_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, alphabet, n)
    if kind == "constant":
        return np.full(n, alphabet - 1)
    if kind == "geometric":
        return np.minimum(rng.geometric(0.15, n) - 1, alphabet - 1)
    if kind == "laplace":  # palette indices of Laplace weights in linear bins
        return np.clip(np.round(rng.laplace(0, alphabet / 10, n)) + alphabet // 2, 0, alphabet - 1).astype(int)
    if kind == "sparse_large":  # a few far-apart symbols of a 2**16 alphabet
        return rng.choice(np.array([3, 700, 4096, 65535]), n, p=[0.7, 0.2, 0.07, 0.03])
    raise ValueError(kind)


KINDS = ["uniform", "constant", "geometric", "laplace", "sparse_large"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [0, 1, 2, 7, 64, 1000, 20000])
def test_round_trip_exact(kind: str, n: int) -> None:
    alphabet = 65536 if kind == "sparse_large" else 32
    symbols = _stream(kind, n, alphabet)
    data = encode_symbols(symbols, alphabet)
    decoded = decode_symbols(data, n, alphabet)
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, symbols)


@pytest.mark.parametrize("alphabet", [1, 2, 3, 255, 256, 4097, 65536, 2**24])
def test_round_trip_alphabets(alphabet: int) -> None:
    for kind in ("uniform", "geometric"):
        symbols = _stream(kind, 3000, alphabet)
        np.testing.assert_array_equal(decode_symbols(encode_symbols(symbols, alphabet), 3000, alphabet), symbols)


def test_modes_chosen_as_documented() -> None:
    assert encode_symbols(np.zeros(0, dtype=int), 4) == b"\x00"
    assert stream_mode(encode_symbols(np.full(10**5, 3), 4)) == "constant"
    assert len(encode_symbols(np.full(10**5, 3), 4)) == 2
    assert stream_mode(encode_symbols(_stream("uniform", 10**5, 256), 256)) == "packed"
    assert stream_mode(encode_symbols(_stream("geometric", 10**5, 64), 64)).startswith("rans")
    assert stream_mode(encode_symbols(_stream("sparse_large", 10**5, 65536), 65536)) == "rans-sparse"
    assert set(MODE_NAMES.values()) == {"empty", "constant", "packed", "rans-dense", "rans-sparse"}


@pytest.mark.parametrize(
    ("kind", "alphabet"),
    [("geometric", 32), ("laplace", 32), ("geometric", 65536), ("sparse_large", 65536), ("laplace", 256)],
)
def test_large_streams_within_one_percent_of_entropy(kind: str, alphabet: int) -> None:
    symbols = _stream(kind, 200_000, alphabet)
    coded_bits = 8 * len(encode_symbols(symbols, alphabet))
    entropy = empirical_entropy_bits(symbols)
    assert entropy <= coded_bits <= 1.01 * entropy


def test_million_symbols_within_a_tenth_percent() -> None:
    """With 24-bit probabilities rANS is essentially at the entropy; the 32-count table is ~0.02 %."""
    symbols = _stream("laplace", 10**6, 32)
    entropy = empirical_entropy_bits(symbols)
    assert 8 * len(encode_symbols(symbols, 32)) <= 1.001 * entropy


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 3, 10, 40, 300, 5000])
def test_never_much_bigger_than_bit_packing(kind: str, n: int) -> None:
    alphabet = 65536 if kind == "sparse_large" else 32
    symbols = _stream(kind, n, alphabet)
    width = max(1, (alphabet - 1).bit_length())
    assert len(encode_symbols(symbols, alphabet)) <= len(pack_bits(symbols, width)) + 2


def test_deterministic() -> None:
    for kind in KINDS:
        symbols = _stream(kind, 5000, 65536)
        first = encode_symbols(symbols, 65536)
        assert encode_symbols(symbols.copy(), 65536) == first
        assert encode_symbols(symbols.astype(np.uint16), 65536) == first


def test_empirical_entropy_bits() -> None:
    assert empirical_entropy_bits(np.zeros(0, dtype=int)) == 0.0
    assert empirical_entropy_bits(np.full(10, 4)) == 0.0
    assert empirical_entropy_bits(np.array([0, 1] * 50)) == pytest.approx(100.0)
    assert empirical_entropy_bits(np.arange(8)) == pytest.approx(24.0)


@pytest.mark.parametrize("width", range(1, 33))
def test_pack_unpack_round_trip(width: int) -> None:
    rng = np.random.default_rng(width)
    for n in (0, 1, 7, 8, 9, 1001):
        values = rng.integers(0, 2**width, n, dtype=np.int64)
        values[:1] = 2**width - 1
        data = pack_bits(values, width)
        assert len(data) == (n * width + 7) // 8
        np.testing.assert_array_equal(unpack_bits(data, width, n), values)


def test_pack_bits_layout_is_little_endian() -> None:
    assert pack_bits(np.array([1, 0, 3]), 2) == bytes([0b110001])
    assert pack_bits(np.array([0x1234]), 16) == b"\x34\x12"
    assert pack_bits(np.array([1, 1]), 9) == bytes([1, 2, 0])


def test_pack_bits_spans_chunks() -> None:
    values = np.random.default_rng(0).integers(0, 2**11, 600_003)
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, 11), 11, values.size), values)


@pytest.mark.parametrize(("values", "width"), [([4], 2), ([-1], 3), ([0], 0), ([0], 33), ([[1]], 3)])
def test_pack_bits_rejects_bad_input(values: list, width: int) -> None:
    with pytest.raises(CodecError):
        pack_bits(np.array(values), width)


def test_unpack_bits_rejects_short_data() -> None:
    with pytest.raises(FormatError):
        unpack_bits(b"\x00", 5, 2)


@pytest.mark.parametrize(
    ("symbols", "alphabet"),
    [
        ([0, 5], 5),
        ([-1, 0], 5),
        ([0], 0),
        ([0], 2**24 + 1),
        ([[0, 1]], 2),
        ([0.5], 2),
        ([0], 2.0),
    ],
)
def test_encode_rejects_bad_arguments(symbols: list, alphabet) -> None:
    with pytest.raises(CodecError):
        encode_symbols(np.array(symbols), alphabet)


def test_decode_rejects_mismatched_count_and_alphabet() -> None:
    symbols = _stream("geometric", 500, 32)
    data = encode_symbols(symbols, 32)
    for count, alphabet in [(499, 32), (501, 32), (500, 8), (-1, 32), (500, 0), (0, 32)]:
        with pytest.raises(FormatError):
            decode_symbols(data, count, alphabet)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x09",
        b"\x00\x00",
        b"\x01",
        b"\x01\x80",
        b"\x01\x20",
        b"\x02",
        b"\x02\x06\x00",
        b"\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        b"\x04\x7f",
        b"\x04\x02\x00\x00\x01\x01\x05",
    ],
)
def test_decode_rejects_malformed_headers(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode_symbols(data, 2, 32)


def test_decode_rejects_huge_claims_without_allocating() -> None:
    # A dense table claiming a 2**24-symbol span, a sparse one claiming 2**20 entries: both
    # must be refused from the byte budget alone.
    with pytest.raises(FormatError):
        decode_symbols(b"\x03\x00\x80\x80\x80\x08\x01", 10, 2**24)
    with pytest.raises(FormatError):
        decode_symbols(b"\x04\x80\x80\x40\x00", 2**30, 2**24)


def _mutations(data: bytes, rng: np.random.Generator, rounds: int):
    for _ in range(rounds):
        mutated = bytearray(data)
        op = rng.integers(4)
        if op == 0 and mutated:
            mutated[rng.integers(len(mutated))] ^= 1 << int(rng.integers(8))
        elif op == 1:
            mutated = mutated[: rng.integers(len(mutated) + 1)]
        elif op == 2 and mutated:
            mutated[rng.integers(len(mutated))] = int(rng.integers(256))
        else:
            mutated += bytes(rng.integers(0, 256, int(rng.integers(1, 4))).astype(np.uint8))
        yield bytes(mutated)


@pytest.mark.parametrize(
    ("kind", "n", "alphabet"),
    [
        ("geometric", 300, 32),
        ("sparse_large", 800, 65536),
        ("uniform", 200, 32),
        ("constant", 50, 7),
        ("geometric", 1, 4),
        ("laplace", 2000, 256),
    ],
)
def test_fuzzed_streams_decode_exactly_or_raise_format_error(kind: str, n: int, alphabet: int) -> None:
    symbols = _stream(kind, n, alphabet)
    data = encode_symbols(symbols, alphabet)
    rng = np.random.default_rng(n)
    outcomes = {"exact": 0, "format_error": 0, "undetected": 0}
    for mutated in _mutations(data, rng, 1500):
        try:
            decoded = decode_symbols(mutated, n, alphabet)
        except FormatError:
            outcomes["format_error"] += 1
            continue
        assert decoded.dtype == np.int32 and decoded.shape == (n,)
        assert decoded.size == 0 or 0 <= decoded.min() <= decoded.max() < alphabet
        outcomes["exact" if np.array_equal(decoded, symbols) else "undetected"] += 1
    assert outcomes["format_error"] > 0


def test_random_bytes_raise_format_error_only() -> None:
    rng = np.random.default_rng(7)
    for _ in range(4000):
        data = bytes(rng.integers(0, 256, int(rng.integers(0, 40))).astype(np.uint8))
        if data and rng.random() < 0.7:
            data = bytes([int(rng.integers(0, 6))]) + data[1:]
        try:
            decode_symbols(data, int(rng.integers(0, 50)), int(rng.integers(1, 70000)))
        except FormatError:
            pass
