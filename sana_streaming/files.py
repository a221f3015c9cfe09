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
    """An empty hidden file in `path`'s folder (created if needed), readable as `open()` would make it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)
