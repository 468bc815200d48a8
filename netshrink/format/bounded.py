"""Reading a .nsk file one tensor at a time: memory bounded by its header and its largest tensor.

`read_nsk` reads the whole file into memory. `open_nsk` runs the very same checks (prefix, header
checksum and fields, every declared length and stream, borrowed streams and ties, the declared
decoded size, the payload CRC-32) on the open file instead: the prefix and header are read, the
payload is checksummed in chunks (`netshrink.format.spans`), and the records it returns hold byte
ranges instead of bytes. `NskReader.records` then reads one tensor's bytes at a time (seek + read),
so decoding a model needs the decoded model plus one tensor, never the file on top of it.

The file is checked once when it is opened; a file rewritten while it is being read can fail with
a TruncatedFile but is not checksummed again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from netshrink.errors import NetshrinkError
from netshrink.format.codecs.base import Encoded, Stream
from netshrink.format.reader import MAX_HEADER_BYTES, PREFIX, NskFile, TensorRecord, header_length, parse_parts
from netshrink.format.spans import ByteSpan, FileBytes
from netshrink.paths import open_input


class NskReader:
    """An open, verified .nsk file: `nsk` holds its header and records (stream bytes as `ByteSpan`s),
    `records()` yields its tensors with their bytes, one at a time. Use it as a context manager."""

    def __init__(self, path: Path, handle: BinaryIO, nsk: NskFile) -> None:
        self.path, self.handle, self.nsk = path, handle, nsk

    def records(self) -> Iterator[TensorRecord]:
        """Every record in file order, its stream bytes read from the file just before it is yielded.

        A tied record keeps the byte ranges of the tensor it is tied to (nothing is read for it: a
        decoder reuses that tensor).
        """
        for rec in self.nsk.tensors:
            if rec.tied_to:
                yield rec
                continue
            try:
                encoded = with_bytes(rec.encoded)
            except NetshrinkError as exc:
                raise type(exc)(f"{self.path}: {exc}") from None
            yield TensorRecord(rec.name, encoded, rec.module_type)

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> NskReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_nsk(path: str | Path, max_bytes: int | None = None) -> NskReader:
    """Open and verify a .nsk file without reading its payload into memory (see the module docstring).

    Every failure is the FormatError subclass `read_nsk` raises for the same file, naming the file.
    """
    path = Path(path)
    handle = open_input(path, ".nsk file")
    try:
        nsk = parse_parts(_head(handle), FileBytes(handle, os.fstat(handle.fileno()).st_size), max_bytes)
    except NetshrinkError as exc:
        handle.close()
        raise type(exc)(f"{path}: {exc}") from None
    except BaseException:
        handle.close()
        raise
    return NskReader(path, handle, nsk)


def _head(handle: BinaryIO) -> bytes:
    """The prefix and the header it declares (as much of them as the file holds; no header past the
    limit, which the header check then refuses)."""
    head = handle.read(PREFIX.size)
    if len(head) == PREFIX.size and header_length(head) <= MAX_HEADER_BYTES:
        head += handle.read(header_length(head))
    return head


def with_bytes(enc: Encoded) -> Encoded:
    """A copy of an encoding whose streams are byte ranges, holding their bytes (read from the file)."""
    streams = {
        role: Stream(s.kind, s.data.read() if isinstance(s.data, ByteSpan) else s.data, s.borrowed_from)
        for role, s in enc.streams.items()
    }
    children = {role: with_bytes(child) for role, child in enc.children.items()}
    return Encoded(enc.codec, enc.shape, enc.params, streams, children)
