"""The .nsk container: a versioned, checksummed, never-pickled file of encoded tensors.

Layout (all integers little-endian), after safetensors' "length, JSON header, raw bytes":

    offset 0   magic      8 bytes  b"\\x89NSK\\r\\n\\x1a\\n" (PNG-style: catches text-mode mangling)
    offset 8   version    u16      FORMAT_VERSION
    offset 10  flags      u16      0 (reserved: a reader refuses a file with any flag set)
    offset 12  header_len u32      bytes of the compressed header
    offset 16  header_crc u32      CRC-32 of those bytes
    offset 20  header     zlib-compressed UTF-8 JSON (model identity, recipe, per-tensor records)
    then       payload    every tensor's streams, back to back, in header order

Each tensor record holds its name, the type of module it belongs to, the codec tree (codec name,
shape, parameters, stream kinds and lengths, children) and the length of its bytes; tensors follow
each other in the payload in header order, and one CRC-32 (`payload_crc32`) covers the whole
payload. (Version 1 stored an offset and a CRC-32 per tensor: a fifth of a small model's header, for
nothing a single checksum does not catch. Version 1 files are still read.) A tensor tied to an
earlier one (an embedding shared with the output layer) is a record with `tied` naming that tensor
and no bytes of its own (version 3; files of versions 1 and 2 have no such records). A stream may be
borrowed: its entry then names an earlier tensor whose stream of the same role holds the bytes (a
codebook shared by several layers is stored once), and the reader hands those bytes to both. The
header is compressed because per-tensor JSON is otherwise a visible share of a small model's file.
Every length is checked against the file before anything is allocated, and each failure has its
own error class. The decoded size every record declares is added up and checked against a limit
before any tensor is decoded (`decode_limit`): a 255-byte file cannot ask for gigabytes. Writes are atomic (temporary file, fsync, rename), and the bytes depend only on
the content (sorted JSON keys, no timestamps).

This module writes files: whole (`serialize`, `write_nsk`), or record by record in bounded memory
(`StreamedWriter`, for models compressed one block at a time), with the same bytes. Reading and its checks, with the records and
limits both sides share, are in `netshrink.format.reader`, kept apart because they face hostile
input; everything public there is re-exported here, so `netshrink.format.container` is the whole API.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from netshrink.errors import NetshrinkError
from netshrink.format.codecs.base import Encoded, Stream
from netshrink.format.reader import (
    DECODE_INFLATION,
    FORMAT_VERSION,
    JSON_INFLATION,
    MAGIC,
    MAX_DECODE_ENV,
    MAX_DEPTH,
    MAX_HEADER_BYTES,
    MAX_JSON_BYTES,
    MAX_TENSORS,
    MIN_DECODE_LIMIT,
    MIN_JSON_LIMIT,
    PREFIX,
    READABLE_VERSIONS,
    NskFile,
    TensorRecord,
    check_decoded_size,
    decode_limit,
    parse,
    read_nsk,
)
from netshrink.paths import check_output_path

# The reading side lives in `netshrink.format.reader`; it is re-exported so that code can import the
# whole container API from here.
__all__ = [
    "DECODE_INFLATION",
    "FORMAT_VERSION",
    "JSON_INFLATION",
    "MAGIC",
    "MAX_DECODE_ENV",
    "MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_JSON_BYTES",
    "MAX_TENSORS",
    "MIN_DECODE_LIMIT",
    "MIN_JSON_LIMIT",
    "PREFIX",
    "READABLE_VERSIONS",
    "NskFile",
    "TensorRecord",
    "check_decoded_size",
    "decode_limit",
    "parse",
    "read_nsk",
    "StreamedWriter",
    "WriterState",
    "header_bytes",
    "serialize",
    "write_atomically",
    "write_nsk",
]


# --- writing ----------------------------------------------------------------------------------------


def _stream_order(enc: Encoded) -> list[bytes]:
    """Payload order of a tensor's streams: its own (in insertion order), then children's; borrowed
    streams are stored with their lender."""
    return [stream.data for _, stream in _all_streams(enc) if not stream.borrowed_from]


def _enc_to_json(enc: Encoded) -> dict[str, Any]:
    return {
        "codec": enc.codec,
        "shape": list(enc.shape),
        "params": enc.params,
        "streams": [
            [role, s.kind, len(s.data), *([s.borrowed_from] if s.borrowed_from else [])]
            for role, s in enc.streams.items()
        ],
        "children": {role: _enc_to_json(child) for role, child in enc.children.items()},
    }


def serialize(nsk: NskFile) -> bytes:
    """The exact bytes of a .nsk file."""
    records, blobs = [], []
    _check_borrowed(nsk.tensors)
    for rec in nsk.tensors:
        data = b"".join(_stream_order(rec.encoded)) if not rec.tied_to else b""
        records.append(_record_json(rec, len(data)))
        blobs.append(data)
    payload = b"".join(blobs)
    head = header_bytes(records, nsk.model, nsk.recipe, nsk.meta, len(payload), zlib.crc32(payload))
    nsk.header_bytes = len(head)
    return head + payload


def _record_json(rec: TensorRecord, length: int) -> dict[str, Any]:
    """A tensor's entry in the header: a tied tensor names its source and has no bytes."""
    if rec.tied_to:
        return {"name": rec.name, "module": rec.module_type, "length": 0, "tied": rec.tied_to}
    return {"name": rec.name, "module": rec.module_type, "length": length, "enc": _enc_to_json(rec.encoded)}


