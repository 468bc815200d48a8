"""The .nsk container: round trips, determinism, atomic writes and every error path."""

import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch

import netshrink
from netshrink.errors import (
    ChecksumMismatch,
    FormatError,
    MalformedHeader,
    NetshrinkError,
    NotNetshrinkFile,
    TruncatedFile,
    UnsupportedVersion,
)
from netshrink.format.container import FORMAT_VERSION, MAGIC, PREFIX, read_nsk


@pytest.fixture
def nsk_path(tmp_path, tiny_net):
    path = tmp_path / "tiny.nsk"
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False).save(path)
    return path


def test_round_trip_restores_every_tensor(tmp_path, tiny_net):
    path = tmp_path / "exact.nsk"
    netshrink.save(tiny_net, path)
    loaded = netshrink.load(path, model=type(tiny_net)())
    for key, value in tiny_net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_same_recipe_and_seed_give_identical_bytes(tmp_path, tiny_net):
    a, b = tmp_path / "a.nsk", tmp_path / "b.nsk"
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", seed=3, progress=False).save(a)
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", seed=3, progress=False).save(b)
    assert a.read_bytes() == b.read_bytes()


def test_loaded_model_equals_compressed_model_in_memory(nsk_path, tiny_net):
    compressed = netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False)
    loaded = netshrink.load(nsk_path, model=type(tiny_net)())
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(compressed.model(x), loaded(x))


def test_inspect_bytes_add_up_to_file_size(nsk_path):
    report = netshrink.inspect(nsk_path)
    assert report.file_bytes == os.stat(nsk_path).st_size
    assert report.header_bytes + sum(t.total_bytes for t in report.tensors) == report.file_bytes
    assert report.ratio == report.original_bytes / report.file_bytes


def _rewrite(path, data):
    path.write_bytes(data)
    return path


def test_not_a_netshrink_file(tmp_path):
    with pytest.raises(NotNetshrinkFile):
        read_nsk(_rewrite(tmp_path / "x.nsk", b"PK\x03\x04 a zip file, not ours" * 3))
    with pytest.raises(NotNetshrinkFile):
        read_nsk(_rewrite(tmp_path / "e.nsk", b""))


def test_unsupported_version(nsk_path):
    data = bytearray(nsk_path.read_bytes())
    data[8:10] = struct.pack("<H", 99)
    with pytest.raises(UnsupportedVersion, match="version 99"):
        read_nsk(_rewrite(nsk_path, bytes(data)))


@pytest.mark.parametrize("keep", [5, 12, 30, -1])
def test_truncated(nsk_path, keep):
    data = nsk_path.read_bytes()
    with pytest.raises(TruncatedFile):
        read_nsk(_rewrite(nsk_path, data[:keep]))


def test_checksum_mismatch_in_payload_and_header(nsk_path):
    data = bytearray(nsk_path.read_bytes())
    data[-3] ^= 0x10
    with pytest.raises(ChecksumMismatch, match="payload"):
        read_nsk(_rewrite(nsk_path, bytes(data)))
    data[-3] ^= 0x10
    data[PREFIX.size + 2] ^= 0x01
    with pytest.raises(ChecksumMismatch, match="header"):
        read_nsk(_rewrite(nsk_path, bytes(data)))


def _with_header(text: bytes, payload: bytes = b"", version: int = 1) -> bytes:
    packed = zlib.compress(text)
    return PREFIX.pack(MAGIC, version, 0, len(packed), zlib.crc32(packed)) + packed + payload


def _dense_record(name: str, values: np.ndarray, **fields) -> dict:
    return {
        "name": name,
        "module": "Linear",
        "length": values.nbytes,
        **fields,
        "enc": {
            "codec": "dense",
            "shape": list(values.shape),
            "params": {"dtype": "fp32"},
            "streams": [["values", "values", values.nbytes]],
            "children": {},
        },
    }


