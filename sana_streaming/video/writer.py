"""Write edited frames progressively to an H.264 MP4 with PyAV, optionally with the source's audio.

Video settings follow the release's writer (meefs/Sana `save_video`: imageio's ffmpeg writer with
`codec="libx264", quality=5`, i.e. `-vcodec libx264 -pix_fmt yuv420p -crf 25` and x264's default preset,
`medium`; docs/io.md), except the preset: ours is `DEFAULT_X264_PRESET` (superfast, chosen by
measurement), medium is one argument away. `encoder="nvenc"` encodes on the GPU's NVENC engine instead
(`choose_encoder`). Frames are converted to uint8 exactly as the release does (truncating). The
RGB -> YUV 4:2:0 conversion uses bicubic chroma filtering, the scaler flag the ffmpeg command line uses:
`write` (and the edit's output path) does it on the frames' device (`video/yuv.py`, within one level of
swscale's), `write_images` takes uint8 RGB and leaves it to swscale.

The file is written under a hidden temporary name in the output folder and published when `close()`
succeeds, so an interrupted or failed run leaves nothing at the output path (nor an output folder it
made). Without `overwrite`, publishing never replaces a file, even one another run wrote meanwhile.
With `fragmented`, an .mp4/.mov file is written in place as fragmented MP4 (a fragment about every
second) so players can open it while it grows; a failed edit still deletes it (and, with `overwrite`,
the file it replaced is gone from the start). The path `-` streams
Matroska to standard output instead, and a udp://, srt://, tcp:// or rtmp:// URL
streams MPEG-TS (FLV for RTMP) there, as it is written (nothing to publish, nothing to take back).

Frame timing: by default frames are spaced at a constant `fps` (the release's writer). With `timestamps`
(the reader's `frame_times()`), output frame i gets the presentation time of source frame i, counted from
the source's first frame: an edit maps source frames one to one to output frames, so a variable-rate
source keeps its timing, its duration and its sync with the audio.

The release writes no audio; `audio_from` copies (re-encodes as AAC) a source's first audio track for the
edited span, aligned to the source's first video frame: the reader's `audio_feed()` (the packets its one
demuxer reads, so pipes and URLs keep their audio) or a file path. Mono stays mono, every other layout
is encoded as stereo.

A writer may be fed from a worker thread while another thread closes or aborts it: its methods hold one
lock, and writing after `close`/`abort` raises `VideoWriteError`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from sana_streaming.config import DEFAULT_X264_PRESET, ENCODERS
from sana_streaming.files import make_folders, make_temp_beside, publish, remove_folders
from sana_streaming.video.reader import AudioFeed, FrameTimes
from sana_streaming.video.yuv import frames_to_yuv420, release_levels

logger = logging.getLogger(__name__)

# Source: meefs/Sana save_video -> imageio ffmpeg writer, quality 5 -> crf int((1 - 5/10) * 51) = 25,
# and x264's default preset.
X264_OPTIONS = {"crf": "25", "preset": "medium"}
# x264's presets, fastest first (`x264 --help`); a faster one trades file size at the same crf for speed.
X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
# NVENC (cards with NVIDIA's encoder engine, e.g. RTX; the H100 and H200 have none): FFmpeg's h264_nvenc at
# a constant quality near x264's crf 25 (VBR with target quality 25 and no bitrate cap), preset p4.
NVENC_OPTIONS = {"rc": "vbr", "cq": "25", "b": "0", "preset": "p4"}
PIXEL_FORMAT = "yuv420p"
CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
STDOUT = "-"  # the output path that streams to standard output
STDOUT_FORMAT = "matroska"  # streamable: a player or ffmpeg reads it from the pipe as it arrives
# Network outputs by URL scheme and their containers (written as they go): MPEG-TS for datagram and
# stream sockets, FLV for RTMP.
URL_FORMATS = {"udp": "mpegts", "srt": "mpegts", "tcp": "mpegts", "rtmp": "flv", "rtmps": "flv"}
CONNECT_TIMEOUT_S = 15.0  # a network output that cannot be reached fails after this long
# Fragmented MP4 that plays while it grows (FFmpeg's mov muxer options): the header first (empty
# moov), then self-contained fragments of about one second, each flushed to the file as it is muxed.
FRAGMENTED_OPTIONS = {
    "movflags": "empty_moov+default_base_moof+frag_keyframe",
    "frag_duration": "1000000",
    "flush_packets": "1",
}


def streamed_format(target: str) -> str | None:
    """The container of a streamed output (`-` or a URL of a known scheme); None for a file path.
    Raises VideoWriteError for a URL of another scheme."""
    if target == STDOUT:
        return STDOUT_FORMAT
    if "://" not in target:
        return None
    scheme = target.split("://", 1)[0].lower()
    if scheme not in URL_FORMATS:
        known = ", ".join(f"{s}://" for s in URL_FORMATS)
        raise VideoWriteError(f"{target}: cannot stream to {scheme}:// (use one of {known}, - or a file)")
    return URL_FORMATS[scheme]


AAC_FRAME_SIZE = 1024


@functools.cache
def nvenc_missing() -> str | None:
    """None when FFmpeg's h264_nvenc opens on this machine, else why not (one line)."""
    if "h264_nvenc" not in av.codecs_available:
        return "this FFmpeg build has no h264_nvenc"
    try:
        probe = av.CodecContext.create("h264_nvenc", "w")
        probe.width, probe.height, probe.pix_fmt = 256, 256, PIXEL_FORMAT
        probe.time_base = Fraction(1, 24)
        probe.open()
    except Exception as exc:  # whatever the driver says, a probe never fails the edit
        return f"h264_nvenc does not open here ({getattr(exc, 'strerror', None) or exc})"
    return None


