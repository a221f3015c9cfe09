"""hub: local paths, `hf://` files and folders with revisions, read from a fake hub cache through the real
huggingface_hub; offline and unreachable hubs fail fast with the `hf download` command; authentication
errors; traversal rejected. The network is huggingface_hub's own client with a mock transport."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers_hub import COMMIT, FakeNetwork, fake_hub_cache, fake_network, no_connection, refuse, use_cache

from sana_streaming.hub import (
    HubError,
    HubPath,
    Source,
    download_command,
    find_cached,
    missing_files,
    parse_hf_uri,
    resolve,
    resolve_path,
)

PINNED = "fedcba9876543210fedcba9876543210fedcba98"


def hub_requests(network: FakeNetwork) -> list[str]:
    """The requests for the repos of these tests (the hub library may send others of its own)."""
    return [request for request in network.requests if "/owner/" in request]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`owner/repo`: main at COMMIT, tag v1 at PINNED, with different contents; HF_HUB_OFFLINE=1."""
    root = tmp_path / "hub"
    fake_hub_cache(root, "owner/repo", {
        "dit/model.pth": b"main weights", "vae/config.json": b"{}", "vae/w.safetensors": b"main vae",
    })  # fmt: skip
    fake_hub_cache(root, "owner/repo", {
        "dit/model.pth": b"v1 weights", "vae/config.json": b"{}", "vae/w.safetensors": b"v1 vae",
    }, commit=PINNED, refs=("v1", "refs/pr/7"))  # fmt: skip
    use_cache(monkeypatch, root, offline=True)
    return root


def test_local_paths_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "clip.mp4").write_bytes(b"x")
    assert resolve_path("~/clip.mp4") == tmp_path / "clip.mp4"
    assert resolve_path(tmp_path, kind="folder") == tmp_path
    with pytest.raises(HubError, match="does not exist"):
        resolve_path(tmp_path / "missing.mp4")
    with pytest.raises(HubError, match="expected a file"):
        resolve_path(tmp_path)
    with pytest.raises(HubError, match="expected a folder"):
        resolve_path(tmp_path / "clip.mp4", kind="folder")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://owner/repo/dit/model.pth", b"main weights"),
        ("hf://owner/repo@main/dit/model.pth", b"main weights"),
        (f"hf://owner/repo@{COMMIT}/dit/model.pth", b"main weights"),
        ("hf://owner/repo@v1/dit/model.pth", b"v1 weights"),
        (f"hf://owner/repo@{PINNED}/dit/model.pth", b"v1 weights"),
        ("hf://owner/repo@refs/pr/7/dit/model.pth", b"v1 weights"),
    ],
)
def test_file_revisions(cache: Path, uri: str, expected: bytes) -> None:
    assert resolve_path(uri).read_bytes() == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://owner/repo/vae", b"main vae"),
        ("hf://owner/repo@v1/vae/", b"v1 vae"),
        ("hf://owner/repo@v1", None),
    ],
)
def test_folder_revisions(cache: Path, uri: str, expected: bytes | None) -> None:
    folder = resolve_path(uri, kind="folder", allow_patterns=["*.safetensors", "*.json"])
    if expected is None:  # the whole repo at v1
        assert folder == cache / "models--owner--repo" / "snapshots" / PINNED
    else:
        assert (folder / "w.safetensors").read_bytes() == expected


def test_revision_not_cached_offline_names_the_pinned_download(cache: Path) -> None:
    with pytest.raises(HubError) as err:
        resolve_path("hf://owner/repo@v2/dit/model.pth")
    message = str(err.value)
    assert "hf download owner/repo dit/model.pth --revision v2" in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message
    with pytest.raises(HubError, match="hf download owner/repo --include 'vae/\\*' --revision v2"):
        resolve_path("hf://owner/repo@v2/vae", kind="folder")


