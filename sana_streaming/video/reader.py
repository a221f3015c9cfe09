"""Decode a source video with PyAV and turn it into model input, chunk by chunk.

Frames come out in presentation order as float32 `[3, F, H, W]` chunks in [-1, 1], transformed exactly as
the release's `read_video` (meefs/Sana inference_video_scripts/v2v/inference_sana_streaming.py with
diffusion/data/transforms.py; docs/io.md): `/255`, cover-scale with bilinear interpolation (no
antialias, Python `round`), floor-centred crop, `(x - 0.5) / 0.5`, all in float32 (on the CPU in the
release; an edit does it on its device, `raw_chunks` and `transform`). Every step is per frame, so
chunking gives the same values as the release's whole-clip transform.

Frames are first turned upright by the stream's display rotation (the DISPLAYMATRIX side data that
phones and `-metadata:s:v:0 rotate=...` leave), as FFmpeg's autorotate does; `VideoInfo` gives the upright
size. Only quarter turns are applied (an odd angle is rounded to the nearest one); flips are ignored.

Sources: a local path, an `hf://` URI, a URL that FFmpeg opens (http, rtsp, ...), `pipe:N`, `-` for
standard input (FFmpeg reads fd 0 itself, taking what is available rather than waiting for full blocks),
or a readable binary file object. A non-seekable source needs a streamable container (Matroska, MPEG-TS,
fragmented MP4) and usually has no known frame count.

Each source is read once: the first audio track is demuxed together with the video, and the writer
takes it from `audio_feed()` (a bounded hand-off), so streams that cannot be reopened keep their audio.
`frame_times()` hands the frames' presentation times to the writer the same way (see writer.py). A frame
is given out only once the audio up to its end has been demuxed (or `AUDIO_WAIT_FRAMES` later frames
were decoded), so the writer always has the audio of the frames it writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F

from sana_streaming.background import interruptible
from sana_streaming.hub import HubError, is_hub_uri, resolve_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormattedSource:
    """A source FFmpeg must be told the input format of: a device (`v4l2` camera, `x11grab` screen)
    or a filter graph (`lavfi`), or a stream whose container is not probed (`mpegts`)."""

    path: str
    format: str


VideoSource = str | Path | BinaryIO | FormattedSource
STDIN = "-"
AUDIO_WAIT_FRAMES = 12  # decoded frames held back at most while their audio has not been demuxed yet
AUDIO_BUFFER_SECONDS = 120  # audio the feed may hold before its consumer takes it


class VideoReadError(RuntimeError):
    """The source cannot be opened or decoded as a video."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the source before decoding (sizes upright)."""

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


@dataclass
class FrameTimes:
    """Presentation times of the frames given out and not yet written, in `time_base` units from the
    first frame: the reader appends `(pts, duration)`, the writer pops one per frame it writes, so only
    the frames in flight are held."""

    time_base: Fraction
    _times: deque[tuple[int, int]] = field(default_factory=deque)

    def push(self, pts: int, duration: int) -> None:
        self._times.append((pts, duration))

    def pop(self) -> tuple[int, int]:
        """The next frame's `(pts, duration)`; IndexError when the reader has given out no more."""
        return self._times.popleft()

    def retract(self, count: int) -> None:
        """Forget the `count` newest frames (a dropped chunk: never written)."""
        for _ in range(count):
            self._times.pop()


