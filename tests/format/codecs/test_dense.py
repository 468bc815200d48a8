import pytest
import torch

from netshrink.errors import CodecError, FormatError
from netshrink.format.codecs import Dense, decode


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool])
def test_exact_round_trip_keeps_dtype_and_values(dtype):
    t = (torch.randn(3, 5) * 100).to(dtype)
    enc = Dense().encode(t)
    out = decode(enc)
    assert out.dtype == dtype and torch.equal(out, t)
    assert enc.nbits() == 8 * t.numel() * t.element_size()


@pytest.mark.parametrize("name,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_is_exact_cast(name, dtype):
    t = torch.randn(7, 9)
    out = decode(Dense(name).encode(t))
    assert out.dtype == torch.float32
    assert torch.equal(out, t.to(dtype).float())
    assert Dense(name).encode(t).nbits() == 16 * t.numel()


def test_half_leaves_integer_buffers_exact():
    t = torch.tensor([3, 1 << 40])
    assert torch.equal(decode(Dense("fp16").encode(t)), t)


def test_bad_dtype_and_wrong_length():
    with pytest.raises(CodecError, match="dense dtype"):
        Dense("int4")
    enc = Dense().encode(torch.ones(4))
    enc.streams["values"] = type(enc.streams["values"])("values", b"\0" * 15)
    with pytest.raises(FormatError, match="expected 4 x 4"):
        decode(enc)
