"""The per-tensor codec abstraction every method writes through.

A codec has the life of a faiss quantizer. `fit(tensor)` learns its state (a `Codebook`: palette
values, PQ codewords; None for codecs that have none); `encode(tensor, state)` assigns the tensor's
codes with that state and gives an `Encoded` value: named byte streams (codebook, indices,
positions, values), small JSON parameters and, for nesting codecs (sparse of palette, low-rank of
fp16), child `Encoded` values; `decode(encoded)` rebuilds the tensor. `Encoded.nbits()` is exactly
the number of payload bits the tensor occupies in the .nsk file, so a size in a report is the size
on disk by construction (faiss's `code_size`, in spirit).

The state is kept apart from the codes so that a tensor a later step retrains is re-encoded with
the same, possibly fine-tuned, codebook (new codes, same values), and so that several tensors can
share one codebook: they hold the same `Codebook` object, and the file stores it once.

`decode(encoded)` dispatches on the codec name through a registry filled by `@register_codec`, so a
new codec touches no central if/elif (the torchao pattern). Decoders treat everything as untrusted
input from a file: every parameter and stream length is checked, and a mismatch raises `FormatError`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from netshrink.errors import CodecError, FormatError

#: Stream kinds, used by `inspect` to break a tensor's bytes down.
STREAM_KINDS = ("codebook", "indices", "positions", "values")

#: Bounds applied to anything read from a file before memory is allocated.
MAX_NDIM = 8
MAX_NUMEL = 1 << 31


@dataclass(frozen=True)
class Stream:
    """One byte stream of an encoded tensor, labelled with what it holds.

    `borrowed_from` names an earlier tensor of the same file whose stream of the same role holds
    these bytes (a PQ codebook shared by the layers of a stage): the file stores them once, under
    that tensor, and counts them there; in memory both tensors hold the data, so decoders need no
    context.
    """

    kind: str
    data: bytes
    borrowed_from: str = ""

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise ValueError(f"unknown stream kind {self.kind!r}")


@dataclass(eq=False)
class Codebook:
    """The values a weight-sharing codec assigns codes to, as the file stores them (fp16): [rows, k]
    for a palette, [k, d] for PQ. It is compared by identity: tensors encoded with the same object
    share it, and the file stores it once, with the first of them."""

    values: torch.Tensor

    @classmethod
    def fp16(cls, values: torch.Tensor) -> Codebook:
        """`values` rounded to the fp16 the file stores (a codebook is always used as stored, so
        the model holds exactly what the file decodes to)."""
        book = values.detach().to(torch.float16)
        if not torch.isfinite(book).all():
            raise CodecError("codebook values exceed the fp16 range (|w| > 65504); rescale the weights first")
        return cls(book)


@dataclass
class Encoded:
    """A tensor in compressed form: what a codec writes and its decoder reads back.

    `state` is the codec state it was encoded with (its `Codebook`, or the nested codec's state),
    in memory only: the file holds its bytes, and an Encoded read from a file has none.
    """

    codec: str
    shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    streams: dict[str, Stream] = field(default_factory=dict)
    children: dict[str, Encoded] = field(default_factory=dict)
    state: Any = field(default=None, compare=False, repr=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def decoded_nbytes(self) -> int:
        """Bytes this tensor and its parts take once decoded, as the header declares them: what a
        reader checks against its memory limit before decoding anything. Decoded values are 4-byte
        floats, or the stored dtype for exact storage (8 bytes for int64/fp64 buffers)."""
        itemsize = 8 if self.params.get("dtype") in ("int64", "fp64") else 4
        return itemsize * self.numel + sum(child.decoded_nbytes() for child in self.children.values())

    def nbits(self) -> int:
        """Exact payload bits of this tensor in the file (streams of it and its children)."""
        return 8 * sum(self.bytes_by_kind().values())

    def bytes_by_kind(self) -> dict[str, int]:
        """Payload bytes per stream kind, children included."""
        totals = {kind: 0 for kind in STREAM_KINDS}
        for stream in self.streams.values():
            if not stream.borrowed_from:
                totals[stream.kind] += len(stream.data)
        for child in self.children.values():
            for kind, nbytes in child.bytes_by_kind().items():
                totals[kind] += nbytes
        return totals

    def written_by(self, kinds: type[Codec] | tuple[type[Codec], ...]) -> bool:
        """Whether a codec of class `kinds` wrote this encoding (found by its name in the registry of
        codecs, so that a reader of a file's codec tree asks about classes, not names)."""
        cls = _REGISTRY.get(self.codec)
        return cls is not None and issubclass(cls, kinds)

    def borrowing_codebook(self, lender: str) -> Encoded:
        """This encoding with its codebook stream stored by the earlier tensor `lender`, which holds
        the same codebook (the file keeps one copy); its label says the codebook is shared."""
        stream = self.streams["codebook"]
        label = self.params.get("label", self.codec)
        return replace(
            self,
            params={**self.params, "label": f"{label} shared"},
            streams={**self.streams, "codebook": Stream(stream.kind, stream.data, borrowed_from=lender)},
        )

    def describe(self) -> str:
        """Short human-readable codec description, e.g. 'sparse(palette(5b))'."""
        inner = ",".join(child.describe() for child in self.children.values())
        label = self.params.get("label")
        label = label if isinstance(label, str) else self.codec  # a label is display text, read from a file
        return f"{label}({inner})" if inner else label


class Codec(ABC):
    """How one tensor is stored. Subclasses are frozen dataclasses registered by name."""

    name: ClassVar[str]

    def fit(self, tensor: torch.Tensor) -> Any:
        """The state this codec learns from `tensor` (a `Codebook`); None for codecs without one."""
        return None

    @abstractmethod
    def encode(self, tensor: torch.Tensor, state: Any = None) -> Encoded:
        """The codes of `tensor` under `state` (a state `fit` returned; None: fitted on `tensor`
        itself); raise CodecError if these settings cannot encode it."""

    @classmethod
    @abstractmethod
    def decode(cls, enc: Encoded) -> torch.Tensor:
        """Rebuild the tensor from `enc` (untrusted: validate, raise FormatError)."""

    def round_trip(self, tensor: torch.Tensor, state: Any = None) -> tuple[Encoded, torch.Tensor]:
        """Encode then decode: the value a model will hold once loaded from the file."""
        enc = self.encode(tensor, state)
        return enc, decode(enc).to(tensor.dtype).reshape(tensor.shape)

    def with_inner(self, inner: Codec) -> Codec:
        """For wrapping codecs (sparse, low-rank): the same wrapper around a new value codec.
        Plain value codecs are simply replaced by `inner`."""
        return inner

    def describe(self) -> str:
        return self.name


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make `cls` decodable by its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def decode(enc: Encoded) -> torch.Tensor:
    """Decode any Encoded value by dispatching on its codec name."""
    cls = _REGISTRY.get(enc.codec)
    if cls is None:
        raise FormatError(f"unknown codec {enc.codec!r} (this netshrink knows {sorted(_REGISTRY)})")
    out = cls.decode(enc)
    if tuple(out.shape) != tuple(enc.shape):
        raise FormatError(f"codec {enc.codec!r} decoded shape {tuple(out.shape)}, header says {enc.shape}")
    return out


# --- helpers for decoders: every check raises FormatError with a precise message ------------------


def require_stream(enc: Encoded, role: str, kind: str | None = None) -> bytes:
    stream = enc.streams.get(role)
    if stream is None or (kind is not None and stream.kind != kind):
        raise FormatError(f"{enc.codec} tensor lacks its {role!r} stream")
    return stream.data


def require_child(enc: Encoded, role: str) -> Encoded:
    child = enc.children.get(role)
    if child is None:
        raise FormatError(f"{enc.codec} tensor lacks its {role!r} part")
    return child


def require_int(params: Mapping[str, Any], key: str, low: int, high: int, codec: str) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FormatError(f"{codec} parameter {key!r}={value!r} is not an integer in [{low}, {high}]")
    return value


def check_shape(shape: Any) -> tuple[int, ...]:
    """Validate a shape read from a file: a short list of non-negative ints with bounded product."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM:
        raise FormatError(f"tensor shape {shape!r} is not a list of at most {MAX_NDIM} sizes")
    dims = []
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0 or dim > MAX_NUMEL:
            raise FormatError(f"tensor shape {shape!r} has an invalid size {dim!r}")
        dims.append(dim)
    if math.prod(dims) > MAX_NUMEL:
        raise FormatError(f"tensor shape {shape!r} exceeds the {MAX_NUMEL} element limit")
    return tuple(dims)


def require_float_tensor(tensor: torch.Tensor, codec: str) -> None:
    if not tensor.is_floating_point():
        raise CodecError(f"{codec} codec needs a floating-point tensor, got {tensor.dtype}")
    if not torch.isfinite(tensor).all():
        raise CodecError(f"{codec} codec got a tensor with NaN or infinite values")
