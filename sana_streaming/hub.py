"""Resolve `hf://owner/repo[@revision][/path]` URIs and local paths to local files or folders.

`hf://owner/repo` is the whole model repo, `hf://owner/repo/sub/path` a file or a folder in it (the
release's `resolve_hf_path` form, sana/tools/hf_utils.py in meefs/Sana), read through huggingface_hub and
its cache.

Pinning: `@revision` after the repo name picks a branch, a tag or a commit, e.g.
`hf://Efficient-Large-Model/SANA-Streaming@<commit>/dit/sana_streaming_ar.pth`. A 40-hex commit hash is
immutable, so a pinned file or folder, once cached, is read without asking the hub; a branch or tag is
checked for updates when the hub is reachable. A branch name with `/` is written with `%2F`
(`@feature%2Fx`); `refs/pr/N` and `refs/convert/NAME` are written as they are (huggingface_hub's grammar).

Offline: `HF_HUB_OFFLINE=1` (the hub library's own switch) reads only the local cache. Without it, a file
that is not cached is first asked for with one request without retries (the hub library alone would
retry a failed look-up of an uncached file for ~23 s), and once the hub is found unreachable, the rest of
the process reads only the local cache. Every failure raises `HubError` with a one-line message saying
what to do: the `hf download` command for what is missing, `hf auth login` for gated or private repos.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import huggingface_hub
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import HFValidationError, validate_repo_id

try:  # huggingface_hub 2 builds on httpx2, version 1 on httpx
    from httpx2 import TransportError
except ImportError:
    from httpx import TransportError

HF_SCHEME = "hf://"
Kind = Literal["file", "folder"]
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Revisions that contain `/` and are written as they are (huggingface_hub's URI grammar).
_SPECIAL_REF = re.compile(r"refs/(?:pr/\d+|convert/[\w.-]+)")


# The last words of every error for something not cached: a gated repo (the Gemma text encoder)
# downloads only once logged in, and an offline run cannot find that out from the hub.
LOGIN_HINT = "gated repos need `hf auth login` first"


def with_login_hint(message: str) -> str:
    """`message` ending with `LOGIN_HINT`."""
    return f"{message}; {LOGIN_HINT}"


class HubError(RuntimeError):
    """A path could not be resolved to a local file or folder."""


@dataclass(frozen=True)
class HubPath:
    """A parsed `hf://owner/repo[@revision][/subpath]` URI."""

    repo_id: str  # "owner/repo"
    subpath: str  # "" for the whole repo
    revision: str | None = None  # branch, tag or commit; None: the default branch

    @property
    def uri(self) -> str:
        pin = ""
        if self.revision is not None:
            special = _SPECIAL_REF.fullmatch(self.revision)
            pin = "@" + (self.revision if special else self.revision.replace("/", "%2F"))
        return f"{HF_SCHEME}{self.repo_id}{pin}/{self.subpath}".rstrip("/")

    @property
    def pinned(self) -> bool:
        """True for a commit hash, which never changes."""
        return self.revision is not None and _COMMIT.fullmatch(self.revision) is not None


@dataclass(frozen=True)
class Source:
    """A file or folder to read: a local path or an `hf://` URI.

    For a folder, `allow_patterns` (fnmatch patterns relative to the folder, `*` also matches `/`) limits
    what is fetched, and each of `required` must match a file for the folder to count as present.
    """

    path: str
    kind: Kind = "file"
    allow_patterns: tuple[str, ...] | None = None
    required: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("file", "folder"):
            raise ValueError(f"kind must be 'file' or 'folder', got {self.kind!r}")


@dataclass
class _Connection:
    """Whether the hub was found unreachable in this process; then only the local cache is read."""

    unreachable: bool = False


_connection = _Connection()


def parse_hf_uri(uri: str) -> HubPath:
    """Split `hf://owner/repo[@revision]/sub/path`; reject empty parts and anything that could leave the
    repo."""
    if not uri.startswith(HF_SCHEME):
        raise HubError(f"{uri!r} is not an {HF_SCHEME} URI")
    rest = uri[len(HF_SCHEME) :].rstrip("/")
    if "\\" in rest:
        raise HubError(f"{uri!r}: backslashes are not allowed in hub paths")
    bad = [p for p in rest.split("/") if p in (".", "..")]
    if bad:
        raise HubError(f"{uri!r}: path components {bad} are not allowed (the path must stay inside the repo)")
    owner, _, rest = rest.partition("/")
    name, _, rest = rest.partition("/")
    revision = None
    if "@" in name:
        name, _, pinned = name.partition("@")
        revision, rest = _split_revision(f"{pinned}/{rest}".rstrip("/"))
        if not revision:
            raise HubError(f"{uri!r}: empty revision after '@'")
    if not owner or not name:
        raise HubError(f"{uri!r}: expected {HF_SCHEME}owner/repo[@revision][/path]")
    try:
        validate_repo_id(f"{owner}/{name}")
    except HFValidationError as exc:
        raise HubError(f"{uri!r}: {exc}") from exc
    if rest and "" in rest.split("/"):
        raise HubError(f"{uri!r}: empty path components are not allowed")
    return HubPath(repo_id=f"{owner}/{name}", subpath=rest, revision=revision)


def _split_revision(text: str) -> tuple[str, str]:
    """`revision/sub/path` -> (revision, sub/path); `refs/pr/N` and `refs/convert/NAME` keep their `/`,
    `%2F` in a branch name becomes `/`."""
    special = _SPECIAL_REF.match(text)
    if special and text[special.end() : special.end() + 1] in ("", "/"):
        return special.group(), text[special.end() + 1 :]
    revision, _, rest = text.partition("/")
    return unquote(revision), rest


def download_command(hub_path: HubPath, kind: Kind, allow_patterns: Sequence[str] | None = None) -> str:
    """The `hf download` command that puts this path into the local hub cache."""
    words = ["hf", "download", hub_path.repo_id]
    if kind == "file" and hub_path.subpath:
        words.append(hub_path.subpath)
    else:
        for pattern in _folder_patterns(hub_path.subpath, allow_patterns) or []:
            words += ["--include", pattern]
    if hub_path.revision is not None:
        words += ["--revision", hub_path.revision]
    return " ".join(shlex.quote(word) for word in words)


def resolve_path(
    path: str | Path,
    *,
    kind: Kind = "file",
    allow_patterns: Sequence[str] | None = None,
    required: Sequence[str] = (),
) -> Path:
    """A local `Path` for a local path (`~` expanded) or an `hf://` URI (downloaded into the hub cache).

    `kind` says whether a file or a folder is expected; `allow_patterns` and `required` are `Source`'s.
    """
    patterns = None if allow_patterns is None else tuple(allow_patterns)
    return resolve(Source(str(path), kind, patterns, tuple(required)))


def resolve(source: Source) -> Path:
    """The local file or folder of `source`, fetched into the hub cache if needed; raises `HubError`."""
    text = source.path
    if not text:
        raise HubError("empty path")
    if not is_hub_uri(text):
        return _check_local(Path(text).expanduser(), source.kind, text)
    hub_path = parse_hf_uri(text)
    if source.kind == "file" and not hub_path.subpath:
        raise HubError(f"{hub_path.uri}: a file needs a path inside the repo")
    with _hub_errors(hub_path, source):
        if source.kind == "file":
            return _check_local(_resolve_file(hub_path), "file", text)
        return _resolve_folder(hub_path, source)


def find_cached(source: Source) -> Path | None:
    """The local file or folder of `source` if it is there now, else None; never uses the network.

    A hub folder counts as present when each `required` pattern matches a cached file and every shard
    named by a cached `*.safetensors.index.json` is cached too. Malformed URIs raise `HubError`.
    """
    if not is_hub_uri(source.path):
        local = Path(source.path).expanduser()
        return local if (local.is_file() if source.kind == "file" else local.is_dir()) else None
    hub_path = parse_hf_uri(source.path)
    if source.kind == "file":
        return _cached_file(hub_path)
    folder = _cached_folder(hub_path, source)
    return folder if folder is not None and not missing_files(folder, source.required) else None


def missing_command(source: Source) -> str | None:
    """The `hf download` command fetching `source`, None for a local path."""
    if not is_hub_uri(source.path):
        return None
    return download_command(parse_hf_uri(source.path), source.kind, source.allow_patterns)


def missing_files(folder: Path, required: Sequence[str] = ()) -> list[str]:
    """What a folder lacks: `required` patterns matching no file, shards named by a safetensors index
    that are absent, or "any file" for an empty folder."""
    if not folder.is_dir():
        return ["the folder"]
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    if not names:
        return ["any file"]
    missing = [pattern for pattern in required if not fnmatch.filter(names, pattern)]
    for index in fnmatch.filter(names, "*.safetensors.index.json"):
        try:
            shards = set(json.loads((folder / index).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            missing.append(f"a readable {index}")
            continue
        base = (folder / index).parent
        missing += sorted(shard for shard in shards if not (base / shard).is_file())
    return missing


def is_hub_uri(path: str | Path) -> bool:
    """True for `hf://...` strings."""
    return str(path).startswith(HF_SCHEME)


def hub_offline() -> bool:
    """True when only the local cache may be read: `HF_HUB_OFFLINE=1`, or the hub was unreachable."""
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or _connection.unreachable


def _check_local(local: Path, kind: Kind, text: str) -> Path:
    if kind == "file" and not local.is_file():
        what = "is a folder, expected a file" if local.is_dir() else "does not exist"
        raise HubError(f"{text}: {what}")
    if kind == "folder" and not local.is_dir():
        what = "is a file, expected a folder" if local.exists() else "does not exist"
        raise HubError(f"{text}: {what}")
    return local


def _cached_file(hub_path: HubPath) -> Path | None:
    found = huggingface_hub.try_to_load_from_cache(
        repo_id=hub_path.repo_id, filename=hub_path.subpath, revision=hub_path.revision
    )
    return Path(found) if isinstance(found, str) else None


def _cached_folder(hub_path: HubPath, source: Source) -> Path | None:
    try:
        root = huggingface_hub.snapshot_download(
            repo_id=hub_path.repo_id,
            revision=hub_path.revision,
            allow_patterns=_folder_patterns(hub_path.subpath, source.allow_patterns),
            local_files_only=True,
        )
    except LocalEntryNotFoundError:
        return None
    return Path(root) / hub_path.subpath


def _resolve_file(hub_path: HubPath) -> Path:
    cached = _cached_file(hub_path)
    if cached is not None and (hub_path.pinned or hub_offline()):
        return cached
    if hub_offline():
        raise _not_cached(hub_path, Source(hub_path.uri))
    if cached is None:
        # one request without retries: the hub library retries an uncached file's look-up for ~23 s
        url = huggingface_hub.hf_hub_url(hub_path.repo_id, hub_path.subpath, revision=hub_path.revision)
        huggingface_hub.get_hf_file_metadata(url)
    local = huggingface_hub.hf_hub_download(
        repo_id=hub_path.repo_id, filename=hub_path.subpath, revision=hub_path.revision
    )
    return Path(local)


def _resolve_folder(hub_path: HubPath, source: Source) -> Path:
    folder = _cached_folder(hub_path, source) if hub_path.pinned or hub_offline() else None
    if folder is None or missing_files(folder, source.required):
        if hub_offline():
            raise _not_cached(hub_path, source, folder)
        root = huggingface_hub.snapshot_download(
            repo_id=hub_path.repo_id,
            revision=hub_path.revision,
            allow_patterns=_folder_patterns(hub_path.subpath, source.allow_patterns),
        )
        folder = Path(root) / hub_path.subpath
    missing = missing_files(folder, source.required)
    if missing:  # offline, snapshot_download returns whatever part of the snapshot is cached
        raise HubError(
            with_login_hint(
                f"{hub_path.uri}: neither the repo nor the local hub cache has {', '.join(missing)} in "
                f"this folder; fetch it with: {download_command(hub_path, 'folder', source.allow_patterns)}"
                " (then HF_HUB_OFFLINE=1 reads it from the cache without the network)"
            )
        )
    return folder


@contextmanager
def _hub_errors(hub_path: HubPath, source: Source) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one-line `HubError`s; remember a missing connection."""
    try:
        yield
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, TransportError) as exc:
        if isinstance(exc, TransportError) or isinstance(exc.__cause__, TransportError):
            _connection.unreachable = True
        raise _not_cached(hub_path, source) from exc
    except RevisionNotFoundError as exc:
        raise HubError(
            f"{hub_path.uri}: repo {hub_path.repo_id} has no revision {hub_path.revision!r} "
            "(expected a branch, a tag or a commit hash)"
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


def _not_cached(hub_path: HubPath, source: Source, partial: Path | None = None) -> HubError:
    """Not (or only partly, in `partial`) in the local cache, and no download possible now."""
    command = download_command(hub_path, source.kind, source.allow_patterns)
    where = "not in the local hub cache"
    if partial is not None and partial.is_dir():
        where = (
            f"only partly in the local hub cache (no {', '.join(missing_files(partial, source.required))})"
        )
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        message = (
            f"{hub_path.uri} is {where} and HF_HUB_OFFLINE=1 allows no download; fetch it with: {command} "
            "(or unset HF_HUB_OFFLINE to download it on first use)"
        )
    else:
        message = (
            f"{hub_path.uri} is {where} and the hub cannot be reached (no connection); fetch it where "
            f"there is one with: {command} (with everything cached, HF_HUB_OFFLINE=1 skips the network)"
        )
    return HubError(with_login_hint(message))


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


__all__ = [
    "LOGIN_HINT",
    "HubError",
    "HubPath",
    "Source",
    "download_command",
    "find_cached",
    "hub_offline",
    "is_hub_uri",
    "missing_command",
    "missing_files",
    "parse_hf_uri",
    "resolve",
    "resolve_path",
    "with_login_hint",
]
