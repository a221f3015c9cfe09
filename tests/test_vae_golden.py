"""The streamed VAE paths against the release's outputs (the golden fixture `vae_tiles`).

The fixture VAE is diffusers' `AutoencoderKLLTX2Video` built from `vae_config.json` with the stored
bf16-exact weights; the reference ran in float32 on CPU, so float32 results agree to ~1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLLTX2Video
from golden import rel_err
from safetensors.torch import load_file

from sana_streaming.config import ConfigError, VAEConfig, load_config
from sana_streaming.models.vae import LTX2VAE, VAELoadError, load_vae, vae_mode
from sana_streaming.models.vae.decoder import IncrementalDecoder

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
pytestmark = pytest.mark.skipif(
    not (GOLDEN / "vae_tiles.safetensors").is_file(), reason="golden fixtures absent"
)
TOLERANCE = 1e-4  # the fixtures' suggested float32 tolerance for VAE encode, decode and normalisation


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(GOLDEN / "vae_tiles.safetensors")


@pytest.fixture(scope="module")
def model(golden: dict[str, torch.Tensor]) -> AutoencoderKLLTX2Video:
    config = json.loads((GOLDEN / "vae_config.json").read_text())
    config.pop("class_name")
    vae_model = AutoencoderKLLTX2Video(**config).eval()
    prefix = "state_dict."
    state = {k[len(prefix) :]: v.float() for k, v in golden.items() if k.startswith(prefix)}
    vae_model.load_state_dict(state, strict=True)
    return vae_model


@pytest.fixture(scope="module")
def vae(model: AutoencoderKLLTX2Video) -> LTX2VAE:
    return LTX2VAE(model, "LTX2VAE_chunk_tile")


@pytest.mark.parametrize("chunks", [[1, 8, 8, 8], [9, 16], [25], [2, 3, 20], [1, 4, 4, 4, 4, 8]])
def test_chunked_encode_matches_release(
    vae: LTX2VAE, golden: dict[str, torch.Tensor], chunks: list[int]
) -> None:
    video = golden["input.video"].float()
    encoder = vae.chunked_encoder(normalise=False)
    latents = torch.cat([encoder.push(c) for c in video.split(chunks, dim=2)] + [encoder.flush()], dim=2)
    assert rel_err(latents, golden["output.encode_chunked_causal"]) <= TOLERANCE
    assert rel_err(latents, golden["output.encode_whole"]) <= TOLERANCE


def test_whole_encode_matches_release_normalised(vae: LTX2VAE, golden: dict[str, torch.Tensor]) -> None:
    assert rel_err(vae.encode(golden["input.video"].float()), golden["output.latent_normalised"]) <= TOLERANCE


def decode_in_chunks(decoder: IncrementalDecoder, latents: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Push `latents` through an incremental decoder in chunks of `chunks` latent frames, then flush."""
    return torch.cat([decoder.push(c) for c in latents.split(chunks, dim=2)] + [decoder.flush()], dim=2)


@pytest.mark.parametrize("chunks", [[4], [1, 1, 1, 1], [3, 1], [2, 2], [1, 3]])
def test_release_tiles_match_release(
    vae: LTX2VAE, golden: dict[str, torch.Tensor], chunks: list[int]
) -> None:
    decoder = vae.incremental_decoder("release_tiles", normalise=False)
    video = decode_in_chunks(decoder, golden["output.encode_chunked_causal"], chunks)
    assert video.shape == golden["output.decode_chunk_tile"].shape
    assert rel_err(video, golden["output.decode_chunk_tile"]) <= TOLERANCE


@pytest.mark.parametrize("chunks", [[5], [1] * 5, [3, 2], [4, 1]])
def test_release_tiles_match_release_long(
    vae: LTX2VAE, golden: dict[str, torch.Tensor], chunks: list[int]
) -> None:
    """Five latents: tile 0 sees latents 0-3 only (a whole decode differs in the first 9 frames by ~1.2)."""
    decoder = vae.incremental_decoder("release_tiles", normalise=False)
    video = decode_in_chunks(decoder, golden["input.latent_long"], chunks)
    assert video.shape == golden["output.decode_chunk_tile_long"].shape == (1, 3, 33, 64, 64)
    assert rel_err(video, golden["output.decode_chunk_tile_long"]) <= TOLERANCE


