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
"""

from __future__ import annotations

import math
import operator

import constriction
import numpy as np

from netshrink.errors import CodecError, FormatError

MAX_ALPHABET = 1 << 24
# constriction's default models use 24-bit probabilities, so every used symbol needs one of 2**24
# slots; far below that limit the rounding of rare symbols would also start to cost bits.
MAX_RANS_SYMBOLS = 1 << 20
MAX_PACK_WIDTH = 32
# Far beyond any tensor; keeps sums of table counts (<= 2**20 entries, each <= count) inside int64.
MAX_COUNT = 1 << 40

MODE_EMPTY, MODE_CONSTANT, MODE_PACKED, MODE_RANS_DENSE, MODE_RANS_SPARSE = range(5)
MODE_NAMES = {
    MODE_EMPTY: "empty",
    MODE_CONSTANT: "constant",
    MODE_PACKED: "packed",
    MODE_RANS_DENSE: "rans-dense",
    MODE_RANS_SPARSE: "rans-sparse",
}

_VARINT_MAX_BYTES = 9  # 9 * 7 = 63 bits, enough for any count or symbol and safe in uint64
_PACK_CHUNK = 1 << 18  # values per bit-packing chunk; a multiple of 8 keeps chunks byte-aligned


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
        return bytes([MODE_CONSTANT]) + _encode_varints(used)
    width = int(used[-1]).bit_length()  # the largest symbol's width, never more than the alphabet's
    if used.size <= MAX_RANS_SYMBOLS:
        rans = encode_rans(used, freqs, ranks)
        if len(rans) < 2 + _packed_len(sym.size, width):  # ties keep packing: it decodes faster
            return rans
    return bytes([MODE_PACKED, width]) + pack_bits(sym, width)


def decode_symbols(data: bytes, count: int, alphabet_size: int) -> np.ndarray:
    """Inverse of `encode_symbols`: `count` symbols as an int64 array.

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


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack ints in [0, 2**width) into width bits each: value i holds bits [i*width, (i+1)*width).

    Little-endian at both levels (bit 0 of a byte comes first, low bits of a value come first), the
    last byte zero-padded. Raises CodecError for a width outside 1..32 or values that do not fit.
    """
    width = _validated_width(width, CodecError)
    vals = _validated_ints(values, "pack_bits values")
    if vals.size and (vals.min() < 0 or vals.max() >= (1 << width)):
        raise CodecError(f"pack_bits: values must lie in [0, 2**{width}); got [{vals.min()}, {vals.max()}]")
    as_u32 = vals.astype("<u4")
    chunks = [_pack_chunk(as_u32[i : i + _PACK_CHUNK], width) for i in range(0, as_u32.size, _PACK_CHUNK)]
    return b"".join(chunks)


def unpack_bits(data: bytes, width: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`: `count` values as int64. Raises FormatError if `data` is too short."""
    width = _validated_width(width, FormatError)
    count = _validated_count(count)
    buf = _as_uint8(data)
    needed = _packed_len(count, width)
    if buf.size < needed:
        raise FormatError(f"bit-packed stream holds {buf.size} bytes; {count} x {width}-bit values need {needed}")
    out = np.empty(count, dtype=np.int64)
    for start in range(0, count, _PACK_CHUNK):
        n = min(_PACK_CHUNK, count - start)
        first = start * width // 8
        out[start : start + n] = _unpack_chunk(buf[first : first + _packed_len(n, width)], width, n)
    return out


# ----------------------------------------------------------------------------- rANS mode


def encode_rans(used: np.ndarray, freqs: np.ndarray, ranks: np.ndarray) -> bytes:
    """rANS form of a stream given its used symbols, their counts and each symbol's rank in `used`.

    Public so benchmarks can measure the rANS form even where bit packing would be chosen.
    """
    coder = constriction.stream.stack.AnsCoder()
    # encode_reverse pushes the symbols in reverse, so the decoder pops them in forward order.
    coder.encode_reverse(ranks.astype(np.int32), _categorical_model(freqs))
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
    freq_bytes = int(_varint_lengths(freqs).sum())
    dense_len = _varint_len(lo) + _varint_len(span) + freq_bytes + (span - used.size)
    gaps = np.diff(used, prepend=-1) - 1
    sparse_len = _varint_len(used.size) + int(_varint_lengths(gaps).sum()) + freq_bytes
    if dense_len <= sparse_len:
        dense = np.zeros(span, dtype=np.int64)
        dense[used - lo] = freqs
        return bytes([MODE_RANS_DENSE]) + _encode_varints(np.array([lo, span])) + _encode_varints(dense)
    header = np.concatenate([[used.size], gaps, freqs])
    return bytes([MODE_RANS_SPARSE]) + _encode_varints(header)


