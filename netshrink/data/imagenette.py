"""Imagenette (fast.ai): 10 easy ImageNet classes, stored with their ImageNet-1k indices.

The shared folder holds `imagenette_{train,val}.tar.gz`, already resized to 224x224.
`download("imagenette")` fetches fast.ai's full-size `imagenette2.tgz`, whose images are
not resized: they are brought to 224x224 (shorter side, then centre crop) while decoding,
so scores on it differ slightly from the shared copy.
"""

from __future__ import annotations

from pathlib import Path

from netshrink.data.arrays import ArrayDataset
from netshrink.data.download import fetch
from netshrink.data.images import load_image_tar
from netshrink.data.paths import first_existing, missing_data, resolve_data_dir
from netshrink.errors import DataError

FOLDER = "imagenette"
URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz"
MD5 = "fe2fc210e6bb7c5664d602c3cd71e612"
FULL_ARCHIVE = "imagenette2.tgz"
IMAGE_SIZE = 224
SPLIT_FOLDER = {"train": "train", "test": "val"}  # Imagenette's held-out split is "val"

# wnid -> ImageNet-1k class index; sorted wnids are the 10-way label order.
IMAGENET_INDEX = {
    "n01440764": 0,
    "n02102040": 217,
    "n02979186": 482,
    "n03000684": 491,
    "n03028079": 497,
    "n03394916": 566,
    "n03417042": 569,
    "n03425413": 571,
    "n03445777": 574,
    "n03888257": 701,
}
WNIDS = tuple(sorted(IMAGENET_INDEX))


def load_imagenette(split: str, data_dir: str | Path | None = None) -> ArrayDataset:
    """Imagenette `split`; "test" is the official val folder. Labels 0..9 in wnid order."""
    folder = resolve_data_dir(data_dir) / FOLDER
    member_split = SPLIT_FOLDER[split]
    candidates = [folder / f"imagenette_{member_split}.tar.gz", folder / FULL_ARCHIVE]
    archive = first_existing(candidates)
    if archive is None:
        raise missing_data("imagenette", candidates)
    arrays = load_image_tar(archive, member_split, IMAGE_SIZE)
    if arrays.classes != WNIDS:
        raise DataError(f"{archive} has class folders {arrays.classes}, expected {WNIDS}")
    imagenet = tuple(IMAGENET_INDEX[w] for w in WNIDS)
    return ArrayDataset(arrays.images, arrays.labels, WNIDS, imagenet)


def download_imagenette(data_dir: Path) -> None:
    """Fetch fast.ai's full-size imagenette2.tgz (1.5 GB) into `<data_dir>/imagenette/`."""
    fetch(URL, data_dir / FOLDER / FULL_ARCHIVE, MD5)
