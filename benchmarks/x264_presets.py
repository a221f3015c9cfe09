"""Time the output writer (`VideoWriter`: uint8 frames -> YUV 4:2:0 -> x264 at crf 25) per x264 preset.

The writer is the slowest stage of a long edit on an H100 (`benchmarks/RESULTS.md`), so its preset sets
the ceiling on end-to-end FPS. Frames are synthetic 1280x704 images with moving gradients and blocks;
each preset encodes them once as warm-up, then `--repeats` times; the table shows the median.

    PYTHONPATH=. python benchmarks/x264_presets.py --out benchmarks/results/x264_presets_<host>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from sana_streaming.video.writer import X264_PRESETS, VideoWriter


def synthetic_frames(count: int, height: int, width: int) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1]: gradients that slide and a block pattern that shifts every frame."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        rgb = np.stack([(xx + 8 * i) % 256, (yy + 4 * i) % 256, (xx // 4 + yy // 4 + 2 * i) % 256], 0)
        rgb[:, (yy // 32 + xx // 32 + i) % 7 == 0] //= 2
        frames.append(rgb)
    return torch.from_numpy(np.stack(frames, 1).astype(np.float32) / 127.5 - 1)


def encode_seconds(frames: torch.Tensor, preset: str, folder: Path) -> tuple[float, int]:
    """Wall seconds to write `frames` in 24-frame chunks, and the file's size in bytes."""
    path = folder / f"{preset}.mp4"
    start = time.perf_counter()
    with VideoWriter(path, 24, frames.shape[3], frames.shape[2], overwrite=True, preset=preset) as writer:
        for chunk in frames.split(24, dim=1):
            writer.write(chunk)
    return time.perf_counter() - start, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="+", default=["medium", "faster", "veryfast", "superfast", "ultrafast"]
    )
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="x264_presets.json")
    args = parser.parse_args()
    unknown = sorted(set(args.presets) - set(X264_PRESETS))
    if unknown:
        parser.error(f"unknown x264 presets {unknown}; choose from {', '.join(X264_PRESETS)}")
    frames = synthetic_frames(args.frames, args.height, args.width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            encode_seconds(frames[:, :24], preset, Path(tmp))  # warm-up
            runs = [encode_seconds(frames, preset, Path(tmp)) for _ in range(args.repeats)]
            seconds = statistics.median(r[0] for r in runs)
            rows.append({"preset": preset, "fps": args.frames / seconds, "bytes": runs[0][1]})
            print(f"{preset:<10} {rows[-1]['fps']:7.1f} fps  {rows[-1]['bytes'] / 1e6:6.2f} MB", flush=True)
    report = {
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "pyav": av.__version__,
        "size": [args.height, args.width],
        "frames": args.frames,
        "repeats": args.repeats,
        "presets": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