def test_pinned_commit_is_read_without_the_network(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit never changes, so a cached pinned file is used even online, with no request at all."""
    use_cache(monkeypatch, cache, offline=False)
    with fake_network(monkeypatch, no_connection) as network:
        assert resolve_path(f"hf://owner/repo@{PINNED}/dit/model.pth").read_bytes() == b"v1 weights"
        folder = resolve_path(f"hf://owner/repo@{PINNED}/vae", kind="folder", required=["config.json"])
        assert (folder / "w.safetensors").read_bytes() == b"v1 vae"
    assert hub_requests(network) == []


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("hf://owner/repo", HubPath("owner/repo", "")),
        ("hf://owner/repo@v1.0/a/b.pth", HubPath("owner/repo", "a/b.pth", "v1.0")),
        ("hf://owner/repo@refs/pr/12/a", HubPath("owner/repo", "a", "refs/pr/12")),
        ("hf://owner/repo@refs/convert/parquet", HubPath("owner/repo", "", "refs/convert/parquet")),
        ("hf://owner/repo@feature%2Fx/a", HubPath("owner/repo", "a", "feature/x")),
    ],
)
def test_parse_revisions_round_trip(uri: str, parsed: HubPath) -> None:
    assert parse_hf_uri(uri) == parsed
    assert parse_hf_uri(uri).uri == uri


def test_download_commands() -> None:
    assert (
        download_command(parse_hf_uri("hf://o/r@v1/dit/x.pth"), "file")
        == "hf download o/r dit/x.pth --revision v1"
    )
    assert download_command(parse_hf_uri("hf://o/r"), "folder") == "hf download o/r"
    assert (
        download_command(parse_hf_uri("hf://o/r/vae"), "folder", ["config.json", "*.safetensors"])
        == "hf download o/r --include vae/config.json --include 'vae/*.safetensors'"
    )


@pytest.mark.parametrize(
    "uri",
    ["hf://owner/repo/../other/x", "hf://owner/repo/a/../../b", "hf://owner/../x", "hf://owner/repo/./x"],
)
def test_traversal_rejected(uri: str) -> None:
    with pytest.raises(HubError, match="not allowed"):
        resolve_path(uri)


@pytest.mark.parametrize(
    "uri", ["hf://", "hf://owner", "hf:///repo/x", "hf://owner\\repo/x", "hf://owner/repo@/x", "hf://o/r p/x"]
)
def test_malformed_uri(uri: str) -> None:
    with pytest.raises(HubError):
        parse_hf_uri(uri)


def test_file_needs_subpath() -> None:
    with pytest.raises(HubError, match="needs a path"):
        resolve_path("hf://owner/repo")


def test_offline_mode_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache", offline=True)
    for uri, kind, command in [
        ("hf://owner/repo/dit/model.pth", "file", "hf download owner/repo dit/model.pth"),
        ("hf://Lightricks/LTX-2/vae", "folder", "hf download Lightricks/LTX-2 --include 'vae/*'"),
        (
            "hf://Efficient-Large-Model/gemma-2-2b-it",
            "folder",
            "hf download Efficient-Large-Model/gemma-2-2b-it",
        ),
    ]:
        with pytest.raises(HubError) as err:
            resolve_path(uri, kind=kind)
        assert f"fetch it with: {command} (" in str(err.value)
        assert "HF_HUB_OFFLINE=1" in str(err.value) and "\n" not in str(err.value)


def test_every_offline_error_names_hf_hub_offline_and_hf_auth_login(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 7: a gated repo (the Gemma text encoder) downloads only after `hf auth login`, so every
    error for something not cached says so, beside HF_HUB_OFFLINE=1, still on one line."""
    messages = []
    for source in [
        Source("hf://owner/repo@v2/dit/model.pth"),
        Source("hf://owner/other/vae", "folder"),
        Source("hf://owner/repo/vae", "folder", required=("config.json", "*.bin")),  # only partly cached
        Source("hf://Efficient-Large-Model/gemma-2-2b-it", "folder"),
    ]:
        with pytest.raises(HubError) as err:
            resolve(source)
        messages.append(str(err.value))
    use_cache(monkeypatch, cache, offline=False)
    with fake_network(monkeypatch, no_connection):
        with pytest.raises(HubError) as err:
            resolve_path("hf://owner/other/dit/x.pth")
        messages.append(str(err.value))
    assert "only partly in the local hub cache (no *.bin)" in messages[2]
    assert "cannot be reached" in messages[-1]
    for message in messages:
        assert "HF_HUB_OFFLINE=1" in message and "hf auth login" in message and "\n" not in message, message


def test_no_connection_fails_fast_and_the_process_stays_offline(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_OFFLINE unset and no network: huggingface_hub alone retries an uncached file's look-up 5
    times (1+2+4+8+8 s of backoff). Here: one request, no backoff, then nothing more is asked."""
    use_cache(monkeypatch, cache, offline=False)
    with fake_network(monkeypatch, no_connection) as network:
        start = time.monotonic()
        with pytest.raises(HubError) as err:
            resolve_path("hf://owner/other/dit/x.pth")
        assert len(hub_requests(network)) == 1 and network.sleeps == []
        message = str(err.value)
        assert "cannot be reached" in message and "hf download owner/other dit/x.pth" in message
        assert "HF_HUB_OFFLINE=1" in message
        with pytest.raises(HubError, match="hf download owner/other --include 'vae/\\*'"):
            resolve_path("hf://owner/other/vae", kind="folder")
        # cached files still resolve, from the cache only
        assert resolve_path("hf://owner/repo/dit/model.pth").read_bytes() == b"main weights"
        assert (resolve_path("hf://owner/repo/vae", kind="folder") / "w.safetensors").is_file()
        assert len(hub_requests(network)) == 1 and network.sleeps == []
        assert time.monotonic() - start < 5


def test_cached_files_without_connection_before_the_hub_is_known_unreachable(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached file on a branch: the hub library's update check fails once, without retries."""
    use_cache(monkeypatch, cache, offline=False)
    with fake_network(monkeypatch, no_connection) as network:
        assert resolve_path("hf://owner/repo@v1/dit/model.pth").read_bytes() == b"v1 weights"
        assert (
            resolve_path("hf://owner/repo/vae", kind="folder") / "w.safetensors"
        ).read_bytes() == b"main vae"
    assert network.sleeps == []


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(401, "GatedRepo", "file"), (403, "GatedRepo", "file"), (401, "RepoNotFound", "file"),
     (403, None, "file"), (401, "GatedRepo", "folder"), (401, "RepoNotFound", "folder")],
)  # fmt: skip
def test_auth_errors_say_login_and_licence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, code: str | None, kind: str
) -> None:
    use_cache(monkeypatch, tmp_path / "cache", offline=False)
    with fake_network(monkeypatch, refuse(status, code)), pytest.raises(HubError) as err:
        resolve_path("hf://owner/gated/x", kind=kind)
    message = str(err.value)
    assert "hf auth login" in message and "licence" in message and "huggingface.co/owner/gated" in message
    assert "\n" not in message


