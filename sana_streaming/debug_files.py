"""The release's debug files: `--save_latent` (the [noise, source, result] latents of an edit, saved
atomically), `--input_latent_path` (noise and source latents given instead of a video) and
`--input_text_embed_path` (encoded prompts given instead of text)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sana_streaming.checkpoint import load_weights_only, refusal_reason
from sana_streaming.conditioning import PromptPair, TextConditioning
from sana_streaming.errors import EditError
from sana_streaming.files import make_temp_beside, publish


class DebugFileError(EditError):
    """A `--input_latent_path` / `--input_text_embed_path` file has the wrong content."""


@dataclass
class SourceLatents:
    """Latents given instead of a video (the release's `--input_latent_path`): (1, C, T, h, w) each."""

    noise: Tensor
    source: Tensor


def load_latent_file(path: str | Path) -> SourceLatents:
    """Read a `--save_latent` file (3, C, T, h, w): entry 0 the noise, 1 the source (2 is ignored)."""
    stacked = _load_debug_file(path)
    if not isinstance(stacked, Tensor) or stacked.ndim != 5 or stacked.shape[0] < 2:
        raise DebugFileError(f"{path}: expected a tensor (3, C, T, h, w) of [noise, source, result] latents")
    return SourceLatents(noise=stacked[0:1].float(), source=stacked[1:2])


def load_text_embed_file(path: str | Path) -> PromptPair:
    """Read a dict with `prompt_embeds`, `prompt_mask`, `negative_embeds`, `negative_mask`: the encoded
    prompts given instead of text (the release's `--input_text_embed_path`)."""
    data = _load_debug_file(path)
    keys = ("prompt_embeds", "prompt_mask", "negative_embeds", "negative_mask")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise DebugFileError(f"{path}: expected a dict with keys {list(keys)}")
    return PromptPair(
        positive=TextConditioning(data["prompt_embeds"], data["prompt_mask"]),
        negative=TextConditioning(data["negative_embeds"], data["negative_mask"]),
    )


def _load_debug_file(path: str | Path) -> object:
    """`torch.load` with weights only; anything unreadable (text, truncated, a pickle carrying code)
    becomes one `DebugFileError`."""
    try:
        return load_weights_only(path)
    except pickle.UnpicklingError as exc:
        raise DebugFileError(f"{path}: refused, {refusal_reason(exc)}") from exc
    except Exception as exc:  # the unpickler fails on arbitrary bytes with many error types
        raise DebugFileError(f"{path}: not a torch tensor file ({type(exc).__name__}: {exc})") from exc


def save_latent_file(latents: Tensor, path: Path, overwrite: bool) -> None:
    """Write the `--save_latent` tensor to `path` atomically; an existing file is kept unless `overwrite`."""
    if path.exists() and not overwrite:
        raise EditError(f"{path} exists (use --overwrite to replace it)")
    tmp = make_temp_beside(path)
    try:
        torch.save(latents, tmp)
        publish(tmp, path, overwrite=overwrite)
    except FileExistsError:
        raise EditError(f"{path} appeared while writing; kept (use --overwrite to replace it)") from None
    finally:
        tmp.unlink(missing_ok=True)