def _decode_rans_dense(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    (lo, span), pos = _read_varints(body, 0, 2)
    if span < 2 or lo + span > alphabet_size:
        raise FormatError(f"rANS table spans symbols [{lo}, {lo + span}) outside alphabet of {alphabet_size}")
    dense, pos = _read_varints(body, pos, int(span))
    used = np.flatnonzero(dense)
    return _decode_rans_payload(body[pos:], count, used + int(lo), dense[used])


def _decode_rans_sparse(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    (k,), pos = _read_varints(body, 0, 1)
    if k > min(alphabet_size, count, MAX_RANS_SYMBOLS):
        raise FormatError(f"rANS table lists {k} symbols; at most min(alphabet, count) = "
                          f"{min(alphabet_size, count)} can occur")
    table, pos = _read_varints(body, pos, 2 * int(k))
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
    return used[ranks]


# ----------------------------------------------------------------------------- other modes


def _decode_packed(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    if body.size == 0:
        raise FormatError("bit-packed stream lacks its width byte")
    width, bits = int(body[0]), body[1:]
    if not 1 <= width <= max(1, (alphabet_size - 1).bit_length()):
        raise FormatError(f"bit-packed stream width {width} does not fit alphabet of {alphabet_size}")
    if count == 0 or bits.size != _packed_len(count, width):
        raise FormatError(f"bit-packed stream has {bits.size} bytes; {count} x {width}-bit values need "
                          f"{_packed_len(count, width)} (and count >= 1)")
    pad = bits.size * 8 - count * width
    if pad and int(bits[-1]) >> (8 - pad):
        raise FormatError("bit-packed stream has nonzero padding bits: corrupt")
    values = unpack_bits(bits.tobytes(), width, count)
    if int(values.max()) >= alphabet_size:
        raise FormatError(f"bit-packed symbol {int(values.max())} outside alphabet of {alphabet_size}")
    return values


def _decode_constant(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    (symbol,), pos = _read_varints(body, 0, 1)
    if count == 0 or pos != body.size or symbol >= alphabet_size:
        raise FormatError(f"constant stream invalid: symbol {symbol}, alphabet {alphabet_size}, "
                          f"count {count}, {body.size - pos} trailing bytes")
    return np.full(count, int(symbol), dtype=np.int64)


def _decode_empty(body: np.ndarray, count: int, alphabet_size: int) -> np.ndarray:
    if count != 0 or body.size:
        raise FormatError(f"empty stream given for {count} symbols (with {body.size} trailing bytes)")
    return np.zeros(0, dtype=np.int64)


_DECODERS = {
    MODE_EMPTY: _decode_empty,
    MODE_CONSTANT: _decode_constant,
    MODE_PACKED: _decode_packed,
    MODE_RANS_DENSE: _decode_rans_dense,
    MODE_RANS_SPARSE: _decode_rans_sparse,
}


# ----------------------------------------------------------------------------- varints


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes each non-negative value takes as a LEB128 varint (7 payload bits per byte)."""
    v = np.asarray(values, dtype=np.uint64)
    lengths = np.ones(v.shape, dtype=np.int64)
    for j in range(1, _VARINT_MAX_BYTES):
        lengths += (v >> np.uint64(7 * j)) > 0
    return lengths


def _varint_len(value: int) -> int:
    return max(1, -(-int(value).bit_length() // 7))


def _encode_varints(values: np.ndarray) -> bytes:
    """LEB128 varints of non-negative ints < 2**63, vectorised: one pass per byte position."""
    v = np.asarray(values, dtype=np.uint64)
    lengths = _varint_lengths(v)
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for j in range(int(lengths.max(initial=0))):
        sel = lengths > j
        byte = (v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (lengths[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (byte | more).astype(np.uint8)
    return out.tobytes()


def _read_varints(buf: np.ndarray, pos: int, k: int) -> tuple[np.ndarray, int]:
    """k varints from buf[pos:] as uint64, and the position after them; FormatError if they don't fit."""
    if k > buf.size - pos:
        raise FormatError(f"entropy table needs {k} more entries but only {buf.size - pos} bytes remain")
    if k == 0:
        return np.zeros(0, dtype=np.uint64), pos
    window = buf[pos : pos + k * _VARINT_MAX_BYTES]
    ends = np.flatnonzero(window < 0x80)[:k]
    if ends.size < k:
        raise FormatError(f"entropy table truncated: found {ends.size} of {k} varints")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if int(lengths.max()) > _VARINT_MAX_BYTES:
        raise FormatError(f"entropy table has a varint longer than {_VARINT_MAX_BYTES} bytes")
    chunk = window[: int(ends[-1]) + 1].astype(np.uint64)
    shifts = (np.arange(chunk.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    values = np.add.reduceat((chunk & np.uint64(0x7F)) << shifts, starts)
    return values, pos + int(ends[-1]) + 1


# ----------------------------------------------------------------------------- bit packing


def _pack_chunk(vals: np.ndarray, width: int) -> bytes:
    bits = np.unpackbits(vals.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
    return np.packbits(bits[:, :width].ravel(), bitorder="little").tobytes()


def _unpack_chunk(buf: np.ndarray, width: int, n: int) -> np.ndarray:
    bits = np.zeros((n, 32), dtype=np.uint8)
    bits[:, :width] = np.unpackbits(buf, count=n * width, bitorder="little").reshape(n, width)
    return np.packbits(bits, axis=1, bitorder="little").view("<u4").ravel()


def _packed_len(count: int, width: int) -> int:
    return -(-count * width // 8)


# ----------------------------------------------------------------------------- validation


def symbol_histogram(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Used symbols (sorted), their counts, and each symbol's rank among the used ones (int64).

    bincount is O(n + max) and fast; for a large, sparsely used alphabet sorting avoids an
    O(max) table (up to 2**24 entries).
    """
    top = int(sym.max())
    if top > 4 * sym.size + (1 << 16):
        used, ranks, freqs = np.unique(sym, return_inverse=True, return_counts=True)
        return used, freqs.astype(np.int64), ranks.ravel()
    counts = np.bincount(sym, minlength=top + 1)
    present = counts > 0
    rank_of = np.cumsum(present) - 1
    used = np.flatnonzero(present)
    return used, counts[used].astype(np.int64), rank_of[sym]


def _validated_symbols(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    try:
        alphabet_size = operator.index(alphabet_size)
    except TypeError as exc:
        raise CodecError(f"alphabet_size must be an int, got {type(alphabet_size).__name__}") from exc
    if not 1 <= alphabet_size <= MAX_ALPHABET:
        raise CodecError(f"alphabet_size {alphabet_size} outside [1, 2**24]")
    sym = _validated_ints(symbols, "symbols")
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) >= alphabet_size):
        raise CodecError(f"symbols must lie in [0, {alphabet_size}); got [{int(sym.min())}, {int(sym.max())}]")
    return sym


def _validated_ints(values: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise CodecError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise CodecError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 1 << 63:
        raise CodecError(f"{what} holds values >= 2**63")
    return arr.astype(np.int64)


def _validated_width(width: int, error: type[Exception]) -> int:
    if not isinstance(width, (int, np.integer)) or not 1 <= width <= MAX_PACK_WIDTH:
        raise error(f"bit width must be an int in 1..{MAX_PACK_WIDTH}, got {width!r}")
    return int(width)


def _validated_count(count: int) -> int:
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
        raise FormatError(f"symbol count must be an int in [0, 2**40], got {count!r}")
    return int(count)


def _validated_decode_args(data: bytes, count: int, alphabet_size: int) -> tuple[np.ndarray, int, int]:
    count = _validated_count(count)
    if not isinstance(alphabet_size, (int, np.integer)) or not 1 <= alphabet_size <= MAX_ALPHABET:
        raise FormatError(f"alphabet size {alphabet_size!r} outside [1, 2**24]")
    return _as_uint8(data), count, int(alphabet_size)


def _as_uint8(data: bytes) -> np.ndarray:
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise FormatError(f"entropy stream must be bytes-like, got {type(data).__name__}") from exc
