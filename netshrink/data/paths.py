"""Where data and decoded caches live, and the one error people see when data is missing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from netshrink.errors import DataError

DATA_ENV = "NETSHRINK_DATA"
CACHE_ENV = "NETSHRINK_CACHE"


def resolve_data_dir(data_dir: str | Path | None, must_exist: bool = True) -> Path:
    """The data root: the argument, else $NETSHRINK_DATA, else a DataError explaining both."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_ENV) or None
    if data_dir is None:
        raise DataError(
            "no data directory given: pass --data-dir (data_dir=...) or set "
            f"{DATA_ENV} to the folder that holds mnist/, cifar10-jpg/, imagenette/, ..."
        )
    path = Path(data_dir).expanduser()
    if must_exist and not path.is_dir():
        raise DataError(
            f"data directory {path} does not exist; point --data-dir or {DATA_ENV} at the "
            "folder that holds mnist/, cifar10-jpg/, imagenette/, ..."
        )
    return path


def cache_root() -> Path:
    """$NETSHRINK_CACHE, else ~/.cache/netshrink: decoded arrays are kept here."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "netshrink").expanduser()


def first_existing(candidates: Sequence[Path]) -> Path | None:
    """The first of `candidates` that is a file, so a dataset can accept several layouts."""
    return next((p for p in candidates if p.is_file()), None)


def missing_data(dataset: str, expected: Sequence[Path], hint: str = "") -> DataError:
    """One message: what is missing, where to put it, and how to point netshrink at it."""
    where = " or ".join(str(p) for p in expected)
    extra = f" {hint}" if hint else ""
    return DataError(
        f"{dataset} data not found: expected {where}.{extra} Put the files there (online: "
        f"netshrink.data.download({dataset!r}, data_dir)) and point --data-dir or "
        f"{DATA_ENV} at the data folder."
    )
