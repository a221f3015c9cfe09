"""The pipeline's stages on the tiny config: outputs pinned across the stage refactor, two streams on
one pipeline, the stages driven by hand."""

import hashlib
import io
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers_video import clip_frames

from sana_streaming.options import EditOptions
from sana_streaming.pipeline import SanaStreamingPipeline
from sana_streaming.sampling import ChunkStreamer, LatentRecord, SourceChunk
from sana_streaming.stages import StreamRun, floor_8k1
from sana_streaming.video.reader import open_video
from sana_streaming.video.writer import VideoWriter

OPTIONS = EditOptions(prompt="make it blue", height=64, width=96)


@pytest.fixture(scope="module")
def pipe():
    return SanaStreamingPipeline.from_config(
        "tiny_random", "long_streaming", random_weights=True, device="cpu"
    )


@pytest.fixture(scope="module")
def bidirectional():
    return SanaStreamingPipeline.from_config(
        "tiny_random", "bidirectional_short", random_weights=True, device="cpu"
    )


def lossless_mkv(frames: np.ndarray, fps: int = 24) -> bytes:
    """FFV1 in Matroska, in memory: decoded pixels equal `frames`, and the container stores no frame
    count, so a stream of these bytes has an unknown length."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def edit(pipe, source, options=OPTIONS):
    """(frames, record) of one `stream` of `source`."""
    record = LatentRecord()
    run = pipe.stream(source, options, record=record)
    assert isinstance(run, StreamRun)
    return torch.cat(list(run), dim=1), record


# Digests of the decoded frames and of the `--save_latent` tensor: the refactors must not change a bit.
# Float kernels differ between CPUs (oneDNN and MKL take vendor-specific paths, also at the same AVX-512
# level), so the digests belong to one kind of machine and this venv's torch (2.13.0+cpu, 2 cores).
# The Intel ones were first computed on the AVX-512 CI machine and recomputed there when the random VAE
# and text-encoder weights moved to a private generator (`models.random_init`); the AMD ones were
# computed on an AMD EPYC development machine, where the same code gave the same digests before and
# after the writer and reader moved their work to the device.
PINS = {
    "GenuineIntel": {
        "file": ("1ad6d65e7e25c0d6", "966c71d92a689095"),
        "pipe": ("2ae1662c3a5555a6", "5ac9738d50782dff"),
        "bidirectional": ("0d1fda69ec283826", "38ba90846fd77297"),
        "edit_latents": "f319670e0611804d",
    },
    "AuthenticAMD": {
        "file": ("9ff1e7a57a34a897", "989bc8ea1c300754"),
        "pipe": ("32019142c82ca241", "13b2ae3c9524efa7"),
        "bidirectional": ("9c05537c569aba7b", "665f5d29f4992227"),
        "edit_latents": "4122862f488d2022",
    },
}


def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo ("" where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("vendor_id")), ""
    )


@pytest.fixture(scope="module")
def pinned() -> dict:
    vendor = cpu_vendor()
    if vendor not in PINS:
        pytest.skip(f"digests are pinned for {' and '.join(PINS)} CPUs, not {vendor or 'this one'}")
    return PINS[vendor]


def test_streaming_file_is_unchanged(tmp_path, pipe, pinned):
    path = tmp_path / "clip.mkv"
    path.write_bytes(lossless_mkv(clip_frames(81, 70, 100, seed=5)))
    frames, record = edit(pipe, path)  # 11 latent frames: chunks of 5, 3, 3 and one noise draw
    assert frames.shape == (3, 81, 64, 96)
    assert (digest(frames), digest(record.stacked())) == pinned["file"]


def test_streaming_pipe_of_unknown_length_is_unchanged(pipe, pinned):
    source = io.BytesIO(lossless_mkv(clip_frames(60, 70, 100, seed=6)))
    frames, record = edit(pipe, source)  # 8 latent frames: 3, 3, then 2 at the end; noise per chunk
    assert frames.shape == (3, 57, 64, 96)
    assert (digest(frames), digest(record.stacked())) == pinned["pipe"]


def test_bidirectional_is_unchanged(tmp_path, bidirectional, pinned):
    path = tmp_path / "clip.mkv"
    path.write_bytes(lossless_mkv(clip_frames(20, 70, 100, seed=7)))
    options = EditOptions(prompt="make it blue", height=64, width=96, num_frames=17, steps=3)
    frames, record = edit(bidirectional, path, options)
    assert frames.shape == (3, 17, 64, 96)
    assert (digest(frames), digest(record.stacked())) == pinned["bidirectional"]


def test_two_interleaved_streams_on_one_pipeline_equal_solo_runs(tmp_path, pipe):
    """A file of known length and a pipe of unknown length, different seeds, one chunk of frames from
    each in turn: each equals its run alone, bit for bit, and the pipeline holds nothing of either."""
    path = tmp_path / "a.mkv"
    path.write_bytes(lossless_mkv(clip_frames(81, 70, 100, seed=1)))
    piped = lossless_mkv(clip_frames(60, 70, 100, seed=2))
    options_a, options_b = replace(OPTIONS, seed=11), replace(OPTIONS, seed=12)
    before = dict(vars(pipe))
    runs = [pipe.stream(path, options_a), pipe.stream(io.BytesIO(piped), options_b)]
    frames: list[list[torch.Tensor]] = [[], []]
    both_live = False
    while runs[0] is not None or runs[1] is not None:
        for i, run in enumerate(runs):
            if run is not None:
                chunk = next(run, None)
                if chunk is None:
                    runs[i] = None
                else:
                    frames[i].append(chunk)
        both_live |= all(run is not None and run.live_bytes() > 0 for run in runs)
        assert vars(pipe) == before  # nothing run-specific on the pipeline
    assert both_live  # the two runs really held their state at the same time
    alone_a, _ = edit(pipe, path, options_a)
    alone_b, _ = edit(pipe, io.BytesIO(piped), options_b)
    assert torch.equal(torch.cat(frames[0], dim=1), alone_a)
    assert torch.equal(torch.cat(frames[1], dim=1), alone_b)
    assert not torch.equal(alone_a[:, :57], alone_b)  # different clips and seeds: different outputs


def test_stages_driven_by_hand_equal_stream(pipe):
    """The example of docs/streaming.md ("Driving the stages yourself"): a camera of unknown length
    gives 24 frames at a time; encoder → ChunkStreamer → decoder by hand equals `stream()` bit for bit."""
    data = lossless_mkv(clip_frames(60, 70, 100, seed=6))
    options = replace(OPTIONS, seed=5)
    expected = torch.cat(list(pipe.stream(io.BytesIO(data), options)), dim=1)

    out = []
    with torch.no_grad(), open_video(io.BytesIO(data), 64, 96, chunk_frames=24) as camera:
        prompts = pipe.encode_prompts(options)
        encoder = pipe.vae.chunked_encoder()
        streamer = ChunkStreamer.open(
            pipe.dit, prompts.positive, pipe.sampler_settings(options), latent_hw=(2, 3), latent_frames=None,
            device=pipe.device, dtype=pipe.dtype, generator=torch.Generator().manual_seed(options.seed),
        )  # fmt: skip
        decoder = pipe.vae.incremental_decoder()
        for pixels in camera:  # [3, 24, 64, 96]
            latents = encoder.push(pixels[None])
            for chunk in streamer.push(SourceChunk(latents, streamer.received_frames)):
                out.append(decoder.push(chunk.latents.to(pipe.dtype))[0])
        for chunk in streamer.flush():
            out.append(decoder.push(chunk.latents.to(pipe.dtype))[0])
        out.append(decoder.flush()[0])
    assert streamer.chunks == 3 and streamer.received_frames == 8  # 3 + 3 + a last 2
    assert torch.equal(torch.cat(out, dim=1), expected)


def test_stages_are_exported():
    import sana_streaming
    import sana_streaming.sampling as sampling

    for name in ("ChunkStreamer", "SourceChunk", "DenoisedChunk", "StreamingSampler", "LatentRecord"):
        assert getattr(sana_streaming, name) is getattr(sampling, name)
    assert sana_streaming.StreamRun is StreamRun


def decoded_digest(path) -> tuple[str, list[int]]:
    """(digest of the decoded rgb24 frames, their presentation times in ms) of a written video."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        pixels = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
        times = [round(float(frame.time) * 1000) for frame in frames]
    return hashlib.sha256(pixels.tobytes()).hexdigest()[:16], times


