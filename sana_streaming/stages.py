"""The stages around the sampler and the run that holds them.

`SourceEncoder` is reader → VAE encoder: a video, decoded ahead on a thread, as `SourceChunk`s of
latents (chunked and causal in `long_streaming`, the whole clip at once in `bidirectional_short`).
`StreamRun` is one stream: the iterator of edited frames that also holds its stages, so that one
pipeline can serve several streams at once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sana_streaming.background import Prefetch
from sana_streaming.debug_files import SourceLatents
from sana_streaming.errors import SourceTooShortError
from sana_streaming.models.vae import LTX2VAE, ChunkedEncoder, IncrementalDecoder
from sana_streaming.sampling.streaming import ChunkStreamer, LatentRecord, SourceChunk
from sana_streaming.timing import StageTimer
from sana_streaming.video.reader import VideoReader, VideoSource, open_video

logger = logging.getLogger(__name__)

Stage = Literal["text", "read", "encode", "denoise", "decode", "write"]
FrameDropPolicy = Literal["auto", "on", "off"]  # `EditOptions.live_frame_drop`


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a run, for progress bars and per-chunk callbacks (as diffusers' step callbacks).

    `done` and `total` count the stage's `unit`: frames for read, encode, decode and write (video frames of
    the source, in order), chunks for streaming denoise, sampler steps for bidirectional denoise,
    prompts for text; `total` is None while the source's length is unknown. `tensor` is the chunk's
    denoised latents `(1, C, T, h, w)` (streaming denoise, `start` its first latent frame) or its
    decoded frames `[3, F, H, W]` (decode). `read_at` (read events) is the `time.perf_counter()` at
    which the chunk came off the source, on the reading thread: the event itself is sent when the edit
    takes the chunk, which can be two chunks later when the edit runs behind the source."""

    stage: Stage
    done: int
    total: int | None
    unit: str
    tensor: Tensor | None = None
    start: int | None = None
    read_at: float | None = None


ProgressFn = Callable[[ProgressEvent], None]


class StreamRun:
    """One stream of edited frames `[3, F, H, W]` from `SanaStreamingPipeline.stream`: iterate it (it
    starts on the first `next`), `close()` ends it early. It holds its stages and so everything the run
    keeps between chunks; the pipeline keeps nothing of it."""

    def __init__(
        self,
        body: Callable[[StreamRun], Generator[Tensor, None, None]],
        *,
        record: LatentRecord | None = None,
        progress: ProgressFn | None = None,
        timer: StageTimer | None = None,
    ) -> None:
        self.record = record  # every chunk's latents, for `--save_latent`
        self.progress = progress
        self.timer = timer
        self.encoder: ChunkedEncoder | None = None  # the stages, while the run holds them
        self.streamer: ChunkStreamer | None = None
        self.decoder: IncrementalDecoder | None = None
        self.noise_bytes = 0  # the whole-latent starting noise (0 when drawn per chunk)
        self.total_frames: int | None = None  # video frames the run edits, once known
        self._counts: dict[str, int] = {}
        self._prompt_requests: collections.deque[str] = collections.deque()
        self._frames = body(self)

    def __iter__(self) -> StreamRun:
        return self

    def __next__(self) -> Tensor:
        return next(self._frames)

    def close(self) -> None:
        """End the run (its reader thread too) and free what it holds."""
        self._frames.close()

    def change_prompt(self, prompt: str) -> None:
        """Edit with `prompt` (an instruction, as `EditOptions.prompt`) from the next chunk on; may be
        called from another thread while the run is iterated. long_streaming only."""
        if not prompt.strip():
            raise ValueError("the new prompt is empty")
        self._prompt_requests.append(prompt)

    def take_prompt_requests(self) -> list[str]:
        """The prompts asked for since the last call, oldest first (the pipeline applies them)."""
        taken = []
        while self._prompt_requests:
            taken.append(self._prompt_requests.popleft())
        return taken

    def live_bytes(self) -> int:
        """Bytes of every tensor the run holds between chunks (VAE stream states, the streamer's pending
        latents, DiT state and deferred clean pass), not counting the whole-latent noise (`noise_bytes`)
        or the `record`; 0 once it ended."""
        vae = sum(stage.state_bytes() for stage in (self.encoder, self.decoder) if stage is not None)
        return vae + (0 if self.streamer is None else self.streamer.nbytes())

    def release(self) -> None:
        """Drop the stages (the run ended)."""
        self.encoder = self.streamer = self.decoder = None

    def stage(self, name: str) -> contextlib.AbstractContextManager:
        """Time a stage when the run has a timer (benchmarks), else do nothing."""
        return self.timer(name) if self.timer is not None else contextlib.nullcontext()

    def report(self, stage: Stage, done: int, total: int | None, unit: str, **extra: object) -> None:
        """Send one `ProgressEvent` to the run's callback, if any."""
        if self.progress is not None:
            self.progress(ProgressEvent(stage, done, total, unit, **extra))  # type: ignore[arg-type]

    def count_frames(self, stage: Stage, frames: int, **extra: object) -> None:
        """Report `frames` more video frames through `stage` (read, encode, decode, write); `extra`:
        the event's `tensor` or `read_at`."""
        done = self._counts[stage] = self._counts.get(stage, 0) + frames
        self.report(stage, done, self.total_frames, "frame", **extra)


