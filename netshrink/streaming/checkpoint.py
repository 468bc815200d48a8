"""A .safetensors checkpoint read one tensor at a time, never mapped into memory whole.

Streaming compression reads a model larger than memory: the file is not memory-mapped (a mapping
of the whole file counts against an address-space limit even where a cgroup memory limit would
not), each tensor is read from its own byte range with `os.pread` when its block is materialised.
The header is untrusted input, checked as `format/reader.py` checks a .nsk header: its length
against the file, every dtype, shape and byte range against the data, before anything is
allocated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from netshrink.errors import ModelError
from netshrink.paths import open_input

#: safetensors' own bound on the JSON header.
MAX_HEADER_BYTES = 100 << 20
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
#: Bytes read by one pread call.
READ_CHUNK = 1 << 26


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the file: dtype, shape and absolute byte range."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    stop: int


@dataclass(frozen=True)
class SafetensorsCheckpoint:
    """The header of a .safetensors file; `read(name)` loads one tensor from disk."""

    path: Path
    size: int
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    fingerprint: str  # size, modification time, digest of header and sampled data: which checkpoint a run read

    @classmethod
    def open(cls, path: str | Path) -> SafetensorsCheckpoint:
        path = Path(path)
        with open_input(path, ".safetensors checkpoint", ModelError) as file:
            size = os.fstat(file.fileno()).st_size
            head = file.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise ModelError(f"{path} is not a .safetensors checkpoint (its header length is impossible)")
            text = file.read(length)
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path} is not a .safetensors checkpoint (its header is not JSON: {exc})") from None
        if not isinstance(header, dict):
            raise ModelError(f"{path} is not a .safetensors checkpoint (its header is not an object)")
        metadata = header.pop("__metadata__", None) or {}
        base = 8 + length
        entries = {name: _entry(path, name, value, base, size) for name, value in header.items()}
        fingerprint = f"{size}:{path.stat().st_mtime_ns}:{_digest(path, text, base, size)}"
        return cls(path, size, entries, {str(k): str(v) for k, v in dict(metadata).items()}, fingerprint)

    def read(self, name: str) -> torch.Tensor:
        """Tensor `name`, read from its byte range (a new tensor that owns its memory)."""
        entry = self.entries[name]
        buffer = bytearray(entry.stop - entry.start)
        view = memoryview(buffer)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            done = 0
            while done < len(buffer):
                chunk = os.pread(fd, min(READ_CHUNK, len(buffer) - done), entry.start + done)
                if not chunk:
                    raise ModelError(f"checkpoint {self.path} ends inside tensor {name!r}: truncated?")
                view[done : done + len(chunk)] = chunk
                done += len(chunk)
        finally:
            os.close(fd)
        if not buffer:
            return torch.empty(entry.shape, dtype=entry.dtype)
        return torch.frombuffer(buffer, dtype=entry.dtype).reshape(entry.shape)

    def model_description(self) -> tuple[str | None, dict[str, Any]]:
        """The zoo model and arguments the checkpoint names in its metadata (netshrink_model, arch)."""
        name = self.metadata.get("netshrink_model")
        try:
            arch = json.loads(self.metadata.get("arch") or "{}")
        except json.JSONDecodeError as exc:
            raise ModelError(f"checkpoint {self.path}: metadata 'arch' is not JSON: {exc}") from None
        if not isinstance(arch, dict):
            raise ModelError(f"checkpoint {self.path}: metadata 'arch' must be a JSON object")
        return name, arch


#: Bytes of tensor data at each end of the file that go into the fingerprint.
FINGERPRINT_SAMPLE = 1 << 20


def _digest(path: Path, header: bytes, base: int, size: int) -> str:
    """A digest of the header and of the first and last MiB of tensor data: another checkpoint of the
    same shapes (retrained weights) differs there, and reading it costs milliseconds."""
    digest = hashlib.sha256(header)
    with path.open("rb") as file:
        for start in sorted({base, max(base, size - FINGERPRINT_SAMPLE)}):
            file.seek(start)
            digest.update(file.read(FINGERPRINT_SAMPLE))
    return digest.hexdigest()


def _entry(path: Path, name: str, value: Any, base: int, size: int) -> TensorEntry:
    """One header entry, checked: a known dtype, a shape, and a byte range of exactly that size in the file."""
    fields = value if isinstance(value, dict) else {}
    dtype, shape, offsets = fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")
    valid = (
        dtype in DTYPES
        and isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
    )
    if not valid:
        raise ModelError(f"checkpoint {path}: malformed entry for tensor {name!r}")
    start, stop = base + offsets[0], base + offsets[1]
    itemsize = torch.empty(0, dtype=DTYPES[dtype]).element_size()
    if not base <= start <= stop <= size or stop - start != math.prod(shape) * itemsize:
        raise ModelError(
            f"checkpoint {path}: tensor {name!r} ({dtype} {shape}) does not fit its byte range: truncated or corrupt"
        )
    return TensorEntry(DTYPES[dtype], tuple(shape), start, stop)
