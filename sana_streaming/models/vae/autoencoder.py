"""The LTX-2 VAE as the pipeline uses it: loading, normalised latents, whole-clip and streamed paths.

Weights load through diffusers' `AutoencoderKLLTX2Video` (the same state dict, names and shapes
as the release's causal wrapper). Causality comes from the loaded config (`encoder_causal`, `decoder_causal`).
The release treats the VAE differently per mode (docs/vae.md):

- streaming (`vae_type: LTX2VAE_chunk_tile`): untiled causal encode in calls of `F mod 8` (or 8) then 8
  frames, and the temporal-tile decode; here `ChunkedEncoder` and `IncrementalDecoder`.
- bidirectional (`vae_type: LTX2VAE_diffusers`): diffusers' own `encode` / `decode` with spatial tiling
  512/448 and the framewise flags (`bidirectional_tiling`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKLLTX2Video
from diffusers.utils import is_accelerate_available
from torch import Tensor

from sana_streaming.config import VAEConfig, VAEDecode
from sana_streaming.downloads import vae_source
from sana_streaming.hub import resolve
from sana_streaming.models.random_init import redraw_
from sana_streaming.models.vae.decoder import IncrementalDecoder
from sana_streaming.models.vae.encoder import ChunkedEncoder
from sana_streaming.models.vae.fast_modules import swap_fast_modules_
from sana_streaming.models.vae.normalise import LatentStatistics

VAEMode = Literal["streaming", "bidirectional"]

# Constructor config of the public LTX-2 VAE (`Lightricks/LTX-2`, subfolder `vae`), used to build a
# random-weight VAE of the released size. Source: diffusers'
# scripts/convert_ltx2_to_diffusers.py (the LTX-2 2.0 config that wrote the published vae/config.json).
LTX2_RELEASE_ARCHITECTURE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": [256, 512, 1024, 2048],
    "decoder_block_out_channels": [256, 512, 1024],
    "layers_per_block": [4, 6, 6, 2, 2],
    "decoder_layers_per_block": [5, 5, 5, 5],
    "spatio_temporal_scaling": [True, True, True, True],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [False, False, False, False],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "spatiotemporal"],
    "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2],
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
    "encoder_spatial_padding_mode": "zeros",
    "decoder_spatial_padding_mode": "reflect",
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
}

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class VAELoadError(RuntimeError):
    """The VAE could not be loaded (bad path, missing files, unsupported type)."""


def vae_mode(vae_type: str) -> VAEMode:
    """The release's `get_vae` branch for a `vae_type`, tested by substring in the release's order."""
    if "LTX2VAE_diffusers_causal" in vae_type:
        raise VAELoadError(
            f"vae_type {vae_type!r} needs the separately released causal-decoder VAE, which the V2V "
            "pipeline does not use; use LTX2VAE_chunk_tile (streaming) or LTX2VAE_diffusers (bidirectional)"
        )
    if "LTX2VAE_chunk_tile" in vae_type:
        return "streaming"
    if "LTX2VAE_diffusers" in vae_type:
        return "bidirectional"
    raise VAELoadError(f"unsupported vae_type {vae_type!r}; expected LTX2VAE_chunk_tile or LTX2VAE_diffusers")


@dataclass(frozen=True)
class DiffusersTiling:
    """The tiling attributes of diffusers' VAE that the bidirectional release sets (docs/vae.md)."""

    use_tiling: bool
    tile_sample_min_height: int
    tile_sample_min_width: int
    tile_sample_stride_height: int
    tile_sample_stride_width: int
    use_framewise_encoding: bool
    use_framewise_decoding: bool
    tile_sample_min_num_frames: int
    tile_sample_stride_num_frames: int


def bidirectional_tiling(config: VAEConfig) -> DiffusersTiling:
    """Settings of the bidirectional mode. Source: meefs/Sana @ 5498e5b,
    inference_video_scripts/v2v/inference_sana_streaming.py: `vae.enable_tiling()` with no arguments
    (diffusers' defaults 512/512 and stride 448/448), both framewise flags set True, and the frame
    counts taken from the config (`tile_sample_min_num_frames` 96, `tile_sample_stride_num_frames` 64)."""
    return DiffusersTiling(
        use_tiling=True,
        tile_sample_min_height=512,
        tile_sample_min_width=512,
        tile_sample_stride_height=448,
        tile_sample_stride_width=448,
        use_framewise_encoding=True,
        use_framewise_decoding=True,
        tile_sample_min_num_frames=config.tile_sample_min_num_frames,
        tile_sample_stride_num_frames=config.tile_sample_stride_num_frames,
    )


