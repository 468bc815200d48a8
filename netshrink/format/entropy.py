"""Entropy coding of the integer streams in a .nsk file (palette indices, gap indices, PQ codes).

Every stream is coded by `encode_symbols`, which keeps the smallest of three self-describing forms:

* rANS (Duda 2013, "Asymmetric numeral systems"; Duda et al. 2015, PCS) over a static categorical
  model built from the stream's own symbol counts. The counts are stored, so the decoder rebuilds
  the identical fixed-point model; the cost is the empirical entropy plus the count table plus at
  most a few bytes of coder state. The coder is constriction's `AnsCoder` (a stack: last in, first
  out), with 32-bit words and 24-bit probabilities.
* fixed-width bit packing, which wins for near-uniform streams and for tiny ones where the count
  table would cost more than it saves;
* a constant stream, when a single symbol occurs (its entropy is zero).

Byte layout (all integers are LEB128 varints unless said otherwise; "words" are little-endian u32):

    EMPTY         0x00                                  count == 0
    CONSTANT      0x01 symbol
    PACKED        0x02 width:u8 bits...                 pack_bits(symbols, width), zero padding
    RANS_DENSE    0x03 lo span count[lo..lo+span) words  zero counts allowed inside the span
    RANS_SPARSE   0x04 k gap[k] count[k] words           symbol[0] = gap[0], symbol[i] =
                                                        symbol[i-1] + 1 + gap[i]; counts >= 1

The rANS words are trimmed of the zero high bytes of the last word (constriction never emits a zero
last word), so a canonical stream ends in a nonzero byte. The symbol count is not stored: the
caller (the file header) knows it and passes it to `decode_symbols`.

Fixed-width bit packing and the LEB128 varints of the count tables are in
`netshrink.format.bitpack`, which knows nothing of modes or models; `pack_bits` and `unpack_bits`
are re-exported here. This module holds the stream format: the choice of form, rANS, the decoders.
"""

from __future__ import annotations

import math
import operator

import constriction
import numpy as np

from netshrink.errors import CodecError, FormatError
from netshrink.format.bitpack import (
    MAX_COUNT,
    MAX_PACK_WIDTH,
    as_uint8,
    encode_varints,
    pack_bits,
    packed_len,
    read_varints,
    unpack_bits,
    validated_count,
    validated_ints,
    varint_len,
    varint_lengths,
)

__all__ = [
    "MAX_ALPHABET",
    "MAX_COUNT",
    "MAX_PACK_WIDTH",
    "MAX_RANS_SYMBOLS",
    "MODE_NAMES",
    "decode_symbols",
    "empirical_entropy_bits",
    "encode_count_table",
    "encode_rans",
    "encode_symbols",
    "pack_bits",
    "stream_mode",
    "symbol_histogram",
    "unpack_bits",
]

MAX_ALPHABET = 1 << 24
# constriction's default models use 24-bit probabilities, so every used symbol needs one of 2**24
# slots; far below that limit the rounding of rare symbols would also start to cost bits.
MAX_RANS_SYMBOLS = 1 << 20

MODE_EMPTY, MODE_CONSTANT, MODE_PACKED, MODE_RANS_DENSE, MODE_RANS_SPARSE = range(5)
MODE_NAMES = {
    MODE_EMPTY: "empty",
    MODE_CONSTANT: "constant",
    MODE_PACKED: "packed",
    MODE_RANS_DENSE: "rans-dense",
    MODE_RANS_SPARSE: "rans-sparse",
}


# ----------------------------------------------------------------------------- public API


