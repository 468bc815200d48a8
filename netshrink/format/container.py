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

This module writes files (`serialize`, `write_nsk`). Reading and its checks, with the records and
limits both sides share, are in `netshrink.format.reader`, kept apart because they face hostile
input; everything public there is re-exported here, so `netshrink.format.container` is the whole API.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

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
    "serialize",
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
        if rec.tied_to:
            records.append({"name": rec.name, "module": rec.module_type, "length": 0, "tied": rec.tied_to})
            continue
        data = b"".join(_stream_order(rec.encoded))
        records.append(
            {"name": rec.name, "module": rec.module_type, "length": len(data), "enc": _enc_to_json(rec.encoded)}
        )
        blobs.append(data)
    payload = b"".join(blobs)
    header = {
        "netshrink": FORMAT_VERSION,
        "model": nsk.model,
        "recipe": nsk.recipe,
        "meta": nsk.meta,
        "payload_bytes": len(payload),
        "payload_crc32": zlib.crc32(payload),
        "tensors": records,
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    packed = zlib.compress(text, 9)
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(packed), zlib.crc32(packed))
    nsk.header_bytes = len(prefix) + len(packed)
    return prefix + packed + payload


def _check_borrowed(tensors: list[TensorRecord]) -> None:
    """A borrowed stream must equal the same-role stream of an EARLIER tensor, or the file would
    decode to something other than the model in memory."""
    seen: dict[str, Encoded] = {}
    for rec in tensors:
        if rec.tied_to:
            if rec.tied_to not in seen:
                raise NetshrinkError(f"tensor {rec.name!r} is tied to {rec.tied_to!r}, which is not an earlier tensor")
            continue
        for role, stream in _all_streams(rec.encoded):
            if not stream.borrowed_from:
                continue
            source = seen.get(stream.borrowed_from)
            lent = source.streams.get(role) if source is not None else None
            if lent is None or lent.borrowed_from or lent.kind != stream.kind or lent.data != stream.data:
                raise NetshrinkError(
                    f"tensor {rec.name!r} borrows its {role!r} stream from {stream.borrowed_from!r}, "
                    "which is not an earlier tensor holding the same bytes"
                )
        seen[rec.name] = rec.encoded


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
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise NetshrinkError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
    return len(data)


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
