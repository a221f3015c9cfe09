"""The streaming pipeline on the tiny config: causality, flat memory, unknown-length sources, debug files."""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers_video import clip_frames

from sana_streaming.debug_files import load_latent_file
from sana_streaming.options import EditOptions
from sana_streaming.pipeline import SanaStreamingPipeline
from sana_streaming.sampling import LatentRecord

OPTIONS = EditOptions(prompt="make it blue", height=64, width=96)


@pytest.fixture(scope="module")
def pipe():
    return SanaStreamingPipeline.from_config(
        "tiny_random", "long_streaming", random_weights=True, device="cpu"
    )


def write_lossless(path: Path, frames: np.ndarray, fps: int = 24) -> None:
    """FFV1 in Matroska: decoded pixels equal `frames` exactly, and the file streams through a pipe."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def run(pipe, source, options=OPTIONS, **kwargs):
    record = LatentRecord()
    frames = list(pipe.stream(source, options, record=record, **kwargs))
    return torch.cat(frames, dim=1), record


def test_latents_are_causal_in_the_source(tmp_path, pipe):
    """81 frames = 11 latents = chunks [0,5) [5,8) [8,11): changing frames from 57 on (latent 8 onward)
    leaves chunks 0 and 1 bit-identical and changes chunk 2."""
    frames = clip_frames(81, 70, 100, seed=1)
    changed = frames.copy()
    changed[57:] = clip_frames(24, 70, 100, seed=2)
    write_lossless(tmp_path / "a.mkv", frames)
    write_lossless(tmp_path / "b.mkv", changed)
    _, a = run(pipe, tmp_path / "a.mkv")
    _, b = run(pipe, tmp_path / "b.mkv")
    assert [r.shape[2] for r in a.result] == [5, 3, 3]
    assert torch.equal(a.result[0], b.result[0]) and torch.equal(a.result[1], b.result[1])
    assert not torch.allclose(a.result[2], b.result[2])


def watch_memory(pipe, source):
    """(frames, record, run, the run's `live_bytes` at each chunk) of one stream."""
    seen: list[int] = []
    record = LatentRecord()

    def at_each_chunk(event) -> None:
        if event.stage == "denoise":
            seen.append(stream.live_bytes())

    stream = pipe.stream(source, OPTIONS, record=record, progress=at_each_chunk)
    return torch.cat(list(stream), dim=1), record, stream, seen


def test_live_bytes_do_not_grow_with_length(tmp_path, pipe):
    peaks = []
    for count, latents in ((105, 14), (441, 56)):  # both start with a 5-frame chunk
        write_lossless(tmp_path / f"{count}.mkv", clip_frames(count, 70, 100))
        video, record, stream, seen = watch_memory(pipe, tmp_path / f"{count}.mkv")
        assert video.shape[1] == count and len(seen) == len(record.result)
        peaks.append(max(seen))
        assert stream.live_bytes() == 0  # nothing held once the stream ended
        assert stream.noise_bytes == 4 * 16 * latents * 2 * 3  # float32 (1, 16, T, 2, 3), one draw
    assert peaks[1] <= peaks[0], peaks


def test_unknown_length_source_from_a_pipe(tmp_path, pipe):
    write_lossless(tmp_path / "clip.mkv", clip_frames(60, 70, 100))
    cat = subprocess.Popen(["cat", str(tmp_path / "clip.mkv")], stdout=subprocess.PIPE)
    record = LatentRecord()
    try:
        stream = pipe.stream(cat.stdout, OPTIONS, record=record)
        video = torch.cat(list(stream), dim=1)
    finally:
        cat.wait()
    # 60 frames -> latents from frames 0, 8, ..., 56 (8 of them): chunks of 3 as they arrive, then 2.
    assert [r.shape[2] for r in record.result] == [3, 3, 2]
    assert video.shape[1] == 57 and stream.noise_bytes == 0  # noise drawn per chunk


def test_a_stream_ending_on_a_chunk_boundary_runs_no_final_clean_pass(tmp_path, pipe, monkeypatch):
    """65 frames through a pipe = 9 latent frames = chunks of 3, 3, 3 found only as they arrive: each
    chunk's clean pass runs when the next chunk starts, so the last one never runs (3·4 + 2 forwards)."""
    write_lossless(tmp_path / "clip.mkv", clip_frames(65, 70, 100))
    calls = []
    forward = pipe.dit.forward

    def counted(*args, **kwargs):
        calls.append(kwargs["save"])
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe.dit, "forward", counted)
    cat = subprocess.Popen(["cat", str(tmp_path / "clip.mkv")], stdout=subprocess.PIPE)
    try:
        video, record = run(pipe, cat.stdout)
    finally:
        cat.wait()
    assert [r.shape[2] for r in record.result] == [3, 3, 3] and video.shape[1] == 65
    assert calls == ([False] * 4 + [True]) * 2 + [False] * 4