def choose_encoder(encoder: str, device: torch.device) -> str:
    """`x264` or `nvenc` for an `--encoder` choice (`ENCODERS`) of an edit on `device`: `auto` takes
    NVENC where it opens beside a CUDA device, else x264; `nvenc` falls back to x264 with a notice."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose from {', '.join(ENCODERS)}")
    if encoder == "x264" or (encoder == "auto" and device.type != "cuda"):
        return "x264"
    missing = nvenc_missing()
    if missing is None:
        logger.info("encoding with NVENC (h264_nvenc)")
        return "nvenc"
    if encoder == "nvenc":
        logger.warning("--encoder nvenc: %s; encoding with x264", missing)
    return "x264"


class VideoWriteError(RuntimeError):
    """The output video cannot be written."""


def frames_to_uint8(chunk: torch.Tensor) -> np.ndarray:
    """Decoded frames `[3, F, H, W]` (about [-1, 1], any float dtype/device) -> uint8 `[F, H, W, 3]`.

    As the release (`release_levels`), computed where the frames are, so only uint8 crosses to the
    host."""
    return release_levels(chunk).permute(1, 2, 3, 0).contiguous().cpu().numpy()  # (F, H, W, 3)


def _check_output(
    path: Path,
    fps: Fraction,
    width: int,
    height: int,
    overwrite: bool,
    audio_span: tuple[float, float] | None,
    preset: str,
    streamed: str | None,
    fragmented: bool = False,
) -> str:
    """The container format of `path` (`streamed`'s for a streamed output), after checking the writer's
    arguments (before any file exists)."""
    if preset not in X264_PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}; choose from {', '.join(X264_PRESETS)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even for {PIXEL_FORMAT}: {width}x{height}")
    if audio_span is not None and not 0 <= audio_span[0] < audio_span[1]:
        raise ValueError(f"audio_span must be (start, end) with 0 <= start < end, got {audio_span}")
    if streamed is not None:
        if fragmented:
            raise VideoWriteError(f"{path}: fragmented MP4 is written to a file, not streamed")
        return streamed
    container_format = CONTAINER_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise VideoWriteError(f"{path}: unsupported extension; use one of {sorted(CONTAINER_FORMATS)}")
    if fragmented and container_format not in ("mp4", "mov"):
        raise VideoWriteError(f"{path}: fragmented output needs an .mp4 or .mov file (Matroska grows as is)")
    if path.exists() and not overwrite:
        raise VideoWriteError(
            f"{path} already exists (--overwrite, or overwrite=True in Python, replaces it)"
        )
    if path.is_dir():
        raise VideoWriteError(f"{path} is a folder")
    return container_format


class VideoWriter:
    """`with VideoWriter(path, fps, width, height) as out: out.write(chunk)`; published on close.

    `path`: an .mp4/.mov/.mkv file, or `-` or a udp/srt/tcp/rtmp URL to stream to (`streamed_format`).

    `audio_from`: a reader's `audio_feed()` or a source file whose first audio track is copied;
    `audio_span`: `(start, end)` seconds of that source, measured from its first video frame (None: from
    0 for as long as the written video). `timestamps`: a reader's `frame_times()` to follow the source's
    frame times instead of the constant `fps`. `metadata`: container tags (e.g. `comment`) written into
    the file's header. `fragmented`: write an .mp4/.mov in place as fragmented MP4 (see above).
    `encoder`: `x264` (with `preset`) or `nvenc` (`NVENC_OPTIONS`; see `choose_encoder`)."""

    def __init__(
        self,
        path: str | Path,
        fps: float | Fraction,
        width: int,
        height: int,
        *,
        overwrite: bool = False,
        audio_from: AudioFeed | str | Path | None = None,
        audio_span: tuple[float, float] | None = None,
        timestamps: FrameTimes | None = None,
        preset: str = DEFAULT_X264_PRESET,
        metadata: dict[str, str] | None = None,
        fragmented: bool = False,
        encoder: str = "x264",
    ) -> None:
        if encoder not in ("x264", "nvenc"):
            raise ValueError(f"encoder must be x264 or nvenc (see choose_encoder), got {encoder!r}")
        self.encoder = encoder
        streamed = streamed_format(str(path))
        self.streamed = streamed is not None
        self.path = Path(path).expanduser()
        self.target = str(path) if self.streamed else str(self.path)  # a URL keeps its "//"
        self.fps = Fraction(fps).limit_denominator(100_000)
        container_format = _check_output(
            self.path, self.fps, width, height, overwrite, audio_span, preset, streamed, fragmented
        )
        self.fragmented = fragmented
        self.width, self.height = width, height
        self.frames_written = 0
        self.overwrite = overwrite
        self.has_audio = audio_from is not None
        self._lock = threading.RLock()
        self._timestamps = timestamps
        self._last_pts = -1
        self._end = Fraction(0)  # output seconds at which the last written frame ends
        if self.streamed:
            self._folders, self._temp = [], None
        else:  # a fragmented file grows where it is seen; any other is published when done
            self._folders, self._temp = (
                _in_place(self.path, overwrite) if fragmented else _make_temp(self.path)
            )
        self._open_for_writing = True
        self._audio: _AudioCopier | None = None
        try:
            self._open(container_format, preset, metadata)
            if audio_from is not None:
                self._audio = _AudioCopier(_audio_source(audio_from), self._container, audio_span)
            if self.streamed and self.target != STDOUT:
                self._connect()
        except BaseException:
            self.abort()
            raise

    def _open(self, container_format: str, preset: str, metadata: dict[str, str] | None) -> None:
        """The temporary file's container (or a streamed output's, written as it goes: standard output
        in Matroska's live mode, which never seeks back, or a URL) and its H.264 stream (the source's
        time base when following its frame times)."""
        if self.target == STDOUT:
            self._container = av.open(
                sys.stdout.buffer, mode="w", format=container_format, options={"live": "1"}
            )
        elif self.streamed:
            try:
                self._container = av.open(
                    self.target, mode="w", format=container_format, timeout=CONNECT_TIMEOUT_S
                )
            except av.error.FFmpegError as exc:
                raise VideoWriteError(f"{self.target}: cannot stream there ({exc.strerror or exc})") from exc
        else:
            options = FRAGMENTED_OPTIONS if self.fragmented else {}
            self._container = av.open(str(self._temp), mode="w", format=container_format, options=options)
        self._container.metadata.update(metadata or {})
        if self.encoder == "nvenc":
            self._stream = self._container.add_stream("h264_nvenc", rate=self.fps, options=NVENC_OPTIONS)
        else:
            options = {**X264_OPTIONS, "preset": preset}
            self._stream = self._container.add_stream("libx264", rate=self.fps, options=options)
            # x264's own threads; an explicit count is faster than FFmpeg's 0 ("auto") through PyAV
            self._stream.codec_context.thread_count = min(16, os.cpu_count() or 1)
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, PIXEL_FORMAT
        if self._timestamps is not None:  # frame pts in the source's time base
            self._stream.codec_context.time_base = self._stream.time_base = self._timestamps.time_base

    def _connect(self) -> None:
        """Open a URL output now (FFmpeg would at the first packet): a receiver that is not there fails
        the edit before it starts."""
        try:
            self._container.start_encoding()
        except av.error.FFmpegError as exc:
            raise VideoWriteError(f"{self.target}: cannot stream there ({exc.strerror or exc})") from exc

    def write(self, frames: torch.Tensor) -> None:
        """Append decoded frames `[3, F, H, W]` (values about [-1, 1])."""
        if frames.ndim != 4 or tuple(frames.shape[2:]) != (self.height, self.width):
            raise ValueError(
                f"expected frames [3, F, {self.height}, {self.width}], got {tuple(frames.shape)}"
            )
        self.write_yuv(frames_to_yuv420(frames).cpu().numpy())

    def write_yuv(self, planes: np.ndarray) -> None:
        """Append uint8 yuv420p planes `[F, 3H/2, W]` (see `frames_to_yuv420`): no conversion left to do."""
        if planes.dtype != np.uint8 or planes.shape[1:] != (self.height * 3 // 2, self.width):
            raise ValueError(
                f"expected uint8 yuv420p planes [F, {self.height * 3 // 2}, {self.width}], got {planes.shape}"
            )
        self._encode(av.VideoFrame.from_ndarray(plane, format=PIXEL_FORMAT) for plane in planes)

    def write_images(self, images: np.ndarray) -> None:
        """Append uint8 RGB images `[F, H, W, 3]` (see `frames_to_uint8`), converted by swscale."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 images [F, {self.height}, {self.width}, 3], got {images.shape}")
        self._encode(
            av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format=PIXEL_FORMAT, interpolation="BICUBIC"
            )
            for image in images
        )

    def _encode(self, frames: Iterator[av.VideoFrame]) -> None:
        """Time, encode and mux `frames` (made as they are taken), then the audio up to them."""
        with self._lock:
            if not self._open_for_writing:
                raise VideoWriteError(f"{self.target}: the writer is closed")
            try:
                for frame in frames:
                    self._time(frame)
                    self._container.mux(self._stream.encode(frame))
                    self.frames_written += 1
                if self._audio is not None:
                    self._audio.encode_until(self._end, final=False)
            except av.error.FFmpegError as exc:
                raise VideoWriteError(f"{self.target}: encoding failed ({exc})") from exc

    def _time(self, frame: av.VideoFrame) -> None:
        """Give the next frame its pts: the next source frame's time, or the constant `fps` spacing."""
        if self._timestamps is None:
            frame.pts, frame.time_base = self.frames_written, 1 / self.fps
            self._end = (self.frames_written + 1) / self.fps
            return
        try:
            pts, duration = self._timestamps.pop()
        except IndexError:
            raise VideoWriteError(f"{self.target}: more frames written than the source gave") from None
        pts = max(pts, self._last_pts + 1)  # the encoder needs strictly increasing times
        frame.pts, frame.duration, frame.time_base = pts, duration, self._timestamps.time_base
        self._last_pts = pts
        self._end = (pts + duration) * self._timestamps.time_base

    def close(self) -> None:
        """Finish encoding and move the file into place (a fragmented file is there already). Nothing is
        left at the output path on failure."""
        with self._lock:
            if self._open_for_writing:
                self._finish()

    def _finish(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.encode_until(self._end, final=True)
            self._container.close()
            self._open_for_writing = False
            if self._temp is not None and not self.fragmented:
                publish(self._temp, self.path, overwrite=self.overwrite)
            self._temp = None
        except FileExistsError:
            self._abort()
            raise VideoWriteError(
                f"{self.path} appeared while writing and was kept (--overwrite, or overwrite=True in "
                "Python, replaces it)"
            ) from None
        except av.error.FFmpegError as exc:
            self._abort()
            raise VideoWriteError(f"{self.target}: finishing the file failed ({exc})") from exc
        except BaseException:
            self._abort()
            raise

    def abort(self) -> None:
        """Stop and delete the partial file."""
        with self._lock:
            self._abort()

    def _abort(self) -> None:
        self._open_for_writing = False
        if self._audio is not None:
            self._audio.close()
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None
            remove_folders(self._folders)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _in_place(path: Path, overwrite: bool) -> tuple[list[Path], Path]:
    """The folders made for `path`, and `path` itself, created empty: a file there is replaced only
    with `overwrite` (at once, so a failed edit leaves neither)."""
    folders: list[Path] = []
    try:
        folders = make_folders(path.parent)
        with path.open("wb" if overwrite else "xb"):
            pass
        return folders, path
    except FileExistsError:
        remove_folders(folders)
        raise VideoWriteError(
            f"{path} already exists (--overwrite, or overwrite=True in Python, replaces it)"
        ) from None
    except OSError as exc:
        remove_folders(folders)
        raise VideoWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _make_temp(path: Path) -> tuple[list[Path], Path]:
    """The folders made for `path` and an empty hidden file beside it (its suffix keeps the container
    recognisable)."""
    folders: list[Path] = []
    try:
        folders = make_folders(path.parent)
        return folders, make_temp_beside(path, suffix=f".partial{path.suffix}")
    except OSError as exc:
        remove_folders(folders)
        raise VideoWriteError(f"cannot write in folder {path.parent}: {exc.strerror or exc}") from exc


class _FileAudio:
    """A file's first audio track read by its own demuxer, with `AudioFeed`'s interface."""

    def __init__(self, path: Path) -> None:
        try:
            self._input = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoWriteError(f"{path}: cannot open for its audio ({exc})") from exc
        if not self._input.streams.audio:
            self._input.close()
            raise VideoWriteError(f"{path}: has no audio track to copy")
        self.name = str(path)
        self.stream = self._input.streams.audio[0]
        video = self._input.streams.video
        start = video[0].start_time if video else None
        self.video_start = Fraction(start * video[0].time_base) if start else Fraction(0)
        self._packets = (p for p in self._input.demux(self.stream) if p.size)

    def get(self) -> av.Packet | None:
        return next(self._packets, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._input.close()


def _audio_source(audio_from: AudioFeed | str | Path) -> AudioFeed | _FileAudio:
    if isinstance(audio_from, AudioFeed):
        return audio_from
    return _FileAudio(Path(audio_from).expanduser())


class _AudioCopier:
    """Decode a source's first audio track, keep `[start, end)` seconds after its first video frame
    (padding with silence if the audio starts late), and encode it as AAC into the output container.

    Re-encoded rather than stream-copied so any source codec works and the cut is sample-exact. Packets
    are taken as they are waiting (a reader's feed never blocks), so the output follows the video."""

    def __init__(
        self,
        source: AudioFeed | _FileAudio,
        output: av.container.OutputContainer,
        span: tuple[float, float] | None,
    ) -> None:
        self._source = source
        codec = source.stream.codec_context
        self.rate = codec.sample_rate
        self._layout = "mono" if codec.channels == 1 else "stereo"
        try:
            self._stream = output.add_stream("aac", rate=self.rate, layout=self._layout)
        except av.error.FFmpegError as exc:
            source.close()
            raise VideoWriteError(f"{source.name}: cannot encode its audio as AAC ({exc})") from exc
        self._output = output
        self._decoder = codec
        self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self.rate)
        self._start_time = source.video_start + Fraction(span[0] if span else 0)
        self._limit = round((span[1] - span[0]) * self.rate) if span else None
        self._to_drop: int | None = None  # samples before the start, known from the first block
        self._flushed = False
        self._pending = np.zeros((1 if self._layout == "mono" else 2, 0), dtype=np.float32)
        self._encoded = 0  # samples handed to the encoder

    def _pull(self, final: bool) -> bool:
        """Decode the next waiting packet into `_pending` (at the end, flush the decoder); False when
        nothing more is available now."""
        packet = self._source.get()
        if packet is None and (not final or self._flushed):
            return False
        self._flushed = packet is None
        frames = self._decoder.decode(packet)
        blocks = [block for frame in frames for block in self._resampler.resample(frame)]
        if packet is None:
            blocks += self._resampler.resample(None)
        for block in blocks:
            self._append(block)
        return True

    def _append(self, block: av.AudioFrame) -> None:
        """Add a planar float32 block, aligned so that sample 0 is at `_start_time` (source seconds)."""
        data = block.to_ndarray()
        if self._to_drop is None:  # first block: align to the start
            first = block.pts * block.time_base if block.pts is not None else 0
            offset = round((first - self._start_time) * self.rate)
            if offset > 0:
                data = np.concatenate([np.zeros((data.shape[0], offset), dtype=np.float32), data], axis=1)
            self._to_drop = max(0, -offset)
        drop = min(self._to_drop, data.shape[1])
        self._to_drop -= drop
        self._pending = np.concatenate([self._pending, data[:, drop:]], axis=1)

    def encode_until(self, seconds: Fraction, *, final: bool) -> None:
        """Encode audio up to `seconds` of output (only whole AAC frames unless `final`)."""
        target = round(seconds * self.rate)
        if self._limit is not None and (final or target > self._limit):
            target = self._limit
        while self._pending.shape[1] < target - self._encoded and self._pull(final):
            pass
        available = min(self._pending.shape[1], target - self._encoded)
        while available >= AAC_FRAME_SIZE or (final and available > 0):
            size = min(AAC_FRAME_SIZE, available)
            self._encode(self._pending[:, :size])
            self._pending = self._pending[:, size:]
            available -= size
        if final:
            self._output.mux(self._stream.encode(None))
            self.close()

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=self._layout)
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self._encoded, Fraction(1, self.rate)
        self._encoded += samples.shape[1]
        self._output.mux(self._stream.encode(frame))

    def close(self) -> None:
        self._source.close()
