"""Reading a .nsk file: its limits and records, and the checks that make reading safe.

This module holds what a valid file is: the prefix constants and limits, the `TensorRecord` and
`NskFile` records a file holds, and `read_nsk` / `parse`, which verify every length, checksum and
header field before allocating or decoding anything (`decode_limit`, `check_decoded_size`). The
layout itself is documented in `netshrink.format.container`, which writes files and re-exports
everything public here; the two are separate modules because reading is the part that must resist
hostile input, and is easier to review on its own. It imports nothing from `container`, so the
records and limits can live here without an import cycle.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netshrink.errors import (
    ChecksumMismatch,
    MalformedHeader,
    NetshrinkError,
    NotNetshrinkFile,
    TooLarge,
    TruncatedFile,
    UnsupportedVersion,
)
from netshrink.format.codecs.base import STREAM_KINDS, Encoded, Stream, check_shape
from netshrink.format.spans import ByteSpan, FileBytes, crc32_of
from netshrink.paths import open_input

MAGIC = b"\x89NSK\r\n\x1a\n"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
PREFIX = struct.Struct("<8sHHII")
MAX_HEADER_BYTES = 64 << 20
MAX_JSON_BYTES = 256 << 20
#: The JSON header may inflate to at most this many times its compressed size (real headers: ~10x),
#: with a floor for small files, so a zlib bomb cannot make the reader build gigabytes of objects.
JSON_INFLATION = 64
MIN_JSON_LIMIT = 1 << 20
#: Default limit on the decoded bytes a file may declare: this many times the file's size, and at
#: least MIN_DECODE_LIMIT. Real files decode to 2-700x their size; a crafted one to 10^7x.
DECODE_INFLATION = 1024
MIN_DECODE_LIMIT = 64 << 20
MAX_DECODE_ENV = "NETSHRINK_MAX_DECODED_BYTES"
MAX_TENSORS = 100_000
MAX_DEPTH = 6


@dataclass
class TensorRecord:
    """One named tensor of a model, in encoded form.

    `tied_to` names an earlier tensor this one shares its storage with (an embedding tied to the
    output layer): the file stores the values once, under that tensor, and `encoded` is its encoding.
    """

    name: str
    encoded: Encoded
    module_type: str = ""
    tied_to: str = ""


@dataclass
class NskFile:
    """Everything in a .nsk file: header metadata and encoded tensors."""

    tensors: list[TensorRecord]
    model: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    header_bytes: int = 0  # prefix + compressed header, as read or written


def read_nsk(path: str | Path, max_bytes: int | None = None) -> NskFile:
    """Read and verify a .nsk file. Every failure is a FormatError subclass naming the file.

    `max_bytes` bounds the decoded size the file's tensors may declare (default: `decode_limit`).
    """
    path = Path(path)
    with open_input(path, ".nsk file") as handle:
        data = handle.read()
    try:
        return parse(data, max_bytes)
    except NetshrinkError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def parse(data: bytes, max_bytes: int | None = None) -> NskFile:
    """Parse the bytes of a .nsk file (see `netshrink.format.container` for the layout)."""
    return parse_parts(data, data, max_bytes)


def parse_parts(head: bytes, data: bytes | FileBytes, max_bytes: int | None = None) -> NskFile:
    """Parse a file given its first bytes (`head`: at least the prefix and the header, or all there
    is) and all of its bytes (`data`): bytes in memory, or `FileBytes` of an open file, whose
    records then hold `ByteSpan`s instead of stream bytes (`netshrink.format.bounded`)."""
    header = _read_header(head)
    payload_start = PREFIX.size + header_length(head)
    tensors = _read_records(header, data, payload_start)
    check_decoded_size(tensors, len(data), max_bytes)
    return NskFile(
        tensors, _dict_field(header, "model"), _recipe_field(header), _dict_field(header, "meta"), payload_start
    )


def decode_limit(file_bytes: int, max_bytes: int | None = None) -> int:
    """The most decoded bytes a file of `file_bytes` may declare: `max_bytes` when given, else
    $NETSHRINK_MAX_DECODED_BYTES, else max(MIN_DECODE_LIMIT, DECODE_INFLATION x file_bytes)."""
    if max_bytes is None:
        env = os.environ.get(MAX_DECODE_ENV, "").strip()
        if env:
            try:
                max_bytes = int(float(env))
            except (ValueError, OverflowError):
                raise NetshrinkError(f"${MAX_DECODE_ENV}={env!r} is not a number of bytes") from None
    if max_bytes is not None:
        return max_bytes
    return max(MIN_DECODE_LIMIT, DECODE_INFLATION * file_bytes)


def check_decoded_size(tensors: list[TensorRecord], file_bytes: int, max_bytes: int | None = None) -> int:
    """Sum of the decoded bytes the records declare (tied tensors once), checked against the limit
    BEFORE anything is decoded; returns the sum."""
    declared = sum(rec.encoded.decoded_nbytes() for rec in tensors if not rec.tied_to)
    limit = decode_limit(file_bytes, max_bytes)
    if declared > limit:
        raise TooLarge(
            f"declares {declared:,} bytes of decoded tensors in a {file_bytes:,}-byte file, over the "
            f"{limit:,}-byte limit; if you trust the file, raise it (max_bytes=, or ${MAX_DECODE_ENV})"
        )
    return declared


def header_length(data: bytes) -> int:
    """The header length a file's prefix declares (the prefix must be there)."""
    return PREFIX.unpack_from(data)[3]


