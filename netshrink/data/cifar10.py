"""CIFAR-10: the JPEG re-encoding in `<data_dir>/cifar10-jpg/`, or the official binary version.

The JPEG copy (quality 75) is what the shared data folder holds; it costs pretrained
ResNet-20 about 10 points, so use it for relative comparisons. `download("cifar10")` fetches
the official lossless binary version instead, which is read straight from its tarball
(no pickle is involved).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from netshrink.data.arrays import ArrayDataset
from netshrink.data.download import fetch
from netshrink.data.images import load_image_tar
from netshrink.data.paths import first_existing, missing_data, resolve_data_dir
from netshrink.errors import DataError

JPEG_FOLDER = "cifar10-jpg"
BINARY_FOLDER = "cifar10"
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
BINARY_ARCHIVE = "cifar-10-binary.tar.gz"
BINARY_MEMBERS = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
# Alphabetical, which is also CIFAR's label order.
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SIZE = 32
RECORD = 1 + 3 * IMAGE_SIZE * IMAGE_SIZE  # one label byte, then R, G, B planes


def load_cifar10(split: str, data_dir: str | Path | None = None) -> ArrayDataset:
    """CIFAR-10 `split` ("train"/"test"): JPEG archive if present, else the binary version."""
    root = resolve_data_dir(data_dir)
    jpeg = root / JPEG_FOLDER / f"cifar10_jpg_{split}.tar.gz"
    binary = root / BINARY_FOLDER / BINARY_ARCHIVE
    found = first_existing([jpeg, binary])
    if found is None:
        raise missing_data("cifar10", [jpeg, binary])
    if found == binary:
        return _from_binary(binary, split)
    arrays = load_image_tar(jpeg, split, IMAGE_SIZE)
    if arrays.classes != CLASSES:
        raise DataError(f"{jpeg} has class folders {arrays.classes}, expected {CLASSES}")
    return ArrayDataset(arrays.images, arrays.labels, CLASSES)


def _from_binary(archive: Path, split: str) -> ArrayDataset:
    """Records of 3073 bytes from the official `cifar-10-batches-bin/*.bin` members."""
    wanted = BINARY_MEMBERS[split]
    chunks: dict[str, bytes] = {}
    with tarfile.open(archive, mode="r|gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                chunks[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    missing = [n for n in wanted if n not in chunks]
    if missing:
        raise DataError(f"{archive} lacks {missing}; re-download it")
    records = np.frombuffer(b"".join(chunks[n] for n in wanted), np.uint8).reshape(-1, RECORD)
    images = records[:, 1:].reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).copy()
    labels = records[:, 0].astype(np.int64)
    return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels), CLASSES)


def download_cifar10(data_dir: Path) -> None:
    """Fetch the official binary version into `<data_dir>/cifar10/` (read without extracting)."""
    fetch(BINARY_URL, data_dir / BINARY_FOLDER / BINARY_ARCHIVE, BINARY_MD5)
