"""Dense storage: raw little-endian values, fp32 / fp16 / bf16, or the tensor's own dtype exactly.

Biases, norm parameters and buffers are stored this way (exact) unless a recipe says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs.base import Codec, Encoded, Stream, register_codec, require_stream

#: Storage dtypes by their name in the file. "exact" keeps whatever dtype the tensor has.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_CASTS = ("fp32", "fp16", "bf16")


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    """Little-endian bytes of a tensor (bf16 via its int16 bit pattern, which numpy lacks)."""
    flat = tensor.detach().contiguous().reshape(-1).cpu()
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return flat.numpy().astype(flat.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def bytes_to_tensor(data: bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    """Inverse of tensor_to_bytes; checks the length first."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != count * itemsize:
        raise FormatError(f"dense stream holds {len(data)} bytes, expected {count} x {itemsize}")
    view_dtype = torch.int16 if dtype == torch.bfloat16 else dtype
    np_dtype = torch.empty((), dtype=view_dtype).numpy().dtype.newbyteorder("<")
    array = np.frombuffer(data, dtype=np_dtype, count=count).astype(np_dtype.newbyteorder("="))
    out = torch.from_numpy(array.copy())
    return out.view(torch.bfloat16) if dtype == torch.bfloat16 else out


@register_codec
@dataclass(frozen=True)
class Dense(Codec):
    """Raw values. dtype 'exact' stores the tensor's own dtype; fp32/fp16/bf16 cast floats."""

    name: ClassVar[str] = "dense"
    dtype: str = "exact"

    def __post_init__(self) -> None:
        if self.dtype not in ("exact", *_CASTS):
            raise CodecError(f"dense dtype must be one of exact, {', '.join(_CASTS)}; got {self.dtype!r}")

    def storage_dtype(self, tensor: torch.Tensor) -> torch.dtype:
        if self.dtype == "exact" or not tensor.is_floating_point():
            if tensor.dtype not in _NAMES:
                raise CodecError(f"dense codec cannot store dtype {tensor.dtype}")
            return tensor.dtype
        return DTYPES[self.dtype]

    def encode(self, tensor: torch.Tensor, state: Any = None) -> Encoded:
        dtype = self.storage_dtype(tensor)
        data = tensor_to_bytes(tensor.to(dtype))
        params = {"dtype": _NAMES[dtype], "label": _NAMES[dtype]}
        return Encoded(self.name, tuple(tensor.shape), params, {"values": Stream("values", data)})

    @classmethod
    def decode(cls, enc: Encoded) -> torch.Tensor:
        dtype = DTYPES.get(enc.params.get("dtype"))
        if dtype is None:
            raise FormatError(f"dense tensor has unknown dtype {enc.params.get('dtype')!r}")
        values = bytes_to_tensor(require_stream(enc, "values", "values"), dtype, enc.numel)
        if dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        return values.reshape(enc.shape)

    def describe(self) -> str:
        return self.dtype
