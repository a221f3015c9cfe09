"""Atomic file creation shared by every writer: a hidden temporary file beside the target, published
when complete with the permissions a plain `open()` would give (mkstemp's are owner-only).

Publishing without `overwrite` never replaces a file, even one that appeared while the output was being
written (another run writing the same path): the finished file gets its name by a hard link, which fails
if the name exists, instead of a rename, which would replace it."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the ones this call created, deepest first, so a
    failed run can take them away again (`remove_folders`)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made by another run meanwhile: not ours to remove
            continue
        created.append(path)
    return created[::-1]


def remove_folders(folders: list[Path]) -> None:
    """Remove `make_folders`' folders, deepest first, where still empty (another run may use them)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def make_temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty hidden file in `path`'s folder (created if needed) to write the output into."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def publish(temp: Path, path: Path, *, overwrite: bool) -> None:
    """Give the finished `temp` the permissions `open()` would have and move it to `path`.

    With `overwrite`, an existing `path` is replaced; without, FileExistsError is raised if `path`
    exists (`temp` is then left for the caller to delete)."""
    os.chmod(temp, 0o666 & ~_umask())
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _claim_then_replace(temp, path)  # a file system without hard links (FAT, some shares)
        return
    os.unlink(temp)


def _claim_then_replace(temp: Path, path: Path) -> None:
    """Create `path` exclusively (FileExistsError if taken), then rename `temp` over our own empty file."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_umask()))
    os.replace(temp, path)


def publish_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: into a temporary file beside it, synced, then
    renamed over it (ledgers and summaries, rewritten as a run goes)."""
    temp = make_temp_beside(path)
    try:
        with temp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        publish(temp, path, overwrite=True)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
