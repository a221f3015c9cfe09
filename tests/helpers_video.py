"""Synthetic video clips for tests, written with PyAV (no files are committed).

`make_clip` writes smooth moving gradients (they survive H.264 well enough to compare pixels loosely) and,
optionally, a sine tone that lasts exactly as long as the video.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def clip_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 `[F, H, W, 3]`: per-channel gradients drifting over time, with a random phase per channel."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    frames = []
    for t in range(num_frames):
        angle = 2 * np.pi * (x + 0.5 * y + 0.05 * t) + phase
        frames.append(127.5 + 100 * np.sin(angle))
    return np.stack(frames).round().astype(np.uint8)


def make_clip(
    path: Path,
    *,
    num_frames: int,
    fps: int,
    width: int = 64,
    height: int = 48,
    audio: bool = False,
    sample_rate: int = 16000,
    container: str | None = None,
    audio_only: bool = False,
    seed: int = 0,
    rotate: int = 0,
    times_ms: list[int] | None = None,
    faststart: bool = False,
) -> np.ndarray:
    """Write an H.264 (yuv420p) clip, with an AAC mono tone when `audio`; return the frames written.

    `container` forces a muxer (e.g. "matroska" for a streamable file); `audio_only` writes no video.
    `rotate`: the display rotation `ffmpeg -metadata:s:v:0 rotate=...` tags (degrees clockwise), as a
    display matrix. `times_ms`: each frame's presentation time in milliseconds (a variable frame rate;
    the audio then lasts until the last frame's time plus one frame at `fps`). `faststart`: an MP4 with
    its index first, readable front to back (over HTTP without range requests)."""
    frames = clip_frames(num_frames, height, width, seed)
    times = (
        [Fraction(ms, 1000) for ms in times_ms] if times_ms else [Fraction(i, fps) for i in range(num_frames)]
    )
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", format=container, container_options=options) as out:
        if not audio_only:
            video = out.add_stream("libx264", rate=fps, options={"crf": "10", "preset": "ultrafast"})
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.codec_context.time_base = Fraction(1, 1000) if times_ms else Fraction(1, fps)
            if rotate:
                video.set_display_rotation(-rotate)  # PyAV's angle is counterclockwise
        if audio or audio_only:
            sound = out.add_stream("aac", rate=sample_rate, layout="mono")
        if not audio_only:
            for time, image in zip(times, frames, strict=True):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.time_base = video.codec_context.time_base
                frame.pts = int(time / frame.time_base)
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        if audio or audio_only:
            total = int(sample_rate * (times[-1] + Fraction(1, fps)))
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / sample_rate)).astype(np.float32)
            for start in range(0, total, 1024):
                block = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024], format="fltp", layout="mono"
                )
                block.sample_rate, block.pts, block.time_base = sample_rate, start, Fraction(1, sample_rate)
                out.mux(sound.encode(block))
            out.mux(sound.encode(None))
    return frames


def probe(path: Path) -> dict[str, float | int | None]:
    """Decoded facts of a file: video frame count, size, fps and durations (seconds) of both tracks."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        facts: dict[str, float | int | None] = {
            "frames": frames,
            "width": video.width,
            "height": video.height,
            "fps": float(video.average_rate),
            "video_seconds": frames / float(video.average_rate),
            "audio_seconds": None,
        }
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            facts["audio_seconds"] = samples / stream.codec_context.sample_rate
    return facts


def decoded_frames(path: Path) -> np.ndarray:
    """Every video frame of `path` as RGB, (frames, H, W, 3) uint8."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