def test_unknown_revision_and_file_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, tmp_path / "cache", offline=False)
    with fake_network(monkeypatch, refuse(404, "RevisionNotFound")), pytest.raises(HubError) as err:
        resolve_path("hf://owner/repo@nope/x")
    assert "has no revision 'nope'" in str(err.value)
    with fake_network(monkeypatch, refuse(404, "EntryNotFound")), pytest.raises(HubError) as err:
        resolve_path("hf://owner/repo/x")
    assert "no such file" in str(err.value)


INDEX = b'{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}'


def test_find_cached_checks_required_files_and_shards(cache: Path) -> None:
    snapshot = fake_hub_cache(cache, "owner/te", {
        "config.json": b"{}", "tokenizer_config.json": b"{}",
        "model.safetensors.index.json": INDEX,
        "model-1.safetensors": b"1",
    })  # fmt: skip
    required = ("config.json", "tokenizer_config.json", "*.safetensors")
    source = Source("hf://owner/te", "folder", ("*.json", "*.safetensors"), required)
    assert find_cached(source) is None  # shard 2 absent
    assert missing_files(snapshot, required) == ["model-2.safetensors"]
    with pytest.raises(HubError, match=r"model-2\.safetensors"):
        resolve(source)
    (snapshot / "model-2.safetensors").write_bytes(b"2")
    assert find_cached(source) == snapshot
    assert find_cached(Source("hf://owner/te", "folder", required=("tokenizer.model",))) is None
    assert find_cached(Source("hf://owner/repo@v1/dit/model.pth")).read_bytes() == b"v1 weights"
    assert find_cached(Source("hf://owner/repo@v9/dit/model.pth")) is None
    assert find_cached(Source("hf://owner/absent", "folder")) is None