def test_source_latents_replace_the_video(tmp_path, pipe):
    write_lossless(tmp_path / "clip.mkv", clip_frames(41, 70, 100))
    video, record = run(pipe, tmp_path / "clip.mkv")
    path = tmp_path / "latent.pt"
    torch.save(record.stacked(), path)
    assert record.stacked().shape == (3, 16, 6, 2, 3)
    again, record2 = run(pipe, load_latent_file(path))
    assert torch.equal(again, video)
    assert torch.equal(record2.stacked(), record.stacked())


def test_sigint_mid_run_exits_130_and_leaves_nothing(tmp_path):
    write_lossless(tmp_path / "clip.mkv", clip_frames(400, 70, 100))
    repo = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-m", "sana_streaming.cli", "--config", "tiny_random", "--random_weights",
            "--device", "cpu", "--video_path", "clip.mkv", "--prompt", "x", "--num_frames", "all",
            "--height", "64", "--width", "96"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=tmp_path, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    outputs = tmp_path / "outputs"
    import signal
    import time

    deadline = time.monotonic() + 60
    while not (outputs.exists() and any(outputs.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)  # the writer's temporary file appears when the edit starts
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not outputs.exists()  # the folder this edit made is gone with its temporary file


def test_settings_the_stream_cannot_run_raise_edit_errors(tmp_path, pipe):
    from sana_streaming.errors import EditError

    write_lossless(tmp_path / "clip.mkv", clip_frames(41, 70, 100))
    for options in (
        EditOptions(prompt="x", height=64, width=96, cfg_scale=2.0),  # no CFG in long_streaming
        EditOptions(prompt="x", height=64, width=96, cfg_scale=0.5),
        EditOptions(prompt="x", height=64, width=96, steps=0),
        EditOptions(prompt="x", height=64, width=96, num_frames=17),  # 3 latent frames: too short
    ):
        stream = pipe.stream(tmp_path / "clip.mkv", options)
        with pytest.raises(EditError):
            list(stream)
        assert stream.live_bytes() == 0


def test_stream_limits_are_upper_bounds_and_match_a_cut_source(tmp_path, pipe):
    """`max_frames` / `max_seconds` end the stream there (no error when the source is shorter), with the
    same frames as a source that ends there; too small a frame is an EditError."""
    from dataclasses import replace

    from sana_streaming.errors import EditError

    frames = clip_frames(60, 70, 100)
    write_lossless(tmp_path / "clip.mkv", frames)
    write_lossless(tmp_path / "cut.mkv", frames[:40])
    bounded, _ = run(pipe, tmp_path / "clip.mkv", replace(OPTIONS, max_frames=40))
    timed, _ = run(pipe, tmp_path / "clip.mkv", replace(OPTIONS, max_seconds=40 / 24))
    cut, _ = run(pipe, tmp_path / "cut.mkv")
    assert bounded.shape[1] == 33 and torch.equal(bounded, cut) and torch.equal(timed, cut)
    whole, _ = run(pipe, tmp_path / "clip.mkv", replace(OPTIONS, max_frames=500))
    assert whole.shape[1] == 57
    with pytest.raises(EditError, match="at least 64"):
        run(pipe, tmp_path / "clip.mkv", replace(OPTIONS, height=32))


@pytest.mark.parametrize("mode", ["long_streaming", "bidirectional_short"])
def test_progress_events_cover_every_stage_with_the_chunk_tensors(tmp_path, pipe, mode):
    from sana_streaming.stages import ProgressEvent

    if mode == "bidirectional_short":
        pipe = SanaStreamingPipeline.from_config("tiny_random", mode, random_weights=True, device="cpu")
    write_lossless(tmp_path / "clip.mkv", clip_frames(60, 70, 100))
    options = EditOptions(prompt="make it blue", height=64, width=96, steps=2)
    events: list[ProgressEvent] = []
    frames, record = run(pipe, tmp_path / "clip.mkv", options, progress=events.append)
    stages = list(dict.fromkeys(e.stage for e in events))
    assert stages == ["text", "read", "encode", "denoise", "decode"]
    for stage in ("read", "encode"):
        counted = [e for e in events if e.stage == stage]
        assert [e.done for e in counted] == [24, 48, 57] and {e.total for e in counted} == {57}
    decoded = [e for e in events if e.stage == "decode"]
    assert decoded[-1].done == frames.shape[1] == 57
    assert torch.equal(torch.cat([e.tensor for e in decoded], dim=1), frames)
    denoise = [e for e in events if e.stage == "denoise"]
    if mode == "long_streaming":
        assert [(e.done, e.total, e.unit) for e in denoise] == [(i + 1, 2, "chunk") for i in range(2)]
        assert [e.start for e in denoise] == [0, 5]
        assert torch.equal(torch.cat([e.tensor for e in denoise], dim=2), torch.cat(record.result, dim=2))
    else:
        assert [(e.done, e.total, e.unit) for e in denoise] == [(1, 2, "step"), (2, 2, "step")]
    written: list[ProgressEvent] = []
    result = pipe.edit(tmp_path / "clip.mkv", tmp_path / "out.mp4", options, progress=written.append)
    writes = [e for e in written if e.stage == "write"]
    assert writes[-1].done == result.frames == 57 and writes[-1].unit == "frame"
