"""Fetching the official dataset files, for users who are online (never run by tests)."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path

from tqdm import tqdm

from netshrink.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def fetch(url: str, dest: Path, md5: str | None = None) -> Path:
    """Download `url` to `dest` (skipped when present and matching `md5`), atomically."""
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        log.info("%s already present", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        _stream_to(url, tmp)
        if md5 is not None and (got := file_md5(tmp)) != md5:
            raise DataError(f"{url} downloaded with md5 {got}, expected {md5}; try again")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream_to(url: str, path: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, path.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise DataError(f"cannot download {url}: {exc}") from exc


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