def test_version_1_files_with_per_tensor_checksums_still_load(tmp_path):
    """Version 1 kept an offset and a CRC-32 per tensor; files written then must keep loading."""
    a, b = np.arange(6, dtype="<f4"), -np.arange(3, dtype="<f4")
    records = [
        _dense_record("a", a, offset=0, crc32=zlib.crc32(a.tobytes())),
        _dense_record("b", b, offset=a.nbytes, crc32=zlib.crc32(b.tobytes())),
    ]
    header = {
        "netshrink": 1,
        "model": {},
        "recipe": None,
        "meta": {},
        "payload_bytes": a.nbytes + b.nbytes,
        "tensors": records,
    }
    path = _rewrite(tmp_path / "v1.nsk", _with_header(json.dumps(header).encode(), a.tobytes() + b.tobytes()))
    nsk = read_nsk(path)
    assert [t.name for t in nsk.tensors] == ["a", "b"]
    assert nsk.tensors[1].encoded.streams["values"].data == b.tobytes()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x40
    with pytest.raises(ChecksumMismatch, match="tensor 'b'"):
        read_nsk(_rewrite(path, bytes(data)))


def test_version_2_records_have_no_offsets_and_need_the_payload_checksum(tmp_path):
    a = np.arange(6, dtype="<f4")
    good = {
        "netshrink": 2,
        "model": {},
        "recipe": None,
        "meta": {},
        "payload_bytes": a.nbytes,
        "payload_crc32": zlib.crc32(a.tobytes()),
        "tensors": [_dense_record("a", a)],
    }
    assert read_nsk(_rewrite(tmp_path / "v2.nsk", _with_header(json.dumps(good).encode(), a.tobytes(), 2))).tensors
    missing = {k: v for k, v in good.items() if k != "payload_crc32"}
    with pytest.raises(MalformedHeader, match="payload_crc32"):
        read_nsk(_rewrite(tmp_path / "m.nsk", _with_header(json.dumps(missing).encode(), a.tobytes(), 2)))
    with pytest.raises(MalformedHeader, match="not a netshrink header"):  # prefix says 2, header says 1
        read_nsk(
            _rewrite(tmp_path / "x.nsk", _with_header(json.dumps({**good, "netshrink": 1}).encode(), a.tobytes(), 2))
        )


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b"[1, 2]",
        b'{"netshrink": 1, "tensors": 5, "payload_bytes": 0}',
        b'{"netshrink": 1, "tensors": [{"name": 3}], "payload_bytes": 0}',
        b'{"netshrink": 1, "tensors": [], "payload_bytes": -1}',
        b'{"netshrink": 1, "tensors": [{"name": "w", "offset": 0, "length": 0, "crc32": 0, "enc": '
        b'{"codec": "dense", "shape": [-4], "params": {}, "streams": [], "children": {}}}], "payload_bytes": 0}',
        b'{"netshrink": 1, "tensors": [{"name": "w", "offset": 0, "length": 0, "crc32": 0, "enc": '
        b'{"codec": "dense", "shape": [65536, 65536, 65536], "params": {}, "streams": [], "children": {}}}], "payload_bytes": 0}',
    ],
)
def test_malformed_header(tmp_path, text):
    with pytest.raises(MalformedHeader):
        read_nsk(_rewrite(tmp_path / "m.nsk", _with_header(text)))


def test_trailing_bytes_are_rejected(nsk_path):
    with pytest.raises(MalformedHeader, match="unexpected bytes"):
        read_nsk(_rewrite(nsk_path, nsk_path.read_bytes() + b"\0"))


def test_valid_checksum_but_undecodable_codec_is_a_format_error(tmp_path):
    text = (
        b'{"netshrink": 1, "model": {}, "tensors": [{"name": "w", "offset": 0, "length": 0, "crc32": 0, '
        b'"enc": {"codec": "palette", "shape": [4], "params": {"bits": "five", "rows": 1}, "streams": [], '
        b'"children": {}}}], "payload_bytes": 0}'
    )
    model = torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.zeros(4))})
    with pytest.raises(FormatError, match="bits"):
        netshrink.load(_rewrite(tmp_path / "p.nsk", _with_header(text)), model=model)


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path, tiny_net, monkeypatch):
    path = tmp_path / "keep.nsk"
    netshrink.save(tiny_net, path)
    before = path.read_bytes()

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "fsync", die)
    with pytest.raises(KeyboardInterrupt):
        netshrink.compress(tiny_net, "fp16", progress=False).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nsk"]  # no temporary left behind


