"""The cases and the runner behind tests/test_fuzz.py: corrupted and crafted .nsk files.

Run as a script it builds a few original files, derives thousands of damaged or hostile variants,
feeds each to `netshrink.load` (and a sample to `netshrink.report.sizes.file_report`, what `netshrink
inspect` uses) and prints one JSON summary line prefixed by `SUMMARY_MARKER`:

    python tests/fuzz_cases.py '{"seed": 0, "raw_cases": {"dc": 800}, ...}'   # see test_fuzz.CONFIG
    python tests/fuzz_cases.py CONFIG --write-failures DIR   # also keep each failing file in DIR

It is a separate process so that the test can bound its memory (an address-space limit set here, and
its peak RSS measured from outside any case) and survive a reader that allocates gigabytes.

Oracle, per case: the reader either raises `NetshrinkError` whose message is one non-empty line, or
returns a model. A "strict" case (every raw byte mutation, every header edit that a correct reader
must reject or ignore) must then load the exact state dict of its original; a "lenient" case (a
re-checksummed payload byte, a dtype swap: a valid file with other values) only the same keys and
shapes. Anything else is a finding: another exception type, a multi-line message, a NetshrinkError
that wraps a MemoryError (the reader tried the allocation), a slow case, a case whose peak RSS grew
past the bound.
"""

from __future__ import annotations

import copy
import json
import math
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_MARKER = "FUZZ-SUMMARY "
PREFIX = struct.Struct("<8sHHII")  # magic, version, flags, header_len, header_crc (fileformat.py)
MAGIC = b"\x89NSK\r\n\x1a\n"
INF, NAN = float("inf"), float("nan")
MIB = 1 << 20

# --- the original files ----------------------------------------------------------------------------


def build_originals(folder: Path) -> dict[str, Path]:
    """Two files with every codec between them, both naming the zoo model so `load(path)` rebuilds it.

    dc: full LeNet-5 (decodes to ~1.7 MB), oneshot-prune50-palette5: sparse of palette, fp16.
    mixed: a thin LeNet-5 (widths 6, 16, 32; its `arch` is in the header) with PQ (conv2 borrows
    conv1's codebook), low-rank of fp16, per-channel palette, sparse of palette, fp16, bf16 and exact
    fp32 tensors; small, so the bulk of the header fuzzing decodes in a few milliseconds per case.
    """
    import torch

    import netshrink
    from netshrink import zoo

    torch.manual_seed(0)
    dc = netshrink.compress(zoo.build_model("lenet5"), "oneshot-prune50-palette5", progress=False, name="lenet5")
    dc.save(folder / "dc.nsk")
    _mixed_model().save(folder / "mixed.nsk")
    return {"dc": folder / "dc.nsk", "mixed": folder / "mixed.nsk"}


def _mixed_model():
    import torch

    from netshrink import zoo
    from netshrink.api import CompressedModel
    from netshrink.format.codecs import PQ, Dense, LowRank, Palette, Sparse
    from netshrink.identity import ModelIdentity
    from netshrink.plan import CompressionPlan

    torch.manual_seed(0)
    model = zoo.build_model("lenet5", widths=[6, 16, 32])
    with torch.no_grad():
        model.fc1.bias[::2] = 0  # something for the sparse codec to skip
    plan = CompressionPlan()
    plan.assign(model, "conv1.weight", PQ(d=5, k=16))
    plan.assign(model, "conv2.weight", PQ(d=5, k=16), plan.entries["conv1.weight"].state)  # one codebook
    plan.assign(model, "fc1.weight", LowRank(rank=4, inner=Dense("fp16")))
    plan.assign(model, "fc2.weight", Palette(bits=3, per_channel=True))
    plan.assign(model, "conv2.bias", Dense("fp16"))
    plan.assign(model, "fc1.bias", Sparse(Palette(bits=2)))
    plan.assign(model, "fc2.bias", Dense("bf16"))  # conv1.bias stays exact fp32
    return CompressedModel(model, plan, None, ModelIdentity.of(model, "lenet5"))


# --- the container, taken apart and put back together ------------------------------------------


@dataclass
class Doc:
    """A .nsk file opened for editing. `render` re-checksums whatever an edit changed, so edits reach
    the code behind the CRCs; an edit sets `fix_crc = False` to keep a payload CRC it wrote itself."""

    header: Any
    payload: bytes
    version: int
    flags: int = 0
    magic: bytes = MAGIC
    fix_crc: bool = True
    text: bytes | None = None  # a raw header text replacing json.dumps(header)
    subs: dict[str, str] = field(default_factory=dict)  # '"placeholder"' -> raw JSON text
    zlib_tail: bytes = b""  # bytes after the zlib stream, inside header_len
    packing: str = "zlib"  # 'plain': the JSON uncompressed; 'cut': the zlib stream minus its last byte

    @classmethod
    def parse(cls, data: bytes) -> Doc:
        magic, version, flags, header_len, _ = PREFIX.unpack_from(data)
        end = PREFIX.size + header_len
        return cls(json.loads(zlib.decompress(data[PREFIX.size : end])), data[end:], version, flags, magic)

    def render(self) -> bytes:
        if self.fix_crc and isinstance(self.header, dict) and "payload_crc32" in self.header:
            self.header["payload_crc32"] = zlib.crc32(self.payload)
        text = self.text
        if text is None:
            text = json.dumps(self.header, sort_keys=True, separators=(",", ":"), allow_nan=True)
            for placeholder, raw in self.subs.items():
                text = text.replace(json.dumps(placeholder), raw)
            text = text.encode()
        packed = {
            "zlib": lambda: zlib.compress(text, 9) + self.zlib_tail,
            "plain": lambda: text,
            "cut": lambda: zlib.compress(text, 9)[:-1],
        }[self.packing]()
        return (
            PREFIX.pack(self.magic, self.version, self.flags, len(packed), zlib.crc32(packed)) + packed + self.payload
        )

    # navigation helpers for edits
    def record(self, name: str) -> dict:
        return next(r for r in self.header["tensors"] if r["name"] == name)

    def blob_span(self, index: int) -> tuple[int, int]:
        """(start, end) of tensor `index`'s bytes in the payload (tensors are back to back)."""
        start = sum(r["length"] for r in self.header["tensors"][:index])
        return start, start + self.header["tensors"][index]["length"]


