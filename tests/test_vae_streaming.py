"""Streamed LTX-2 VAE paths on a VAE with the released depths and narrow channels (CPU, float32).

Released structure: encoder layers (4, 6, 6, 2, 2) with (spatial, temporal, spatiotemporal,
spatiotemporal) downsampling, decoder layers (5, 5, 5, 5) with three spatiotemporal residual ×2
upsamplers, causal encoder, non-causal decoder. Weights are random N(0, 1/fan_in) so every layer matters.
References are diffusers' own whole-clip modules (`model.encoder`, `model.decoder`, `model.encode`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLLTX2Video
from golden import rel_err
from safetensors.torch import load_file

from sana_streaming.config import VAEConfig
from sana_streaming.models.vae import (
    LTX2_RELEASE_ARCHITECTURE,
    LTX2VAE,
    bidirectional_tiling,
    load_vae,
    release_encode_chunks,
)

LATENT = 16
# The released LTX-2 structure (depths, resampler types, causality, padding) with narrow channels.
ARCHITECTURE = {
    **LTX2_RELEASE_ARCHITECTURE,
    "latent_channels": LATENT,
    "block_out_channels": [8, 16, 32, 32],
    "decoder_block_out_channels": [8, 16, 32],
}
# Pixel frames an open stream of the exact decoder holds back, counted by hand from the structure: each
# non-causal 3-tap conv holds back 1 frame at its own frame rate (8, 4, 2, 1 pixel frames per frame).
# latent rate: conv_in + 10 mid-block convs + upsampler conv = 12 -> 96; ×2 rate: 10 + 1 -> 44;
# ×4: 10 + 1 -> 22; ×8: 10 resnet convs + conv_out -> 11. Total 173 = 21.6 latent frames.
RELEASED_DEPTH_LOOKAHEAD_FRAMES = 173


def _randomise(model: AutoencoderKLLTX2Video, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim > 1:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel()))
            else:
                base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                param.copy_(base + 0.1 * torch.randn(param.shape, generator=gen))
        model.latents_mean.copy_(0.5 * torch.randn(LATENT, generator=gen))
        model.latents_std.copy_(0.5 + 1.5 * torch.rand(LATENT, generator=gen))


@pytest.fixture(scope="module")
def model() -> AutoencoderKLLTX2Video:
    torch.manual_seed(0)
    vae_model = AutoencoderKLLTX2Video(**ARCHITECTURE).eval()
    _randomise(vae_model, seed=3)
    return vae_model


@pytest.fixture(scope="module")
def vae(model: AutoencoderKLLTX2Video) -> LTX2VAE:
    return LTX2VAE(model, "LTX2VAE_chunk_tile")


def _video(frames: int, height: int = 64, width: int = 64, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1


def _latents(frames: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(1, LATENT, frames, 2, 2, generator=torch.Generator().manual_seed(seed))


def test_released_depths(model: AutoencoderKLLTX2Video) -> None:
    assert [len(b.resnets) for b in model.encoder.down_blocks] + [len(model.encoder.mid_block.resnets)] == [
        4,
        6,
        6,
        2,
        2,
    ]
    assert [len(model.decoder.mid_block.resnets)] + [len(b.resnets) for b in model.decoder.up_blocks] == [
        5
    ] * 4
    assert [d.stride for b in model.encoder.down_blocks for d in b.downsamplers] == [
        (1, 2, 2),
        (2, 1, 1),
        (2, 2, 2),
        (2, 2, 2),
    ]
    assert model.encoder.is_causal and not model.decoder.is_causal


@pytest.mark.parametrize(
    "chunks",
    [
        [1, 8, 8, 8, 8],  # the release's calls
        [9, 16, 8],
        [1] + [4] * 8,  # leaves an unpaired frame at each temporal downsampler between calls
        [3, 5, 2, 7, 16],  # odd splits
        [33],
    ],
)
def test_chunked_encode_equals_whole(vae: LTX2VAE, model: AutoencoderKLLTX2Video, chunks: list[int]) -> None:
    video = _video(33)
    with torch.no_grad():
        whole = model.encode(video).latent_dist.mode()
    encoder = vae.chunked_encoder(normalise=False)
    parts = [encoder.push(chunk) for chunk in video.split(chunks, dim=2)]
    streamed = torch.cat([*parts, encoder.flush()], dim=2)
    assert streamed.shape == whole.shape == (1, LATENT, 5, 2, 2)
    assert rel_err(streamed, whole) <= 1e-5
    # latent frames come out as soon as final: after 8k+1 pixel frames, exactly k+1 latents
    pushed = 0
    emitted = 0
    for chunk, part in zip(chunks, parts, strict=True):
        pushed += chunk
        emitted += part.shape[2]
        assert emitted == (pushed - 1) // 8 + 1


@pytest.fixture(scope="module")
def model64(model: AutoencoderKLLTX2Video) -> AutoencoderKLLTX2Video:
    copy = AutoencoderKLLTX2Video(**ARCHITECTURE).eval()
    copy.load_state_dict(model.state_dict())
    return copy.double()


def test_chunked_encode_float64_is_exact_to_rounding(model64: AutoencoderKLLTX2Video) -> None:
    video = _video(17, seed=11).double()
    with torch.no_grad():
        whole = model64.encoder(video)[:, :LATENT]
    encoder = LTX2VAE(model64, "LTX2VAE_chunk_tile").chunked_encoder(normalise=False)
    streamed = torch.cat(
        [encoder.push(c) for c in video.split([1, 4, 4, 8], dim=2)] + [encoder.flush()], dim=2
    )
    assert rel_err(streamed, whole) <= 1e-12


def test_chunked_encode_rejects_wrong_length(vae: LTX2VAE) -> None:
    encoder = vae.chunked_encoder()
    encoder.push(_video(12))
    with pytest.raises(ValueError, match="8k\\+1"):
        encoder.flush()


def test_whole_streaming_encode_uses_release_chunks(vae: LTX2VAE) -> None:
    assert release_encode_chunks(969) == [1] + [8] * 121
    assert release_encode_chunks(24) == [8, 8, 8]
    video = _video(25)
    encoder = vae.chunked_encoder()
    expected = torch.cat([encoder.push(c) for c in video.split([1, 8, 8, 8], dim=2)], dim=2)
    assert torch.equal(vae.encode(video), expected)


@pytest.mark.parametrize("chunks", [[1] * 26, [3] * 8 + [2], [5, 2, 19], [26]])
def test_exact_decode_equals_whole(vae: LTX2VAE, model: AutoencoderKLLTX2Video, chunks: list[int]) -> None:
    latents = _latents(26)  # longer than the look-ahead (22)
    with torch.no_grad():
        whole = model.decoder(latents, None)
    decoder = vae.incremental_decoder("exact", normalise=False)
    assert decoder.lookahead_latents < latents.shape[2]
    video = torch.cat([decoder.push(c) for c in latents.split(chunks, dim=2)] + [decoder.flush()], dim=2)
    assert video.shape == whole.shape == (1, 3, 201, 64, 64)
    assert rel_err(video, whole) <= 1e-5


def test_exact_lookahead_measured_equals_computed(vae: LTX2VAE, model64: AutoencoderKLLTX2Video) -> None:
    """Measure which pixel frames depend on a latent frame (perturb it, diff whole float64 decodes) and
    compare with the look-ahead the decoder computes from its layers and with what it actually emits.

    The far edge of the dependency is tiny (~1e-16 relative after ~45 stacked convs), so the measurement
    runs in float64 and counts any change: frames that do not depend on the latent are bit-identical."""
    latents = _latents(26).double()
    with torch.no_grad():
        base = model64.decoder(latents, None)

    def first_dependent_pixel(j: int) -> int:
        bumped = latents.clone()
        bumped[:, :, j] += 1.0
        with torch.no_grad():
            changed = (model64.decoder(bumped, None) != base).any(dim=4).any(dim=3).any(dim=1)[0]
        return int(changed.nonzero()[0])

    # After latents 0..j-1, an open stream can only emit the pixel frames that do not depend on latent j.
    measured_lag = {j: (8 * (j - 1) + 1) - first_dependent_pixel(j) for j in (23, 25)}
    assert measured_lag[23] == measured_lag[25] == RELEASED_DEPTH_LOOKAHEAD_FRAMES

    decoder = vae.incremental_decoder("exact", normalise=False)
    assert decoder.lookahead_frames == RELEASED_DEPTH_LOOKAHEAD_FRAMES
    # latents 0..m own 8m+1 pixel frames; they are all out once 8n-7-lag >= 8m+1 for n latents pushed
    measured_latents = max(
        math.ceil((8 * m + 1 + 7 + RELEASED_DEPTH_LOOKAHEAD_FRAMES) / 8) - (m + 1) for m in range(16)
    )
    assert decoder.lookahead_latents == measured_latents == 22

    emitted = 0
    for n in range(1, 27):
        emitted += decoder.push(latents[:, :, n - 1 : n].float()).shape[2]
        assert emitted == max(0, 8 * (n - 1) + 1 - RELEASED_DEPTH_LOOKAHEAD_FRAMES)


def _restated_release_tiles(decoder: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """The rule of the release's `decode_chunk_tile` (docs/vae.md), non-incrementally: decode every
    4-latent tile, drop the first frame of each later tile, cascade a linear blend over up to 16 frames
    against the previous blended tile, keep 9 frames of the first tile and 8 of each later one."""
    count = latents.shape[2]
    with torch.no_grad():
        tiles = [decoder(latents[:, :, i : i + 4], None) for i in range(count)]
    blended = [tiles[0]]
    for tile in tiles[1:]:
        current = tile[:, :, 1:].clone()
        previous = blended[-1]
        extent = min(previous.shape[2], current.shape[2], 16)
        if extent:
            ramp = (torch.arange(extent, dtype=torch.float64) / extent).view(1, 1, extent, 1, 1)
            current[:, :, :extent] = (
                previous[:, :, previous.shape[2] - extent :].double() * (1 - ramp)
                + current[:, :, :extent].double() * ramp
            ).to(current.dtype)
        blended.append(current)
    kept = [blended[0][:, :, :9]] + [b[:, :, :8] for b in blended[1:]]
    return torch.cat(kept, dim=2)[:, :, : 8 * (count - 1) + 1]


@pytest.mark.parametrize("count,chunks", [(7, [3, 3, 1]), (7, [1] * 7), (5, [5]), (3, [2, 1]), (1, [1])])
def test_release_tiles_equal_restatement(
    vae: LTX2VAE, model: AutoencoderKLLTX2Video, count: int, chunks: list[int]
) -> None:
    latents = _latents(count, seed=13)
    expected = _restated_release_tiles(model.decoder, latents)
    decoder = vae.incremental_decoder("release_tiles", normalise=False)
    parts = [decoder.push(c) for c in latents.split(chunks, dim=2)]
    video = torch.cat([*parts, decoder.flush()], dim=2)
    assert video.shape == expected.shape == (1, 3, 8 * (count - 1) + 1, 64, 64)
    assert rel_err(video, expected) <= 1e-6
    # frames come out once their tiles are complete: 9 + 8 (n - 4) after n >= 4 latents
    pushed = emitted = 0
    for chunk, part in zip(chunks, parts, strict=True):
        pushed += chunk
        emitted += part.shape[2]
        assert emitted == (0 if pushed < 4 else 9 + 8 * (pushed - 4))
    if count >= 5:  # the tiles see only 4 latents, so this is not the whole decode
        with torch.no_grad():
            assert rel_err(video, model.decoder(latents, None)) > 1e-2


def test_release_tiles_lookahead(vae: LTX2VAE) -> None:
    assert vae.incremental_decoder("release_tiles").lookahead_latents == 3


def test_streaming_whole_decode_is_release_tiles(vae: LTX2VAE, model: AutoencoderKLLTX2Video) -> None:
    latents = _latents(6, seed=17)
    raw = vae.denormalise(latents)
    assert rel_err(vae.decode(latents), _restated_release_tiles(model.decoder, raw)) <= 1e-6
    exact = LTX2VAE(model, "LTX2VAE_chunk_tile", decode="exact")
    with torch.no_grad():
        assert rel_err(exact.decode(latents), model.decoder(raw, None)) <= 1e-5


def test_state_bytes_bounded(vae: LTX2VAE) -> None:
    """Bytes held between calls depend on the chunk shape, not on how many chunks came before."""
    encoder = vae.chunked_encoder()
    frames = _video(8, height=32, width=32)
    encoder.push(frames[:, :, :1])
    held = {}
    for n in range(1, 51):
        encoder.push(frames)
        held[n] = encoder.state_bytes()
    assert held[5] == held[50] > 0

    # The exact decoder's state fills while its look-ahead (22 latents) fills, then stays flat: with
    # 5-latent chunks it is full after 5 chunks; with the DiT's 3-latent chunks after 8.
    for mode, chunk, full_after in (("release_tiles", 3, 5), ("exact", 5, 5), ("exact", 3, 8)):
        decoder = vae.incremental_decoder(mode)
        latents = _latents(chunk, seed=19)
        held = {}
        for n in range(1, 51):
            decoder.push(latents)
            held[n] = decoder.state_bytes()
        assert held[full_after] == held[50] > 0, (mode, chunk)
        assert max(held.values()) == held[50], (mode, chunk)


def test_bidirectional_settings_field_by_field() -> None:
    config = VAEConfig(
        vae_type="LTX2VAE_diffusers",
        weight_dtype="float32",
        vae_latent_dim=LATENT,
        architecture=ARCHITECTURE,
    )
    vae = load_vae(config, random_weights=True)
    model = vae.model
    assert vae.mode == "bidirectional"
    # Values of the release's bidirectional script (docs/vae.md), written out here on purpose.
    assert model.use_tiling is True
    assert model.tile_sample_min_height == 512
    assert model.tile_sample_min_width == 512
    assert model.tile_sample_stride_height == 448
    assert model.tile_sample_stride_width == 448
    assert model.use_framewise_encoding is True
    assert model.use_framewise_decoding is True
    assert model.tile_sample_min_num_frames == 96
    assert model.tile_sample_stride_num_frames == 64
    assert bidirectional_tiling(config).tile_sample_min_num_frames == 96

    _randomise(model, seed=23)
    video = _video(1, height=576, width=64, seed=29)  # taller than one 512-pixel tile
    with torch.no_grad():
        untiled = vae.normalise(model.encoder(video)[:, :LATENT])
    tiled = vae.encode(video)
    assert tiled.shape == untiled.shape == (1, LATENT, 1, 18, 2)
    assert rel_err(tiled, untiled) > 1e-3

    latents = torch.randn(1, LATENT, 1, 18, 2, generator=torch.Generator().manual_seed(31))
    with torch.no_grad():
        untiled_video = model.decoder(vae.denormalise(latents), None)
    tiled_video = vae.decode(latents)
    assert tiled_video.shape == untiled_video.shape == (1, 3, 1, 576, 64)
    assert rel_err(tiled_video, untiled_video) > 1e-3


def test_streaming_mode_leaves_diffusers_untiled(vae: LTX2VAE) -> None:
    assert vae.mode == "streaming"
    assert vae.model.use_tiling is False and vae.model.use_framewise_decoding is False


def test_restatement_itself_matches_release() -> None:
    """Check the test's own restatement against the release's `decode_chunk_tile` outputs."""
    golden_dir = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
    if not (golden_dir / "vae_tiles.safetensors").is_file():
        pytest.skip("golden fixtures absent")
    golden = load_file(golden_dir / "vae_tiles.safetensors")
    config = json.loads((golden_dir / "vae_config.json").read_text())
    config.pop("class_name")
    fixture_model = AutoencoderKLLTX2Video(**config).eval()
    state = {
        k.removeprefix("state_dict."): v.float() for k, v in golden.items() if k.startswith("state_dict.")
    }
    fixture_model.load_state_dict(state)
    for latents, expected in (
        (golden["output.encode_chunked_causal"], golden["output.decode_chunk_tile"]),
        (golden["input.latent_long"], golden["output.decode_chunk_tile_long"]),
    ):
        assert rel_err(_restated_release_tiles(fixture_model.decoder, latents), expected) <= 1e-4
