"""Synthetic source clips for benchmarks and smoke runs (moving colour gradients, H.264)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def gradient_frame(index: int, height: int, width: int) -> np.ndarray:
    """uint8 `[H, W, 3]`: per-channel sine gradients drifting with `index` (cheap, textured, moving)."""
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    phase = np.array([0.0, 2.1, 4.2], dtype=np.float32)
    angle = 2 * np.pi * (x + 0.5 * y + 0.02 * index) + phase
    return (127.5 + 100 * np.sin(angle)).astype(np.uint8)


def write_synthetic_clip(path: str | Path, num_frames: int, height: int, width: int, fps: int = 24) -> Path:
    """Write `num_frames` gradient frames as H.264 (ultrafast) and return the path."""
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(gradient_frame(index, height, width), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
