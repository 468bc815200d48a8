"""Fixed-width bit packing and LEB128 varints: the byte-level building blocks of the entropy streams.

`pack_bits` / `unpack_bits` store ints in a fixed number of bits each (the PACKED form of a stream,
and fast to decode); the varints store the count tables of the rANS forms, vectorised over numpy
arrays. Both check every input and every length read back. They are kept apart from
`netshrink.format.entropy`, which chooses a stream's form and runs the rANS coder, because they
need no model and no coder: the entropy coder builds on them, never the other way round.
"""

from __future__ import annotations

import numpy as np

from netshrink.errors import CodecError, FormatError

MAX_PACK_WIDTH = 32
# Far beyond any tensor; keeps sums of table counts (<= 2**20 entries, each <= count) inside int64.
MAX_COUNT = 1 << 40

_VARINT_MAX_BYTES = 9  # 9 * 7 = 63 bits, enough for any count or symbol and safe in uint64
_PACK_CHUNK = 1 << 18  # values per bit-packing chunk; a multiple of 8 keeps chunks byte-aligned


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack ints in [0, 2**width) into width bits each: value i holds bits [i*width, (i+1)*width).

    Little-endian at both levels (bit 0 of a byte comes first, low bits of a value come first), the
    last byte zero-padded. Raises CodecError for a width outside 1..32 or values that do not fit.
    """
    width = _validated_width(width, CodecError)
    vals = validated_ints(values, "pack_bits values")
    if vals.size and (vals.min() < 0 or vals.max() >= (1 << width)):
        raise CodecError(f"pack_bits: values must lie in [0, 2**{width}); got [{vals.min()}, {vals.max()}]")
    as_u32 = vals.astype("<u4")
    chunks = [_pack_chunk(as_u32[i : i + _PACK_CHUNK], width) for i in range(0, as_u32.size, _PACK_CHUNK)]
    return b"".join(chunks)


def unpack_bits(data: bytes, width: int, count: int, dtype: type = np.int64) -> np.ndarray:
    """Inverse of `pack_bits`: `count` values as `dtype` (wide enough for `width` bits). Raises
    FormatError if `data` is too short."""
    width = _validated_width(width, FormatError)
    count = validated_count(count)
    buf = as_uint8(data)
    needed = packed_len(count, width)
    if buf.size < needed:
        raise FormatError(f"bit-packed stream holds {buf.size} bytes; {count} x {width}-bit values need {needed}")
    out = np.empty(count, dtype=dtype)
    for start in range(0, count, _PACK_CHUNK):
        n = min(_PACK_CHUNK, count - start)
        first = start * width // 8
        out[start : start + n] = _unpack_chunk(buf[first : first + packed_len(n, width)], width, n)
    return out


# ----------------------------------------------------------------------------- varints


def varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes each non-negative value takes as a LEB128 varint (7 payload bits per byte)."""
    v = np.asarray(values, dtype=np.uint64)
    lengths = np.ones(v.shape, dtype=np.int64)
    for j in range(1, _VARINT_MAX_BYTES):
        lengths += (v >> np.uint64(7 * j)) > 0
    return lengths


def varint_len(value: int) -> int:
    return max(1, -(-int(value).bit_length() // 7))


def encode_varints(values: np.ndarray) -> bytes:
    """LEB128 varints of non-negative ints < 2**63, vectorised: one pass per byte position."""
    v = np.asarray(values, dtype=np.uint64)
    lengths = varint_lengths(v)
    starts = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for j in range(int(lengths.max(initial=0))):
        sel = lengths > j
        byte = (v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (lengths[sel] > j + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + j] = (byte | more).astype(np.uint8)
    return out.tobytes()


def read_varints(buf: np.ndarray, pos: int, k: int) -> tuple[np.ndarray, int]:
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


def packed_len(count: int, width: int) -> int:
    return -(-count * width // 8)


# ----------------------------------------------------------------------------- validation


def validated_ints(values: np.ndarray, what: str) -> np.ndarray:
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


def validated_count(count: int) -> int:
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT:
        raise FormatError(f"symbol count must be an int in [0, 2**40], got {count!r}")
    return int(count)


def as_uint8(data: bytes) -> np.ndarray:
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise FormatError(f"entropy stream must be bytes-like, got {type(data).__name__}") from exc
