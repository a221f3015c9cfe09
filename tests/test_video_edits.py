"""Whole edits (the CLI on the tiny config, random weights) of sources that need the reader and the
writer to work together: variable frame rate, audio from stdin, stdin closed, failed edits' folders."""

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from helpers_video import make_clip, probe

from sana_streaming.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_args(video, *extra):
    return ["--config", "tiny_random", "--random_weights", "--device", "cpu", "--video_path", str(video),
            "--prompt", "make it blue", "--height", "64", "--width", "96", *extra]  # fmt: skip


def frame_times_ms(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [round(float(frame.time) * 1000) for frame in container.decode(video=0)]


def test_variable_frame_rate_keeps_the_source_timing_and_audio_sync(workdir):
    """25 fps for 20 frames, then 10 fps: the 33 edited frames keep their source times (not 25 fps
    throughout, 2.5x fast after the change), and the audio lasts as long as the video."""
    times = [40 * i for i in range(20)] + [800 + 100 * i for i in range(20)]
    src = workdir / "vfr.mp4"
    make_clip(src, num_frames=40, fps=25, width=100, height=70, audio=True, times_ms=times)
    assert main(tiny_args(src, "--num_frames", "all")) == 0
    out = workdir / "outputs" / "vfr_long_streaming.mp4"
    assert frame_times_ms(out) == times[:33]
    info = probe(out)
    assert abs(info["audio_seconds"] - times[33] / 1000) <= 0.07  # AAC frames: 64 ms at 16 kHz


def test_explicit_fps_spaces_the_frames_evenly(workdir):
    times = [40 * i for i in range(20)] + [800 + 100 * i for i in range(20)]
    src = workdir / "vfr.mp4"
    make_clip(src, num_frames=40, fps=25, width=100, height=70, times_ms=times)
    assert main(tiny_args(src, "--num_frames", "all", "--fps", "25")) == 0
    assert frame_times_ms(workdir / "outputs" / "vfr_long_streaming.mp4") == [40 * i for i in range(33)]


@contextlib.contextmanager
def served_once(path: Path) -> Iterator[str]:
    """An HTTP URL for `path` that can be read only once, like a live stream: later requests get 410."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    served = threading.Event()

    class Once(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if served.is_set():
                self.send_error(410)
                return
            served.set()
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Once)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_that_cannot_be_reopened_keeps_its_audio(workdir):
    src = workdir / "in.mp4"
    make_clip(src, num_frames=33, fps=16, width=100, height=70, audio=True, faststart=True)
    with served_once(src) as url:
        assert main(tiny_args(url, "--num_frames", "all")) == 0
    info = probe(workdir / "outputs" / "in_long_streaming.mp4")
    assert info["frames"] == 33 and abs(info["audio_seconds"] - 33 / 16) <= 0.07


@contextlib.contextmanager
def stdin_fed_with(data: bytes) -> Iterator[None]:
    """fd 0 is the read end of a pipe that a thread fills with `data`, for the duration."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            sink.write(data)

    saved = os.dup(0)
    os.dup2(read_fd, 0)
    os.close(read_fd)
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        thread.join()


def test_stdin_matroska_keeps_its_audio(workdir):
    src = workdir / "clip.mkv"
    make_clip(src, num_frames=41, fps=24, width=100, height=70, audio=True)
    with stdin_fed_with(src.read_bytes()):
        assert main(tiny_args("-", "--num_frames", "all")) == 0
    info = probe(workdir / "outputs" / "stdin_long_streaming.mp4")
    assert info["frames"] == 41 and abs(info["audio_seconds"] - 41 / 24) <= 0.07


def test_closed_stdin_is_one_line_exit_1(workdir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "sana_streaming.cli", *tiny_args("-", "--num_frames", "all")]
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0))  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "sana-streaming: error: stdin: is closed; pipe a video into it"


def test_failed_edit_leaves_no_output_folder(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    assert main(tiny_args(src, "--num_frames", "49", "--output_dir", "new/edits")) == 1
    assert "fewer than the 49" in capsys.readouterr().err
    assert sorted(p.name for p in workdir.iterdir()) == ["clip.mp4"]
