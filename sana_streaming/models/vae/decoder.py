"""Incremental decoding: latent frames in, pixel frames out as soon as they are final.

Two modes behind one interface (`IncrementalDecoder(decode=...)`):

- `release_tiles` (default): the release's temporal-tile decode (`decode_chunk_tile`, docs/vae.md),
  restated incrementally. Each tile is an independent whole decode of 4 latent frames at latent stride 1;
  tiles after the first drop their first frame and are blended in place over 16 frames against the
  previous (already blended) tile; 9 frames are emitted from the first tile, 8 from each later one. It
  equals the release's output, lags 3 latent frames, and costs about 4 decoder passes per frame.
- `exact`: equals the untiled whole-clip decode. The decoder is non-causal, so every temporal conv holds
  back one frame of its input until the next arrives; stacked, that is a fixed look-ahead computed from the
  layer structure (`lookahead_latents`: 22 latent frames for the released depth, 173 pixel frames). One
  decoder pass per frame. On a causal decoder (`decoder_causal: true`, the release's causal-decoder VAE)
  the look-ahead is 0: `LTX2VAE`'s `causal` decode is this mode on that VAE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from diffusers import AutoencoderKLLTX2Video
from torch import Tensor

from sana_streaming.models.vae.encoder import state_bytes
from sana_streaming.models.vae.graph import decoder_chain
from sana_streaming.models.vae.normalise import LatentStatistics
from sana_streaming.models.vae.streams import Frames, cat_frames

DecodeMode = Literal["release_tiles", "exact"]
DECODE_MODES: tuple[DecodeMode, ...] = ("release_tiles", "exact")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemporalTiling:
    """Temporal tiling of `decode_chunk_tile`, in pixel frames, and what it means in latent frames.

    Source: meefs/Sana @ 5498e5b, `diffusion/model/builder.py` `get_vae` (`LTX2VAE_chunk_tile` branch):
    `enable_tiling(tile_sample_min_num_frames=24, tile_sample_stride_num_frames=8)`; docs/vae.md.
    """

    min_frames: int = 24
    stride_frames: int = 8
    temporal_ratio: int = 8

    @property
    def tile_latents(self) -> int:
        return self.min_frames // self.temporal_ratio + 1  # 4

    @property
    def blend_frames(self) -> int:
        return self.min_frames - self.stride_frames  # 16

    def __post_init__(self) -> None:
        if self.stride_frames != self.temporal_ratio:
            raise ValueError(
                "the incremental tile decode supports a latent stride of 1 (the release's 8 frames)"
            )


class _Decode(Protocol):
    def push(self, z: Frames) -> Frames: ...

    def flush(self) -> Frames: ...

    def state_tensors(self) -> list[Tensor]: ...

    def frames_out(self, frames_in: int, ended: bool) -> int: ...


class _TileDecode:
    """The release's temporal-tile decode, one tile as soon as its latents are all there."""

    def __init__(self, model: AutoencoderKLLTX2Video, tiling: TemporalTiling) -> None:
        self.decoder = model.decoder
        self.tiling = tiling
        self.window: Frames = None  # latents of the next tile(s): at most tile_latents - 1 between calls
        self.prev: Tensor | None = None  # the last tile, after its own in-place blend
        self.tiles_done = 0

    def push(self, z: Frames) -> Frames:
        self.window = cat_frames(self.window, z)
        out: list[Frames] = []
        while self.window is not None and self.window.shape[2] >= self.tiling.tile_latents:
            out.append(self._tile())
        return cat_frames(*out)

    def flush(self) -> Frames:
        out: list[Frames] = []
        while self.window is not None:  # the last tiles are shorter: 3, 2, 1 latent frames
            out.append(self._tile())
        return cat_frames(*out)

    def _tile(self) -> Frames:
        assert self.window is not None
        # causal=False as in the release's call; it only switches causality on (docs/vae.md), so the
        # decoder's configured causality applies.
        video = self.decoder(self.window[:, :, : self.tiling.tile_latents], None, causal=False)
        rest = self.window[:, :, 1:]
        self.window = rest.clone() if rest.shape[2] > 0 else None
        first = self.tiles_done == 0
        self.tiles_done += 1
        if first:
            self.prev = video
            return video[:, :, : self.tiling.stride_frames + 1].clone()
        assert self.prev is not None
        video = video[:, :, 1:]  # drop the frame shared with the previous tile
        blend = min(self.prev.shape[2], video.shape[2], self.tiling.blend_frames)
        for k in range(blend):  # in place on the new tile; Python-float weights as in the release
            video[:, :, k] = self.prev[:, :, self.prev.shape[2] - blend + k] * (1 - k / blend) + video[
                :, :, k
            ] * (k / blend)
        self.prev = video
        emitted = video[:, :, : self.tiling.stride_frames]
        return emitted.clone() if emitted.shape[2] > 0 else None

    def state_tensors(self) -> list[Tensor]:
        return [t for t in (self.window, self.prev) if t is not None]

    def frames_out(self, frames_in: int, ended: bool) -> int:
        tiles = frames_in if ended else max(frames_in - self.tiling.tile_latents + 1, 0)
        if tiles == 0:
            return 0
        complete = (frames_in - 1) * self.tiling.temporal_ratio + 1  # every frame, once ended
        return complete if ended else self.tiling.stride_frames * tiles + 1


