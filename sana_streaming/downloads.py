"""What an edit reads from the hub or the disk, checked or fetched all at once.

`model_needs` lists the released weights a pipeline loads (DiT checkpoint, VAE folder, text encoder +
tokenizer folder, from the config's sources); `edit_needs` adds the inputs of one edit (the video when
it is `hf://`, the debug latent / text-embedding files). `check_needs` looks each up in the local hub
cache without any network access (for `--dry_run`); `resolve_needs` fetches them all before anything
large is built, and names every missing one in one error.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sana_streaming.config import TEXT_ENCODER_TABLE, ConfigError, SanaStreamingConfig, TextEncoderConfig
from sana_streaming.hub import (
    LOGIN_HINT,
    HubError,
    Source,
    find_cached,
    is_hub_uri,
    missing_command,
    parse_hf_uri,
    resolve,
    with_login_hint,
)

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")  # a bare hub repo id, "owner/repo", as the release passes them
# What a VAE folder needs (diffusers `AutoencoderKLLTX2Video`): fetched and required alike.
VAE_PATTERNS = ("config.json", "*.safetensors")
# What to fetch of a hub text-encoder repo (config, tokenizer, weights), and what must be there.
TEXT_ENCODER_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model")
TEXT_ENCODER_REQUIRED = ("config.json", "tokenizer_config.json", "*.safetensors")


@dataclass(frozen=True)
class Need:
    """One file or folder an edit reads; `key` is the `--dry_run` plan key it is shown under."""

    key: str
    source: Source


@dataclass(frozen=True)
class NeedStatus:
    """A need and its local copy (None: not there)."""

    need: Need
    local: Path | None

    @property
    def shown(self) -> str:
        """The local path, or the source marked as missing (for `--dry_run`)."""
        return str(self.local) if self.local is not None else f"{self.need.source.path} (missing)"


def vae_source(vae_pretrained: str) -> Source:
    """The VAE folder of `vae_pretrained`: a local folder, an `hf://owner/repo[@rev][/sub]` URI, or a
    bare `owner/repo` (the release's form); a whole hub repo means its subfolder `vae`."""
    local = Path(vae_pretrained).expanduser()
    if not is_hub_uri(vae_pretrained) and (local.exists() or not _REPO_ID.fullmatch(vae_pretrained)):
        return Source(str(local), "folder")
    uri = vae_pretrained.rstrip("/") if is_hub_uri(vae_pretrained) else f"hf://{vae_pretrained}"
    if not parse_hf_uri(uri).subpath:
        uri = f"{uri}/vae"
    return Source(uri, "folder", allow_patterns=VAE_PATTERNS, required=VAE_PATTERNS)


def text_encoder_source(config: TextEncoderConfig, source: str | Path | None = None) -> Source:
    """The text-encoder folder: `source` (a folder, an `hf://` URI or a bare repo id), or by default the
    repo of `config.text_encoder_name` (`Efficient-Large-Model/gemma-2-2b-it`)."""
    if source is None:
        entry = TEXT_ENCODER_TABLE.get(config.text_encoder_name)
        if entry is None:
            raise ConfigError(
                f"unknown text encoder {config.text_encoder_name!r}; pass a folder or hf:// URI"
            )
        source = entry["repo"]
    text = str(source)
    if not is_hub_uri(text) and not Path(text).expanduser().exists() and _REPO_ID.fullmatch(text):
        text = f"hf://{text}"
    if not is_hub_uri(text):
        return Source(str(Path(text).expanduser()), "folder")
    return Source(text, "folder", allow_patterns=TEXT_ENCODER_PATTERNS, required=TEXT_ENCODER_REQUIRED)


def model_needs(config: SanaStreamingConfig, model_path: str, *, text_encoder: bool = True) -> list[Need]:
    """The released weights a pipeline loads: DiT checkpoint, VAE, the causal-decoder VAE of
    `vae.decode: causal`, and (unless not wanted) the text encoder."""
    needs = [Need("model_path", Source(model_path)), Need("vae", vae_source(config.vae.vae_pretrained))]
    if config.vae.decode == "causal":
        needs.append(Need("causal_vae", vae_source(config.vae.causal_vae_pretrained)))
    if text_encoder:
        needs.append(Need("text_encoder", text_encoder_source(config.text_encoder)))
    return needs


def edit_needs(
    config: SanaStreamingConfig,
    *,
    model_path: str | None,
    video_path: str | None,
    input_latent_path: str | None = None,
    input_text_embed_path: str | None = None,
) -> list[Need]:
    """Everything an edit reads: the weights (none with random weights, `model_path=None`), the video
    when it is `hf://` (local files, URLs and pipes are the reader's business) unless latents replace it,
    and the debug files. The text encoder is not needed when text embeddings are given."""
    needs = []
    if model_path is not None:
        needs += model_needs(config, model_path, text_encoder=input_text_embed_path is None)
    if input_latent_path is not None:
        needs.append(Need("input_latent_path", Source(input_latent_path)))
    elif video_path is not None and is_hub_uri(video_path):
        needs.append(Need("video_path", Source(video_path)))
    if input_text_embed_path is not None:
        needs.append(Need("input_text_embed_path", Source(input_text_embed_path)))
    return needs


def check_needs(needs: Sequence[Need]) -> list[NeedStatus]:
    """Each need with its local copy, looked up in the hub cache or on disk without downloading."""
    return [NeedStatus(need, find_cached(need.source)) for need in needs]


def report_missing(statuses: Sequence[NeedStatus], stream: TextIO | None = None) -> None:
    """Print one `hf download ...` line per missing hub item (a `missing:` line for a local path) and
    raise `HubError` with a one-line summary if anything is missing."""
    stream = stream or sys.stderr
    missing = [status for status in statuses if status.local is None]
    for status in missing:
        command = missing_command(status.need.source)
        what = f"{status.need.key}: {status.need.source.path}"
        print(f"{command}  # {what}" if command else f"missing: {what} does not exist", file=stream)
    if missing:
        raise HubError(
            with_login_hint(
                f"{len(missing)} of {len(statuses)} needed files or folders are not in the local hub "
                "cache or on disk (listed above, each hub item with its hf download command); a run "
                "without HF_HUB_OFFLINE=1 downloads hub items on first use"
            )
        )


def resolve_needs(needs: Sequence[Need]) -> dict[str, Path]:
    """Each need's local path by key, fetched into the hub cache if needed; every failure is named in
    one `HubError`."""
    found: dict[str, Path] = {}
    errors = []
    for need in needs:
        try:
            found[need.key] = resolve(need.source)
        except HubError as exc:
            errors.append(str(exc))
    if len(errors) == 1:
        raise HubError(errors[0])
    if errors:  # the login hint once at the end, not after each error
        hint = f"; {LOGIN_HINT}"
        joined = " | ".join(error.removesuffix(hint) for error in errors)
        message = f"{len(errors)} needed files or folders are not available: {joined}"
        raise HubError(with_login_hint(message) if any(e.endswith(hint) for e in errors) else message)
    return found


__all__ = [
    "TEXT_ENCODER_PATTERNS",
    "TEXT_ENCODER_REQUIRED",
    "VAE_PATTERNS",
    "Need",
    "NeedStatus",
    "check_needs",
    "edit_needs",
    "model_needs",
    "report_missing",
    "resolve_needs",
    "text_encoder_source",
    "vae_source",
]
