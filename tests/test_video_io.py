"""Video reader/writer: the release's transform (docs/io.md), round trips with and without audio, errors,
atomic writes. All clips are synthetic and written by the tests with PyAV."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_video import clip_frames, make_clip, probe

from sana_streaming.video import (
    VideoReadError,
    VideoWriteError,
    VideoWriter,
    frames_to_uint8,
    open_video,
    resize_crop_geometry,
    transform_frames,
)


def _direct_transform(frames: np.ndarray, th: int, tw: int) -> torch.Tensor:
    """docs/io.md's transform step by step: ToTensorVideo, ResizeCrop, in-place Normalize, (3, F, H, W)."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    h, w = clip.shape[-2:]
    rh, rw = th / h, tw / w
    if rh > rw:
        sh, sw = th, round(w * rh)
        i, j = 0, int(round(sw - tw) / 2.0)
    else:
        sh, sw = round(h * rw), tw
        i, j = int(round(sh - th) / 2.0), 0
    clip = F.interpolate(clip, size=(sh, sw), mode="bilinear", align_corners=False, antialias=False)
    clip = clip[..., i : i + th, j : j + tw]
    mean = torch.tensor([0.5, 0.5, 0.5]).view(-1, 1, 1)
    clip.sub_(mean).div_(mean)
    return clip.permute(1, 0, 2, 3)


@pytest.mark.parametrize(
    ("src", "target", "expected"),
    [
        ((720, 1280), (704, 1280), (720, 1280, 8, 0)),  # spec example: identity resize, rows 8..711
        ((1080, 1920), (704, 1280), (720, 1280, 8, 0)),  # spec example: downscale without antialias
        ((50, 100), (64, 64), (64, 128, 0, 32)),  # rh > rw: crop columns
        ((100, 50), (64, 64), (128, 64, 32, 0)),  # rh < rw: crop rows
        ((2, 5), (3, 3), (3, 8, 0, 2)),  # round(7.5) = 8 (half to even), floor((8 - 3) / 2) = 2
        ((2, 5), (1, 2), (1, 2, 0, 0)),  # equal ratios take the row branch; round(2.5) = 2
    ],
)
def test_resize_crop_geometry(src: tuple[int, int], target: tuple[int, int], expected: tuple) -> None:
    g = resize_crop_geometry(*src, *target)
    assert (g.resized_h, g.resized_w, g.top, g.left) == expected


@pytest.mark.parametrize(
    ("src", "target"), [((37, 53), (32, 64)), ((45, 30), (32, 32)), ((24, 40), (24, 40))]
)
def test_transform_equals_direct_computation(src: tuple[int, int], target: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, size=(5, *src, 3), dtype=np.uint8)
    out = transform_frames(frames, *target)
    expected = _direct_transform(frames, *target)
    assert out.shape == (3, 5, *target) and out.dtype == torch.float32
    assert torch.equal(out, expected)  # bit for bit
    chunked = torch.cat([transform_frames(frames[:2], *target), transform_frames(frames[2:], *target)], dim=1)
    assert torch.equal(chunked, out)  # chunking does not change values
    with pytest.raises(ValueError, match="uint8"):
        transform_frames(frames.astype(np.float32), *target)


def test_frames_to_uint8_truncates_like_the_release() -> None:
    values = torch.tensor([-2.0, -1.0, -0.9999, -0.5, 0.0, 0.0039, 0.5, 0.9999, 1.0, 3.0])
    chunk = values.view(1, -1, 1, 1).expand(3, -1, 2, 2)
    expected = np.floor(np.clip(127.5 * values.numpy() + 127.5, 0, 255)).astype(np.uint8)
    out = frames_to_uint8(chunk)
    assert out.shape == (10, 2, 2, 3) and out.dtype == np.uint8
    assert (out[:, 0, 0, 0] == expected).all()
    assert (frames_to_uint8(chunk.bfloat16()) == frames_to_uint8(chunk.bfloat16().float())).all()


