"""The pipeline's stages on the tiny config: outputs pinned across the stage refactor."""

import hashlib
import io
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from helpers_video import clip_frames

from sana_streaming.pipeline import EditOptions, LatentRecord, SanaStreamingPipeline

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
    frames = torch.cat(list(pipe.stream(source, options, record=record)), dim=1)
    return frames, record


# Digests of the decoded frames and of the `--save_latent` tensor, computed on commit b7b7ec7 (before
# the chunk loop moved into `sampling.streaming`) with this venv's torch on CPU: the refactor must not
# change a bit.
PINNED = {
    "file": ("ab3adeb4b6bb5ae6", "5deb467c27d9662b"),
    "pipe": ("365f061abe9680c1", "35e536f208c75cc2"),
    "bidirectional": ("bbf0f5277237e15a", "476d8dbc57007f11"),
}


def test_streaming_file_is_unchanged(tmp_path, pipe):
    path = tmp_path / "clip.mkv"
    path.write_bytes(lossless_mkv(clip_frames(81, 70, 100, seed=5)))
    frames, record = edit(pipe, path)  # 11 latent frames: chunks of 5, 3, 3 and one noise draw
    assert frames.shape == (3, 81, 64, 96)
    assert (digest(frames), digest(record.stacked())) == PINNED["file"]


def test_streaming_pipe_of_unknown_length_is_unchanged(pipe):
    source = io.BytesIO(lossless_mkv(clip_frames(60, 70, 100, seed=6)))
    frames, record = edit(pipe, source)  # 8 latent frames: 3, 3, then 2 at the end; noise per chunk
    assert frames.shape == (3, 57, 64, 96)
    assert (digest(frames), digest(record.stacked())) == PINNED["pipe"]


def test_bidirectional_is_unchanged(tmp_path, bidirectional):
    path = tmp_path / "clip.mkv"
    path.write_bytes(lossless_mkv(clip_frames(20, 70, 100, seed=7)))
    options = EditOptions(prompt="make it blue", height=64, width=96, num_frames=17, steps=3)
    frames, record = edit(bidirectional, path, options)
    assert frames.shape == (3, 17, 64, 96)
    assert (digest(frames), digest(record.stacked())) == PINNED["bidirectional"]
