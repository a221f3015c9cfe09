"""The LTX-2 video VAE, whole-clip and streamed (chunked causal encode, incremental decode)."""

from sana_streaming.models.vae.autoencoder import (
    LTX2_RELEASE_ARCHITECTURE,
    LTX2VAE,
    DiffusersTiling,
    VAELoadError,
    VAEMode,
    bidirectional_tiling,
    load_vae,
    release_encode_chunks,
    vae_mode,
)
from sana_streaming.models.vae.decoder import DECODE_MODES, DecodeMode, IncrementalDecoder, TemporalTiling
from sana_streaming.models.vae.encoder import ChunkedEncoder
from sana_streaming.models.vae.normalise import LatentStatistics

__all__ = [
    "DECODE_MODES",
    "LTX2VAE",
    "LTX2_RELEASE_ARCHITECTURE",
    "ChunkedEncoder",
    "DecodeMode",
    "DiffusersTiling",
    "IncrementalDecoder",
    "LatentStatistics",
    "TemporalTiling",
    "VAELoadError",
    "VAEMode",
    "bidirectional_tiling",
    "load_vae",
    "release_encode_chunks",
    "vae_mode",
]