@pytest.mark.parametrize("fps", [16, 24])
@pytest.mark.parametrize("audio", [False, True])
def test_round_trip(tmp_path: Path, fps: int, audio: bool) -> None:
    source = tmp_path / "source.mp4"
    frames = make_clip(source, num_frames=33, fps=fps, width=64, height=48, audio=audio, sample_rate=48000)
    output = tmp_path / "out" / "edited.mp4"  # the folder is created
    with open_video(source, 32, 64, chunk_frames=8) as reader:
        assert reader.info.fps == fps and reader.info.num_frames == 33
        assert (reader.info.width, reader.info.height, reader.info.has_audio) == (64, 48, audio)
        chunks = list(reader)
        audio_from = source if audio else None
        with VideoWriter(output, fps, 64, 32, audio_from=audio_from) as writer:
            for chunk in chunks:
                writer.write(chunk)
    assert [c.shape[1] for c in chunks] == [8, 8, 8, 8, 1]
    facts = probe(output)
    assert (facts["frames"], facts["width"], facts["height"], facts["fps"]) == (33, 64, 32, fps)
    if audio:
        assert abs(facts["audio_seconds"] - facts["video_seconds"]) <= 1 / fps
        with av.open(str(output)) as container:  # the container's own duration (edit list applied)
            stream = container.streams.audio[0]
            assert abs(float(stream.duration * stream.time_base) - 33 / fps) <= 1 / fps
    else:
        assert facts["audio_seconds"] is None
    # Pixels survive two lossy encodes: compare with the transform of the frames that were written.
    with open_video(output, 32, 64, chunk_frames=64) as reader:
        decoded = next(iter(reader))
    assert (decoded - transform_frames(frames, 32, 64)).abs().mean() < 0.05


def test_audio_span_is_cut_exactly(tmp_path: Path) -> None:
    """Audio for source seconds [0.5, 1.5) lines up with the source's samples at that offset."""
    source = tmp_path / "source.mp4"
    make_clip(source, num_frames=32, fps=16, audio=True, sample_rate=48000)
    rng = np.random.default_rng(0)
    noise = (0.3 * rng.standard_normal(96000)).astype(np.float32)  # replace the tone by noise: sharp lag
    _replace_audio(source, noise, 48000)
    output = tmp_path / "span.mp4"
    with (
        open_video(source, 48, 64, max_frames=16) as reader,
        VideoWriter(output, 16, 64, 48, audio_from=source, audio_span=(0.5, 1.5)) as writer,
    ):
        for chunk in reader:
            writer.write(chunk)
    facts = probe(output)
    assert facts["frames"] == 16 and abs(facts["audio_seconds"] - 1.0) <= 1 / 16
    copied = _decode_audio(output)
    original = _decode_audio(source)
    lag = _best_lag(original, copied[:24000], search=range(23000, 25001))
    assert abs(lag - 24000) <= 2


def _replace_audio(path: Path, samples: np.ndarray, rate: int) -> None:
    """Rewrite `path` with the same video packets and `samples` as its AAC track (an MP4 with its index
    first, so that it reads front to back over HTTP)."""
    temp = path.with_suffix(f".tmp{path.suffix}")  # the same container
    options = {"movflags": "+faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(path)) as src, av.open(str(temp), "w", container_options=options) as out:
        video_in = src.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        sound = out.add_stream("aac", rate=rate, layout="mono")
        for packet in src.demux(video_in):
            if packet.dts is not None:
                packet.stream = video_out
                out.mux(packet)
        for start in range(0, len(samples), 1024):
            block = av.AudioFrame.from_ndarray(
                samples[None, start : start + 1024], format="fltp", layout="mono"
            )
            block.sample_rate, block.pts = rate, start
            out.mux(sound.encode(block))
        out.mux(sound.encode(None))
    temp.replace(path)


def _decode_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray()[0] for f in container.decode(container.streams.audio[0])])


def _best_lag(reference: np.ndarray, piece: np.ndarray, search: range) -> int:
    scores = [float(np.dot(reference[lag : lag + len(piece)], piece)) for lag in search]
    return search[int(np.argmax(scores))]


class _NonSeekable(io.RawIOBase):
    """A pipe-like reader: bytes in order, no seeking, no length."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray) -> int:  # type: ignore[override]
        data = self._buffer.read(len(target))
        target[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _os_pipe(data: bytes) -> Iterator[io.BufferedReader]:
    """The read end of a real OS pipe, fed by a thread."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            sink.write(data)

    thread = threading.Thread(target=feed)
    thread.start()
    with os.fdopen(read_fd, "rb") as source:
        yield source
    thread.join()