# `edit()` end to end (reader → stages → writer, plus `--save_latent`): the latents (pinned on commit
# 083aee8, before the pipeline was split into modules, and recomputed with `PINS` for the
# private-generator random weights) must not change; the file must hold exactly what the writer makes
# of the frames `stream()` yields (the writer's colour conversion moved to the frames' device later,
# within one level of the swscale path the first pixel digests were taken with: tests/test_yuv.py).


def test_edit_to_a_file_is_unchanged(tmp_path, pipe, pinned):
    source, output, latents = tmp_path / "clip.mkv", tmp_path / "out.mp4", tmp_path / "latents.pt"
    source.write_bytes(lossless_mkv(clip_frames(41, 70, 100, seed=3)))
    result = pipe.edit(source, output, replace(OPTIONS, seed=4), latent_path=latents)
    assert (result.path, result.frames, result.fps, result.audio) == (output, 41, Fraction(24), False)
    pixels, times = decoded_digest(output)
    assert times == [round(1000 * i / 24) for i in range(41)]
    assert digest(torch.load(latents, weights_only=True)) == pinned["edit_latents"]
    frames, _ = edit(pipe, source, replace(OPTIONS, seed=4))
    reference = tmp_path / "reference.mp4"
    with open_video(source, 64, 96) as reader:  # the edit's writer follows the source's frame times
        source_times = reader.frame_times()
        for _ in reader.frames():
            pass
        with VideoWriter(reference, 24, 96, 64, timestamps=source_times) as writer:
            writer.write(frames)
    assert decoded_digest(reference) == (pixels, times)