class _ExactDecode:
    """The untiled decoder as a stream (`graph.decoder_chain`)."""

    def __init__(self, model: AutoencoderKLLTX2Video) -> None:
        self.chain = decoder_chain(model.decoder, bool(model.decoder.is_causal))

    def push(self, z: Frames) -> Frames:
        return self.chain.push(z)

    def flush(self) -> Frames:
        return self.chain.flush()

    def state_tensors(self) -> list[Tensor]:
        return self.chain.state_tensors()

    def frames_out(self, frames_in: int, ended: bool) -> int:
        return self.chain.frames_out(frames_in, ended)


def lookahead_latents(frames_out: _Decode, temporal_ratio: int, horizon: int = 64) -> int:
    """Latent frames that must follow latent `m` before all pixel frames of `m` are emitted (max over m).

    Latent 0 owns pixel frame 0, latent m ≥ 1 owns pixel frames 8m-7 … 8m, so latents 0..m own `8m + 1`
    frames. Derived from the per-layer frame counts (`frames_out`), not measured."""
    worst = 0
    for m in range(horizon):
        needed = temporal_ratio * m + 1
        n = m + 1
        while frames_out.frames_out(n, ended=False) < needed:
            n += 1
        worst = max(worst, n - (m + 1))
    return worst


class IncrementalDecoder:
    """Decode latents pushed a few frames at a time; `flush` at the end returns the remaining frames.

    `normalise=True` takes latents in the DiT's (normalised) space and de-normalises them as the release
    does (arithmetic in the latents' dtype, then cast to the VAE dtype); `normalise=False` takes raw latents.
    Returns pixel frames `[B, 3, n, 32h, 32w]` in the VAE dtype; over a whole stream, `8(T-1)+1` frames.
    """

    def __init__(
        self,
        model: AutoencoderKLLTX2Video,
        stats: LatentStatistics,
        decode: DecodeMode = "release_tiles",
        normalise: bool = True,
    ) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        self.model = model
        self.stats = stats
        self.decode = decode
        self.normalise = normalise
        self.temporal_ratio: int = model.temporal_compression_ratio
        self.spatial_ratio: int = model.spatial_compression_ratio
        self.out_channels: int = model.config.out_channels
        self._impl: _Decode
        if decode == "exact":
            self._impl = _ExactDecode(model)
        else:
            self._impl = _TileDecode(model, TemporalTiling(temporal_ratio=self.temporal_ratio))
        self.lookahead_latents: int = lookahead_latents(self._impl, self.temporal_ratio)
        if decode == "exact" and self.lookahead_latents > 0:
            logger.info(
                "exact VAE decode: %d latent frames of look-ahead (%d video frames held back)",
                self.lookahead_latents,
                self.lookahead_frames,
            )
        self._empty_shape: tuple[int, int, int] | None = None

    @property
    def lookahead_frames(self) -> int:
        """Pixel frames an open stream holds back: all frames of the latents so far minus those emitted."""
        n = 10 * (self.lookahead_latents + 1)
        return self._impl.frames_out(n, ended=True) - self._impl.frames_out(n, ended=False)

    @torch.no_grad()
    def push(self, latents: Tensor) -> Tensor:
        """`latents`: `[B, C, n, h, w]` (n may be 0). Returns the pixel frames that became final."""
        if latents.ndim != 5:
            raise ValueError(f"expected latents [B, C, T, h, w], got shape {tuple(latents.shape)}")
        b, _, t, h, w = latents.shape
        self._empty_shape = (b, h * self.spatial_ratio, w * self.spatial_ratio)
        z = self.stats.denormalise(latents) if self.normalise else latents
        z = z.to(device=self.model.device, dtype=self.model.dtype)
        return self._output(self._impl.push(z if t > 0 else None))

    @torch.no_grad()
    def flush(self) -> Tensor:
        """End of the latents: every pixel frame not yet returned."""
        return self._output(self._impl.flush())

    def _output(self, video: Frames) -> Tensor:
        if video is not None:
            return video
        if self._empty_shape is None:
            raise ValueError("no latents were pushed")
        b, height, width = self._empty_shape
        return torch.empty(
            b, self.out_channels, 0, height, width, device=self.model.device, dtype=self.model.dtype
        )

    def state_bytes(self) -> int:
        """Bytes of the tensors held between calls (carried context, pending latents, previous tile)."""
        return state_bytes(self._impl.state_tensors())


__all__ = [
    "DECODE_MODES",
    "DecodeMode",
    "IncrementalDecoder",
    "TemporalTiling",
    "lookahead_latents",
]