def test_release_decode_from_normalised(vae: LTX2VAE, golden: dict[str, torch.Tensor]) -> None:
    """The release's `vae_decode`: de-normalise, then `decode_chunk_tile` (golden diagnostic: 4.3e-6)."""
    assert (
        rel_err(vae.decode(golden["output.latent_normalised"]), golden["output.decode_chunk_tile"])
        <= TOLERANCE
    )


@pytest.mark.parametrize("chunks", [[4], [1, 1, 1, 1], [1, 3]])
def test_exact_decode_matches_whole(vae: LTX2VAE, golden: dict[str, torch.Tensor], chunks: list[int]) -> None:
    decoder = vae.incremental_decoder("exact", normalise=False)
    assert (decoder.lookahead_latents, decoder.lookahead_frames) == (7, 53)  # one layer per block
    video = decode_in_chunks(decoder, golden["output.encode_chunked_causal"], chunks)
    assert rel_err(video, golden["output.decode_whole"]) <= TOLERANCE


def test_normalisation_round_trip_exact(vae: LTX2VAE, golden: dict[str, torch.Tensor]) -> None:
    raw = golden["output.encode_chunked_causal"]
    normalised = vae.normalise(raw)
    assert torch.equal(normalised, golden["output.latent_normalised"])
    assert torch.equal(
        vae.denormalise(golden["output.latent_normalised"]), golden["output.latent_denormalised"]
    )


def test_normalisation_runs_in_the_latents_dtype(vae: LTX2VAE, golden: dict[str, torch.Tensor]) -> None:
    """The release casts mean/std to the latents' dtype (bf16 in the release), operation order kept."""
    raw = golden["output.encode_chunked_causal"].bfloat16()
    mean = vae.model.latents_mean.view(1, -1, 1, 1, 1).bfloat16()
    std = vae.model.latents_std.view(1, -1, 1, 1, 1).bfloat16()
    normalised = vae.normalise(raw)
    assert normalised.dtype == torch.bfloat16
    assert torch.equal(normalised, (raw - mean) * 1.0 / std)
    assert torch.equal(vae.denormalise(normalised), normalised * std / 1.0 + mean)
    assert not torch.equal(normalised, vae.normalise(raw.float()).bfloat16())  # the dtype matters


def test_load_from_local_folder(model: AutoencoderKLLTX2Video, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "vae")
    config = VAEConfig(vae_pretrained=str(tmp_path), weight_dtype="float32", vae_latent_dim=16)
    vae = load_vae(config)
    assert vae.mode == "streaming" and vae.dtype == torch.float32
    assert vae.model.config.decoder_causal is False and vae.model.decoder.is_causal is False
    assert vae.model.encoder.is_causal is True
    for name, tensor in model.state_dict().items():
        assert torch.equal(vae.model.state_dict()[name], tensor), name
    with pytest.raises(VAELoadError, match="latent channels"):
        load_vae(VAEConfig(vae_pretrained=str(tmp_path), weight_dtype="float32", vae_latent_dim=128))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(VAELoadError, match="no VAE here"):
        load_vae(VAEConfig(vae_pretrained=str(tmp_path)))
    with pytest.raises(VAELoadError, match="causal-decoder"):
        vae_mode("LTX2VAE_diffusers_causal")
    with pytest.raises(VAELoadError, match="unsupported vae_type"):
        vae_mode("WanVAE")
    with pytest.raises(ConfigError, match=r"vae\.decode"):
        VAEConfig(decode="fast")  # type: ignore[arg-type]


def test_tiny_random_config_builds_a_working_vae() -> None:
    config = load_config("tiny_random")
    assert config.dit.in_channels == config.vae.vae_latent_dim == 16
    vae = load_vae(config.vae, random_weights=True)
    video = torch.rand(1, 3, 17, 64, 64) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 16, 3, 2, 2)
    assert vae.decode(latents).shape == (1, 3, 17, 64, 64)
