"""Decode a source video with PyAV and turn it into model input, chunk by chunk.

Frames come out in decode order as float32 `[3, F, H, W]` chunks in [-1, 1], transformed exactly as the
release's `read_video` (meefs/Sana inference_video_scripts/v2v/inference_sana_streaming.py with
diffusion/data/transforms.py; pipeline spec §2): `/255`, cover-scale with bilinear interpolation (no
antialias, Python `round`), floor-centred crop, `(x - 0.5) / 0.5`, all on the CPU in float32. Every step
is per frame, so chunking gives the same values as the release's whole-clip transform.

Sources: a local path, an `hf://` URI, a URL that FFmpeg opens (http, rtsp, ...), or a readable binary file
object such as a pipe. A non-seekable source needs a streamable container (Matroska, MPEG-TS, fragmented
MP4) and usually has no known frame count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F

from sana_streaming.hub import HubError, is_hub_uri, resolve_path

VideoSource = str | Path | BinaryIO


class VideoReadError(RuntimeError):
    """The source cannot be opened or decoded as a video."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the source before decoding."""

    width: int
    height: int
    fps: Fraction | None  # average frame rate, None when unknown
    num_frames: int | None  # None when the container does not say (pipes, streams, some containers)
    has_audio: bool


@dataclass(frozen=True)
class ResizeCrop:
    """Cover-scale + centre crop: resize to `(resized_h, resized_w)`, then crop at `(top, left)`."""

    resized_h: int
    resized_w: int
    top: int
    left: int


def resize_crop_geometry(src_h: int, src_w: int, height: int, width: int) -> ResizeCrop:
    """The release's `resize_crop_to_fill` rule: scale by max(height/src_h, width/src_w), rounded with
    Python's round-half-to-even, then crop the excess centred, offset rounded down."""
    rh, rw = height / src_h, width / src_w
    if rh > rw:
        resized_w = round(src_w * rh)
        return ResizeCrop(height, resized_w, 0, (resized_w - width) // 2)
    resized_h = round(src_h * rw)
    return ResizeCrop(resized_h, width, (resized_h - height) // 2, 0)


def transform_frames(frames: np.ndarray | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 frames `[F, H_src, W_src, 3]` -> float32 `[3, F, height, width]` in [-1, 1] (spec §2.2)."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    geometry = resize_crop_geometry(frames.shape[1], frames.shape[2], height, width)
    clip = frames.permute(0, 3, 1, 2).float() / 255.0  # (F, 3, H_src, W_src)
    clip = F.interpolate(
        clip, size=(geometry.resized_h, geometry.resized_w), mode="bilinear", align_corners=False
    )
    clip = clip[..., geometry.top : geometry.top + height, geometry.left : geometry.left + width]
    clip = (clip - 0.5) / 0.5
    return clip.permute(1, 0, 2, 3).contiguous()  # (3, F, height, width)


class VideoReader:
    """An open source video: `info`, then iterate for `[3, F, height, width]` chunks. Use `open_video`."""

    def __init__(
        self,
        source: VideoSource,
        height: int,
        width: int,
        *,
        chunk_frames: int = 24,
        max_frames: int | None = None,
    ) -> None:
        if min(height, width, chunk_frames, 1 if max_frames is None else max_frames) <= 0:
            raise ValueError(
                f"height, width, chunk_frames, max_frames must be positive: "
                f"{height}, {width}, {chunk_frames}, {max_frames}"
            )
        self.height, self.width = height, width
        self.chunk_frames = chunk_frames
        self.max_frames = max_frames
        self.name = _source_name(source)
        self._abandoned = False
        self._local_path = _local_file(source, self.name)
        self._container = _open(source, self._local_path, self.name)
        if not self._container.streams.video:
            self._container.close()
            raise VideoReadError(f"{self.name}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # decoded frames are identical for any threading
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.info = VideoInfo(
            width=self._stream.width,
            height=self._stream.height,
            fps=Fraction(rate) if rate else None,
            num_frames=self._stream.frames or self._count_frames(),
            has_audio=bool(self._container.streams.audio),
        )

    def _count_frames(self) -> int | None:
        """Frame count of a local file whose container does not store it (e.g. Matroska), by demuxing
        its packets in a second pass (no decoding); None for streams, which cannot be read twice."""
        if self._local_path is None:
            return None
        try:
            with av.open(str(self._local_path), mode="r") as container:
                stream = container.streams.video[0]
                return sum(1 for packet in container.demux(stream) if packet.size) or None
        except av.error.FFmpegError:
            return None

    def frames(self) -> Iterator[np.ndarray]:
        """uint8 RGB frames `[H_src, W_src, 3]` in decode order (PyAV's rgb24 conversion, as imageio's
        pyav plugin in the release), at most `max_frames`."""
        count = 0
        try:
            for frame in self._container.decode(self._stream):
                if self.max_frames is not None and count >= self.max_frames:
                    return
                yield frame.to_ndarray(format="rgb24")
                count += 1
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"{self.name}: decoding failed after {count} frames ({exc})") from exc
        if count == 0:
            raise VideoReadError(f"{self.name}: no frames could be decoded")

    def __iter__(self) -> Iterator[torch.Tensor]:
        batch: list[np.ndarray] = []
        for frame in self.frames():
            batch.append(frame)
            if len(batch) == self.chunk_frames:
                yield transform_frames(np.stack(batch), self.height, self.width)
                batch = []
        if batch:
            yield transform_frames(np.stack(batch), self.height, self.width)

    def close(self) -> None:
        if not self._abandoned:
            self._container.close()

    def abandon(self) -> None:
        """Leave the container open for good: a thread is blocked reading it (a stalled live source),
        and freeing it under that thread would crash; the process frees it when it ends."""
        self._abandoned = True

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(
    source: VideoSource, height: int, width: int, *, chunk_frames: int = 24, max_frames: int | None = None
) -> VideoReader:
    """Open `source` for reading `[3, F, height, width]` float chunks (F <= `chunk_frames`).

    `height`/`width` are the exact output size; the release floors its CLI values to multiples of 32
    (the VAE stride) before calling its reader."""
    return VideoReader(source, height, width, chunk_frames=chunk_frames, max_frames=max_frames)


def _source_name(source: VideoSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


def _local_file(source: VideoSource, name: str) -> Path | None:
    """The local file behind `source` (hub files are fetched); None for URLs, pipes and streams."""
    if not isinstance(source, (str, Path)):
        return None
    text = str(source)
    if is_hub_uri(text):
        try:
            return resolve_path(text, kind="file")
        except HubError as exc:
            raise VideoReadError(str(exc)) from exc
    if "://" in text or text.startswith("pipe:"):
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise VideoReadError(f"{name}: no such file")
    return path


def _open(source: VideoSource, local: Path | None, name: str) -> av.container.InputContainer:
    try:
        return av.open(str(local) if local is not None else source, mode="r")
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{name}: cannot open as a video ({exc.strerror or exc})") from exc
