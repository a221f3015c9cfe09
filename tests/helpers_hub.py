"""Offline stand-ins for the Hugging Face hub: a fake hub cache laid out the way huggingface_hub reads it,
and a fake network (huggingface_hub's own client factory with a mock transport) that records requests
and the backoff sleeps instead of waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import huggingface_hub.utils._http as hub_http
import pytest

try:  # huggingface_hub 2 builds on httpx2, version 1 on httpx
    import httpx2 as httpx
except ImportError:
    import httpx

from sana_streaming import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(
    cache: Path,
    repo: str,
    files: dict[str, bytes],
    *,
    commit: str = COMMIT,
    refs: tuple[str, ...] = ("main",),
) -> Path:
    """`models--owner--repo/refs/<ref>` → `snapshots/<commit>/` holding `files`; returns the snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    for ref in refs:
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    for name, data in files.items():
        path = snapshot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def use_cache(monkeypatch: pytest.MonkeyPatch, cache: Path, *, offline: bool) -> None:
    """Point huggingface_hub at `cache` with HF_HUB_OFFLINE on or off, and forget any earlier
    'hub unreachable' finding of this process."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(hub, "_connection", hub._Connection())


@dataclass
class FakeNetwork:
    """What the hub library sent (`requests`: method and URL) and how long it would have slept."""

    requests: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)


@contextmanager
def fake_network(
    monkeypatch: pytest.MonkeyPatch, respond: Callable[[httpx.Request], httpx.Response]
) -> Iterator[FakeNetwork]:
    """Every huggingface_hub request goes to `respond` (which may raise, e.g. `httpx.ConnectError`)."""
    network = FakeNetwork()

    def handler(request: httpx.Request) -> httpx.Response:
        network.requests.append(f"{request.method} {request.url}")
        return respond(request)

    monkeypatch.setattr(hub_http.time, "sleep", network.sleeps.append)
    huggingface_hub.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(handler)))
    try:
        yield network
    finally:
        huggingface_hub.set_client_factory(hub_http.default_client_factory)


def no_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)


def refuse(status: int, error_code: str | None) -> Callable[[httpx.Request], httpx.Response]:
    """A hub answering every request with `status` and the hub's `X-Error-Code` header."""
    headers = {"X-Error-Code": error_code} if error_code else {}
    return lambda request: httpx.Response(status, headers=headers, request=request)


def stub_model_folders(cache: Path) -> None:
    """Stand-ins for the VAE and Gemma folders: enough files to count as cached, not loadable."""
    fake_hub_cache(cache, "Lightricks/LTX-2", {"vae/config.json": b"{}", "vae/m.safetensors": b"w"})
    fake_hub_cache(cache, "Efficient-Large-Model/gemma-2-2b-it", {
        "config.json": b"{}", "tokenizer_config.json": b"{}", "model.safetensors": b"w",
    })  # fmt: skip
