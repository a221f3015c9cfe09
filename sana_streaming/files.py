"""Atomic file creation shared by every writer: a hidden temporary file beside the target, renamed into
place when complete, with the permissions a plain `open()` would give (mkstemp's are owner-only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty hidden file in `path`'s folder (created if needed) to write the output into."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def publish(temp: Path, path: Path) -> None:
    """Give the finished `temp` the permissions `open()` would have, then rename it to `path`."""
    os.chmod(temp, 0o666 & ~_umask())
    os.replace(temp, path)