@dataclass(frozen=True)
class ReadChunk:
    """Decoded source frames `[3, F, H_src, W_src]` (uint8, `VideoReader.raw_chunks`) and the
    `time.perf_counter()` at which they came off the source."""

    frames: Tensor
    read_at: float


def stamped(chunks: Iterator[Tensor]) -> Iterator[ReadChunk]:
    """Each chunk with the time it was produced (run it on the reading thread)."""
    for chunk in chunks:
        yield ReadChunk(chunk, time.perf_counter())


@dataclass
class LatentFeed:
    """A source as latents, as they arrive, with what is known of it beforehand."""

    chunks: Iterator[SourceChunk]
    latent_frames: int | None  # None: a source of unknown length
    latent_hw: tuple[int, int]
    noise: Tensor | None = None  # given with `SourceLatents`

    @classmethod
    def given(cls, latents: SourceLatents, device: torch.device) -> LatentFeed:
        """`--input_latent_path` latents, fed one latent frame at a time as an encoder would."""
        source = latents.source.to(device)  # (1, C, T, h, w)
        chunks = (SourceChunk(z, t) for t, z in enumerate(source.split(1, dim=2)))
        _, _, frames, h, w = source.shape
        return cls(chunks, frames, (h, w), noise=latents.noise.to(device))