@pytest.mark.parametrize("kind", ["os_pipe", "raw_stream", "url"])
def test_non_seekable_and_url_sources(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "stream.mkv"
    make_clip(path, num_frames=20, fps=24, container="matroska")
    with contextlib.ExitStack() as stack:
        if kind == "os_pipe":
            source = stack.enter_context(_os_pipe(path.read_bytes()))
        elif kind == "raw_stream":
            source = _NonSeekable(path.read_bytes())
        else:
            source = f"file://{path}"
        reader = stack.enter_context(open_video(source, 32, 32, chunk_frames=6))
        assert reader.info.num_frames is None and reader.info.fps == 24  # Matroska stores no frame count
        streamed = torch.cat(list(reader), dim=1)
    with open_video(path, 32, 32, chunk_frames=20) as reader:
        direct = next(iter(reader))
    assert streamed.shape == (3, 20, 32, 32) and torch.equal(streamed, direct)


def test_max_frames_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    make_clip(path, num_frames=20, fps=16)
    with open_video(path, 48, 64, chunk_frames=4, max_frames=9) as reader:
        assert [c.shape[1] for c in reader] == [4, 4, 1]


def test_raw_chunks_are_the_uint8_frames_the_chunks_are_made_from(tmp_path: Path) -> None:
    """`transform` of a raw chunk is the chunk; a source larger than the output is transformed a few
    frames at a time (here one: 120x160 to 48x64) with the values of the whole batch at once."""
    path = tmp_path / "clip.mp4"
    make_clip(path, num_frames=20, fps=16, width=160, height=120)
    with open_video(path, 48, 64, chunk_frames=8) as reader:
        chunks = list(reader)
    with open_video(path, 48, 64, chunk_frames=8) as reader:
        raw = list(reader.raw_chunks())
        assert [c.shape for c in raw] == [(3, 8, 120, 160), (3, 8, 120, 160), (3, 4, 120, 160)]
        assert raw[0].dtype == torch.uint8 and raw[0].float().std() > 10
        for r, c in zip(raw, chunks, strict=True):
            assert torch.equal(reader.transform(r), c)
            assert torch.equal(transform_frames(r.permute(1, 2, 3, 0), 48, 64), c)  # all frames at once
        assert torch.equal(reader.transform(raw[0][:, :3]), chunks[0][:, :3])  # a slice of frames


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_reader_on_the_gpu_makes_the_cpu_chunks(tmp_path: Path) -> None:
    """`device="cuda"`: the uint8 frames go up through pinned memory and the transform runs there."""
    path = tmp_path / "clip.mp4"
    make_clip(path, num_frames=20, fps=16, width=80, height=60)  # resized and cropped to 48x64
    with open_video(path, 48, 64, chunk_frames=8) as reader:
        on_cpu = list(reader)
    with open_video(path, 48, 64, chunk_frames=8, device="cuda") as reader:
        on_gpu = list(reader)
    assert [c.shape for c in on_gpu] == [c.shape for c in on_cpu] and on_gpu[0].is_cuda
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert torch.allclose(a, b.cpu(), rtol=0, atol=1e-5)
        assert a.std() > 0.1
    with open_video(path, 48, 64, chunk_frames=8, device="cuda") as reader:
        raw = next(reader.raw_chunks())
        assert raw.is_pinned() and not raw.is_cuda  # read ahead on the host, uploaded by `transform`


def test_limit_caps_the_known_count(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    make_clip(path, num_frames=20, fps=16)
    with open_video(path, 48, 64, chunk_frames=8) as reader:
        reader.limit(11)
        assert reader.info.num_frames == 11 and not reader.is_live
        assert [c.shape[1] for c in reader] == [8, 3]


def _failing_after(frames: Iterator, count: int) -> Iterator:
    """The reader's demuxed frames, then the I/O error of a network source whose sender stopped."""
    for index, item in enumerate(frames):
        if index == count:
            raise av.error.FFmpegError(5, "Input/output error")
        yield item


@pytest.mark.parametrize("live", [True, False])
def test_a_read_error_ends_a_live_source_but_fails_a_file(tmp_path: Path, live: bool, caplog) -> None:
    path = tmp_path / "clip.mkv"
    make_clip(path, num_frames=20, fps=24, container="matroska")
    source = _NonSeekable(path.read_bytes()) if live else path
    with open_video(source, 32, 32, chunk_frames=4) as reader:
        reader._timed = _failing_after(reader._timed, 9)  # the first frame was decoded on opening
        if live:
            with caplog.at_level("WARNING"):
                assert sum(c.shape[1] for c in reader) == 10
            assert "stopped after 10 frames" in caplog.text
        else:
            with pytest.raises(VideoReadError, match="decoding failed after 10 frames"):
                list(reader)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        open_video(tmp_path / "missing.mp4", 32, 32)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoReadError, match="cannot open"):
        open_video(garbage, 32, 32)
    good = tmp_path / "good.mp4"
    make_clip(good, num_frames=8, fps=16)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # index (moov) is at the end
    with pytest.raises(VideoReadError, match="cannot open"):
        open_video(truncated, 32, 32)
    sound = tmp_path / "sound.m4a"
    make_clip(sound, num_frames=8, fps=16, audio_only=True)
    with pytest.raises(VideoReadError, match="no video stream"):
        open_video(sound, 32, 32)


@contextlib.contextmanager
def _read_only_folder() -> Iterator[Path]:
    """A folder the process cannot write to. As root, permissions are enforced by dropping the effective
    uid to `nobody` for the duration (root ignores directory modes)."""
    folder = Path(tempfile.mkdtemp(prefix="sana_ro_"))
    folder.chmod(0o555)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        yield folder
    finally:
        if root:
            os.seteuid(0)
        folder.chmod(0o755)
        folder.rmdir()


def test_write_errors(tmp_path: Path) -> None:
    with _read_only_folder() as folder, pytest.raises(VideoWriteError, match="cannot write in folder"):
        VideoWriter(folder / "out.mp4", 16, 64, 32)
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(VideoWriteError, match="already exists"):
        VideoWriter(existing, 16, 64, 32)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(VideoWriteError, match="unsupported extension"):
        VideoWriter(tmp_path / "out.gif", 16, 64, 32)
    silent = tmp_path / "silent.mp4"
    make_clip(silent, num_frames=4, fps=16)
    with pytest.raises(VideoWriteError, match="no audio track"):
        VideoWriter(tmp_path / "out.mp4", 16, 64, 32, audio_from=silent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.mp4", "silent.mp4"]  # no leftovers


def test_x264_preset_reaches_the_encoder(tmp_path: Path) -> None:
    """x264 stores its settings in the stream: medium (the release's) codes with CABAC and 3 B-frames,
    ultrafast with neither. An unknown preset is refused before any file is made."""
    chunk = transform_frames(clip_frames(8, 32, 64), 32, 64)
    settings = {}
    for preset in ("medium", "ultrafast"):
        with VideoWriter(tmp_path / f"{preset}.mp4", 16, 64, 32, preset=preset) as writer:
            writer.write(chunk)
        data = (tmp_path / f"{preset}.mp4").read_bytes()
        settings[preset] = (b"cabac=1" in data, b" bframes=3 " in data)
    assert settings == {"medium": (True, True), "ultrafast": (False, False)}
    with pytest.raises(ValueError, match="unknown x264 preset"):
        VideoWriter(tmp_path / "fast.mp4", 16, 64, 32, preset="lightning")
    assert not (tmp_path / "fast.mp4").exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path: Path, error: type[BaseException]) -> None:
    output = tmp_path / "edited.mp4"
    chunk = transform_frames(clip_frames(8, 32, 64), 32, 64)
    with pytest.raises(error), VideoWriter(output, 16, 64, 32) as writer:
        writer.write(chunk)
        raise error("stopped")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_on_success(tmp_path: Path) -> None:
    output = tmp_path / "edited.mp4"
    output.write_bytes(b"previous")
    chunk = transform_frames(clip_frames(8, 32, 64), 32, 64)
    with pytest.raises(ValueError), VideoWriter(output, 16, 64, 32, overwrite=True) as writer:
        writer.write(chunk)
        writer.write(chunk[:, :, :16])  # wrong size: aborts
    assert output.read_bytes() == b"previous"
    with VideoWriter(output, 16, 64, 32, overwrite=True) as writer:
        writer.write(chunk)
        partial = [p.name for p in tmp_path.iterdir() if p.name != "edited.mp4"]
        assert len(partial) == 1 and partial[0].startswith(".edited.") and partial[0].endswith(".partial.mp4")
        assert output.read_bytes() == b"previous"  # still the old file while writing
    assert probe(output)["frames"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["edited.mp4"]
    assert b"crf=25.0" in output.read_bytes() and b"subme=1" in output.read_bytes()  # x264: crf 25, superfast


@pytest.mark.parametrize("rotate", [90, -90, 180, 270])
def test_display_rotation_is_applied(tmp_path: Path, rotate: int) -> None:
    """A clip tagged like `ffmpeg -metadata:s:v:0 rotate=R` (display matrix) comes out upright: turned R
    degrees clockwise, as FFmpeg's autorotate shows it, and `info` gives the upright size."""
    path = tmp_path / "rotated.mp4"
    frames = make_clip(path, num_frames=6, fps=16, width=64, height=48, rotate=rotate)
    upright = np.stack([np.rot90(f, -rotate // 90) for f in frames])  # rot90 turns counterclockwise
    with open_video(path, 32, 32) as reader:
        h, w = upright.shape[1:3]
        assert (reader.info.height, reader.info.width) == (h, w)
        decoded = np.stack(list(reader.frames()))
    assert decoded.shape == upright.shape
    error = np.abs(decoded.astype(int) - upright).mean()
    assert error < 5  # H.264 at crf 10, 4:2:0: about 3.5 without any rotation
    upside_down = np.rot90(upright, 2, axes=(1, 2))  # the turn the other way round
    assert np.abs(decoded.astype(int) - upside_down).mean() > 10 * error


def test_a_folder_is_named_a_folder(tmp_path: Path) -> None:
    (tmp_path / "clips.mp4").mkdir()
    with pytest.raises(VideoReadError, match="is a folder"):
        open_video(tmp_path / "clips.mp4", 32, 32)


@contextlib.contextmanager
def _http_server(folder: Path) -> Iterator[str]:
    """A local HTTP server for `folder` on a free port; yields its base URL."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _copy_through(source: object, output: Path, **reader_args: object) -> None:
    """Read `source` and write it to `output` with the audio taken from the reader's own demuxer."""
    with open_video(source, 48, 64, chunk_frames=8, **reader_args) as reader:
        feed = reader.audio_feed()
        with VideoWriter(output, reader.info.fps, 64, 48, audio_from=feed) as writer:
            for chunk in reader:
                writer.write(chunk)


@pytest.mark.parametrize("kind", ["http", "raw_stream"])
def test_audio_of_a_source_that_cannot_be_reopened(tmp_path: Path, kind: str) -> None:
    """An http URL (an MP4) and a pipe-like stream (Matroska) keep their audio, sample-aligned with the
    video start."""
    path = tmp_path / ("in.mp4" if kind == "http" else "in.mkv")
    make_clip(path, num_frames=32, fps=16, width=160, height=120, audio=True, sample_rate=48000)
    noise = (0.3 * np.random.default_rng(1).standard_normal(96000)).astype(np.float32)
    _replace_audio(path, noise, 48000)
    output = tmp_path / "out.mp4"
    if kind == "http":
        with _http_server(tmp_path) as url:
            _copy_through(f"{url}/in.mp4", output)
    else:
        _copy_through(_NonSeekable(path.read_bytes()), output)
    facts = probe(output)
    assert facts["frames"] == 32 and abs(facts["audio_seconds"] - 2.0) <= 1 / 16
    copied, original = _decode_audio(output), _decode_audio(path)
    assert abs(_best_lag(original, copied[4800:28800], search=range(3800, 5801)) - 4800) <= 2


def test_audio_feed_stops_at_max_frames_with_the_audio_of_the_last_frame(tmp_path: Path) -> None:
    path = tmp_path / "in.mp4"
    make_clip(path, num_frames=48, fps=16, audio=True, sample_rate=16000)
    _copy_through(path, tmp_path / "out.mp4", max_frames=17)
    facts = probe(tmp_path / "out.mp4")
    assert facts["frames"] == 17 and abs(facts["audio_seconds"] - 17 / 16) <= 1 / 16


def test_frame_times_follow_a_variable_rate_source(tmp_path: Path) -> None:
    """25 fps then 10 fps: the writer gives each frame its source time (from the first frame), and the
    audio lasts as long as the video."""
    times_ms = [40 * i for i in range(12)] + [480 + 100 * i for i in range(12)]
    path = tmp_path / "vfr.mp4"
    make_clip(path, num_frames=24, fps=25, audio=True, times_ms=times_ms)
    output = tmp_path / "out.mp4"
    with open_video(path, 48, 64, chunk_frames=5, max_frames=17) as reader:
        times, feed = reader.frame_times(), reader.audio_feed()
        with VideoWriter(output, 25, 64, 48, audio_from=feed, timestamps=times) as writer:
            for chunk in reader:
                writer.write(chunk)
    with av.open(str(output)) as container:
        written = [round(float(f.time) * 1000) for f in container.decode(video=0)]
    assert written == times_ms[:17]
    assert abs(probe(output)["audio_seconds"] - (times_ms[17] / 1000)) <= 0.07  # AAC frames: 64 ms


def test_times_and_audio_are_handed_over_in_flat_memory(tmp_path: Path) -> None:
    """Frame times are popped as frames are written, and the audio feed holds only the audio of the
    frames decoded ahead (at most `AUDIO_WAIT_FRAMES`), not the track (80 packets here)."""
    from sana_streaming.video.reader import AUDIO_WAIT_FRAMES

    path = tmp_path / "in.mp4"
    make_clip(path, num_frames=80, fps=16, audio=True, sample_rate=16000)
    with open_video(path, 48, 64, chunk_frames=8) as reader:
        times, feed = reader.frame_times(), reader.audio_feed()
        with VideoWriter(tmp_path / "out.mp4", 16, 64, 48, timestamps=times, audio_from=feed) as writer:
            for chunk in reader:
                writer.write(chunk)
                assert len(times._times) == 0
                ahead = (AUDIO_WAIT_FRAMES + 1) / 16 * 16000 / 1024  # packets of 1024 samples
                assert len(feed._packets) <= ahead + 2
    assert probe(tmp_path / "out.mp4")["frames"] == 80


def test_audio_that_is_never_taken_is_an_error_not_a_leak(tmp_path: Path, monkeypatch) -> None:
    import sana_streaming.video.reader as reader_module

    monkeypatch.setattr(reader_module, "AUDIO_BUFFER_SECONDS", 1)
    path = tmp_path / "in.mp4"
    make_clip(path, num_frames=48, fps=16, audio=True)
    with open_video(path, 48, 64) as reader:
        reader.audio_feed()  # claimed, never consumed
        with pytest.raises(VideoReadError, match="audio runs more than 1 s ahead"):
            list(reader)


def test_reader_without_claims_keeps_no_audio_or_times(tmp_path: Path) -> None:
    path = tmp_path / "in.mp4"
    make_clip(path, num_frames=40, fps=16, audio=True)
    with open_video(path, 48, 64) as reader:
        assert sum(c.shape[1] for c in reader) == 40
        assert reader._audio.get() is None and reader._times is None
        with pytest.raises(RuntimeError, match="before the frames"):
            reader.audio_feed()


@contextlib.contextmanager
def _as_stdin(read_fd: int | None) -> Iterator[None]:
    """Make fd 0 the given descriptor (None: closed) for the duration."""
    saved = os.dup(0)
    try:
        if read_fd is None:
            os.close(0)
        else:
            os.dup2(read_fd, 0)
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_stdin_gives_frames_as_they_arrive(tmp_path: Path) -> None:
    """`-` reads fd 0 as data arrives: the first frames come long before 32 KiB were sent."""
    path = tmp_path / "in.mkv"
    make_clip(path, num_frames=120, fps=25, container="matroska", audio=True)
    data = path.read_bytes()
    assert len(data) > 64 * 1024
    read_fd, write_fd = os.pipe()
    sent, stop = [0], threading.Event()

    def feed() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as sink:
            for start in range(0, len(data), 512):
                if stop.is_set():
                    return
                sink.write(data[start : start + 512])
                sent[0] = start + 512
                stop.wait(0.002)

    thread = threading.Thread(target=feed, daemon=True)
    with _as_stdin(read_fd):
        os.close(read_fd)
        thread.start()
        reader = open_video("-", 32, 32, chunk_frames=1)
        first = next(iter(reader))
        at_first_frame = sent[0]
        stop.set()
        reader.close()
    thread.join()
    assert first.shape == (3, 1, 32, 32) and reader.name == "stdin"
    assert at_first_frame < 24 * 1024


def test_closed_stdin_is_one_error() -> None:
    with _as_stdin(None), pytest.raises(VideoReadError, match="stdin: is closed"):
        open_video("-", 32, 32)


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    output = tmp_path / "edited.mp4"
    chunk = transform_frames(clip_frames(8, 32, 64), 32, 64)
    writer = VideoWriter(output, 16, 64, 32)
    writer.write(chunk)
    output.write_bytes(b"another run's video")
    with pytest.raises(VideoWriteError, match=r"edited\.mp4 appeared while writing"):
        writer.close()
    assert output.read_bytes() == b"another run's video"
    assert [p.name for p in tmp_path.iterdir()] == ["edited.mp4"]  # no temporary file left


def test_publish_without_hard_links_still_refuses_to_replace(tmp_path: Path, monkeypatch) -> None:
    """On a file system without hard links (FAT), the name is claimed exclusively, then renamed over."""
    from sana_streaming.files import make_temp_beside, publish

    def no_links(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    temp = make_temp_beside(tmp_path / "a.bin")
    temp.write_bytes(b"new")
    publish(temp, tmp_path / "a.bin", overwrite=False)
    assert (tmp_path / "a.bin").read_bytes() == b"new" and not temp.exists()
    temp = make_temp_beside(tmp_path / "a.bin")
    with pytest.raises(FileExistsError):
        publish(temp, tmp_path / "a.bin", overwrite=False)
    assert (tmp_path / "a.bin").read_bytes() == b"new"


def test_an_aborted_write_removes_the_folders_it_made(tmp_path: Path) -> None:
    chunk = transform_frames(clip_frames(8, 32, 64), 32, 64)
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "a" / "b" / "out.mp4", 16, 64, 32) as writer:
        writer.write(chunk)
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), VideoWriter(tmp_path / "kept" / "new" / "out.mp4", 16, 64, 32):
        raise RuntimeError("stopped")
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("kept")]


def _decodable_frames(path: Path) -> int:
    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    except av.error.InvalidDataError:  # not even the header yet
        return 0


def test_a_fragmented_mp4_plays_while_it_grows_and_a_failed_one_is_removed(tmp_path: Path) -> None:
    """Written in place (no hidden temporary name): while chunks arrive the file at the path decodes,
    with more frames each time (x264's look-ahead behind); closed, it holds every frame at their
    times. An aborted one is deleted, folders and all; streams and Matroska are refused."""
    path = tmp_path / "live" / "out.mp4"
    frames = clip_frames(24 * 6, 64, 96, seed=3)
    seen = []
    with VideoWriter(path, 24, 96, 64, fragmented=True, preset="ultrafast") as writer:
        for chunk in np.split(frames, 6):
            writer.write(transform_frames(chunk, 64, 96))
            assert [p.name for p in path.parent.iterdir()] == ["out.mp4"]
            seen.append(_decodable_frames(path))
    assert seen == sorted(seen) and 0 < seen[-1] < len(frames)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts * stream.time_base for frame in container.decode(stream)]
    assert len(pts) == len(frames) and pts[-1] == pytest.approx((len(frames) - 1) / 24, abs=1e-3)
    with (
        pytest.raises(RuntimeError),
        VideoWriter(tmp_path / "gone" / "x.mp4", 24, 96, 64, fragmented=True) as w,
    ):
        w.write(transform_frames(frames[:24], 64, 96))
        raise RuntimeError("stopped")
    assert not (tmp_path / "gone").exists()
    for target in ("-", str(tmp_path / "x.mkv")):
        with pytest.raises(VideoWriteError, match="fragmented"):
            VideoWriter(target, 24, 96, 64, fragmented=True)
