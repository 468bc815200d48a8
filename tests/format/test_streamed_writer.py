"""StreamedWriter: a .nsk file written record by record has the very bytes of `serialize`, keeps
tied and borrowed records working, and continues from a saved state after an interruption."""

from __future__ import annotations

import json

import pytest
import torch

import netshrink
from netshrink.errors import NetshrinkError
from netshrink.format.codecs.base import Stream
from netshrink.format.container import NskFile, StreamedWriter, TensorRecord, WriterState, read_nsk, serialize
from tests.format.test_container import TiedLM, _shared_codebook_file


def tied_records() -> NskFile:
    torch.manual_seed(0)
    compressed = netshrink.compress(TiedLM(), "oneshot-palette5", progress=False)
    return compressed.nsk()


@pytest.mark.parametrize("make", [tied_records, _shared_codebook_file])
def test_bytes_equal_serialize_in_any_batching(tmp_path, make) -> None:
    nsk = make()
    expected = serialize(nsk)
    for batch in (1, 2, len(nsk.tensors)):
        writer = StreamedWriter(tmp_path / f"w{batch}.nsk")
        for start in range(0, len(nsk.tensors), batch):
            writer.add(nsk.tensors[start : start + batch])
        size = writer.finish(nsk.model, nsk.recipe, nsk.meta)
        assert (tmp_path / f"w{batch}.nsk").read_bytes() == expected and size == len(expected)
        assert not writer.payload.exists()
    assert len(read_nsk(tmp_path / "w1.nsk").tensors) == len(nsk.tensors)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_continues_from_a_saved_state_after_more_bytes_were_written(tmp_path) -> None:
    nsk = tied_records()
    payload = tmp_path / "payload.bin"
    writer = StreamedWriter(tmp_path / "m.nsk", payload=payload)
    writer.add(nsk.tensors[:2])
    state = json.loads(json.dumps(writer.sync().to_json()))  # as saved to disk
    writer.add(nsk.tensors[2:3])  # written, then the process died before saving its state
    writer._file.flush()
    resumed = StreamedWriter(tmp_path / "m.nsk", payload=payload, state=WriterState.from_json(state))
    resumed.add(nsk.tensors[2:])
    resumed.finish(nsk.model, nsk.recipe, nsk.meta)
    assert (tmp_path / "m.nsk").read_bytes() == serialize(nsk)


def test_a_short_payload_or_a_bad_record_is_refused(tmp_path) -> None:
    nsk = _shared_codebook_file()
    payload = tmp_path / "payload.bin"
    writer = StreamedWriter(tmp_path / "m.nsk", payload=payload)
    writer.add(nsk.tensors[:1])
    state = writer.sync()
    payload.write_bytes(b"")
    with pytest.raises(NetshrinkError, match="less than"):
        StreamedWriter(tmp_path / "m.nsk", payload=payload, state=state)
    other = StreamedWriter(tmp_path / "n.nsk")
    with pytest.raises(NetshrinkError, match="earlier tensor"):
        other.add([TensorRecord("b", nsk.tensors[0].encoded, tied_to="a")])
    stream = nsk.tensors[1].encoded.streams["codebook"]
    nsk.tensors[1].encoded.streams["codebook"] = Stream("codebook", bytes(len(stream.data)), borrowed_from="a")
    other.add(nsk.tensors[:1])
    with pytest.raises(NetshrinkError, match="same bytes"):
        other.add(nsk.tensors[1:])
    other.close(remove=True)
    assert not other.payload.exists()