@dataclass(frozen=True)
class SourceEncoder:
    """reader → VAE encoder. `whole_clip`: encode the whole clip at once (the bidirectional release)."""

    vae: LTX2VAE
    device: torch.device
    whole_clip: bool = False

    @contextlib.contextmanager
    def open(
        self,
        source: VideoSource | VideoReader,
        latent_hw: tuple[int, int],
        num_frames: int | None,
        run: StreamRun,
        frame_drop: FrameDropPolicy = "auto",
    ) -> Iterator[LatentFeed]:
        """The video `source` (an open `VideoReader` of the latents' size is used as is), at most
        `num_frames` frames of it (None: all), as latents; the reader is open while the feed is.

        `frame_drop` (`EditOptions.live_frame_drop`): while two decoded chunks of 24 frames wait for
        the encoder, a newly read chunk of a live source is dropped whole, so the latency stays
        bounded and the source is read at its own pace; the output then jumps over those frames (with
        the source's timing it keeps its place in time, in sync with the audio). While dropping, the
        length is treated as unknown: `num_frames` still bounds the frames read (dropped ones count),
        and the edit takes what was kept, floored to 8k+1."""
        h, w = latent_hw
        if isinstance(source, VideoReader):
            opened = contextlib.nullcontext(source)
        else:
            opened = open_video(
                source, 32 * h, 32 * w, chunk_frames=24, max_frames=num_frames, device=self.device
            )
        with opened as reader:
            dropping = reader.paced if frame_drop == "auto" else frame_drop == "on" and reader.is_live
            drop = (lambda chunk: reader.drop_chunk(chunk.frames)) if dropping else None
            # decode ahead on a thread, each chunk stamped there as it comes off the source
            decoded = Prefetch(stamped(reader.raw_chunks()), depth=2, drop=drop)
            try:
                yield self._feed(reader, decoded, None if dropping else num_frames, latent_hw, run)
            finally:
                if not decoded.close():  # stuck in a read of a stalled live source
                    reader.abandon()
                if reader.dropped_frames:
                    logger.warning(
                        "%s: dropped %d source frames (whole chunks of %d) while the edit ran behind it",
                        reader.name, reader.dropped_frames, reader.chunk_frames,
                    )  # fmt: skip

    def _feed(
        self,
        reader: VideoReader,
        decoded: Iterator[ReadChunk],
        num_frames: int | None,
        latent_hw: tuple[int, int],
        run: StreamRun,
    ) -> LatentFeed:
        """The decoded chunks, cut to 8k+1 frames when the length is known, as latents."""
        total = reader.info.num_frames if num_frames is None else num_frames
        pixels = decoded
        if total is not None:
            total = floor_8k1(total)
            pixels = limit_frames(pixels, total, asked=num_frames is not None)
        run.total_frames = total
        counted = _counted(pixels, run)
        transform = functools.partial(reader.transform, device=self.device)
        if self.whole_clip:
            chunks = self._clip(counted, transform, run)
        else:
            chunks = self._chunks(counted, transform, total is not None, run)
        frames = None if total is None else (total - 1) // 8 + 1
        return LatentFeed(chunks, frames, latent_hw)

    def _clip(
        self, pixels: Iterator[Tensor], transform: Callable[[Tensor], Tensor], run: StreamRun
    ) -> Iterator[SourceChunk]:
        """The whole clip's latents in one chunk (`transform`: a uint8 chunk as float [3, F, H, W])."""
        clip = torch.cat([transform(chunk) for chunk in pixels], dim=1)
        clip = clip[:, : floor_8k1(clip.shape[1])]  # [3, 8k+1, H, W]
        with run.stage("encode"):
            latents = self.vae.encode(clip[None])
        yield SourceChunk(latents, 0)

    def _chunks(
        self,
        pixels: Iterator[Tensor],
        transform: Callable[[Tensor], Tensor],
        known_length: bool,
        run: StreamRun,
    ) -> Iterator[SourceChunk]:
        """Normalised source latents as soon as the chunked causal encoder makes them final
        (`transform`: a uint8 chunk as float [3, F, H, W], done in the encode stage)."""
        run.encoder = encoder = self.vae.chunked_encoder()
        start = 0
        for chunk in pixels:
            with run.stage("encode"):
                z = encoder.push(transform(chunk)[None])
            if z.shape[2]:
                yield SourceChunk(z, start)
                start += z.shape[2]
        if known_length:  # checks the 8k+1 length; a causal encoder has nothing left to emit
            yield SourceChunk(encoder.flush(), start)


def _counted(pixels: Iterator[ReadChunk], run: StreamRun) -> Iterator[Tensor]:
    """The chunks' frames `[3, F, H, W]`, each reported as read when the edit takes it (with the time
    it came off the source) and as encoded once the next is asked for."""
    for chunk in pixels:
        frames = chunk.frames.shape[1]
        run.count_frames("read", frames, read_at=chunk.read_at)
        yield chunk.frames
        run.count_frames("encode", frames)


def floor_8k1(frames: int) -> int:
    """Largest 8k+1 frame count not above `frames` (the VAE's temporal stride)."""
    return (frames - 1) // 8 * 8 + 1


def limit_frames(chunks: Iterator[ReadChunk], frames: int, asked: bool) -> Iterator[ReadChunk]:
    """Pass chunks through until `frames` frames were given; `asked`: the count came from the user
    (not from the container)."""
    given = 0
    for chunk in chunks:
        take = min(chunk.frames.shape[1], frames - given)
        if take > 0:
            yield ReadChunk(chunk.frames[:, :take], chunk.read_at)
            given += take
        if given >= frames:
            return
    if asked:
        raise SourceTooShortError(
            f"the source has {given} frames, fewer than the {frames} asked for (use --num_frames all)"
        )
    raise SourceTooShortError(f"the source ended after {given} of the {frames} frames its container lists")
