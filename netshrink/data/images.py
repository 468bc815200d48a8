"""Reading class-folder JPEG archives (`<split>/<class>/<image>`) into cached uint8 arrays.

Decoding tens of thousands of JPEGs takes tens of seconds, so it happens once per archive:
the decoded array is written as .npy under the cache root, in a folder keyed by the archive's
name, size and mtime (a replaced archive is decoded again), and later loads memory-map it.
Members are read straight from the tar.gz in one streaming pass; their order in the archive
is arbitrary, so samples are ordered by sorted member name to be deterministic.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from netshrink.data.paths import cache_root
from netshrink.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused


@dataclass(frozen=True)
class ImageArrays:
    """Decoded images (N, 3, S, S) uint8, labels (N,) int64, and the class folder names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]


def load_image_tar(archive: Path, split: str, size: int, progress: bool = True) -> ImageArrays:
    """The `split` images of a class-folder tar archive, decoded to RGB size x size (cached)."""
    folder = _cache_folder(archive, split, size)
    if not (folder / "meta.json").is_file():
        _decode_to_cache(archive, split, size, folder, progress)
    return _read_cache(folder)


def _cache_folder(archive: Path, split: str, size: int) -> Path:
    stat = archive.stat()
    name = archive.name.split(".")[0]
    key = f"{name}-{split}-{size}px-{stat.st_size}-{stat.st_mtime_ns}-v{CACHE_VERSION}"
    return cache_root() / "decoded" / key


def _read_cache(folder: Path) -> ImageArrays:
    meta = json.loads((folder / "meta.json").read_text())
    # mmap_mode="c" (copy-on-write) gives a writable array, so torch does not warn.
    images = np.load(folder / "images.npy", mmap_mode="c")
    labels = np.load(folder / "labels.npy")
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(labels), tuple(meta["classes"]))


def _decode_to_cache(archive: Path, split: str, size: int, folder: Path, progress: bool) -> None:
    """Decode into a temporary folder, then rename it: an interrupted run leaves no half cache."""
    encoded = read_split_members(archive, split)
    names = sorted(encoded)
    classes = sorted({PurePosixPath(n).parent.name for n in names})
    labels = np.array([classes.index(PurePosixPath(n).parent.name) for n in names], np.int64)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(names), 3, size, size))
    _decode_all([encoded[n] for n in names], images, size, f"decoding {archive.name}", progress)
    images.flush()
    del images
    np.save(tmp / "labels.npy", labels)
    (tmp / "meta.json").write_text(json.dumps({"archive": str(archive), "classes": classes}))
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first; its cache is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %d decoded images of %s in %s", len(names), archive, folder)


def read_split_members(archive: Path, split: str) -> dict[str, bytes]:
    """Raw bytes of every `.../<split>/<class>/<image>` member, in one streaming pass.

    The encoded JPEGs are about the size of the archive, so holding them is cheap, and
    streaming avoids the backward seeks in a gzip stream that sorted access would cost.
    """
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                if member.isfile() and _is_split_image(member.name, split):
                    found[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {archive}: {exc}; re-download or replace it") from exc
    if not found:
        raise DataError(
            f"{archive} has no images under {split}/<class>/; expected members like {split}/<class>/<name>.jpg"
        )
    return found


def _is_split_image(name: str, split: str) -> bool:
    parts = PurePosixPath(name).parts
    return len(parts) >= 3 and parts[-3] == split and name.lower().endswith(IMAGE_SUFFIXES)


def _decode_all(encoded: list[bytes], out: np.ndarray, size: int, desc: str, progress: bool) -> None:
    """Decode `encoded[i]` into `out[i]`; Pillow releases the GIL, so threads use all cores."""

    def decode_into(i: int) -> None:
        out[i] = decode_image(encoded[i], size)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(decode_into, range(len(encoded)), chunksize=64)
        for _ in tqdm(jobs, total=len(encoded), desc=desc, unit="img", disable=not progress):
            pass


def decode_image(data: bytes, size: int) -> np.ndarray:
    """JPEG/PNG bytes -> (3, size, size) uint8 RGB (grayscale and CMYK are converted)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != (size, size):
                img.draft("RGB", (size, size))  # let libjpeg downscale large images cheaply
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot decode an image ({len(data)} bytes): {exc}") from exc
    if rgb.size != (size, size):
        rgb = resize_center_crop(rgb, size)
    return np.asarray(rgb).transpose(2, 0, 1)


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, then the central size x size window (ImageNet eval practice)."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))
