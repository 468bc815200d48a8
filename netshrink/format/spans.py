"""Byte ranges of an open file, used in place of its bytes so that a file is checked without being held.

The reader's checks (`netshrink.format.reader`) slice a file's bytes and take lengths and CRC-32s of
the slices. `FileBytes` stands for a whole open file and `ByteSpan` for a slice of it with the same
slicing and length rules as `bytes`, so the very same checks run on a file of any size: a span's
CRC-32 is computed by reading it in chunks, and its bytes are read (seek + read) only when a tensor
is decoded. No mmap: mapping a whole file counts against an address-space limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from netshrink.errors import TruncatedFile

#: Bytes read at a time when a span's checksum is computed.
CHUNK_BYTES = 8 << 20


def _clamp(key: slice, size: int) -> tuple[int, int]:
    """(start, stop) of a slice with non-negative bounds, clamped as `bytes` slicing clamps them."""
    if key.step not in (None, 1) or (key.start or 0) < 0 or (key.stop is not None and key.stop < 0):
        raise ValueError("byte spans take forward slices with non-negative bounds")
    start = min(key.start or 0, size)
    stop = size if key.stop is None else min(max(key.stop, start), size)
    return start, stop


class FileBytes:
    """The bytes of an open file, by position: `len` is the file's size, a slice is a `ByteSpan`."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size = handle, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> ByteSpan:
        start, stop = _clamp(key, self.size)
        return ByteSpan(self, start, stop - start)


@dataclass(frozen=True, eq=False)
class ByteSpan:
    """`length` bytes of a file from `start`: sliced and measured like bytes, read only on request."""

    file: FileBytes
    start: int
    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: slice) -> ByteSpan:
        start, stop = _clamp(key, self.length)
        return ByteSpan(self.file, self.start + start, stop - start)

    def chunks(self) -> Iterator[bytes]:
        """The span's bytes, CHUNK_BYTES at a time (one chunk in memory)."""
        handle, left = self.file.handle, self.length
        handle.seek(self.start)
        while left:
            chunk = handle.read(min(left, CHUNK_BYTES))
            if not chunk:
                raise TruncatedFile(f"truncated: the file ends {left} bytes before the end of a range it had")
            left -= len(chunk)
            yield chunk

    def read(self) -> bytes:
        """The span's bytes (seek + read of exactly this range)."""
        return b"".join(self.chunks())

    def crc32(self) -> int:
        crc = 0
        for chunk in self.chunks():
            crc = zlib.crc32(chunk, crc)
        return crc


def crc32_of(data: bytes | ByteSpan) -> int:
    """CRC-32 of bytes in memory or of a span of a file (read in chunks)."""
    return data.crc32() if isinstance(data, ByteSpan) else zlib.crc32(data)
