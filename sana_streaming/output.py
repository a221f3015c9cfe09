"""The output video of an edit: a writer set up from the source's frame times and audio
(`open_writer`), fed the stream's frames on a background thread (`write_frames`)."""

from __future__ import annotations

import contextlib
import logging
from fractions import Fraction
from pathlib import Path

from sana_streaming.background import BackgroundSink
from sana_streaming.config import RELEASE_FPS
from sana_streaming.debug_files import SourceLatents
from sana_streaming.options import EditOptions
from sana_streaming.stages import StreamRun
from sana_streaming.timing import StageTimer
from sana_streaming.video.reader import VideoReader
from sana_streaming.video.writer import VideoWriter, frames_to_uint8

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
        metadata=settings, fragmented=fragmented,
    )  # fmt: skip


def write_frames(
    stream: StreamRun, writer: VideoWriter, live: bool, timer: StageTimer | None
) -> KeyboardInterrupt | None:
    """Feed the stream's frames to `writer` on a background thread (x264 runs beside the GPU work).
    A live source's interrupt is returned after the frames already edited were written, so the
    caller can publish them; anything else aborts and propagates."""
    sink = BackgroundSink(writer.write_images, depth=2)
    try:
        for frames in stream:
            with _stage(timer, "write"):  # the uint8 conversion and any wait for the writer
                sink.put(frames_to_uint8(frames))
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


def _stage(timer: StageTimer | None, name: str) -> contextlib.AbstractContextManager:
    """Time a stage when a timer was given (benchmarks), else do nothing."""
    return timer(name) if timer is not None else contextlib.nullcontext()
