"""The output video of an edit: a writer set up from the source's frame times and audio
(`open_writer`), fed the stream's frames on a background thread (`write_frames`).

Frames become yuv420p planes where they were decoded (`frames_to_yuv420`) and are copied to pinned host
memory without waiting (`HostPlanes`): the editing thread never synchronises with the GPU for the
writer, and the writer's thread waits for each copy, then only encodes."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from sana_streaming.background import BackgroundSink
from sana_streaming.config import RELEASE_FPS
from sana_streaming.debug_files import SourceLatents
from sana_streaming.options import EditOptions
from sana_streaming.stages import StreamRun
from sana_streaming.timing import StageTimer
from sana_streaming.video.reader import VideoReader
from sana_streaming.video.writer import VideoWriter
from sana_streaming.video.yuv import frames_to_yuv420

logger = logging.getLogger(__name__)


def open_writer(
    reader: VideoReader | SourceLatents,
    output: str | Path,
    options: EditOptions,
    *,
    fps: float | None,
    audio: bool,
    overwrite: bool,
    preset: str,
    settings: dict[str, str],
    fragmented: bool = False,
    encoder: str = "x264",
) -> VideoWriter:
    """The output writer: the source's frame times and audio when it has them, else `fps` (16 fps for
    latents). The audio is dropped when `fps` differs from the source's rate."""
    width, height = options.width // 32 * 32, options.height // 32 * 32
    source_fps, has_audio = RELEASE_FPS, False
    if isinstance(reader, SourceLatents):
        width, height = 32 * reader.source.shape[4], 32 * reader.source.shape[3]
    else:
        source_fps, has_audio = reader.info.fps or RELEASE_FPS, reader.info.has_audio
    out_fps = Fraction(fps).limit_denominator(100_000) if fps else source_fps
    keep_audio = audio and has_audio
    if keep_audio and out_fps != source_fps:
        logger.warning("dropping the audio: --fps %s differs from the source rate %s", out_fps, source_fps)
        keep_audio = False
    follow = fps is None and isinstance(reader, VideoReader)  # the source's frame times
    return VideoWriter(
        output, out_fps, width, height, overwrite=overwrite, preset=preset,
        audio_from=reader.audio_feed() if keep_audio else None,  # type: ignore[union-attr]
        timestamps=reader.frame_times() if follow else None,  # type: ignore[union-attr]
        metadata=settings, fragmented=fragmented, encoder=encoder,
    )  # fmt: skip


def write_frames(
    stream: StreamRun, writer: VideoWriter, live: bool, timer: StageTimer | None
) -> KeyboardInterrupt | None:
    """Feed the stream's frames to `writer` on a background thread (x264 runs beside the GPU work).
    A live source's interrupt is returned after the frames already edited were written, so the
    caller can publish them; anything else aborts and propagates."""
    sink = BackgroundSink(lambda planes: writer.write_yuv(planes.numpy()), depth=2)
    try:
        for frames in stream:
            with _stage(timer, "write"):  # the conversion's launch and any wait for the writer
                sink.put(HostPlanes.copy_of(frames_to_yuv420(frames)))
            stream.count_frames("write", frames.shape[1])  # handed to the writer's thread
        with _stage(timer, "write"):
            sink.close()
    except KeyboardInterrupt as exc:
        stream.close()
        if not live:
            sink.cancel()
            raise
        sink.close()  # what was edited goes into the file
        return exc
    except BaseException:
        try:
            stream.close()  # end the stream's threads while its reader is open
        finally:
            sink.cancel()  # and the writer's thread before the writer aborts
        raise
    return None


@dataclass(frozen=True)
class HostPlanes:
    """Planes on their way to host memory: `copied` is recorded after the copy on a GPU (None once
    there); `numpy()` waits for it."""

    planes: torch.Tensor
    copied: torch.cuda.Event | None

    @classmethod
    def copy_of(cls, planes: torch.Tensor) -> HostPlanes:
        """Start copying `planes` to the host: into pinned memory without blocking from a GPU (PyTorch's
        pinned allocator keeps the buffer until the copy is done), at once from the CPU."""
        if planes.device.type != "cuda":
            return cls(planes, None)
        host = torch.empty(planes.shape, dtype=planes.dtype, pin_memory=True)
        host.copy_(planes, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(planes.device))  # the copy's stream, on its device
        return cls(host, copied)

    def numpy(self) -> np.ndarray:
        if self.copied is not None:
            self.copied.synchronize()  # releases the GIL while it waits
        return self.planes.numpy()


def _stage(timer: StageTimer | None, name: str) -> contextlib.AbstractContextManager:
    """Time a stage when a timer was given (benchmarks), else do nothing."""
    return timer(name) if timer is not None else contextlib.nullcontext()
