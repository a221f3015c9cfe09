"""Chunked causal encoding: pixel chunks in, final latent frames out, equal to a whole-clip encode."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLLTX2Video
from torch import Tensor

from sana_streaming.models.vae.graph import encoder_chain
from sana_streaming.models.vae.normalise import LatentStatistics
from sana_streaming.models.vae.streams import Frames


def state_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the tensors a stream holds between calls."""
    return sum(t.numel() * t.element_size() for t in tensors)


class ChunkedEncoder:
    """Encode a video chunk by chunk with the encoder's own causality (causal for LTX-2).

    The first chunk must start at pixel frame 0; later chunks may have any size (even 0 frames). Every
    causal conv carries its last 2 padded input frames, every temporal downsampler its first-frame prefix
    flag and unpaired frames, so the latents equal `vae.encoder(whole clip)` (docs/vae.md) as long
    as the whole clip has 8k+1 frames. Returned latents are the posterior mode, normalised as the release
    does (`normalise=True`) or raw, in the VAE's dtype.
    """

    def __init__(
        self, model: AutoencoderKLLTX2Video, stats: LatentStatistics, normalise: bool = True
    ) -> None:
        self.model = model
        self.stats = stats
        self.normalise = normalise
        self.latent_channels: int = model.config.latent_channels
        self.spatial_ratio: int = model.spatial_compression_ratio
        self._chain = encoder_chain(model.encoder, bool(model.encoder.is_causal), self.latent_channels)
        self._empty_shape: tuple[int, int, int] | None = None  # (B, h, w) of the latents

    @torch.no_grad()
    def push(self, video: Tensor) -> Tensor:
        """`video`: `[B, 3, F, H, W]` in [-1, 1]. Returns the latent frames that became final,
        `[B, C, n, h, w]`."""
        if video.ndim != 5:
            raise ValueError(f"expected a video chunk [B, C, F, H, W], got shape {tuple(video.shape)}")
        b, _, f, height, width = video.shape
        if height % self.spatial_ratio or width % self.spatial_ratio:
            raise ValueError(
                f"height and width must be multiples of {self.spatial_ratio}, got {height}x{width}"
            )
        self._empty_shape = (b, height // self.spatial_ratio, width // self.spatial_ratio)
        x = video.to(device=self.model.device, dtype=self.model.dtype)
        return self._output(self._chain.push(x if f > 0 else None))

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End of the video: the remaining latent frames (none for a causal encoder). Raises `ValueError`
        if the clip did not have 8k+1 frames."""
        return self._output(self._chain.flush())

    def _output(self, z: Frames) -> Tensor:
        if z is None:
            if self._empty_shape is None:
                raise ValueError("no video was pushed")
            b, h, w = self._empty_shape
            return torch.empty(
                b, self.latent_channels, 0, h, w, device=self.model.device, dtype=self.model.dtype
            )
        return self.stats.normalise(z) if self.normalise else z

    def state_bytes(self) -> int:
        """Bytes of the tensors held between calls (carried conv context, unpaired frames)."""
        return state_bytes(self._chain.state_tensors())
