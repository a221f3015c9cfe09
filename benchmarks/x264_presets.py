"""Time the output writer (`VideoWriter`: YUV 4:2:0 -> x264 at crf 25) per x264 preset and colour path.

The writer is the slowest stage of a long edit (`benchmarks/RESULTS.md`), so its preset sets the
ceiling on end-to-end FPS. Two colour paths: `device` hands the writer yuv420p planes converted where
the frames were decoded (`frames_to_yuv420`, on the GPU when there is one: the edit's path), `swscale`
hands it uint8 RGB that FFmpeg's swscale converts in the writer's thread (the path before). Frames are
synthetic 1280x704 images with moving gradients and blocks; each (preset, path) encodes them once as
warm-up, then `--repeats` times; the table shows the median.

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

from sana_streaming.video.writer import X264_PRESETS, VideoWriter, frames_to_uint8
from sana_streaming.video.yuv import frames_to_yuv420

PATHS = ("device", "swscale")  # where RGB becomes yuv420p: before the writer, or in its thread


def synthetic_frames(count: int, height: int, width: int) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1]: gradients that slide and a block pattern that shifts every frame."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        rgb = np.stack([(xx + 8 * i) % 256, (yy + 4 * i) % 256, (xx // 4 + yy // 4 + 2 * i) % 256], 0)
        rgb[:, (yy // 32 + xx // 32 + i) % 7 == 0] //= 2
        frames.append(rgb)
    return torch.from_numpy(np.stack(frames, 1).astype(np.float32) / 127.5 - 1)


def encode_seconds(frames: torch.Tensor, preset: str, path_name: str, folder: Path) -> tuple[float, int]:
    """Wall seconds to write `frames` in 24-frame chunks through one colour path (the conversion to
    planes or uint8 RGB done beforehand, as the edit does it before the writer's thread), and the file's
    size in bytes."""
    chunks = frames.split(24, dim=1)
    if path_name == "device":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        planes = [frames_to_yuv420(chunk.to(device)).cpu().numpy() for chunk in chunks]
    else:
        images = [frames_to_uint8(chunk) for chunk in chunks]
    path = folder / f"{preset}_{path_name}.mp4"
    start = time.perf_counter()
    with VideoWriter(path, 24, frames.shape[3], frames.shape[2], overwrite=True, preset=preset) as writer:
        for i in range(len(chunks)):
            if path_name == "device":
                writer.write_yuv(planes[i])
            else:
                writer.write_images(images[i])
    return time.perf_counter() - start, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="+", default=["medium", "faster", "veryfast", "superfast", "ultrafast"]
    )
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
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
            for path_name in args.paths:
                encode_seconds(frames[:, :24], preset, path_name, Path(tmp))  # warm-up
                runs = [encode_seconds(frames, preset, path_name, Path(tmp)) for _ in range(args.repeats)]
                seconds = statistics.median(r[0] for r in runs)
                rows.append(
                    {"preset": preset, "path": path_name, "fps": args.frames / seconds, "bytes": runs[0][1]}
                )
                row = rows[-1]
                print(
                    f"{preset:<10} {path_name:<8} {row['fps']:7.1f} fps  {row['bytes'] / 1e6:6.2f} MB",
                    flush=True,
                )
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