def test_a_live_source_the_edit_falls_behind_loses_whole_chunks_counted_and_the_rest_is_edited(
    tmp_path, pipe
):
    """`live_frame_drop="on"` with a pipe of unknown length and an editor slowed down: whole 24-frame
    chunks are dropped and counted; what remains is written with the source times of the frames kept.
    "auto" does not drop for a pipe (it waits for its reader)."""
    import time

    source_frames = 24 * 8
    data = lossless_mkv(clip_frames(source_frames, 70, 100, seed=8))

    def slow(event):
        if event.stage == "denoise":
            time.sleep(0.15)

    for policy, out in (("on", tmp_path / "dropped.mp4"), ("auto", tmp_path / "kept.mp4")):
        options = replace(OPTIONS, live_frame_drop=policy)
        result = pipe.edit(io.BytesIO(data), out, options, audio=False, progress=slow)
        with av.open(str(out)) as container:
            stream = container.streams.video[0]
            pts = [frame.pts * stream.time_base for frame in container.decode(stream)]
        assert result.frames == len(pts)
        if policy == "auto":
            assert result.dropped_frames == 0 and result.frames == floor_8k1(source_frames)
            continue
        assert result.dropped_frames > 0 and result.dropped_frames % 24 == 0
        assert result.frames == floor_8k1(source_frames - result.dropped_frames)  # a live end: 8k+1
        # each output frame keeps its source frame's time (Matroska's ms, rounded), and whole chunks
        # went: output frame j is a source frame at the same place in its 24-frame chunk
        source_index = [round(t * 24) for t in pts]
        assert all(abs(t * 24 - i) < Fraction(1, 20) for t, i in zip(pts, source_index, strict=True))
        assert source_index[0] == 0 and source_index == sorted(
            set(source_index)
        )  # the first chunk found room
        assert all(i % 24 == j % 24 for j, i in enumerate(source_index))


def test_dropping_with_a_frame_count_edits_what_was_kept(pipe, tmp_path):
    """`num_frames` bounds the frames read, dropped ones included: the edit takes what was kept
    (8k+1) instead of failing as a source shorter than asked."""
    import time

    data = lossless_mkv(clip_frames(24 * 8, 70, 100, seed=9))
    options = replace(OPTIONS, live_frame_drop="on", num_frames=24 * 8)
    result = pipe.edit(io.BytesIO(data), tmp_path / "out.mp4", options, audio=False,
                       progress=lambda e: time.sleep(0.15) if e.stage == "denoise" else None)  # fmt: skip
    assert result.dropped_frames > 0 and result.frames == floor_8k1(result.frames)
    assert result.frames + result.dropped_frames <= 24 * 8


def test_an_unknown_frame_drop_policy_is_an_option_error(pipe):
    from sana_streaming.errors import OptionError

    with pytest.raises(OptionError, match="live_frame_drop"):
        list(pipe.stream(io.BytesIO(b""), replace(OPTIONS, live_frame_drop="sometimes")))


def test_read_events_carry_when_the_reading_thread_decoded_the_chunk(tmp_path, pipe):
    """The decode-ahead thread stamps each chunk as it comes off the source; the read event is sent when
    the edit takes the chunk. With an edit that spends 0.3 s on each read event, every later chunk
    waited in the queue, and its stamp says so (the latency of `--stats` counts that wait)."""
    import time

    data = lossless_mkv(clip_frames(24 * 4 + 1, 70, 100, seed=3))
    reads = []

    def slow(event):
        if event.stage == "read":
            reads.append((event.read_at, time.perf_counter()))
            time.sleep(0.3)

    pipe.edit(io.BytesIO(data), tmp_path / "out.mp4", OPTIONS, audio=False, progress=slow)
    assert len(reads) == 5 and all(at is not None and at <= taken for at, taken in reads)
    assert all(taken - at >= 0.2 for at, taken in reads[1:])