def test_fuzz_flips_and_truncations_are_clean_errors_or_verified_loads(nsk_path, tiny_net):
    """Thousands of random single-byte flips and truncations: NetshrinkError or a correct load."""
    original = nsk_path.read_bytes()
    reference = netshrink.load(nsk_path, model=type(tiny_net)()).state_dict()
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(3000):
        data = bytearray(original)
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] ^= int(rng.integers(1, 256))
        nsk_path.write_bytes(bytes(data))
        try:
            loaded = netshrink.load(nsk_path, model=type(tiny_net)())
        except NetshrinkError:
            outcomes["error"] += 1
            continue
        outcomes["loaded"] += 1  # a flip CRC-32 cannot see would have to decode to the same model
        for key, value in reference.items():
            assert torch.equal(loaded.state_dict()[key], value)
    assert outcomes["error"] > 2900


def test_weights_ratio_counts_subclassed_conv_layers(tmp_path):
    """A Conv2d subclass (EfficientNet's SameConv2d) is a conv weight for weights_ratio: the ratio is
    the same as for the plain Conv2d model it equals."""
    import torch
    from torch import nn

    import netshrink
    from netshrink.report.sizes import file_report

    class MyConv(nn.Conv2d):
        pass

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    sub = nn.Sequential(MyConv(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    sub.load_state_dict(plain.state_dict())
    ratios = []
    for model, name in ((plain, "plain"), (sub, "sub")):
        netshrink.compress(model, "oneshot-palette5", progress=False).save(tmp_path / f"{name}.nsk")
        report = file_report(tmp_path / f"{name}.nsk")
        assert {t.module for t in report.tensors if t.name == "0.weight"} == {"Conv2d"}
        ratios.append(report.weights_ratio)
    assert ratios[0] == ratios[1]


def _shared_codebook_file():
    from netshrink.format.codecs.pq import PQ
    from netshrink.format.container import NskFile, TensorRecord

    book = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    first = PQ.encode_assigned(book, torch.tensor([0, 1, 1]), (3, 2))
    second = PQ.encode_assigned(book, torch.tensor([1, 1, 0, 0]), (2, 4)).borrowing_codebook("a")
    return NskFile([TensorRecord("a", first), TensorRecord("b", second)])


def test_a_borrowed_codebook_is_stored_once_and_decodes_in_both_tensors(tmp_path):
    from netshrink.format.codecs import decode
    from netshrink.format.container import write_nsk

    nsk = _shared_codebook_file()
    size = write_nsk(tmp_path / "s.nsk", nsk)
    payload = sum(rec.encoded.nbits() for rec in nsk.tensors) // 8
    assert size == nsk.header_bytes + payload and nsk.tensors[1].encoded.bytes_by_kind()["codebook"] == 0
    back = read_nsk(tmp_path / "s.nsk")
    assert torch.equal(decode(back.tensors[1].encoded), torch.tensor([[2.0, 0.25, 2.0, 0.25], [0.5, -1.0, 0.5, -1.0]]))
    assert torch.equal(decode(back.tensors[0].encoded), decode(nsk.tensors[0].encoded))


def test_a_stream_borrowed_from_a_missing_later_or_different_tensor_is_refused(tmp_path):
    from netshrink.format.codecs.base import Stream
    from netshrink.format.container import serialize, write_nsk

    nsk = _shared_codebook_file()
    nsk.tensors.reverse()  # the borrower before its lender
    with pytest.raises(NetshrinkError, match="earlier tensor"):
        serialize(nsk)
    nsk = _shared_codebook_file()
    stream = nsk.tensors[1].encoded.streams["codebook"]
    nsk.tensors[1].encoded.streams["codebook"] = Stream("codebook", bytes(len(stream.data)), borrowed_from="a")
    with pytest.raises(NetshrinkError, match="same bytes"):
        serialize(nsk)
    write_nsk(tmp_path / "s.nsk", _shared_codebook_file())
    data = (tmp_path / "s.nsk").read_bytes()
    start = PREFIX.size + PREFIX.unpack_from(data)[3]
    header, payload = zlib.decompress(data[PREFIX.size : start]), data[start:]
    assert header.count(b',"a"]') == 1
    for bad in (b',"b"]', b',"c"]', b',"b","a"]'):  # borrowed from itself / a missing tensor / a bad entry
        with pytest.raises(MalformedHeader, match="borrows|invalid stream entry"):
            read_nsk(
                _rewrite(tmp_path / "bad.nsk", _with_header(header.replace(b',"a"]', bad), payload, FORMAT_VERSION))
            )
    read_nsk(
        _rewrite(tmp_path / "good.nsk", _with_header(header, payload, FORMAT_VERSION))
    )  # the rewrite itself is sound


# --- untrusted files: bounded memory, checks before decoding ------------------------------------------


def _header_and_payload(path):
    data = path.read_bytes()
    start = PREFIX.size + PREFIX.unpack_from(data)[3]
    return json.loads(zlib.decompress(data[PREFIX.size : start])), data[start:]


def _resealed(path, header: dict, payload: bytes, flags: int = 0, tail: bytes = b"") -> bytes:
    """The file with an edited header whose checksums are made valid again (a crafted file)."""
    header = {**header, "payload_bytes": len(payload), "payload_crc32": zlib.crc32(payload)}
    packed = zlib.compress(json.dumps(header).encode()) + tail
    data = PREFIX.pack(MAGIC, header["netshrink"], flags, len(packed), zlib.crc32(packed)) + packed + payload
    return _rewrite(path, data)


def test_reserved_flags_and_bytes_after_the_compressed_header_are_refused(nsk_path, tmp_path):
    header, payload = _header_and_payload(nsk_path)
    with pytest.raises(MalformedHeader, match="reserved flags"):
        read_nsk(_resealed(tmp_path / "f.nsk", header, payload, flags=1))
    with pytest.raises(MalformedHeader, match="after the compressed header"):
        read_nsk(_resealed(tmp_path / "t.nsk", header, payload, tail=b"\0\0"))
    read_nsk(_resealed(tmp_path / "ok.nsk", header, payload))  # the resealing itself is sound


def test_non_finite_numbers_in_the_header_are_refused(nsk_path, tmp_path):
    header, payload = _header_and_payload(nsk_path)
    header["model"] = {"name": "x", "arch": {"widths": [float("inf"), 5, 5]}}
    with pytest.raises(MalformedHeader, match="non-finite"):
        read_nsk(_resealed(tmp_path / "inf.nsk", header, payload))


def test_declared_decoded_size_is_bounded_before_decoding(nsk_path, tmp_path):
    """A palette tensor declared as 2^27 weights: 512 MiB from a file of a few hundred bytes."""
    from netshrink.errors import TooLarge

    header, payload = _header_and_payload(nsk_path)
    record = next(r for r in header["tensors"] if r["enc"]["codec"] == "sparse")
    record["enc"]["shape"] = [1 << 27]
    with pytest.raises(TooLarge, match="over the .*-byte limit"):
        read_nsk(_resealed(tmp_path / "big.nsk", header, payload))
    assert read_nsk(nsk_path, max_bytes=10**9).tensors  # a caller who trusts a file can raise the limit
    with pytest.raises(TooLarge):
        read_nsk(nsk_path, max_bytes=1000)


def test_names_and_shapes_are_checked_before_anything_is_decoded(nsk_path, tiny_net, monkeypatch):
    import netshrink.decoding
    from netshrink.errors import ModelError

    def no_decoding(*args):
        raise AssertionError("decoded before the model check")

    monkeypatch.setattr(netshrink.decoding, "decode_state", no_decoding)
    monkeypatch.setattr(netshrink.decoding, "decode_tensor", no_decoding)
    with pytest.raises(ModelError, match="does not fit"):
        netshrink.load(nsk_path, model=torch.nn.Linear(3, 3))


@pytest.mark.parametrize(
    "arch,message",
    [
        ({"num_classes": -1}, "outside"),
        ({"widths": [20, 5000000000, 500]}, "outside"),
        ({"widths": [1e300, 50, 500]}, "outside"),
        ({"widths": [2.5, 50, 500]}, "has shape"),
        ({"num_classes": "x"}, "cannot build"),
        ({"widths": [5000, 5000, 5000]}, "has shape"),
        ({"head": {"a": 1}}, "not a number"),
    ],
)
def test_a_crafted_model_description_is_refused_without_building_it(tmp_path, arch, message):
    from netshrink import zoo
    from netshrink.errors import ModelError

    torch.manual_seed(0)
    path = tmp_path / "l5.nsk"
    netshrink.save(zoo.build_model("lenet5"), path, name="lenet5")
    header, payload = _header_and_payload(path)
    header["model"]["arch"] = {**header["model"].get("arch", {}), **arch}
    with pytest.raises(ModelError, match=message) as caught:
        netshrink.load(_resealed(tmp_path / "crafted.nsk", header, payload))
    assert "\n" not in str(caught.value)


def test_files_follow_the_umask_and_unwritable_paths_are_one_line_errors(tmp_path, tiny_net):
    old = os.umask(0o027)
    try:
        netshrink.save(tiny_net, tmp_path / "m.nsk")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.nsk").st_mode & 0o777 == 0o640
    for target, message in (
        (tmp_path, "is a folder"),
        (tmp_path / "no" / "m.nsk", "does not exist"),
        ("/proc/m.nsk", "kernel file system"),
    ):
        with pytest.raises(NetshrinkError, match=message):
            netshrink.save(tiny_net, target)


# --- tied weights: stored once, restored tied, counted once --------------------------------------------


class TiedLM(torch.nn.Module):
    """An embedding shared with the output layer, as in every language model."""

    def __init__(self, vocab: int = 300, width: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.mix = torch.nn.Linear(width, width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(ids))))


def test_tied_weights_are_stored_once_restored_tied_and_counted_once(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    path = tmp_path / "tied.nsk"
    report = netshrink.save(model, path)
    unique_floats = 300 * 16 + 16 * 16 + 16  # embed (= head), mix weight and bias: each once
    assert report.original_bytes == 4 * unique_floats
    assert report.file_bytes == os.stat(path).st_size == report.header_bytes + 4 * unique_floats
    assert [t.total_bytes for t in report.tensors if t.name == "head.weight"] == [0]
    loaded = netshrink.load(path, model=TiedLM())
    assert loaded.head.weight is loaded.embed.weight and torch.equal(loaded.embed.weight, model.embed.weight)
    compressed = netshrink.compress(model, "oneshot-palette5", progress=False)
    report = compressed.save(tmp_path / "tied5.nsk")
    assert report.original_bytes == 4 * unique_floats
    assert report.ratio == pytest.approx(4 * unique_floats / os.stat(tmp_path / "tied5.nsk").st_size)
    ids = torch.arange(20)[None]
    assert torch.equal(netshrink.load(tmp_path / "tied5.nsk", model=TiedLM())(ids), compressed.model(ids))


def test_a_tied_record_must_name_an_earlier_stored_tensor(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tied.nsk"
    netshrink.save(TiedLM(), path)
    header, payload = _header_and_payload(path)
    tied = next(r for r in header["tensors"] if "tied" in r)
    for source in ("head.weight", "nowhere", 5):
        tied["tied"] = source
        with pytest.raises(MalformedHeader, match="tied"):
            read_nsk(_resealed(tmp_path / "bad.nsk", header, payload))
