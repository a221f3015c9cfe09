"""Resolve `hf://owner/repo/path` URIs and local paths to local files or folders.

`hf://` paths go through huggingface_hub and its cache, so `HF_HUB_OFFLINE` (the hub library's own
switch) is honoured. Same URI form as the release's `resolve_hf_path` (sana/tools/hf_utils.py in
meefs/Sana): `hf://owner/repo` is the whole model repo, `hf://owner/repo/sub/path` a file or a folder in it.
Every failure raises `HubError` with a one-line message saying what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import huggingface_hub
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

HF_SCHEME = "hf://"
Kind = Literal["file", "folder"]


class HubError(RuntimeError):
    """A path could not be resolved to a local file or folder."""


@dataclass(frozen=True)
class HubPath:
    """A parsed `hf://owner/repo[/subpath]` URI."""

    repo_id: str  # "owner/repo"
    subpath: str  # "" for the whole repo

    @property
    def uri(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}/{self.subpath}".rstrip("/")


def parse_hf_uri(uri: str) -> HubPath:
    """Split `hf://owner/repo/sub/path`; reject empty parts and anything that could leave the repo."""
    if not uri.startswith(HF_SCHEME):
        raise HubError(f"{uri!r} is not an {HF_SCHEME} URI")
    rest = uri[len(HF_SCHEME) :].rstrip("/")
    if "\\" in rest:
        raise HubError(f"{uri!r}: backslashes are not allowed in hub paths")
    parts = rest.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise HubError(f"{uri!r}: expected {HF_SCHEME}owner/repo[/path]")
    bad = [p for p in parts if p in ("", ".", "..")]
    if bad:
        raise HubError(f"{uri!r}: path components {bad} are not allowed (the path must stay inside the repo)")
    return HubPath(repo_id="/".join(parts[:2]), subpath="/".join(parts[2:]))


def download_command(hub_path: HubPath, kind: Kind) -> str:
    """The `hf download` command that puts this path into the local hub cache."""
    if not hub_path.subpath:
        return f"hf download {hub_path.repo_id}"
    if kind == "file":
        return f"hf download {hub_path.repo_id} {hub_path.subpath}"
    return f'hf download {hub_path.repo_id} --include "{hub_path.subpath}/*"'


def resolve_path(
    path: str | Path, *, kind: Kind = "file", allow_patterns: Sequence[str] | None = None
) -> Path:
    """A local `Path` for a local path (`~` expanded) or an `hf://` URI (downloaded into the hub cache).

    `kind` says whether a file or a folder is expected. For a folder, `allow_patterns` (fnmatch patterns
    relative to the folder) limits what is fetched, e.g. `["*.json", "*.safetensors"]`.
    """
    if kind not in ("file", "folder"):
        raise ValueError(f"kind must be 'file' or 'folder', got {kind!r}")
    text = str(path)
    if not text:
        raise HubError("empty path")
    if text.startswith(HF_SCHEME):
        local = _resolve_hub(parse_hf_uri(text), kind, allow_patterns)
    else:
        local = Path(text).expanduser()
    if kind == "file" and not local.is_file():
        what = "is a folder, expected a file" if local.is_dir() else "does not exist"
        raise HubError(f"{text}: {what}")
    if kind == "folder" and not local.is_dir():
        what = "is a file, expected a folder" if local.exists() else "does not exist"
        raise HubError(f"{text}: {what}")
    return local


def _resolve_hub(hub_path: HubPath, kind: Kind, allow_patterns: Sequence[str] | None) -> Path:
    if kind == "file" and not hub_path.subpath:
        raise HubError(f"{hub_path.uri}: a file needs a path inside the repo")
    try:
        if kind == "file":
            local = huggingface_hub.hf_hub_download(repo_id=hub_path.repo_id, filename=hub_path.subpath)
            return Path(local)
        root = huggingface_hub.snapshot_download(
            repo_id=hub_path.repo_id, allow_patterns=_folder_patterns(hub_path.subpath, allow_patterns)
        )
        folder = Path(root) / hub_path.subpath
        if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
            # offline, snapshot_download returns whatever part of the snapshot is cached
            raise HubError(
                f"{hub_path.uri}: no files of this folder are in the repo or the local hub cache; fetch "
                f"them with: {download_command(hub_path, kind)}"
            )
        return folder
    except LocalEntryNotFoundError as exc:
        raise HubError(
            f"{hub_path.uri} is not in the local hub cache and cannot be downloaded now (offline or no "
            f"connection); fetch it with: {download_command(hub_path, kind)}"
        ) from exc
    except GatedRepoError as exc:
        raise HubError(_auth_message(hub_path, "is gated")) from exc
    except RepositoryNotFoundError as exc:
        raise HubError(_auth_message(hub_path, "was not found or needs authentication")) from exc
    except EntryNotFoundError as exc:
        raise HubError(f"{hub_path.uri}: no such file in repo {hub_path.repo_id}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise HubError(_auth_message(hub_path, f"refused access (HTTP {status})")) from exc
        raise HubError(f"{hub_path.uri}: download failed ({exc.__class__.__name__}: {exc})") from exc


def _folder_patterns(subpath: str, allow_patterns: Sequence[str] | None) -> list[str] | None:
    """fnmatch patterns for `snapshot_download` (`*` also matches `/`), rooted at `subpath`."""
    prefix = f"{subpath}/" if subpath else ""
    if allow_patterns is not None:
        return [f"{prefix}{pattern}" for pattern in allow_patterns]
    return [f"{prefix}*"] if subpath else None


def _auth_message(hub_path: HubPath, what: str) -> str:
    return (
        f"{hub_path.uri}: the Hugging Face repo {hub_path.repo_id} {what}; run `hf auth login` and "
        f"accept the model licence at https://huggingface.co/{hub_path.repo_id}"
    )


def is_hub_uri(path: str | Path) -> bool:
    """True for `hf://...` strings."""
    return str(path).startswith(HF_SCHEME)


__all__ = ["HubError", "HubPath", "download_command", "is_hub_uri", "parse_hf_uri", "resolve_path"]