class AudioFeed:
    """The source's first audio track, demuxed by the reader with the video and handed packet by packet
    to one consumer (the writer's audio copier, which decodes them with `stream`'s decoder).

    `get` never waits: the reader gives a frame out only after the audio up to its end, so a consumer
    that follows the written video finds its packets here. At most `AUDIO_BUFFER_SECONDS` are held."""

    def __init__(self, stream: av.AudioStream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.video_start = Fraction(0)  # source seconds of the first video frame (set by the reader)
        self.demuxed_until = Fraction(-1)  # source seconds up to which packets were demuxed
        self._packets: deque[av.Packet] = deque()

    def put(self, packet: av.Packet) -> None:
        if packet.pts is not None:
            end = (packet.pts + (packet.duration or 0)) * packet.time_base
            self.demuxed_until = max(self.demuxed_until, end)
            oldest = self._packets[0].pts if self._packets else None
            if oldest is not None and end - oldest * packet.time_base > AUDIO_BUFFER_SECONDS:
                raise VideoReadError(
                    f"{self.name}: the audio runs more than {AUDIO_BUFFER_SECONDS} s ahead of the video "
                    "being written; edit without the audio"
                )
        self._packets.append(packet)

    def get(self) -> av.Packet | None:
        """The next packet, or None when none is waiting."""
        return self._packets.popleft() if self._packets else None

    def clear(self) -> None:
        self._packets.clear()

    def close(self) -> None:
        """Nothing to free: the reader owns the demuxer."""


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
    """uint8 frames `[F, H_src, W_src, 3]` -> float32 `[3, F, height, width]` in [-1, 1] (docs/io.md)."""
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


def upright_turns(rotation: float) -> int:
    """Counterclockwise quarter turns (`np.rot90`'s k) that show a frame of display rotation `rotation`
    (PyAV's `VideoFrame.rotation`: degrees counterclockwise) upright; `rotate=90` metadata is -90 here."""
    return round(rotation / 90) % 4


class VideoReader:
    """An open source video: `info`, then iterate for `[3, F, height, width]` chunks. Use `open_video`.

    The first frame is decoded on opening (its display rotation sets the upright size)."""

    def __init__(
        self,
        source: VideoSource,
        height: int,
        width: int,
        *,
        chunk_frames: int = 24,
        max_frames: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if min(height, width, chunk_frames, 1 if max_frames is None else max_frames) <= 0:
            raise ValueError(
                f"height, width, chunk_frames, max_frames must be positive: "
                f"{height}, {width}, {chunk_frames}, {max_frames}"
            )
        self.height, self.width = height, width
        self.chunk_frames = chunk_frames
        self.max_frames = max_frames
        self.device = torch.device(device)
        self.name = _source_name(source)
        self.realtime_source = _realtime(source)
        self.dropped_frames = 0  # source frames read but never edited (`drop_chunk`)
        self._abandoned = False
        self._local_path = _local_file(source, self.name)
        self._container = _open(source, self._local_path, self.name)
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise

    def _setup(self) -> None:
        if not self._container.streams.video:
            raise VideoReadError(f"{self.name}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # decoded frames are identical for any threading
        audio = self._container.streams.audio
        self._audio = AudioFeed(audio[0], self.name) if audio else None
        self._audio_wanted: bool | None = None  # None until iteration starts: keep it for a claim
        self._times: FrameTimes | None = None
        self._started = False
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._fps = Fraction(rate) if rate else None
        self._timed = self._timed_frames()
        self._first = self._next_timed()
        if self._first is None:
            raise VideoReadError(f"{self.name}: no frames could be decoded")
        first = self._first[0]
        self._turns = upright_turns(first.rotation)
        self._first_pts = first.pts
        if self._audio is not None:
            self._audio.video_start = first.pts * self._stream.time_base
        width, height = (first.height, first.width) if self._turns % 2 else (first.width, first.height)
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=self._fps,
            num_frames=_at_most(self._stream.frames or self._count_frames(), self.max_frames),
            has_audio=self._audio is not None,
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

    def audio_feed(self) -> AudioFeed:
        """The source's first audio track for the writer (`VideoWriter(audio_from=...)`); claim it before
        iterating, else the audio is skipped."""
        self._claim("audio_feed")
        if self._audio is None:
            raise VideoReadError(f"{self.name}: has no audio track to copy")
        self._audio_wanted = True
        return self._audio

    def frame_times(self) -> FrameTimes:
        """The given-out frames' presentation times for the writer (`VideoWriter(timestamps=...)`);
        claim them before iterating, else none are kept."""
        self._claim("frame_times")
        if self._times is None:
            self._times = FrameTimes(self._stream.time_base)
        return self._times

    def _claim(self, what: str) -> None:
        if self._started:
            raise RuntimeError(f"{what}() must be called before the frames are read")

    def _demuxed(self) -> Iterator[av.VideoFrame]:
        """Decoded video frames in presentation order; audio packets go to the feed on the way."""
        streams = [self._stream] if self._audio is None else [self._stream, self._audio.stream]
        previous: int | None = None
        for packet in self._container.demux(*streams):
            if packet.stream is self._stream:
                for frame in packet.decode():
                    if frame.pts is None:  # a stream without timestamps: evenly spaced
                        frame.pts = 0 if previous is None else previous + self._default_duration()
                    previous = frame.pts
                    yield frame
            elif self._audio_wanted is not False and packet.size:
                self._audio.put(packet)

    def _timed_frames(self) -> Iterator[tuple[av.VideoFrame, int]]:
        """`(frame, duration)`, the duration (stream time base) being the gap to the next frame; each is
        held back until the audio up to its end was demuxed, or `AUDIO_WAIT_FRAMES` followed it."""
        pending: deque[av.VideoFrame] = deque()
        for frame in self._demuxed():
            pending.append(frame)
            while len(pending) > 1 and (
                self._audio_covers(pending[1].pts) or len(pending) > AUDIO_WAIT_FRAMES
            ):
                done = pending.popleft()
                yield done, max(pending[0].pts - done.pts, 0)
        while pending:
            done = pending.popleft()
            yield done, max(pending[0].pts - done.pts, 0) if pending else self._last_duration(done)

    def _audio_covers(self, pts: int) -> bool:
        if self._audio is None or self._audio_wanted is False:
            return True
        return self._audio.demuxed_until >= pts * self._stream.time_base

    def _default_duration(self) -> int:
        """One frame at the average rate, in the stream's time base (at least 1)."""
        if self._fps is None:
            return 1
        return max(1, round(1 / (self._fps * self._stream.time_base)))

    def _last_duration(self, frame: av.VideoFrame) -> int:
        return frame.duration or self._default_duration()

    def _next_timed(self) -> tuple[av.VideoFrame, int] | None:
        try:
            return next(self._timed, None)
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"{self.name}: decoding failed ({exc})") from exc

    def limit(self, max_frames: int) -> None:
        """Read at most `max_frames` frames (before iteration starts); `info.num_frames` follows."""
        if self._started:
            raise RuntimeError(f"{self.name}: limit() after the frames were read")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.max_frames = max_frames if self.max_frames is None else min(self.max_frames, max_frames)
        self.info = dataclasses.replace(self.info, num_frames=_at_most(self.info.num_frames, max_frames))

    @property
    def is_live(self) -> bool:
        """A source of unknown length (a pipe, a network stream): its end or a read error mid-way is
        where the edit ends, not a failure."""
        return self.info.num_frames is None

    @property
    def paced(self) -> bool:
        """A live source that produces frames in real time (a network stream, a capture device), as
        opposed to a pipe, which waits for its reader: the editor can fall behind it."""
        return self.is_live and self.realtime_source

    def drop_chunk(self, chunk: torch.Tensor) -> None:
        """Give up the newest chunk read (`[3, F, H, W]`, not yet edited): its frames are counted in
        `dropped_frames` and get no output frame, their times leave `frame_times()`."""
        if self._times is not None:
            self._times.retract(chunk.shape[1])
        self.dropped_frames += chunk.shape[1]

    def frames(self) -> Iterator[np.ndarray]:
        """uint8 RGB frames `[H, W, 3]`, upright, in presentation order (PyAV's rgb24 conversion, as
        imageio's pyav plugin in the release), at most `max_frames`; readable once."""
        if self._started:
            raise RuntimeError(f"{self.name}: the frames were already read")
        self._started = True
        if not self._audio_wanted and self._audio is not None:
            self._audio_wanted = False
            self._audio.clear()
        timed = itertools.chain([self._first], self._timed)
        count = 0
        try:
            for frame, duration in timed:
                if self.max_frames is not None and count >= self.max_frames:
                    return
                if self._times is not None:
                    self._times.push(frame.pts - self._first_pts, duration)
                yield self._upright(frame.to_ndarray(format="rgb24"))
                count += 1
        except av.error.FFmpegError as exc:
            why = _why(exc)
            if not self.is_live:
                raise VideoReadError(f"{self.name}: decoding failed after {count} frames ({why})") from exc
            logger.warning("%s stopped after %d frames (%s); editing what arrived", self.name, count, why)

    def _upright(self, image: np.ndarray) -> np.ndarray:
        if not self._turns:
            return image
        return np.ascontiguousarray(np.rot90(image, self._turns))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Chunks `[3, F, height, width]` (`transform_frames`) on `device`."""
        return map(self.transform, self.raw_chunks())

    def raw_chunks(self) -> Iterator[torch.Tensor]:
        """The decoded frames as uint8 chunks `[3, F, H_src, W_src]` (a channels-first view) in host
        memory, pinned when `device` is a GPU, for `transform`. An edit reads these ahead on a thread:
        only the decoding stays on the host, and the float work is left to the edit's device (on the
        host it would compete with the writer's x264 for the cores)."""
        batch: list[np.ndarray] = []
        for frame in self.frames():
            batch.append(frame)
            if len(batch) == self.chunk_frames:
                yield self._stacked(batch)
                batch = []
        if batch:
            yield self._stacked(batch)

    def _stacked(self, batch: list[np.ndarray]) -> torch.Tensor:
        # (F, H_src, W_src, 3), stacked straight into pinned memory when `device` is a GPU, so that
        # `transform` uploads it without waiting (and without a second host copy)
        frames = torch.empty(
            (len(batch), *batch[0].shape), dtype=torch.uint8, pin_memory=self.device.type == "cuda"
        )
        np.stack(batch, out=frames.numpy())
        return frames.permute(3, 0, 1, 2)  # (3, F, H_src, W_src), a view

    def transform(self, chunk: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """A `raw_chunks` chunk (or a slice of its frames) as the float chunk `[3, F, height, width]` on
        `device` (default: the reader's). The source-size float intermediate is made a few frames at a
        time, so it stays about the size of the output chunk however large the source is."""
        target = self.device if device is None else torch.device(device)
        frames = chunk.to(target, non_blocking=True).permute(1, 2, 3, 0)  # (F, H_src, W_src, 3)
        step = max(1, chunk.shape[1] * self.height * self.width // (chunk.shape[2] * chunk.shape[3]))
        parts = [transform_frames(part, self.height, self.width) for part in frames.split(step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

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
    source: VideoSource,
    height: int,
    width: int,
    *,
    chunk_frames: int = 24,
    max_frames: int | None = None,
    device: torch.device | str = "cpu",
) -> VideoReader:
    """Open `source` for reading `[3, F, height, width]` float chunks (F <= `chunk_frames`) on `device`.

    `height`/`width` are the exact output size; the release floors its CLI values to multiples of 32
    (the VAE stride) before calling its reader. Opening runs on a thread so that Ctrl-C reaches a
    caller waiting on a live source that sends nothing."""
    return interruptible(
        lambda: VideoReader(
            source, height, width, chunk_frames=chunk_frames, max_frames=max_frames, device=device
        )
    )


def _at_most(count: int | None, limit: int | None) -> int | None:
    """`count` capped by `limit`; None (unknown) stays None."""
    return count if count is None or limit is None else min(count, limit)


def _source_name(source: VideoSource) -> str:
    if isinstance(source, FormattedSource):
        return f"{source.format}:{source.path}"
    if isinstance(source, (str, Path)):
        return "stdin" if str(source) == STDIN else str(source)
    return str(getattr(source, "name", "<stream>"))


# Sources that produce frames at their own pace whether or not they are read: capture devices and
# network streams (FFmpeg's input formats and URL protocols). A lavfi graph or a pipe waits instead.
REALTIME_FORMATS = frozenset(
    {"v4l2", "video4linux2", "x11grab", "avfoundation", "dshow", "gdigrab", "kmsgrab", "decklink"}
)
REALTIME_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp", "http", "https"})


def _realtime(source: VideoSource) -> bool:
    if isinstance(source, FormattedSource):
        return source.format in REALTIME_FORMATS
    if isinstance(source, str) and "://" in source:
        return source.split("://", 1)[0].lower() in REALTIME_SCHEMES
    return False


def _local_file(source: VideoSource, name: str) -> Path | None:
    """The local file behind `source` (hub files are fetched); None for stdin, URLs, pipes and streams."""
    if not isinstance(source, (str, Path)):
        return None
    text = str(source)
    if is_hub_uri(text):
        try:
            return resolve_path(text, kind="file")
        except HubError as exc:
            raise VideoReadError(str(exc)) from exc
    if text == STDIN or "://" in text or text.startswith("pipe:"):
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        raise VideoReadError(f"{name}: is a folder, not a video file")
    if not path.is_file():
        raise VideoReadError(f"{name}: no such file")
    return path


def _open(source: VideoSource, local: Path | None, name: str) -> av.container.InputContainer:
    if isinstance(source, (str, Path)) and str(source) == STDIN:
        source = _stdin_url()
    network = isinstance(source, (str, Path)) and "://" in str(source) and local is None
    try:
        if isinstance(source, FormattedSource):
            return av.open(source.path, mode="r", format=source.format, timeout=NETWORK_TIMEOUTS)
        if network:
            return av.open(str(source), mode="r", timeout=NETWORK_TIMEOUTS)
        return av.open(str(local) if local is not None else source, mode="r")
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{name}: cannot open as a video ({_why(exc, opening=True)})") from exc


def _why(exc: av.error.FFmpegError, opening: bool = False) -> str:
    """FFmpeg's reason, in words where it is a network timeout (FFmpeg says "Immediate exit requested")."""
    if isinstance(exc, av.error.ExitError):
        seconds = NETWORK_TIMEOUTS[0 if opening else 1]
        return f"no data from the source for {seconds:g} s"
    return str(exc.strerror or exc)


# Seconds a network source may take to open, and to send the next data once open (PyAV's `timeout`):
# a server that stops answering ends a live edit with what arrived, or fails a file edit, in one line.
NETWORK_TIMEOUTS = (15.0, 10.0)


def _stdin_url() -> str:
    """FFmpeg's `pipe:0`: it reads fd 0 itself, returning what each read gives (a buffered Python
    reader would wait for full 32 KiB blocks of a slow pipe)."""
    try:
        os.fstat(0)
    except OSError:
        raise VideoReadError("stdin: is closed; pipe a video into it") from None
    return "pipe:0"