def _read_header(data: bytes) -> dict[str, Any]:
    if len(data) < PREFIX.size:
        if data and MAGIC.startswith(data[: len(MAGIC)]):
            raise TruncatedFile("truncated: the file ends inside its 20-byte prefix")
        raise NotNetshrinkFile("not a netshrink file (too short, no magic bytes)")
    magic, version, flags, header_len, header_crc = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise NotNetshrinkFile("not a netshrink file (wrong magic bytes)")
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersion(
            f"format version {version} is not supported (this netshrink reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); upgrade netshrink"
        )
    if flags:
        raise MalformedHeader(f"reserved flags {flags:#06x} are set: written by a newer netshrink, or corrupt")
    if header_len > MAX_HEADER_BYTES:
        raise MalformedHeader(f"header length {header_len} exceeds the {MAX_HEADER_BYTES} byte limit")
    packed = data[PREFIX.size : PREFIX.size + header_len]
    if len(packed) < header_len:
        raise TruncatedFile(f"truncated: header needs {header_len} bytes, file has {len(packed)}")
    if zlib.crc32(packed) != header_crc:
        raise ChecksumMismatch("header checksum mismatch: the file is corrupt")
    return _decode_json(packed, version)


def _decode_json(packed: bytes, version: int) -> dict[str, Any]:
    limit = min(MAX_JSON_BYTES, max(MIN_JSON_LIMIT, JSON_INFLATION * len(packed)))
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(packed, limit)
        if inflater.unconsumed_tail or not inflater.eof:
            raise MalformedHeader(f"header does not decompress to a complete JSON document of at most {limit} bytes")
        if inflater.unused_data:
            raise MalformedHeader(f"{len(inflater.unused_data)} unexpected bytes after the compressed header")
        header = json.loads(text, parse_constant=_reject_constant)
    except (zlib.error, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedHeader(f"malformed header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("netshrink") != version:
        raise MalformedHeader("malformed header: not a netshrink header object")
    return header


def _reject_constant(name: str) -> None:
    """JSON has no NaN or Infinity; Python's parser accepts them unless told not to."""
    raise ValueError(f"non-finite number {name} in the header")


def _dict_field(header: dict[str, Any], key: str) -> dict[str, Any]:
    value = header.get(key, {})
    if not isinstance(value, dict):
        raise MalformedHeader(f"malformed header: {key!r} must be an object")
    return value


def _recipe_field(header: dict[str, Any]) -> dict[str, Any] | None:
    value = header.get("recipe")
    if value is not None and not isinstance(value, dict):
        raise MalformedHeader("malformed header: 'recipe' must be an object or null")
    return value


def _read_records(header: dict[str, Any], data: bytes | FileBytes, payload_start: int) -> list[TensorRecord]:
    records = header.get("tensors")
    payload_bytes = header.get("payload_bytes")
    if not isinstance(records, list) or len(records) > MAX_TENSORS:
        raise MalformedHeader("malformed header: 'tensors' must be a list of at most 100000 records")
    if not _is_count(payload_bytes):
        raise MalformedHeader("malformed header: 'payload_bytes' must be a non-negative integer")
    available = len(data) - payload_start
    if available < payload_bytes:
        raise TruncatedFile(f"truncated: payload needs {payload_bytes} bytes, file has {available}")
    if available > payload_bytes:
        raise MalformedHeader(f"{available - payload_bytes} unexpected bytes after the payload")
    version = header["netshrink"]
    if version != 1:
        crc = header.get("payload_crc32")
        if not _is_count(crc):
            raise MalformedHeader("malformed header: 'payload_crc32' must be a non-negative integer")
        if crc32_of(data[payload_start:]) != crc:
            raise ChecksumMismatch("payload checksum mismatch: the tensors' bytes are corrupt")
    tensors, offset, earlier, names = [], 0, {}, set()
    for index, record in enumerate(records):
        rec = _read_record(record, index, data, payload_start, offset, earlier, version)
        if rec.name in names:
            raise MalformedHeader(f"malformed header: tensor {rec.name!r} appears twice")
        names.add(rec.name)
        if not rec.tied_to:  # streams are borrowed, and tensors tied, from stored tensors only
            earlier[rec.name] = rec.encoded
        tensors.append(rec)
        offset += record["length"]
    if offset != payload_bytes:
        raise MalformedHeader(f"malformed header: tensors cover {offset} of {payload_bytes} payload bytes")
    return tensors


def _read_record(
    record: Any,
    index: int,
    data: bytes | FileBytes,
    payload_start: int,
    offset: int,
    earlier: dict[str, Encoded],
    version: int,
) -> TensorRecord:
    """One tensor record. Version 1 records carry their offset and CRC-32; version 3 may be tied."""
    per_tensor_crc = version == 1
    if not isinstance(record, dict):
        raise MalformedHeader(f"malformed header: tensor record {index} is not an object")
    name, module, length = record.get("name"), record.get("module", ""), record.get("length")
    if not isinstance(name, str) or not isinstance(module, str):
        raise MalformedHeader(f"malformed header: tensor record {index} lacks a name")
    if "tied" in record and version >= 3:
        return _tied_record(record, name, module, earlier)
    if (
        not _is_count(length)
        or per_tensor_crc
        and (record.get("offset") != offset or not _is_count(record.get("crc32")))
    ):
        raise MalformedHeader(f"malformed header: tensor {name!r} has a bad offset, length or checksum field")
    start = payload_start + offset
    blob = data[start : start + length]
    if len(blob) != length:
        raise TruncatedFile(f"truncated: tensor {name!r} runs past the end of the file")
    if per_tensor_crc and crc32_of(blob) != record["crc32"]:
        raise ChecksumMismatch(f"checksum mismatch in tensor {name!r}: the file is corrupt")
    encoded, used = _enc_from_json(record.get("enc"), blob, 0, name, depth=0, earlier=earlier)
    if used != length:
        raise MalformedHeader(f"malformed header: tensor {name!r} streams cover {used} of {length} bytes")
    return TensorRecord(name, encoded, module)


def _tied_record(record: dict[str, Any], name: str, module: str, earlier: dict[str, Encoded]) -> TensorRecord:
    """A tensor that shares the storage of an earlier, stored one: no bytes, no encoding of its own."""
    source = record["tied"]
    if record.get("length") != 0 or "enc" in record:
        raise MalformedHeader(f"malformed header: tied tensor {name!r} must have length 0 and no encoding")
    if not isinstance(source, str) or source not in earlier:
        raise MalformedHeader(
            f"malformed header: tensor {name!r} is tied to {source!r}, which is not an earlier tensor"
        )
    return TensorRecord(name, earlier[source], module, tied_to=source)


def _enc_from_json(
    node: Any, blob: bytes | ByteSpan, pos: int, name: str, depth: int, earlier: dict[str, Encoded]
) -> tuple[Encoded, int]:
    """Rebuild an Encoded tree from its JSON, slicing stream bytes from `blob` starting at `pos`
    (borrowed streams from the `earlier` tensors instead)."""
    if depth > MAX_DEPTH or not isinstance(node, dict):
        raise MalformedHeader(f"malformed header: tensor {name!r} has an invalid codec record")
    codec, params, streams, children = node.get("codec"), node.get("params"), node.get("streams"), node.get("children")
    if (
        not isinstance(codec, str)
        or not isinstance(params, dict)
        or not isinstance(streams, list)
        or not isinstance(children, dict)
    ):
        raise MalformedHeader(f"malformed header: tensor {name!r} codec record lacks codec/params/streams/children")
    try:
        shape = check_shape(node.get("shape"))
    except NetshrinkError as exc:
        raise MalformedHeader(f"malformed header: tensor {name!r}: {exc}") from None
    enc = Encoded(codec, shape, params)
    for entry in streams:
        if not (
            isinstance(entry, list)
            and len(entry) in (3, 4)
            and isinstance(entry[0], str)
            and entry[1] in STREAM_KINDS
            and _is_count(entry[2])
            and all(isinstance(e, str) for e in entry[3:])
        ):
            raise MalformedHeader(f"malformed header: tensor {name!r} has an invalid stream entry")
        role, kind, length = entry[:3]
        if len(entry) == 4:
            enc.streams[role] = _borrowed(entry[3], role, kind, length, name, earlier)
            continue
        if pos + length > len(blob):
            raise MalformedHeader(f"malformed header: tensor {name!r} stream {role!r} runs past its bytes")
        enc.streams[role] = Stream(kind, blob[pos : pos + length])
        pos += length
    for role, child in children.items():
        enc.children[role], pos = _enc_from_json(child, blob, pos, name, depth + 1, earlier)
    return enc, pos


def _borrowed(source: str, role: str, kind: str, length: int, name: str, earlier: dict[str, Encoded]) -> Stream:
    """The stream tensor `name` borrows from the earlier tensor `source` (same role, kind, length)."""
    lender = earlier.get(source)
    stream = lender.streams.get(role) if lender is not None else None
    if stream is None or stream.borrowed_from or stream.kind != kind or len(stream.data) != length:
        raise MalformedHeader(
            f"malformed header: tensor {name!r} borrows a {role!r} stream of {length} bytes "
            f"from {source!r}, which is not an earlier tensor holding one"
        )
    return Stream(kind, stream.data, borrowed_from=source)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 63)
