"""hub.resolve_path: local paths, `hf://` files and folders (huggingface_hub mocked at its download
functions only), offline and authentication errors, traversal rejected."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest

try:  # huggingface_hub 2 builds on httpx2, version 1 on httpx
    import httpx2 as httpx
except ImportError:
    import httpx
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

from sana_streaming.hub import HubError, parse_hf_uri, resolve_path


@pytest.fixture
def fake_snapshot(tmp_path: Path) -> Path:
    """A stand-in for a cached snapshot of `owner/repo`."""
    root = tmp_path / "snapshot"
    (root / "dit").mkdir(parents=True)
    (root / "dit" / "model.pth").write_bytes(b"weights")
    (root / "vae").mkdir()
    (root / "vae" / "config.json").write_text("{}")
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


def test_hub_file(fake_snapshot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(*, repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        return str(fake_snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path = resolve_path("hf://owner/repo/dit/model.pth")
    assert path == fake_snapshot / "dit" / "model.pth"
    assert calls == [("owner/repo", "dit/model.pth")]


def test_hub_folder_and_whole_repo(fake_snapshot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_snapshot_download(*, repo_id: str, allow_patterns: list[str] | None) -> str:
        calls.append((repo_id, allow_patterns))
        return str(fake_snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_path("hf://owner/repo/vae/", kind="folder") == fake_snapshot / "vae"
    assert resolve_path("hf://owner/repo", kind="folder") == fake_snapshot
    dit = resolve_path("hf://owner/repo/dit", kind="folder", allow_patterns=["*.pth"])
    assert dit == fake_snapshot / "dit"
    assert calls == [("owner/repo", ["vae/*"]), ("owner/repo", None), ("owner/repo", ["dit/*.pth"])]
    with pytest.raises(HubError, match='hf download owner/repo --include "nothing/\\*"'):
        resolve_path("hf://owner/repo/nothing", kind="folder")


@pytest.mark.parametrize(
    "uri",
    ["hf://owner/repo/../other/x", "hf://owner/repo/a/../../b", "hf://owner/../x", "hf://owner/repo/./x"],
)
def test_traversal_rejected(uri: str) -> None:
    with pytest.raises(HubError, match="not allowed"):
        resolve_path(uri)


@pytest.mark.parametrize("uri", ["hf://", "hf://owner", "hf:///repo/x", "hf://owner\\repo/x"])
def test_malformed_uri(uri: str) -> None:
    with pytest.raises(HubError):
        parse_hf_uri(uri)


def test_file_needs_subpath() -> None:
    with pytest.raises(HubError, match="needs a path"):
        resolve_path("hf://owner/repo")


def test_offline_not_cached_names_download_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(**_: object) -> str:
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(HubError) as err:
        resolve_path("hf://Efficient-Large-Model/SANA-Streaming/dit/sana_streaming_ar.pth")
    assert "hf download Efficient-Large-Model/SANA-Streaming dit/sana_streaming_ar.pth" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(HubError) as err:
        resolve_path("hf://Lightricks/LTX-2/vae", kind="folder")
    assert 'hf download Lightricks/LTX-2 --include "vae/*"' in str(err.value)
    with pytest.raises(HubError) as err:
        resolve_path("hf://Efficient-Large-Model/gemma-2-2b-it", kind="folder")
    assert str(err.value).endswith("hf download Efficient-Large-Model/gemma-2-2b-it")


def test_real_offline_mode_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unmocked hub library in offline mode with an empty cache gives the same error."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(HubError) as err:
        resolve_path("hf://owner/repo/dit/model.pth")
    assert "hf download owner/repo dit/model.pth" in str(err.value)


def _http_error(cls: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
    request = httpx.Request("GET", "https://huggingface.co/owner/repo/resolve/main/x")
    return cls(f"{status} Client Error", response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("cls", "status"), [(GatedRepoError, 403), (HfHubHTTPError, 401), (HfHubHTTPError, 403)]
)
def test_auth_errors_say_login_and_licence(
    cls: type[HfHubHTTPError], status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(**_: object) -> str:
        raise _http_error(cls, status)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    with pytest.raises(HubError) as err:
        resolve_path("hf://owner/repo/x")
    message = str(err.value)
    assert "hf auth login" in message and "licence" in message and "huggingface.co/owner/repo" in message
