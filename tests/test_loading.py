"""Loading the released weights: `from_config` resolves every source before building the DiT, and the
VAE loads without diffusers' warning about `accelerate`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLLTX2Video
from helpers_hub import fake_hub_cache, use_cache

import sana_streaming.loading as loading_module
from sana_streaming.config import load_config
from sana_streaming.hub import HubError
from sana_streaming.models.vae import load_vae
from sana_streaming.pipeline import SanaStreamingPipeline


def _no_build(*_: object, **__: object) -> None:
    raise AssertionError("build_dit called before the sources were resolved")


def test_from_config_fails_on_missing_sources_before_building_the_dit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_cache(monkeypatch, tmp_path / "hub", offline=True)

    monkeypatch.setattr(loading_module, "build_dit", _no_build)
    with pytest.raises(HubError) as err:
        SanaStreamingPipeline.from_config(
            "tiny_random", model_path="hf://owner/missing@v1/dit/x.pth", device="cpu"
        )
    message = str(err.value)
    assert message.startswith("3 needed files or folders are not available")
    for command in (
        "hf download owner/missing dit/x.pth --revision v1",
        "hf download Lightricks/LTX-2 --include vae/config.json",
        "hf download Efficient-Large-Model/gemma-2-2b-it --include",
    ):
        assert command in message


def test_from_config_names_only_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The VAE cached, no text encoder wanted: the one error is the checkpoint's own."""
    folder = tmp_path / "vae"
    AutoencoderKLLTX2Video(**load_config("tiny_random").vae.architecture).save_pretrained(folder)
    fake_hub_cache(
        tmp_path / "hub", "Lightricks/LTX-2", {f"vae/{p.name}": p.read_bytes() for p in folder.iterdir()}
    )
    use_cache(monkeypatch, tmp_path / "hub", offline=True)
    monkeypatch.setattr(loading_module, "build_dit", _no_build)
    with pytest.raises(HubError, match=r"^hf://owner/missing/x\.pth is not in the local hub cache"):
        SanaStreamingPipeline.from_config(
            "tiny_random", model_path="hf://owner/missing/x.pth", device="cpu", load_text_encoder=False
        )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_vae_loads_without_the_accelerate_warning(tmp_path: Path) -> None:
    config = load_config("tiny_random").vae
    torch.manual_seed(3)
    saved = AutoencoderKLLTX2Video(**config.architecture)
    saved.save_pretrained(tmp_path / "vae")
    records = _Records()
    logger = logging.getLogger("diffusers")
    logger.addHandler(records)
    try:
        vae = load_vae(dataclasses.replace(config, vae_pretrained=str(tmp_path / "vae")), dtype=torch.float32)
    finally:
        logger.removeHandler(records)
    assert not [m for m in records.messages if "accelerate" in m], records.messages
    loaded = vae.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.state_dict().items())