def enc_nodes(enc: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """(path, node) of a codec tree: the tensor's own record, then its children, depth first."""
    yield path or "enc", enc
    for role, child in enc.get("children", {}).items():
        yield from enc_nodes(child, f"{path or 'enc'}.{role}")


def stream_spans(header: dict) -> list[tuple[int, int, str]]:
    """(start, end, 'tensor:role') of every stored (not borrowed) stream in the payload."""
    spans, pos = [], 0
    for record in header["tensors"]:
        for _, node in enc_nodes(record["enc"]):
            for entry in node["streams"]:
                if len(entry) == 3:
                    spans.append((pos, pos + entry[2], f"{record['name']}:{entry[0]}"))
                    pos += entry[2]
    return spans


# --- cases -----------------------------------------------------------------------------------------


@dataclass
class Case:
    family: str
    base: str  # which original ('dc', 'mixed') or '-' for hand-built files
    edit: str  # what was done, precise enough to reproduce
    data: bytes
    strict: bool = True  # a successful load must equal the original exactly
    report: bool = False  # also run file_report (+ table, to_json)
    model: str | None = None  # also load(path, model=...) with this zoo model
    must_fail: bool = False  # no original: a NetshrinkError is the only right answer


#: Values an edit writes where the reader expects something sane.
NASTY = [
    0,
    1,
    -1,
    2,
    7,
    255,
    2**16,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(2**63),
    0.5,
    1.0,
    -0.0,
    1e300,
    -1e300,
    INF,
    -INF,
    NAN,
    "",
    "a",
    "5",
    "palette",
    "codebook",
    "lenet5",
    "a\nb",
    "x" * 1000,
    None,
    True,
    False,
    [],
    [0],
    [2**31],
    {},
    {"a": 1},
    [[[]]],
]
#: For integer parameters and lengths.
BAD_INTS = [0, -1, 99, 2**31, 2**63, 2**64, 10**30, "5", 5.0, 1.5, 1e300, INF, NAN, None, True, [], {}]
BAD_SHAPES = [
    [2**27],
    [2**31],
    [2**31 + 1],
    [2**32],
    [2**63],
    [2**64],
    [-1],
    [1e300],
    [1.0],
    [5.5],
    ["a"],
    [[5]],
    [],
    [None],
    [True],
    [INF],
    [NAN],
    [1] * 9,
    [2] * 8,
    [2**16, 2**16],
    [2**16, 2**15],
    [0],
    "20",
    None,
    {},
    5,
]


def raw_cases(rng: random.Random, base: str, data: bytes, count: int) -> Iterator[Case]:
    """(a) Byte-level damage anywhere, half of it in the prefix and header where it is most
    interesting. The CRCs catch most; whatever gets through must load the original exactly."""
    header_end = PREFIX.size + PREFIX.unpack_from(data)[3]
    kinds = ["flip", "flip", "set", "truncate", "insert", "delete", "append", "overwrite"]
    for _ in range(count):
        kind = rng.choice(kinds)
        pos = rng.randrange(header_end) if rng.random() < 0.5 else rng.randrange(len(data))
        out, what = bytearray(data), ""
        if kind == "flip":
            bit = rng.randrange(8)
            out[pos] ^= 1 << bit
            what = f"flip bit {bit} of byte {pos}"
        elif kind == "set":
            value = rng.choice([0, 0xFF, rng.randrange(256)])
            out[pos] = value
            what = f"byte {pos} = {value:#04x}"
        elif kind == "truncate":
            pos = rng.choice([pos, 0, 1, 7, 8, 19, 20, header_end - 1, header_end, len(data) - 1])
            del out[pos:]
            what = f"truncate to {pos} bytes"
        elif kind == "insert":
            extra = rng.randbytes(rng.choice([1, 1, 4, 16]))
            out[pos:pos] = extra
            what = f"insert {extra.hex()} at {pos}"
        elif kind == "delete":
            n = rng.choice([1, 1, 4, 100])
            del out[pos : pos + n]
            what = f"delete {n} bytes at {pos}"
        elif kind == "append":
            extra = rng.randbytes(rng.choice([1, 8, 1000]))
            out += extra
            what = f"append {len(extra)} bytes"
        else:
            extra = rng.randbytes(rng.choice([2, 8, 64]))
            out[pos : pos + len(extra)] = extra
            what = f"overwrite {len(extra)} bytes at {pos}"
        yield Case("raw", base, what, bytes(out))


def payload_cases(rng: random.Random, base: str, data: bytes, count: int, report_share: float) -> Iterator[Case]:
    """(a') Byte damage inside the payload with payload_crc32 recomputed: what the entropy decoders and
    codecs see when a CRC collides or a file is crafted. Half of it hits a stream's first bytes (mode
    byte, count table varints). A changed codebook byte is still a valid file, so the oracle is
    lenient: a clean error, or a model with the right keys and shapes."""
    doc = Doc.parse(data)
    spans = [span for span in stream_spans(doc.header) if span[1] > span[0]]
    for _ in range(count):
        start, end, stream = rng.choice(spans)
        pos = rng.randrange(start, min(end, start + 4)) if rng.random() < 0.5 else rng.randrange(start, end)
        payload = bytearray(doc.payload)
        if rng.random() < 0.5:
            bit = rng.randrange(8)
            payload[pos] ^= 1 << bit
            what = f"payload byte {pos} ({stream} +{pos - start}) flip bit {bit}, CRC fixed"
        else:
            value = rng.choice([0, 0xFF, 0x80, 0x7F, rng.randrange(256)])
            payload[pos] = value
            what = f"payload byte {pos} ({stream} +{pos - start}) = {value:#04x}, CRC fixed"
        edited = copy.deepcopy(doc)
        edited.payload = bytes(payload)
        yield Case("payload", base, what, edited.render(), strict=False, report=rng.random() < report_share)


Edit = Callable[[Doc], None]


def header_edits(doc: Doc, base: str, node_tensors: int) -> Iterator[tuple[str, Edit, bool]]:
    """(b) Targeted header edits, all re-checksummed: (description, edit, strict). Codec-node edits
    (shape, codec, params, streams) go to the first `node_tensors` tensors only."""
    yield from _prefix_edits(doc)
    yield from _top_level_edits(doc)
    yield from _model_edits(doc, base)
    yield from _record_edits(doc)
    for record in doc.header["tensors"][:node_tensors]:
        for path, node in enc_nodes(record["enc"]):
            yield from _node_edits(record["name"], path, node)
    if base == "mixed":
        yield from _borrow_edits()
    yield from _nesting_edits()


def _at(name: str, path: str, fn: Callable[[dict], None]) -> Edit:
    """An edit applied to the codec node at `path` ('enc', 'enc.values', ...) of tensor `name`."""

    def edit(doc: Doc) -> None:
        node = doc.record(name)["enc"]
        for role in path.split(".")[1:]:
            node = node["children"][role]
        fn(node)

    return edit


def _set(key: str, value: Any) -> Callable[[dict], None]:
    def fn(obj: dict) -> None:
        obj[key] = copy.deepcopy(value)

    return fn


def _prefix_edits(doc: Doc) -> Iterator[tuple[str, Edit, bool]]:
    version = doc.version
    for flags in (1, 0x8000, 0xFFFF):
        yield f"prefix flags = {flags:#x}", lambda d, f=flags: setattr(d, "flags", f), True
    for v in sorted({0, 1, 3, version + 1, 0xFFFF} - {version}):
        yield f"prefix version = {v} (header 'netshrink' kept)", lambda d, v=v: setattr(d, "version", v), True
        yield (
            f"prefix version = {v} and header 'netshrink' = {v}",
            lambda d, v=v: (setattr(d, "version", v), d.header.__setitem__("netshrink", v)),
            True,
        )
    yield "magic last byte 0x0b", lambda d: setattr(d, "magic", MAGIC[:-1] + b"\x0b"), True


def _top_level_edits(doc: Doc) -> Iterator[tuple[str, Edit, bool]]:
    def payload_len(delta: int) -> Edit:
        return lambda d: d.header.__setitem__("payload_bytes", d.header["payload_bytes"] + delta)

    yield "payload_bytes + 1", payload_len(1), True
    yield "payload_bytes - 1", payload_len(-1), True
    for value in BAD_INTS:
        yield f"payload_bytes = {value!r}", lambda d, v=value: d.header.__setitem__("payload_bytes", v), True
    for value in BAD_INTS + ["crc ^ 1"]:

        def crc(d: Doc, v=value) -> None:
            d.fix_crc = False
            d.header["payload_crc32"] = zlib.crc32(d.payload) ^ 1 if v == "crc ^ 1" else v

        yield f"payload_crc32 = {value!r}", crc, True
    for key in ("payload_bytes", "payload_crc32", "tensors", "netshrink", "model", "recipe", "meta"):
        yield f"delete header key {key!r}", lambda d, k=key: d.header.pop(k), True
    for value in (1, 3, 0, "2", 2.0, None, True):
        yield f"header 'netshrink' = {value!r}", lambda d, v=value: d.header.__setitem__("netshrink", v), True
    for key in ("recipe", "meta", "model"):
        for value in (5, [], "x", None, {"name": 5}):
            yield (
                f"header {key!r} = {value!r}",
                lambda d, k=key, v=value: d.header.__setitem__(k, copy.deepcopy(v)),
                True,
            )
    yield "extra top-level key", lambda d: d.header.__setitem__("zz", [1, 2]), True

    def trailing(extra: bytes, fix_len: bool, fix_crc: bool) -> Edit:
        def edit(d: Doc) -> None:
            d.fix_crc = False
            d.payload += extra
            if fix_len:
                d.header["payload_bytes"] = len(d.payload)
            d.header["payload_crc32"] = zlib.crc32(d.payload if fix_crc else d.payload[: -len(extra)])

        return edit

    yield "1 byte after the payload", trailing(b"\0", False, False), True
    yield "1 byte after the payload, payload_crc32 over it", trailing(b"\0", False, True), True
    yield "1 byte after the payload, payload_bytes and crc over it", trailing(b"\0", True, True), True
    yield "4096 bytes after the payload, payload_bytes and crc over it", trailing(b"\xab" * 4096, True, True), True
    # the header text itself
    yield "header JSON is a list", lambda d: setattr(d, "header", [d.header]), True
    yield "header JSON is null", lambda d: setattr(d, "header", None), True
    yield "header is uncompressed JSON", lambda d: setattr(d, "packing", "plain"), True
    yield "header text not UTF-8", lambda d: setattr(d, "text", b'{"netshrink": 2, "x": "\xff\xfe"}'), True
    yield "header text with UTF-8 BOM", lambda d: setattr(d, "text", b"\xef\xbb\xbf" + _dumps(d.header)), True
    yield "header text is 'NaN'", lambda d: setattr(d, "text", b"NaN"), True
    yield "header text empty", lambda d: setattr(d, "text", b""), True
    yield (
        "header: duplicate key 'tensors' (second empty)",
        lambda d: setattr(d, "text", _dumps(d.header)[:-1] + b',"tensors":[]}'),
        True,
    )
    yield "header with 20 MB of whitespace", lambda d: setattr(d, "text", _dumps(d.header) + b" " * (20 * MIB)), True
    yield (
        "header: integer literal of 5000 digits",
        lambda d: (d.header.__setitem__("payload_bytes", "@BIG"), d.subs.__setitem__("@BIG", "9" * 5000)),
        True,
    )
    yield (
        "header: 1e999 literal for payload_bytes",
        lambda d: (d.header.__setitem__("payload_bytes", "@BIG"), d.subs.__setitem__("@BIG", "1e999")),
        True,
    )
    yield "garbage after the zlib stream (inside header_len)", lambda d: setattr(d, "zlib_tail", b"junk"), True
    yield "zlib stream cut short by 1 byte", lambda d: setattr(d, "packing", "cut"), True


def _dumps(header: Any) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def _model_edits(doc: Doc, base: str) -> Iterator[tuple[str, Edit, bool]]:
    """The model identity: a reader builds a module from it, so every arch value is an allocation."""
    model = doc.header["model"]
    arch = model.get("arch", {})
    widths = arch.get("widths", [20, 50, 500])

    def arch_set(key: str, value: Any) -> Edit:
        return lambda d: d.header["model"].setdefault("arch", {}).__setitem__(key, copy.deepcopy(value))

    def model_set(key: str, value: Any) -> Edit:
        return lambda d: d.header["model"].__setitem__(key, copy.deepcopy(value))

    num_classes = [
        -1,
        0,
        1,
        10**9,
        2**31,
        2**63,
        10**30,
        "x",
        "10",
        1.5,
        10.0,
        1e300,
        INF,
        -INF,
        NAN,
        None,
        True,
        [10],
        {},
    ]
    for value in num_classes:
        yield f"model.arch.num_classes = {value!r}", arch_set("num_classes", value), True
    bad_widths = [
        [1e300, *widths[1:]],
        [INF, 5, 5],
        [NAN, 5, 5],
        [-1, *widths[1:]],
        [0, *widths[1:]],
        [*widths[:2], 10**6],
        [*widths[:2], 10**8],
        [10**5, 10**5, 10],
        [2**31, 2**31, 2**31],
        widths[:2],
        [*widths, 7],
        "abc",
        5,
        None,
        [],
        [[widths[0]], *widths[1:]],
        [str(widths[0]), *widths[1:]],
        [widths[0] + 0.5, *widths[1:]],
        [True, *widths[1:]],
        {"a": 1},
    ]
    for value in bad_widths:
        yield f"model.arch.widths = {value!r}", arch_set("widths", value), True
    for value in ("gap", "x", 5, None, ["fc"]):
        yield f"model.arch.head = {value!r}", arch_set("head", value), True
    yield "model.arch.bogus = 1", arch_set("bogus", 1), True
    for value in ([], "x", 5, None, {}):
        yield f"model.arch = {value!r}", model_set("arch", value), True
    for value in ("resnet20", "LENET5", "../lenet5", "", 5, None, {}, ["lenet5"]):
        yield f"model.name = {value!r}", model_set("name", value), True
    for value in (5, None, "evil\nclass", {"a": 1}):
        yield (
            f"model.name = None, model.class = {value!r}",
            lambda d, v=value: d.header["model"].update({"name": None, "class": copy.deepcopy(v)}),
            True,
        )
    for value in (
        {"fp32_bytes": -1, "weight_numel": 5},
        "x",
        5,
        {"fp32_bytes": 1e300, "weight_numel": 5},
        {"fp32_bytes": 0, "weight_numel": 0},
        {"fp32_bytes": 2**47, "weight_numel": 2**47},
        {},
    ):
        yield f"model.original = {value!r}", model_set("original", value), True


def _record_edits(doc: Doc) -> Iterator[tuple[str, Edit, bool]]:
    """Whole tensor records: renamed, duplicated, removed, added, reordered, malformed."""
    names = [r["name"] for r in doc.header["tensors"]]
    for index in (0, 1, len(names) - 1):
        name = names[index]
        for value in (name + "X", "", 5, None, names[(index + 1) % len(names)], "a\nb"):
            yield (
                f"tensor {name!r} name = {value!r}",
                lambda d, n=name, v=value: d.record(n).__setitem__("name", v),
                True,
            )
        for value in (5, None, "Linear", "", {}):
            yield (
                f"tensor {name!r} module = {value!r}",
                lambda d, n=name, v=value: d.record(n).__setitem__("module", v),
                True,
            )
        for delta in (1, -1):
            yield (
                f"tensor {name!r} length {delta:+d}",
                lambda d, n=name, x=delta: d.record(n).__setitem__("length", d.record(n)["length"] + x),
                True,
            )
        for value in BAD_INTS:
            yield (
                f"tensor {name!r} length = {value!r}",
                lambda d, n=name, v=value: d.record(n).__setitem__("length", v),
                True,
            )
        for key in ("name", "enc", "length", "module"):
            yield f"tensor {name!r}: delete key {key!r}", lambda d, n=name, k=key: d.record(n).pop(k), True
        for value in (5, [], None, "x"):
            yield f"tensor {name!r} enc = {value!r}", lambda d, n=name, v=value: d.record(n).__setitem__("enc", v), True
        yield f"tensor {name!r} record = 5", lambda d, i=index: d.header["tensors"].__setitem__(i, 5), True
        yield f"tensor {name!r}: extra key", lambda d, n=name: d.record(n).__setitem__("zz", 1), True
        yield f"remove tensor {name!r} and its bytes", lambda d, i=index: _remove_tensor(d, i, True), True
        yield f"remove tensor {name!r}, keep its bytes", lambda d, i=index: _remove_tensor(d, i, False), True
        yield f"duplicate tensor {name!r} (bytes appended)", lambda d, i=index: _add_copy(d, i, None), True
        yield (
            f"copy of tensor {name!r} as 'extra.weight' (bytes appended)",
            lambda d, i=index: _add_copy(d, i, "extra.weight"),
            True,
        )
    yield from _tied_edits(names)
    yield "swap tensors 0 and 1 with their bytes", lambda d: _swap(d, 0, 1), True
    yield "reverse the tensors and their bytes", _reverse, True
    for value in ({}, None, "x", 5, [], [[]], [None]):
        yield f"tensors = {value!r}", lambda d, v=value: d.header.__setitem__("tensors", copy.deepcopy(v)), True
    empty = {
        "name": "t",
        "module": "",
        "length": 0,
        "enc": {
            "codec": "dense",
            "shape": [0],
            "params": {"dtype": "fp32"},
            "streams": [["values", "values", 0]],
            "children": {},
        },
    }
    yield "tensors: 100001 records", lambda d: d.header.__setitem__("tensors", [{}] * 100_001), True
    yield (
        "tensors: 2000 extra empty dense tensors",
        lambda d: d.header["tensors"].extend({**copy.deepcopy(empty), "name": f"t{i}"} for i in range(2000)),
        True,
    )


def _tied_edits(names: list[str]) -> Iterator[tuple[str, Edit, bool]]:
    """Tied records (format 3: a tensor sharing an earlier one's storage, no bytes of its own). A tie
    to an earlier stored tensor is a valid file with other values (lenient); any other must fail."""
    for index in (1, 2, len(names) - 1):
        name = names[index]
        for source, valid in (
            (names[0], True),
            (names[index - 1], True),
            (name, False),
            (names[(index + 1) % len(names)], index == len(names) - 1),
            ("nope", False),
            ("", False),
            (5, False),
            (None, False),
            ([names[0]], False),
        ):
            yield (
                f"tensor {name!r} tied to {source!r} (its bytes dropped)",
                lambda d, i=index, s=source: _tie(d, i, s),
                not valid,
            )
        yield (
            f"tensor {name!r} tied to {names[0]!r}, keeping its enc",
            lambda d, i=index: _tie(d, i, names[0], keep_enc=True),
            True,
        )
        yield (
            f"tensor {name!r} tied to {names[0]!r}, keeping its bytes and length",
            lambda d, i=index: _tie(d, i, names[0], drop_bytes=False),
            True,
        )
        yield f"tensor {name!r} tied to {names[0]!r}, length 1", lambda d, i=index: _tie(d, i, names[0], length=1), True
        yield (
            f"tensor {name!r} tied to {names[0]!r}, in a version-2 file",
            lambda d, i=index: (_tie(d, i, names[0]), setattr(d, "version", 2), d.header.__setitem__("netshrink", 2)),
            True,
        )
    yield (
        f"tensor {names[2]!r} tied to {names[1]!r}, itself tied to {names[0]!r}",
        lambda d: (_tie(d, 2, names[1]), _tie(d, 1, names[0])),
        True,
    )


def _tie(doc: Doc, index: int, source: Any, drop_bytes: bool = True, keep_enc: bool = False, length: int = 0) -> None:
    record = doc.header["tensors"][index]
    start, end = doc.blob_span(index)
    if drop_bytes:
        doc.payload = doc.payload[:start] + doc.payload[end:]
        doc.header["payload_bytes"] = len(doc.payload)
    tied = {
        "name": record["name"],
        "module": record["module"],
        "length": length if drop_bytes else record["length"],
        "tied": source,
    }
    if keep_enc:
        tied["enc"] = record["enc"]
    doc.header["tensors"][index] = tied


def _remove_tensor(doc: Doc, index: int, drop_bytes: bool) -> None:
    start, end = doc.blob_span(index)
    del doc.header["tensors"][index]
    if drop_bytes:
        doc.payload = doc.payload[:start] + doc.payload[end:]
        doc.header["payload_bytes"] = len(doc.payload)


def _add_copy(doc: Doc, index: int, name: str | None) -> None:
    start, end = doc.blob_span(index)
    record = copy.deepcopy(doc.header["tensors"][index])
    if name is not None:
        record["name"] = name
    doc.header["tensors"].append(record)
    doc.payload += doc.payload[start:end]
    doc.header["payload_bytes"] = len(doc.payload)


def _swap(doc: Doc, i: int, j: int) -> None:
    order = list(range(len(doc.header["tensors"])))
    order[i], order[j] = order[j], order[i]
    _reorder(doc, order)


def _reverse(doc: Doc) -> None:
    _reorder(doc, list(reversed(range(len(doc.header["tensors"])))))


def _reorder(doc: Doc, order: list[int]) -> None:
    blobs = [doc.payload[slice(*doc.blob_span(i))] for i in range(len(order))]
    doc.header["tensors"] = [doc.header["tensors"][i] for i in order]
    doc.payload = b"".join(blobs[i] for i in order)


def _node_edits(name: str, path: str, node: dict) -> Iterator[tuple[str, Edit, bool]]:
    """One codec node: shape, codec name, every parameter, every stream entry, children."""
    where = f"tensor {name!r} {path}"
    shape = node["shape"]
    numel = math.prod(shape)
    shapes = BAD_SHAPES + [[numel], list(reversed(shape)), [0, *shape[1:]], [*shape, 1]]
    for value in shapes:
        yield f"{where}.shape = {value!r}", _at(name, path, _set("shape", value)), True
    for value in ("bogus", "", 5, None, "Palette", "palette\n", "dense", "palette", "pq", "sparse", "lowrank"):
        if value != node["codec"]:
            yield f"{where}.codec = {value!r}", _at(name, path, _set("codec", value)), True
    for key in node["params"]:
        values = [5, {}, [], None, "", "a\nb"] if key == "label" else BAD_INTS
        for value in values:
            yield (
                f"{where}.params.{key} = {value!r}",
                _at(name, path, lambda n, k=key, v=value: n["params"].__setitem__(k, v)),
                True,
            )
        yield f"{where}.params: delete {key!r}", _at(name, path, lambda n, k=key: n["params"].pop(k)), True
        if key == "dtype":  # another valid dtype of the same width is a valid file with other values
            for value in ("fp32", "fp16", "bf16", "fp64", "int64", "int32", "int16", "int8", "uint8", "bool"):
                yield f"{where}.params.dtype = {value!r}", _at(name, path, _set_param("dtype", value)), False
    yield f"{where}.params = 5", _at(name, path, _set("params", 5)), True
    for index, entry in enumerate(node["streams"]):
        yield from _stream_edits(name, path, index, entry, node)
    for key, value in (
        ("streams", {}),
        ("streams", None),
        ("streams", []),
        ("children", []),
        ("children", None),
        ("children", {"values": 5}),
    ):
        yield f"{where}.{key} = {value!r}", _at(name, path, _set(key, value)), True
    for key in ("codec", "shape", "params", "streams", "children"):
        yield f"{where}: delete key {key!r}", _at(name, path, lambda n, k=key: n.pop(k)), True


def _set_param(key: str, value: Any) -> Callable[[dict], None]:
    return lambda node: node["params"].__setitem__(key, value)


def _stream_edits(name: str, path: str, index: int, entry: list, node: dict) -> Iterator[tuple[str, Edit, bool]]:
    where = f"tensor {name!r} {path}.streams[{index}] ({entry[0]})"

    def entry_fn(fn: Callable[[list], Any]) -> Edit:
        return _at(name, path, lambda n: fn(n["streams"][index]))

    for delta in (1, -1):
        yield f"{where} length {delta:+d}", entry_fn(lambda e, x=delta: e.__setitem__(2, e[2] + x)), True
    for value in BAD_INTS:
        yield f"{where} length = {value!r}", entry_fn(lambda e, v=value: e.__setitem__(2, v)), True
    for value in ("codebook", "indices", "positions", "values", "bogus", 5, None):
        if value != entry[1]:
            yield f"{where} kind = {value!r}", entry_fn(lambda e, v=value: e.__setitem__(1, v)), True
    for value in ["x", 5, None] + [e[0] for e in node["streams"] if e[0] != entry[0]]:
        yield f"{where} role = {value!r}", entry_fn(lambda e, v=value: e.__setitem__(0, v)), True
    borrowed = [f"borrowed from {v!r}" for v in (name, "nope", "", 5)]
    for label, extra in zip(borrowed, ([name], ["nope"], [""], [5])):
        if len(entry) == 3:
            yield f"{where} {label}", entry_fn(lambda e, x=extra: e.extend(x)), True
    for value in ([], [entry[0]], entry[:2], [*entry, "a", "b"], 5, None):
        yield (
            f"{where} entry = {value!r}",
            _at(name, path, lambda n, v=value: n["streams"].__setitem__(index, copy.deepcopy(v))),
            True,
        )
    yield f"{where} deleted", _at(name, path, lambda n: n["streams"].pop(index)), True
    yield f"{where} duplicated", _at(name, path, lambda n: n["streams"].insert(index, list(n["streams"][index]))), True
    if index == 0 and len(node["streams"]) > 1:
        yield (
            f"{where} swapped with the next entry",
            _at(name, path, lambda n: n["streams"].__setitem__(slice(0, 2), n["streams"][1::-1])),
            True,
        )


def _borrow_edits() -> Iterator[tuple[str, Edit, bool]]:
    """The mixed file's shared PQ codebook: conv2.weight borrows conv1.weight's."""

    def borrower(fn: Callable[[list], Any]) -> Edit:
        return _at("conv2.weight", "enc", lambda n: fn(next(e for e in n["streams"] if e[0] == "codebook")))

    for source in ("conv2.weight", "fc1.weight", "fc2.weight", "conv1.bias", "nope", "", 5, None, ["conv1.weight"]):
        yield f"conv2.weight codebook borrowed from {source!r}", borrower(lambda e, s=source: e.__setitem__(3, s)), True
    yield "conv2.weight borrowed codebook: kind 'values'", borrower(lambda e: e.__setitem__(1, "values")), True
    yield "conv2.weight borrowed codebook: length + 2", borrower(lambda e: e.__setitem__(2, e[2] + 2)), True
    yield "conv2.weight borrowed codebook: no longer borrowed", borrower(lambda e: e.pop()), True
    yield (
        "conv1.weight codebook borrowed from conv2.weight (a cycle)",
        _at("conv1.weight", "enc", lambda n: n["streams"][0].append("conv2.weight")),
        True,
    )
    yield (
        "fc2.weight codebook borrowed from conv1.weight (wrong length)",
        _at("fc2.weight", "enc", lambda n: n["streams"][0].append("conv1.weight")),
        True,
    )
    yield (
        "conv1.weight and conv2.weight swapped with their bytes (borrower first)",
        _swap_named("conv1.weight", "conv2.weight"),
        True,
    )


def _swap_named(a: str, b: str) -> Edit:
    def edit(doc: Doc) -> None:
        names = [r["name"] for r in doc.header["tensors"]]
        _swap(doc, names.index(a), names.index(b))

    return edit


def _nesting_edits() -> Iterator[tuple[str, Edit, bool]]:
    """Deep structures: a legal-looking chain of child codecs, and JSON nested past any stack."""

    def chain(depth: int) -> dict:
        node = {"codec": "dense", "shape": [0], "params": {"dtype": "fp32"}, "streams": [], "children": {}}
        for _ in range(depth):
            node = {"codec": "sparse", "shape": [0], "params": {}, "streams": [], "children": {"values": node}}
        return node

    def first(fn: Callable[[dict], None]) -> Edit:
        return lambda d: fn(d.header["tensors"][0]["enc"])

    for depth in (7, 50):
        yield (
            f"tensor 0 gets a {depth}-deep chain of children",
            first(lambda n, k=depth: n["children"].__setitem__("deep", chain(k))),
            True,
        )
    for depth in (500, 5000, 100_000):

        def deep_params(d: Doc, k=depth) -> None:
            d.header["tensors"][0]["enc"]["params"]["deep"] = "@DEEP"
            d.subs["@DEEP"] = "[" * k + "]" * k

        yield f"tensor 0 params.deep = a list nested {depth} deep", deep_params, True

        def deep_children(d: Doc, k=depth) -> None:
            d.header["tensors"][0]["enc"]["children"]["deep"] = "@DEEP"
            d.subs["@DEEP"] = '{"children":' * k + "{}" + "}" * k

        yield f"tensor 0 children nested {depth} deep", deep_children, True


def version1_edits(doc: Doc) -> Iterator[tuple[str, Edit, bool]]:
    """The file rewritten as format version 1 (offset and CRC-32 per record): valid, then damaged."""

    def as_v1(offset_delta: int = 0, crc_xor: int = 0) -> Edit:
        def edit(d: Doc) -> None:
            d.version, d.header["netshrink"], offset = 1, 1, 0
            d.header.pop("payload_crc32", None)
            for record in d.header["tensors"]:
                blob = d.payload[offset : offset + record["length"]]
                record.update(offset=offset + offset_delta, crc32=zlib.crc32(blob) ^ crc_xor)
                offset += record["length"]

        return edit

    yield "as version 1", as_v1(), True
    yield "as version 1, offsets + 1", as_v1(offset_delta=1), True
    yield "as version 1, every crc32 ^ 1", as_v1(crc_xor=1), True


def targeted_cases(base: str, data: bytes, node_tensors: int) -> Iterator[Case]:
    doc = Doc.parse(data)
    edits = [*header_edits(doc, base, node_tensors), *version1_edits(doc)]
    for what, edit, strict in edits:
        yield _edited(doc, "header", base, what, edit, strict, report=True)


def _edited(doc: Doc, family: str, base: str, what: str, edit: Edit, strict: bool, report: bool) -> Case:
    edited = copy.deepcopy(doc)
    edit(edited)
    return Case(family, base, what, edited.render(), strict, report)


def random_header_cases(rng: random.Random, base: str, data: bytes, count: int, report_share: float) -> Iterator[Case]:
    """(b') Random re-checksummed edits anywhere in the header tree: replace a value with a NASTY
    one, delete a key or element, duplicate or swap elements, add a key."""
    doc = Doc.parse(data)
    paths = list(_json_paths(doc.header))
    for _ in range(count):
        path = rng.choice(paths)
        op = rng.choice(["replace", "replace", "replace", "delete", "duplicate", "add-key", "swap"])
        value = rng.choice(NASTY)
        edited = copy.deepcopy(doc)
        what = _apply_random(edited.header, path, op, value)
        yield Case("random-header", base, what, edited.render(), strict=True, report=rng.random() < report_share)


def _json_paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _json_paths(child, (*prefix, key))


def _apply_random(header: dict, path: tuple, op: str, value: Any) -> str:
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    where = "/".join(map(str, path))
    if op == "delete":
        del parent[key]
        return f"delete {where}"
    if op == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
        return f"duplicate {where}"
    if op == "swap" and isinstance(parent, list) and len(parent) > 1:
        other = (key + 1) % len(parent)
        parent[key], parent[other] = parent[other], parent[key]
        return f"swap {where} with element {other}"
    if op == "add-key" and isinstance(parent[key], dict):
        parent[key]["zz_extra"] = copy.deepcopy(value)
        return f"{where}/zz_extra = {_short(value)}"
    parent[key] = copy.deepcopy(value)
    return f"{where} = {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:20] + f"...({len(text)} chars)"


def amplification_cases(version: int) -> Iterator[Case]:
    """(c) Tiny files that declare gigabytes: palette tensors whose streams are those of a real small
    palette tensor (one fp16 codebook entry, a constant index stream) with the shape edited. Each is
    loaded three ways: load(path), load(path, model=LeNet-5), and file_report(path).

    The first three are the brief's. The last two declare a little under 256 MiB (what a reader
    might still allow a tiny file): one tensor, and a whole LeNet-5 whose fc1 is 65536 wide; decoding
    them costs several times the declared bytes in intermediates (int64 indices)."""
    for count, shape in ((1, [2**27]), (20, [2**27]), (1, [2**31]), (1, [2**26])):
        tensors = [(f"layer{i}.weight", shape) for i in range(count)]
        data = amplification_file(version, tensors, {"name": "lenet5"})
        what = f"{count} palette tensor(s) of shape {shape} in a {len(data)}-byte file"
        yield Case(
            "amplification", "-", what, data, strict=False, report=True, model="lenet5", must_fail=shape != [2**26]
        )
    wide = [
        ("conv1.weight", [20, 1, 5, 5]),
        ("conv1.bias", [20]),
        ("conv2.weight", [50, 20, 5, 5]),
        ("conv2.bias", [50]),
        ("fc1.weight", [2**16, 800]),
        ("fc1.bias", [2**16]),
        ("fc2.weight", [10, 2**16]),
        ("fc2.bias", [10]),
    ]
    data = amplification_file(version, wide, {"name": "lenet5", "arch": {"widths": [20, 50, 2**16]}})
    what = f"LeNet-5 with widths [20, 50, 65536], every tensor a constant palette, in a {len(data)}-byte file"
    yield Case("amplification", "-", what, data, strict=False, report=True, model="lenet5")


def amplification_file(version: int, tensors: list[tuple[str, list[int]]], model: dict[str, Any]) -> bytes:
    import torch

    from netshrink.format.codecs import Palette

    small = Palette(bits=1).encode(torch.full((4,), 0.5))  # book of 2 (one padded), constant indices
    streams = [[role, s.kind, len(s.data)] for role, s in small.streams.items()]
    blob = b"".join(s.data for s in small.streams.values())
    records = [
        {
            "name": name,
            "module": "Linear",
            "length": len(blob),
            "enc": {"codec": "palette", "shape": shape, "params": small.params, "streams": streams, "children": {}},
        }
        for name, shape in tensors
    ]
    payload = blob * len(tensors)
    header = {
        "netshrink": version,
        "model": model,
        "recipe": None,
        "meta": {},
        "payload_bytes": len(payload),
        "payload_crc32": zlib.crc32(payload),
        "tensors": records,
    }
    return Doc(header, payload, version).render()


# --- running a case ----------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """Raised by the alarm when one case runs past the guard (a BaseException, so the reader's own
    `except Exception` cannot swallow it)."""


@dataclass
class Finding:
    family: str
    base: str
    edit: str
    call: str  # 'load', 'load(model=...)', 'file_report'
    kind: str  # 'exception', 'multi-line message', 'empty message', 'allocation attempted', ...
    error: str = ""  # exception type
    where: str = ""  # innermost netshrink frame (and the innermost frame, when outside netshrink)
    message: str = ""


def _vm(field_name: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so each case's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def _where(exc: BaseException) -> str:
    """Innermost netshrink frame of `exc` (and its innermost frame if outside netshrink); for an
    error that wraps another (`raise ... from None` keeps `__context__`), where that one came from."""
    text = _frames(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text += f" <- {type(cause).__name__} at {_frames(cause)}"
    return text


def _frames(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/netshrink/" in f.filename.replace("\\", "/")]
    text = ""
    if ours:
        f = ours[-1]
        text = f"netshrink/{f.filename.replace(chr(92), '/').split('/netshrink/')[-1]}:{f.lineno} {f.name}"
    if frames and (not ours or frames[-1] is not ours[-1]):
        f = frames[-1]
        short = "/".join(Path(f.filename).parts[-3:])
        text += f" -> {short}:{f.lineno} {f.name}"
    return text


class Runner:
    """Runs cases against the originals; collects findings and per-case time and peak memory."""

    def __init__(self, folder: Path, originals: dict[str, Path], config: dict[str, Any]) -> None:
        import netshrink

        self.path = folder / "case.nsk"
        self.config = config
        self.expected = {base: netshrink.load(path).state_dict() for base, path in originals.items()}
        self.findings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self.outcomes: dict[str, dict[str, int]] = {}
        self.slowest: list[dict[str, Any]] = []
        self.biggest: list[dict[str, Any]] = []
        self.amplification: list[dict[str, Any]] = []
        self.failed_data: list[tuple[Finding, bytes]] = []
        self.seconds: dict[str, float] = {}
        #: Peak RSS over the whole run. ru_maxrss alone does not do: resetting VmHWM for each case's
        #: own peak resets the high-water mark getrusage reports too.
        self.peak_rss = 0

    def run(self, case: Case) -> None:
        self.path.write_bytes(case.data)
        self.counts[case.family] = self.counts.get(case.family, 0) + 1
        calls = [("load", self._load)]
        if case.model:
            calls.append((f"load(model={case.model})", lambda: self._load(case.model)))
        if case.report:
            calls.append(("file_report", self._report))
        for call, fn in calls:
            self._timed(case, call, fn)

    def _timed(self, case: Case, call: str, fn: Callable[[], Any]) -> None:
        self.peak_rss = max(self.peak_rss, _vm("VmHWM"))  # before the reset forgets it
        rss = _vm("VmRSS")
        _reset_peak()
        signal.setitimer(signal.ITIMER_REAL, self.config["case_timeout_s"])
        start = time.perf_counter()
        try:
            outcome, result = "returned", fn()
        except CaseTimeout as exc:
            outcome, result = "timeout", exc
        except Exception as exc:  # noqa: BLE001 - classifying every exception is the point
            outcome, result = "raised", exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - start
        self.seconds[case.family] = self.seconds.get(case.family, 0.0) + seconds
        hwm = _vm("VmHWM")
        self.peak_rss = max(self.peak_rss, hwm)
        peak = max(0, hwm - rss)
        before = len(self.findings)
        self._judge(case, call, outcome, result)
        stats = {
            "family": case.family,
            "base": case.base,
            "edit": case.edit,
            "call": call,
            "seconds": round(seconds, 4),
            "peak_mib": round(peak / MIB, 1),
        }
        raised = (type(result).__name__, _where(result)) if outcome != "returned" else ("", "returned")
        if seconds > self.config["max_case_seconds"]:
            self._add(case, call, "slow", *raised, message=f"{seconds:.2f} s")
        if peak > self.config["max_case_peak_mib"] * MIB:
            self._add(case, call, "memory", *raised, message=f"peak RSS +{peak / MIB:.0f} MiB")
        if case.family == "amplification":
            from netshrink.errors import NetshrinkError

            self.amplification.append(
                {
                    **stats,
                    "file_bytes": len(case.data),
                    "outcome": outcome,
                    "must_fail": case.must_fail,
                    "netshrink_error": isinstance(result, NetshrinkError),
                    "error": type(result).__name__ if outcome != "returned" else "",
                    "message": str(result)[:300] if outcome != "returned" else "",
                }
            )
        self._keep_top(self.slowest, stats, "seconds")
        self._keep_top(self.biggest, stats, "peak_mib")
        kind = self.findings[-1].kind if len(self.findings) > before else "ok"
        tally = self.outcomes.setdefault(case.family, {})
        label = f"{call}: {outcome if kind == 'ok' else 'FINDING ' + kind}"
        tally[label] = tally.get(label, 0) + 1
        if len(self.findings) > before:
            self.failed_data.append((self.findings[-1], case.data))
        while isinstance(result, BaseException):  # their frames may hold GBs of decoded tensors
            traceback.clear_frames(result.__traceback__)
            result = result.__cause__ or result.__context__

    @staticmethod
    def _keep_top(top: list[dict[str, Any]], stats: dict[str, Any], key: str, n: int = 10) -> None:
        top.append(stats)
        top.sort(key=lambda s: -s[key])
        del top[n:]

    def _load(self, zoo_name: str | None = None) -> Any:
        import netshrink
        from netshrink import zoo

        model = zoo.build_model(zoo_name) if zoo_name else None
        return netshrink.load(self.path, model=model) if model is not None else netshrink.load(self.path)

    def _report(self) -> Any:
        from netshrink.report.sizes import file_report

        report = file_report(self.path)
        report.table()  # what `netshrink inspect` prints
        json.dumps(report.to_json())
        return report

    def _judge(self, case: Case, call: str, outcome: str, result: Any) -> None:
        from netshrink.errors import NetshrinkError

        if outcome == "timeout":
            self._add(case, call, "timeout", "CaseTimeout", _where(result), f"over {self.config['case_timeout_s']} s")
        elif outcome == "raised" and not isinstance(result, NetshrinkError):
            self._add(case, call, "exception", type(result).__name__, _where(result), str(result))
        elif outcome == "raised":
            message = str(result)
            if not message.strip():
                self._add(case, call, "empty message", type(result).__name__, _where(result))
            elif "\n" in message:
                self._add(case, call, "multi-line message", type(result).__name__, _where(result), message)
            elif "MemoryError" in message or "can't allocate memory" in message or "not enough memory" in message:
                self._add(case, call, "allocation attempted", type(result).__name__, _where(result), message)
        elif call != "file_report":
            self._judge_model(case, call, result)

    def _judge_model(self, case: Case, call: str, model: Any) -> None:
        import torch

        if case.base not in self.expected:  # a hand-built file: no original to compare with
            if case.must_fail:
                self._add(case, call, "loaded a hostile file", type(model).__name__)
            return
        expected, state = self.expected[case.base], model.state_dict()
        if list(state) != list(expected):
            self._add(case, call, "loaded other keys", message=f"{sorted(set(state) ^ set(expected))[:5]}")
            return
        shapes = [k for k in expected if state[k].shape != expected[k].shape or state[k].dtype != expected[k].dtype]
        if shapes:
            self._add(case, call, "loaded other shapes or dtypes", message=f"{shapes[:5]}")
        elif case.strict and not all(torch.equal(state[k], expected[k]) for k in expected):
            differ = [k for k in expected if not torch.equal(state[k], expected[k])]
            self._add(case, call, "loaded other values", message=f"{differ[:5]}")

    def _add(self, case: Case, call: str, kind: str, error: str = "", where: str = "", message: str = "") -> None:
        message = message if len(message) <= 400 else message[:400] + "..."
        self.findings.append(Finding(case.family, case.base, case.edit, call, kind, error, where, message))


def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


# --- the whole run ---------------------------------------------------------------------------------------


def all_cases(originals: dict[str, Path], config: dict[str, Any]) -> Iterator[Case]:
    """Every case, in a fixed order from one seed: same config, same bytes."""
    rng = random.Random(config["seed"])
    data = {base: path.read_bytes() for base, path in originals.items()}
    for base, count in config["raw_cases"].items():
        yield from raw_cases(rng, base, data[base], count)
    for base, count in config["payload_cases"].items():
        yield from payload_cases(rng, base, data[base], count, config["report_share"])
    for base, node_tensors in config["targeted_node_tensors"].items():
        yield from targeted_cases(base, data[base], node_tensors)
    for base, count in config["random_header_cases"].items():
        yield from random_header_cases(rng, base, data[base], count, config["report_share"])
    yield from amplification_cases(Doc.parse(data["dc"]).version)


def main(config: dict[str, Any], keep_failures: Path | None = None) -> dict[str, Any]:
    limit = config["address_space_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    started = time.perf_counter()
    import torch

    import netshrink  # noqa: F401

    torch.set_num_threads(1)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    signal.signal(signal.SIGALRM, _on_alarm)
    with tempfile.TemporaryDirectory(prefix="nsk-fuzz-") as tmp:
        folder = Path(tmp)
        originals = build_originals(folder)
        runner = Runner(folder, originals, config)
        rss_originals = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cases_started = time.perf_counter()
        for case in all_cases(originals, config):
            runner.run(case)
        seconds_cases = time.perf_counter() - cases_started
        file_sizes = {base: path.stat().st_size for base, path in originals.items()}
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if keep_failures is not None:
        _write_failures(keep_failures, runner.failed_data)
    return {
        "counts": runner.counts,
        "seconds_by_family": {family: round(t, 2) for family, t in runner.seconds.items()},
        "outcomes": runner.outcomes,
        "findings": [f.__dict__ for f in runner.findings],
        "amplification": runner.amplification,
        "slowest": runner.slowest,
        "biggest": runner.biggest,
        "original_file_bytes": file_sizes,
        "rss_after_import_mib": rss_import / MIB,
        "rss_after_originals_mib": rss_originals / MIB,
        "rss_after_cases_mib": rss_end / MIB,  # ru_maxrss: see Runner.peak_rss
        "peak_rss_mib": max(rss_end, runner.peak_rss) / MIB,
        "seconds_cases": seconds_cases,
        "seconds_total": time.perf_counter() - started,
    }


def _write_failures(folder: Path, failed: list[tuple[Finding, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for i, (finding, data) in enumerate(failed):
        name = f"{i:04d}-{finding.family}-{finding.kind.replace(' ', '_')}.nsk"
        (folder / name).write_bytes(data)
        index.append({"file": name, **finding.__dict__})
    (folder / "index.json").write_text(json.dumps(index, indent=1))


if __name__ == "__main__":
    args = sys.argv[1:]
    keep = Path(args[args.index("--write-failures") + 1]) if "--write-failures" in args else None
    summary = main(json.loads(args[0]), keep)
    print(SUMMARY_MARKER + json.dumps(summary, allow_nan=True), flush=True)
