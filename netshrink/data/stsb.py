"""STS Benchmark (Cer et al. 2017): sentence pairs scored 0..5 for semantic similarity.

Read from `<data_dir>/stsb/sts-{train,dev}.csv`, the official tab-separated files: genre, file,
year, id, score, sentence 1, sentence 2, and on some lines extra license fields, which are
ignored. Fields are split on tabs only: the sentences contain unbalanced quotes, so no CSV
quoting applies. The "test" split here is the dev file (the split people tune and report on when
the test labels are kept aside); the training sentences serve calibration and distillation.
`download("stsb")` fetches the official archive for users who are online.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from netshrink.data.download import fetch
from netshrink.data.paths import missing_data, resolve_data_dir
from netshrink.data.text import SentencePairs
from netshrink.errors import DataError

FOLDER = "stsb"
FILES = {"train": "sts-train.csv", "test": "sts-dev.csv"}
ARCHIVE_URL = "http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz"
ARCHIVE = "Stsbenchmark.tar.gz"
SCORE, FIRST, SECOND = 4, 5, 6  # field positions
MAX_SCORE = 5.0


def load_stsb(split: str, data_dir: str | Path | None = None) -> SentencePairs:
    """STS-B `split` ("train", or "test" = the dev file), tokenized for all-MiniLM-L6-v2."""
    path = resolve_data_dir(data_dir) / FOLDER / FILES[split]
    if not path.is_file():
        raise missing_data("stsb", [path], "(the STS Benchmark sts-train.csv / sts-dev.csv files)")
    first, second, scores = read_pairs(path)
    return SentencePairs.from_text(first, second, scores)


def read_pairs(path: Path) -> tuple[list[str], list[str], list[float]]:
    """The two sentences and the gold score of each line; a DataError names a malformed line."""
    first, second, scores = [], [], []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            score = _score(fields, path, number)
            first.append(fields[FIRST])
            second.append(fields[SECOND])
            scores.append(score)
    if not scores:
        raise DataError(f"{path} holds no sentence pairs")
    return first, second, scores


def _score(fields: list[str], path: Path, number: int) -> float:
    if len(fields) <= SECOND:
        raise DataError(
            f"{path} line {number}: expected at least 7 tab-separated fields "
            f"(genre, file, year, id, score, sentence 1, sentence 2), found {len(fields)}"
        )
    try:
        score = float(fields[SCORE])
    except ValueError:
        raise DataError(f"{path} line {number}: score {fields[SCORE]!r} is not a number") from None
    if not 0.0 <= score <= MAX_SCORE:
        raise DataError(f"{path} line {number}: score {score} is outside 0..{MAX_SCORE:g}")
    return score


def download_stsb(data_dir: Path) -> None:
    """Fetch the official archive and extract its train/dev files into `<data_dir>/stsb/`."""
    folder = data_dir / FOLDER
    archive = fetch(ARCHIVE_URL, folder / ARCHIVE)
    wanted = set(FILES.values()) | {"sts-test.csv", "readme.txt", "LICENSE.txt"}
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in wanted:  # flattened: never trust member paths
                (folder / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