def _statistics(model: AutoencoderKLLTX2Video) -> LatentStatistics:
    """The latent statistics buffers of a loaded VAE (docs/vae.md, "Latent normalisation")."""
    scaling = float(model.config.scaling_factor)
    return LatentStatistics(mean=model.latents_mean, std=model.latents_std, scaling_factor=scaling)


def release_encode_chunks(num_frames: int, temporal_ratio: int = 8) -> list[int]:
    """Chunk sizes of the release's causal encode: `F mod 8` (8 if that is 0), then 8s (docs/vae.md)."""
    first = num_frames % temporal_ratio or temporal_ratio
    rest = num_frames - first
    return [first] + [temporal_ratio] * (rest // temporal_ratio)


class LTX2VAE:
    """An `AutoencoderKLLTX2Video` with the release's per-mode settings and our streamed paths.

    Latents outside this class are always normalised (the DiT's space); `encode` returns and `decode`
    takes normalised latents, in the VAE's dtype for `encode` (the release then casts to its input dtype).
    """

    def __init__(
        self,
        model: AutoencoderKLLTX2Video,
        vae_type: str,
        decode: VAEDecode = "release_tiles",
        causal_decoder: AutoencoderKLLTX2Video | None = None,
    ) -> None:
        self.model = model.eval()
        self.mode: VAEMode = vae_mode(vae_type)
        if decode == "causal" and causal_decoder is None and self.mode == "streaming":
            raise VAELoadError("decode 'causal' needs the causal-decoder VAE (vae.causal_vae_pretrained)")
        self.decode_mode: VAEDecode = decode
        self.stats = _statistics(model)
        # `decode: causal`: a second VAE whose decoder is causal (its encoder is dropped at load)
        self.causal_decoder = causal_decoder.eval() if causal_decoder is not None else None

    def configure_bidirectional(self, config: VAEConfig) -> None:
        """Apply the bidirectional release's tiling to diffusers' model (used by `encode`/`decode`)."""
        for name, value in asdict(bidirectional_tiling(config)).items():
            setattr(self.model, name, value)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def temporal_ratio(self) -> int:
        return int(self.model.temporal_compression_ratio)

    @property
    def spatial_ratio(self) -> int:
        return int(self.model.spatial_compression_ratio)

    def normalise(self, z: Tensor) -> Tensor:
        return self.stats.normalise(z)

    def denormalise(self, z: Tensor) -> Tensor:
        return self.stats.denormalise(z)

    def chunked_encoder(self, normalise: bool = True) -> ChunkedEncoder:
        """A chunked causal encoder (the streaming release's encode, docs/vae.md)."""
        return ChunkedEncoder(self.model, self.stats, normalise=normalise)

    def incremental_decoder(
        self, decode: VAEDecode | None = None, normalise: bool = True
    ) -> IncrementalDecoder:
        """An incremental decoder; `decode` defaults to this VAE's `decode_mode`. `causal` streams the
        causal-decoder VAE's decoder exactly (`exact` on a causal decoder: no look-ahead), with that
        VAE's own latent statistics."""
        decode = decode or self.decode_mode
        if decode != "causal":
            return IncrementalDecoder(self.model, self.stats, decode=decode, normalise=normalise)
        if self.causal_decoder is None:
            raise ValueError("decode 'causal' needs the causal-decoder VAE (load_vae with vae.decode causal)")
        model = self.causal_decoder
        return IncrementalDecoder(model, _statistics(model), decode="exact", normalise=normalise)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """Whole clip `[B, 3, 8k+1, H, W]` in [-1, 1] -> normalised latents `[B, C, k+1, H/32, W/32]`."""
        num_frames = video.shape[2]
        if (num_frames - 1) % self.temporal_ratio:
            raise ValueError(f"the frame count must be {self.temporal_ratio}k+1, got {num_frames}")
        if self.mode == "bidirectional":
            x = video.to(device=self.device, dtype=self.dtype)
            return self.normalise(self.model.encode(x).latent_dist.mode())
        encoder = self.chunked_encoder()
        parts = [encoder.push(chunk) for chunk in video.split(release_encode_chunks(num_frames), dim=2)]
        return torch.cat([*parts, encoder.flush()], dim=2)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Whole normalised latents `[B, C, T, h, w]` -> pixels `[B, 3, 8(T-1)+1, 32h, 32w]` (VAE dtype)."""
        if self.mode == "bidirectional":
            z = self.denormalise(latents).to(self.dtype)
            return self.model.decode(z, None).sample
        decoder = self.incremental_decoder()
        return torch.cat([decoder.push(latents), decoder.flush()], dim=2)


def _local_vae_folder(path: str) -> Path:
    """A local folder holding `config.json` of the VAE, for `vae_pretrained` given as a local folder, an
    `hf://owner/repo[@revision][/sub]` URI, or a bare `owner/repo` (the release's form, subfolder `vae`)."""
    local = resolve(vae_source(path))
    if (local / "vae" / "config.json").is_file():
        local = local / "vae"
    if not (local / "config.json").is_file():
        raise VAELoadError(f"{path}: no VAE here (expected a folder with config.json, or its subfolder vae)")
    return local


def load_vae(
    config: VAEConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    random_weights: bool = False,
    fast_modules: bool = True,
) -> LTX2VAE:
    """Load the VAE of `config` (weights from `vae_pretrained`), or build one with random weights.

    `dtype` defaults to `config.weight_dtype` (bf16 in the release configs). Random weights use
    `config.architecture`, else the released architecture (`LTX2_RELEASE_ARCHITECTURE`), drawn from a
    private generator with a fixed seed (`random_init.redraw_`) so runs repeat. In bidirectional mode
    the release's tiling settings are applied. `decode: causal` (streaming) also loads the decoder of
    `causal_vae_pretrained` (random weights: the same architecture with `decoder_causal: true`, another
    seed). Unless `fast_modules` is False (benchmarks compare both), the reflect pads and norm-SiLU pairs
    are swapped for faster modules holding the same parameters (`fast_modules.swap_fast_modules_`).
    """
    if dtype is None:
        if config.weight_dtype not in _DTYPES:
            raise VAELoadError(f"unknown vae weight_dtype {config.weight_dtype!r}; known: {sorted(_DTYPES)}")
        dtype = _DTYPES[config.weight_dtype]
    architecture = config.architecture or LTX2_RELEASE_ARCHITECTURE
    if random_weights:
        model = _random_vae(architecture, device, dtype, seed=0)
    else:
        model = _pretrained_vae(config.vae_pretrained, device, dtype)
    _check_latent_channels(model, config)
    causal = None
    if config.decode == "causal" and vae_mode(config.vae_type) == "streaming":
        if random_weights:  # the released architecture with a causal decoder (the real one's is read)
            causal = _random_vae({**architecture, "decoder_causal": True}, device, dtype, seed=1)
        else:
            causal = _pretrained_vae(config.causal_vae_pretrained, device, dtype)
        _check_latent_channels(causal, config)
        if not causal.config.decoder_causal:
            raise VAELoadError(f"{config.causal_vae_pretrained}: its decoder is not causal (decoder_causal)")
    for loaded in (model, causal):
        if fast_modules and loaded is not None:
            swap_fast_modules_(loaded)
    if causal is not None:
        causal.encoder = None  # only its decoder is used: the source is encoded by the LTX-2 VAE
    vae = LTX2VAE(model, config.vae_type, decode=config.decode, causal_decoder=causal)
    if vae.mode == "bidirectional":
        vae.configure_bidirectional(config)
    return vae


def _random_vae(
    architecture: dict[str, Any], device: torch.device | str, dtype: torch.dtype, seed: int
) -> AutoencoderKLLTX2Video:
    """A VAE of `architecture` with weights drawn from a private generator (`random_init.redraw_`)."""
    target = torch.device(device)
    cuda_devices = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), target:  # leaves the caller's RNGs untouched
        model = redraw_(AutoencoderKLLTX2Video(**architecture), seed=seed)
    return model.to(dtype=dtype) if dtype != model.dtype else model


def _pretrained_vae(path: str, device: torch.device | str, dtype: torch.dtype) -> AutoencoderKLLTX2Video:
    """diffusers' VAE from a folder, hub URI or repo id (`_local_vae_folder`)."""
    folder = _local_vae_folder(path)
    # low_cpu_mem_usage needs accelerate (not a dependency): asking for it only where it is installed
    # keeps diffusers from warning that it is missing on every load
    return AutoencoderKLLTX2Video.from_pretrained(
        folder, torch_dtype=dtype, low_cpu_mem_usage=is_accelerate_available()
    ).to(device)


def _check_latent_channels(model: AutoencoderKLLTX2Video, config: VAEConfig) -> None:
    if model.config.latent_channels != config.vae_latent_dim:
        raise VAELoadError(
            f"VAE has {model.config.latent_channels} latent channels, "
            f"but vae_latent_dim is {config.vae_latent_dim}"
        )
