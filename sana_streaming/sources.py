"""Where an edit's latents come from: a source video opened at the edit's frame size and bounds
(`open_source`), run through the VAE encoder, or latents given as they are (`--input_latent_path`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import replace

import torch

from sana_streaming.config import RELEASE_FPS
from sana_streaming.debug_files import SourceLatents
from sana_streaming.models.vae import LTX2VAE
from sana_streaming.options import EditOptions
from sana_streaming.stages import LatentFeed, SourceEncoder, StreamRun
from sana_streaming.video.reader import VideoReader, VideoSource, open_video


def open_source(
    source: VideoSource, options: EditOptions, device: torch.device
) -> tuple[VideoReader, EditOptions]:
    """Open a source video at the edit's size, its chunks made on `device`; returns it with the options
    the edit runs with. With `options.max_frames` / `max_seconds` the reader stops there and
    `num_frames` becomes an upper bound too (the edit ends with the source or the limit, whichever
    comes first, without an error)."""
    width, height = options.width // 32 * 32, options.height // 32 * 32
    reader = open_video(source, height, width, chunk_frames=24, max_frames=options.num_frames, device=device)
    limits = [] if options.max_frames is None else [options.max_frames]
    if options.max_seconds is not None:
        limits.append(max(1, math.ceil(options.max_seconds * (reader.info.fps or RELEASE_FPS))))
    if not limits:
        return reader, options
    try:
        reader.limit(min(limits))
    except BaseException:
        reader.close()
        raise
    return reader, replace(options, num_frames=None)


@contextlib.contextmanager
def open_latents(
    source: VideoSource | VideoReader | SourceLatents,
    options: EditOptions,
    vae: LTX2VAE,
    device: torch.device,
    run: StreamRun,
    *,
    stride: int,
    whole_clip: bool,
) -> Iterator[LatentFeed]:
    """`source` as latents: given ones, or reader → encoder at the edit's frame size (an open
    `VideoReader` is used as is) and the VAE's spatial `stride`; `whole_clip` encodes the clip at once
    (the bidirectional release)."""
    if isinstance(source, SourceLatents):
        yield LatentFeed.given(source, device)
        return
    with contextlib.ExitStack() as stack:
        if not isinstance(source, VideoReader):
            reader, options = open_source(source, options, device)
            source = stack.enter_context(reader)
        encoder = SourceEncoder(vae, device, whole_clip=whole_clip)
        latent_hw = (options.height // stride, options.width // stride)
        with encoder.open(source, latent_hw, options.num_frames, run, options.live_frame_drop) as feed:
            yield feed
