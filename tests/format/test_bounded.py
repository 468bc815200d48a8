"""Reading a file one tensor at a time (open_nsk): the records read_nsk gives, the errors it raises.

The error-path tests of test_container.py run again here with `read_nsk` replaced by a reader that
goes through `open_nsk` and reads every record; random damage to real files must end in the very
same exception and message from both readers, or in the same records.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import netshrink
import tests.format.test_container as container_tests
from netshrink.errors import NetshrinkError
from netshrink.format.bounded import open_nsk
from netshrink.format.container import NskFile, read_nsk
from tests.format.test_container import (  # noqa: F401 - collected again, with read_nsk replaced
    TiedLM,
    nsk_path,
    test_a_stream_borrowed_from_a_missing_later_or_different_tensor_is_refused,
    test_a_tied_record_must_name_an_earlier_stored_tensor,
    test_checksum_mismatch_in_payload_and_header,
    test_declared_decoded_size_is_bounded_before_decoding,
    test_malformed_header,
    test_non_finite_numbers_in_the_header_are_refused,
    test_not_a_netshrink_file,
    test_reserved_flags_and_bytes_after_the_compressed_header_are_refused,
    test_trailing_bytes_are_rejected,
    test_truncated,
    test_unsupported_version,
    test_version_1_files_with_per_tensor_checksums_still_load,
    test_version_2_records_have_no_offsets_and_need_the_payload_checksum,
)


def read_with_bounded_reader(path, max_bytes=None) -> NskFile:
    """read_nsk's result, through open_nsk: every record read from its byte range."""
    with open_nsk(path, max_bytes) as reader:
        nsk = reader.nsk
        return NskFile(list(reader.records()), nsk.model, nsk.recipe, nsk.meta, nsk.header_bytes)


@pytest.fixture(autouse=True)
def bounded_reader(monkeypatch):
    monkeypatch.setattr(container_tests, "read_nsk", read_with_bounded_reader)


def same_records(a: NskFile, b: NskFile) -> bool:
    """Equal headers and records; a tied record is compared by name and the tensor it is tied to."""
    if (a.model, a.recipe, a.meta, a.header_bytes) != (b.model, b.recipe, b.meta, b.header_bytes):
        return False
    pairs = list(zip(a.tensors, b.tensors, strict=True))
    return all(
        (x.name, x.module_type, x.tied_to) == (y.name, y.module_type, y.tied_to)
        and (x.tied_to or x.encoded == y.encoded)
        for x, y in pairs
    )


def test_records_equal_read_nsk_for_stored_borrowed_and_tied_tensors(tmp_path, tiny_net):
    palette = tmp_path / "p.nsk"
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False).save(palette)
    tied = tmp_path / "tied.nsk"
    torch.manual_seed(0)
    netshrink.compress(TiedLM(), "oneshot-palette5", progress=False).save(tied)
    for path in (palette, tied):
        assert same_records(read_with_bounded_reader(path), read_nsk(path))
    assert any(rec.tied_to for rec in read_nsk(tied).tensors)


def _outcome(read, path):
    try:
        return "ok", read(path)
    except NetshrinkError as exc:
        return type(exc).__name__, str(exc)


def test_random_damage_gives_the_same_error_or_the_same_records(tmp_path, tiny_net):
    original = tmp_path / "o.nsk"
    netshrink.compress(tiny_net, "oneshot-prune50-palette5", progress=False).save(original)
    data = original.read_bytes()
    rng = random.Random(7)
    failures = 0
    for case in range(300):
        damaged = bytearray(data)
        if case % 3 == 0:
            damaged = damaged[: rng.randrange(len(damaged))]
        else:
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path = tmp_path / "d.nsk"
        path.write_bytes(bytes(damaged))
        whole, bounded = _outcome(read_nsk, path), _outcome(read_with_bounded_reader, path)
        assert whole[0] == bounded[0], (case, whole, bounded)
        if whole[0] == "ok":
            assert same_records(whole[1], bounded[1])
        else:
            assert whole[1] == bounded[1]
            failures += 1
    assert failures > 250  # the checksums catch nearly every change


def test_the_payload_is_never_read_whole(tmp_path, monkeypatch):
    """Checksummed in chunks and read per stream: no read asks for more than a chunk or a stream."""
    import netshrink.format.spans as spans

    path = tmp_path / "p.nsk"
    model = torch.nn.Sequential(*(torch.nn.Linear(64, 64, bias=False) for _ in range(4)))
    netshrink.save(model, path)
    largest_stream = 4 * 64 * 64
    monkeypatch.setattr(spans, "CHUNK_BYTES", 1024)
    expected = read_nsk(path)
    sizes = []
    real_open = Path.open

    class RecordingFile:
        def __init__(self, handle):
            self.handle = handle

        def read(self, n=-1):
            sizes.append(n)
            return self.handle.read(n)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: RecordingFile(real_open(self, *a, **k)))
    assert same_records(read_with_bounded_reader(path), expected)
    assert -1 not in sizes and max(sizes) <= max(largest_stream, 1024)
    assert path.stat().st_size > 3 * max(largest_stream, 1024)