def header_bytes(
    records: list[dict[str, Any]],
    model: dict[str, Any],
    recipe: dict[str, Any] | None,
    meta: dict[str, Any],
    payload_length: int,
    payload_crc: int,
) -> bytes:
    """The file's prefix and compressed header, for a payload of that length and CRC-32."""
    header = {
        "netshrink": FORMAT_VERSION,
        "model": model,
        "recipe": recipe,
        "meta": meta,
        "payload_bytes": payload_length,
        "payload_crc32": payload_crc,
        "tensors": records,
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    packed = zlib.compress(text, 9)
    return PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(packed), zlib.crc32(packed)) + packed


def _check_borrowed(tensors: list[TensorRecord]) -> None:
    """A borrowed stream must equal the same-role stream of an EARLIER tensor, or the file would
    decode to something other than the model in memory."""
    lenders = LenderIndex()
    for rec in tensors:
        lenders.check(rec)


class LenderIndex:
    """What the records so far lend: per tensor, each own stream's kind and digest (not its bytes,
    so a writer that streams records holds only this much of them), to check the borrowed streams
    and the tied records of later tensors against."""

    def __init__(self, streams: dict[str, dict[str, list[str]]] | None = None) -> None:
        self.streams: dict[str, dict[str, list[str]]] = streams if streams is not None else {}

    def check(self, rec: TensorRecord) -> None:
        """Refuse `rec` if it is tied to, or borrows from, what no earlier tensor holds; then record it."""
        if rec.tied_to:
            if rec.tied_to not in self.streams:
                raise NetshrinkError(f"tensor {rec.name!r} is tied to {rec.tied_to!r}, which is not an earlier tensor")
            return
        own = {}
        for role, stream in _all_streams(rec.encoded):
            if not stream.borrowed_from:
                own.setdefault(role, [stream.kind, _digest(stream.data)])
                continue
            lent = self.streams.get(stream.borrowed_from, {}).get(role)
            if lent != [stream.kind, _digest(stream.data)]:
                raise NetshrinkError(
                    f"tensor {rec.name!r} borrows its {role!r} stream from {stream.borrowed_from!r}, "
                    "which is not an earlier tensor holding the same bytes"
                )
        self.streams[rec.name] = own


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _all_streams(enc: Encoded) -> list[tuple[str, Stream]]:
    """(role, stream) of a tensor and of its children, in payload order."""
    streams = list(enc.streams.items())
    for child in enc.children.values():
        streams.extend(_all_streams(child))
    return streams


