"""`--decode causal`: the decoder of a causal-decoder VAE (the release's ltx2_causal_vae_0516 folder) streamed
with no look-ahead, loaded beside the LTX-2 VAE that encodes the source (CPU, float32, narrow channels)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLLTX2Video
from golden import rel_err
from helpers_video import make_clip, probe

from sana_streaming.cli import main
from sana_streaming.config import VAEConfig, load_config
from sana_streaming.downloads import VAE_PATTERNS, edit_needs
from sana_streaming.hub import Source
from sana_streaming.models.vae import LTX2_RELEASE_ARCHITECTURE, VAELoadError, load_vae

LATENT = 16
ARCHITECTURE = {
    **LTX2_RELEASE_ARCHITECTURE,
    "latent_channels": LATENT,
    "block_out_channels": [8, 16, 32, 32],
    "decoder_block_out_channels": [8, 16, 32],
    "layers_per_block": [1, 1, 1, 1, 1],
    "decoder_layers_per_block": [1, 1, 1, 1],
}


def _config(**changes: object) -> VAEConfig:
    return VAEConfig(
        **{"vae_latent_dim": LATENT, "architecture": ARCHITECTURE, "decode": "causal", **changes}
    )


def _latents(frames: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(1, LATENT, frames, 2, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vae():
    return load_vae(_config(), dtype=torch.float32, random_weights=True)


def test_the_causal_vae_is_a_second_model_with_only_a_causal_decoder(vae) -> None:
    causal = vae.causal_decoder
    assert causal is not None and causal is not vae.model
    assert causal.config.decoder_causal and not vae.model.config.decoder_causal
    assert causal.encoder is None and vae.model.encoder is not None
    # drawn with its own seed: not the LTX-2 VAE's decoder with a causal flag
    assert not torch.equal(causal.decoder.conv_in.conv.weight, vae.model.decoder.conv_in.conv.weight)


def test_causal_decode_has_no_look_ahead(vae) -> None:
    decoder = vae.incremental_decoder()
    assert decoder.lookahead_latents == 0 and decoder.lookahead_frames == 0
    assert vae.incremental_decoder("exact").lookahead_latents > 0  # the LTX-2 decoder is not causal


def test_streamed_causal_decode_equals_the_whole_causal_decoder(vae) -> None:
    """Pushed 1 + 3 + 3 + 2 latents, every push returns all of its frames at once (8 per latent, 1 for the
    first), and together they equal diffusers' whole-clip call of the causal decoder on the latents
    de-normalised by the causal VAE's own statistics."""
    latents = _latents(9)
    causal = vae.causal_decoder
    mean = causal.latents_mean.view(1, -1, 1, 1, 1)
    std = causal.latents_std.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        expected = causal.decoder(latents * std / causal.config.scaling_factor + mean, None)
    decoder = vae.incremental_decoder()
    parts = []
    for piece in latents.split([1, 3, 3, 2], dim=2):
        out = decoder.push(piece)
        assert out.shape[2] == 8 * piece.shape[2] - (1 if not parts else 0) * 7
        parts.append(out)
    parts.append(decoder.flush())
    assert parts[-1].shape[2] == 0
    got = torch.cat(parts, dim=2)
    assert got.shape == expected.shape == (1, 3, 65, 64, 96)
    assert rel_err(got, expected) <= 1e-5
    assert rel_err(got, vae.decode(latents)) <= 1e-5  # the streaming VAE's whole decode uses it too


def test_loads_a_folder_without_vae_subfolder_and_refuses_a_non_causal_one(tmp_path) -> None:
    for name, causal in (("causal", True), ("plain", False)):
        torch.manual_seed(0)
        AutoencoderKLLTX2Video(**{**ARCHITECTURE, "decoder_causal": causal}).save_pretrained(tmp_path / name)
    config = _config(vae_pretrained=str(tmp_path / "plain"), causal_vae_pretrained=str(tmp_path / "causal"))
    vae = load_vae(config, dtype=torch.float32)
    saved = AutoencoderKLLTX2Video.from_pretrained(tmp_path / "causal", low_cpu_mem_usage=False)
    assert torch.equal(vae.causal_decoder.decoder.conv_out.conv.weight, saved.decoder.conv_out.conv.weight)
    refused = _config(vae_pretrained=str(tmp_path / "plain"), causal_vae_pretrained=str(tmp_path / "plain"))
    with pytest.raises(VAELoadError, match="its decoder is not causal"):
        load_vae(refused, dtype=torch.float32)
    # without `decode: causal` nothing else is loaded
    assert load_vae(_config(decode="exact"), dtype=torch.float32, random_weights=True).causal_decoder is None


def test_edits_need_the_causal_vae_folder() -> None:
    config = load_config("sana_streaming_2b_720p").with_decode("causal")
    needs = edit_needs(config, model_path="hf://o/r/dit.pth", video_path="clip.mp4")
    assert [n.key for n in needs] == ["model_path", "vae", "causal_vae", "text_encoder"]
    assert needs[2].source == Source(
        "hf://Efficient-Large-Model/SANA-Streaming/ltx2_causal_vae_0516", "folder", VAE_PATTERNS, VAE_PATTERNS
    )


def test_cli_edits_with_the_causal_decode_and_refuses_it_in_bidirectional_mode(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip.mp4", num_frames=33, fps=16, width=96, height=64)
    args = ["--config", "tiny_random", "--random_weights", "--device", "cpu", "--video_path", "clip.mp4",
            "--prompt", "make it blue", "--height", "64", "--width", "96", "--decode", "causal"]  # fmt: skip
    assert main([*args, "--num_frames", "33"]) == 0
    assert probe(tmp_path / "outputs" / "clip_long_streaming.mp4")["frames"] == 33
    capsys.readouterr()
    assert main([*args, "--mode", "bidirectional_short", "--num_frames", "33"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sana-streaming: error: --decode causal needs long_streaming; bidirectional_short decodes the clip "
        "whole, as the release does"
    ]