def encode_symbols(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """Code 1-D ints in [0, alphabet_size) as the smallest self-describing stream (see module doc).

    Deterministic: the same symbols and alphabet always give the same bytes. Raises CodecError for
    symbols out of range, a non-integer or non-1-D array, or an alphabet outside [1, 2**24].
    """
    sym = _validated_symbols(symbols, alphabet_size)
    if sym.size == 0:
        return bytes([MODE_EMPTY])
    used, freqs, ranks = symbol_histogram(sym)
    if used.size == 1:
        return bytes([MODE_CONSTANT]) + encode_varints(used)
    width = int(used[-1]).bit_length()  # the largest symbol's width, never more than the alphabet's
    if used.size <= MAX_RANS_SYMBOLS:
        rans = encode_rans(used, freqs, ranks)
        if len(rans) < 2 + packed_len(sym.size, width):  # ties keep packing: it decodes faster
            return rans
    return bytes([MODE_PACKED, width]) + pack_bits(sym, width)


def decode_symbols(data: bytes, count: int, alphabet_size: int) -> np.ndarray:
    """Inverse of `encode_symbols`: `count` symbols as an int32 array (an alphabet holds at most
    2**24 symbols, and the labels of a large tensor are the largest thing its decoding holds).

    Any malformed, truncated or corrupt input raises FormatError. Every length read from `data` is
    checked against the bytes that remain before anything is allocated, so memory stays bounded by
    `count`, `alphabet_size` and `len(data)`.
    """
    buf, count, alphabet_size = _validated_decode_args(data, count, alphabet_size)
    if buf.size == 0:
        raise FormatError("entropy stream is empty: expected at least its mode byte")
    mode = int(buf[0])
    decoder = _DECODERS.get(mode)
    if decoder is None:
        raise FormatError(f"entropy stream has unknown mode byte {mode}; known: {sorted(_DECODERS)}")
    return decoder(buf[1:], count, alphabet_size)


def stream_mode(data: bytes) -> str:
    """Name of the form a stream from `encode_symbols` uses (for reports and benchmarks)."""
    if not data or data[0] not in MODE_NAMES:
        raise FormatError("entropy stream has no known mode byte")
    return MODE_NAMES[data[0]]


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """n * H(empirical distribution) in bits: the floor for any coder with a static per-stream model."""
    sym = np.asarray(symbols).ravel()
    if sym.size == 0:
        return 0.0
    _, counts = np.unique(sym, return_counts=True)
    counts = counts.astype(np.float64)
    n = float(sym.size)
    return max(0.0, float(n * math.log2(n) - np.sum(counts * np.log2(counts))))


# ----------------------------------------------------------------------------- rANS mode


def encode_rans(used: np.ndarray, freqs: np.ndarray, ranks: np.ndarray) -> bytes:
    """rANS form of a stream given its used symbols, their counts and each symbol's rank in `used`.

    Public so benchmarks can measure the rANS form even where bit packing would be chosen.
    """
    coder = constriction.stream.stack.AnsCoder()
    # encode_reverse pushes the symbols in reverse, so the decoder pops them in forward order.
    coder.encode_reverse(ranks.astype(np.int32, copy=False), _categorical_model(freqs))
    words = coder.get_compressed().astype("<u4").tobytes()
    return encode_count_table(used, freqs) + words.rstrip(b"\x00")


def _categorical_model(freqs: np.ndarray) -> constriction.stream.model.Categorical:
    """The fixed-point model both sides derive from the stored integer counts.

    constriction rescales the float64 counts itself (exact for counts < 2**53) and, with
    perfect=False, quantises them with a fast deterministic rule, so equal counts give an
    identical model on the decoder; every symbol keeps a nonzero probability.
    """
    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


def encode_count_table(used: np.ndarray, freqs: np.ndarray) -> bytes:
    """Mode byte + count table, dense (counts over the used span) or sparse (gaps), whichever is smaller.

    Public so benchmarks can charge other coders (Huffman) the same table.
    """
    lo, span = int(used[0]), int(used[-1] - used[0] + 1)
    freq_bytes = int(varint_lengths(freqs).sum())
    dense_len = varint_len(lo) + varint_len(span) + freq_bytes + (span - used.size)
    gaps = np.diff(used, prepend=-1) - 1
    sparse_len = varint_len(used.size) + int(varint_lengths(gaps).sum()) + freq_bytes
    if dense_len <= sparse_len:
        dense = np.zeros(span, dtype=np.int64)
        dense[used - lo] = freqs
        return bytes([MODE_RANS_DENSE]) + encode_varints(np.array([lo, span])) + encode_varints(dense)
    header = np.concatenate([[used.size], gaps, freqs])
    return bytes([MODE_RANS_SPARSE]) + encode_varints(header)


def _decode_rans_dense(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    (lo, span), pos = read_varints(body, 0, 2)
    if span < 2 or lo + span > alphabet_size:
        raise FormatError(f"rANS table spans symbols [{lo}, {lo + span}) outside alphabet of {alphabet_size}")
    dense, pos = read_varints(body, pos, int(span))
    used = np.flatnonzero(dense)
    return _decode_rans_payload(body[pos:], count, used + int(lo), dense[used])


def _decode_rans_sparse(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    (k,), pos = read_varints(body, 0, 1)
    if k > min(alphabet_size, count, MAX_RANS_SYMBOLS):
        raise FormatError(
            f"rANS table lists {k} symbols; at most min(alphabet, count) = {min(alphabet_size, count)} can occur"
        )
    table, pos = read_varints(body, pos, 2 * int(k))
    gaps, freqs = table[: int(k)], table[int(k) :]
    if gaps.size and int(gaps.max()) >= alphabet_size:  # also keeps the cumsum below from overflowing
        raise FormatError(f"rANS table symbol gap {int(gaps.max())} exceeds alphabet of {alphabet_size}")
    used = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if used.size and int(used[-1]) >= alphabet_size:
        raise FormatError(f"rANS table names symbol {int(used[-1])}, outside alphabet of {alphabet_size}")
    if np.any(freqs == 0):
        raise FormatError("rANS sparse table has a zero count")
    return _decode_rans_payload(body[pos:], count, used, freqs)


def _decode_rans_payload(payload: np.ndarray, count: int, used: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Check the table against `count`, then decode and require the coder to end exactly empty."""
    if used.size < 2 or used.size > MAX_RANS_SYMBOLS:
        raise FormatError(f"rANS table has {used.size} used symbols; expected 2..{MAX_RANS_SYMBOLS}")
    if int(freqs.max()) > count or int(freqs.sum(dtype=np.uint64)) != count:
        raise FormatError(f"rANS table counts do not sum to the stream's {count} symbols")
    if payload.size == 0 or payload[-1] == 0:
        raise FormatError("rANS payload is empty or not trimmed (its last byte is zero): truncated or corrupt")
    padded = np.zeros(-(-payload.size // 4) * 4, dtype=np.uint8)
    padded[: payload.size] = payload
    words = padded.view("<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        ranks = coder.decode(_categorical_model(freqs), count)
        exact = coder.is_empty()
    except BaseException as exc:  # ValueError and friends on bad data; a Rust panic is a BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise  # KeyboardInterrupt, SystemExit
        raise FormatError(f"rANS payload is corrupt: {exc}") from exc
    if not exact:
        raise FormatError("rANS payload does not end where the symbols do: truncated or corrupt")
    used = used.astype(np.int32)
    return ranks if np.array_equal(used, np.arange(used.size)) else used[ranks]


# ----------------------------------------------------------------------------- other modes


def _decode_packed(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    if body.size == 0:
        raise FormatError("bit-packed stream lacks its width byte")
    width, bits = int(body[0]), body[1:]
    if not 1 <= width <= max(1, (alphabet_size - 1).bit_length()):
        raise FormatError(f"bit-packed stream width {width} does not fit alphabet of {alphabet_size}")
    if count == 0 or bits.size != packed_len(count, width):
        raise FormatError(
            f"bit-packed stream has {bits.size} bytes; {count} x {width}-bit values need "
            f"{packed_len(count, width)} (and count >= 1)"
        )
    pad = bits.size * 8 - count * width
    if pad and int(bits[-1]) >> (8 - pad):
        raise FormatError("bit-packed stream has nonzero padding bits: corrupt")
    values = unpack_bits(bits.tobytes(), width, count, np.int32)
    if int(values.max()) >= alphabet_size:
        raise FormatError(f"bit-packed symbol {int(values.max())} outside alphabet of {alphabet_size}")
    return values


def _decode_constant(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    (symbol,), pos = read_varints(body, 0, 1)
    if count == 0 or pos != body.size or symbol >= alphabet_size:
        raise FormatError(
            f"constant stream invalid: symbol {symbol}, alphabet {alphabet_size}, "
            f"count {count}, {body.size - pos} trailing bytes"
        )
    return np.full(count, int(symbol), dtype=np.int32)


def _decode_empty(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    if count != 0 or body.size:
        raise FormatError(f"empty stream given for {count} symbols (with {body.size} trailing bytes)")
    return np.zeros(0, dtype=np.int32)


_DECODERS = {
    MODE_EMPTY: _decode_empty,
    MODE_CONSTANT: _decode_constant,
    MODE_PACKED: _decode_packed,
    MODE_RANS_DENSE: _decode_rans_dense,
    MODE_RANS_SPARSE: _decode_rans_sparse,
}


# ----------------------------------------------------------------------------- validation


def symbol_histogram(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Used symbols (sorted), their counts, and each symbol's rank among the used ones (int32: the
    alphabet has at most 2**24 symbols, and the ranks of a large tensor are its biggest temporary).

    bincount is O(n + max) and fast; for a large, sparsely used alphabet sorting avoids an
    O(max) table (up to 2**24 entries).
    """
    top = int(sym.max())
    if top > 4 * sym.size + (1 << 16):
        used, ranks, freqs = np.unique(sym, return_inverse=True, return_counts=True)
        return used, freqs.astype(np.int64), ranks.ravel().astype(np.int32)
    counts = np.bincount(sym, minlength=top + 1)
    present = counts > 0
    rank_of = (np.cumsum(present) - 1).astype(np.int32)
    used = np.flatnonzero(present)
    return used, counts[used].astype(np.int64), rank_of[sym]


def _validated_symbols(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    try:
        alphabet_size = operator.index(alphabet_size)
    except TypeError as exc:
        raise CodecError(f"alphabet_size must be an int, got {type(alphabet_size).__name__}") from exc
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise CodecError(f"alphabet_size {alphabet_size} outside [1, 2**24]")
    sym = validated_ints(symbols, "symbols")
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) >= alphabet_size):
        raise CodecError(f"symbols must lie in [0, {alphabet_size}); got [{int(sym.min())}, {int(sym.max())}]")
    return sym


def _validated_decode_args(data: bytes, count: int, alphabet_size: int) -> tuple[np.ndarray, int, int]:
    count = validated_count(count)
    if not isinstance(alphabet_size, (int, np.integer)) or not 1 <= alphabet_size <= MAX_ALPHABET:
        raise FormatError(f"alphabet size {alphabet_size!r} outside [1, 2**24]")
    return as_uint8(data), count, int(alphabet_size)