def write_nsk(path: str | Path, nsk: NskFile) -> int:
    """Write atomically: a temporary file in the same folder, fsync, rename. Returns bytes written.

    The file gets the permissions any new file gets under the user's umask (mkstemp's 0600 is for
    the temporary name only). An unwritable path is a NetshrinkError, never a half-written file.
    """
    path = check_output_path(path, ".nsk file")
    data = serialize(nsk)
    write_atomically(path, lambda handle: handle.write(data))
    return len(data)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write` on a temporary file in `path`'s folder, fsync it, rename it to `path`."""
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise NetshrinkError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise NetshrinkError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def _umask() -> int:
    """The process umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- writing record by record -----------------------------------------------------------------------

#: Bytes copied at a time from the payload file into the .nsk file.
COPY_CHUNK = 1 << 24


@dataclass
class WriterState:
    """What a `StreamedWriter` has written: the header records so far, the payload's length and
    CRC-32, and what its tensors lend. Small (no tensor bytes), so it can be saved after every block
    and a run can go on from there (`StreamedWriter(..., state=)`)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    payload_length: int = 0
    payload_crc: int = 0
    lenders: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WriterState:
        return cls(**{key: copy.deepcopy(data[key]) for key in ("records", "payload_length", "payload_crc", "lenders")})


class StreamedWriter:
    """Writes a .nsk file whose tensors arrive a few at a time, in bounded memory.

    Each record's streams go straight to a payload file next to the target, and only the header
    records (JSON, no tensor bytes), the payload length and its running CRC-32 stay in memory. As the
    header comes before the payload and holds the CRC, `finish` writes prefix and header, then copies
    the payload in chunks, into a temporary file that is fsynced and renamed: the bytes are exactly
    `serialize(NskFile(all records, ...))`, and the target is never half-written. `payload` and
    `state` continue an interrupted writer: the payload file is cut back to the state's length.
    """

    def __init__(self, path: str | Path, payload: Path | None = None, state: WriterState | None = None) -> None:
        self.path = check_output_path(path, ".nsk file")
        self.state = copy.deepcopy(state) if state is not None else WriterState()
        self._lenders = LenderIndex(self.state.lenders)
        try:
            if payload is None:
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".payload", dir=self.path.parent)
                self.payload, self._file = Path(name), os.fdopen(fd, "w+b")
            else:
                self.payload = payload
                self._file = payload.open("r+b" if state is not None else "w+b")
        except OSError as exc:
            raise NetshrinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if state is not None:
            self._resume_payload()

    def _resume_payload(self) -> None:
        length = self.state.payload_length
        if os.fstat(self._file.fileno()).st_size < length:
            raise NetshrinkError(
                f"{self.payload} holds less than the {length} bytes recorded: start again without resume"
            )
        self._file.truncate(length)
        self._file.seek(length)

    def add(self, records: list[TensorRecord]) -> None:
        """Append tensors, in file order: their streams to the payload, their entries to the header."""
        for rec in records:
            self._lenders.check(rec)
            length = 0
            for data in [] if rec.tied_to else _stream_order(rec.encoded):
                self._file.write(data)
                self.state.payload_crc = zlib.crc32(data, self.state.payload_crc)
                length += len(data)
            self.state.payload_length += length
            self.state.records.append(_record_json(rec, length))

    def sync(self) -> WriterState:
        """Flush the payload to disk; the state that goes with it (to continue from)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return copy.deepcopy(self.state)

    def finish(self, model: dict[str, Any], recipe: dict[str, Any] | None, meta: dict[str, Any] | None = None) -> int:
        """Write the .nsk file atomically and remove the payload file. Returns bytes written."""
        self._file.flush()
        state = self.state
        head = header_bytes(state.records, model, recipe, meta or {}, state.payload_length, state.payload_crc)

        def write(handle: BinaryIO) -> None:
            handle.write(head)
            self._file.seek(0)
            copied = 0
            while chunk := self._file.read(min(COPY_CHUNK, state.payload_length - copied)):
                handle.write(chunk)
                copied += len(chunk)
            if copied != state.payload_length:
                raise NetshrinkError(f"{self.payload} lost bytes while {self.path} was written")

        write_atomically(self.path, write)
        self.close(remove=True)
        return len(head) + state.payload_length

    def close(self, remove: bool = False) -> None:
        """Close the payload file (and delete it: a run that will not be continued)."""
        self._file.close()
        if remove:
            self.payload.unlink(missing_ok=True)
