"""`sana-streaming bench`: time a whole edit (reader → VAE → DiT → VAE → writer) on a synthetic clip.

Random weights by default (the released architecture at full size), so it runs anywhere without
downloads. A short warm-up edit runs first (kernel compilation, cuDNN autotuning); then `--repeats`
measured edits of each kind `--timing` names: `serialised` edits take per-stage times from a
`StageTimer` that synchronises the device at stage boundaries, so stages do not overlap while
measured; `overlapped` edits run as a user's edit does (an `EventStageTimer`: CUDA events, no
synchronisation) and report the wall time, the time to the first output frame after the models are
loaded, the per-chunk source-to-output latency and each stage's GPU span. Prints a table (medians)
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sana_streaming.config import (
    CHUNK_VIDEO_FRAMES,
    COMPILE_MODES,
    DEFAULT_X264_PRESET,
    ENCODERS,
    MODE_PRESETS,
    RELEASE_HEIGHT,
    RELEASE_WIDTH,
    VAE_DECODES,
)
from sana_streaming.options import EditOptions
from sana_streaming.pipeline import SanaStreamingPipeline
from sana_streaming.sampling.streaming import chunk_sizes
from sana_streaming.stages import ProgressEvent
from sana_streaming.telemetry import LatencyLog
from sana_streaming.timing import EventStageTimer, StageTimer
from sana_streaming.video.synthetic import write_synthetic_clip

STAGES = ("text", "encode", "dit", "decode", "write")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--mode", choices=sorted(MODE_PRESETS), default="long_streaming", help="the mode to time")
    add("--config", help="YAML config (default: the mode's release config)")
    add("--model_path", help="time released weights instead of random ones")
    add("--num_frames", type=int, help="frames of the synthetic clip (default: 969 / 81 by mode)")
    add("--height", type=int, default=RELEASE_HEIGHT, help="frame height in pixels")
    add("--width", type=int, default=RELEASE_WIDTH, help="frame width in pixels")
    add(
        "--warmup_frames",
        type=int,
        help="frames of the untimed warm-up edit (default: the timed clip's first chunk and two more, "
        "81 frames for 969; the whole clip in bidirectional_short)",
    )
    add("--repeats", type=int, default=1, help="timed edits of each kind; the table shows their medians")
    add(
        "--timing",
        choices=["both", "serialised", "overlapped"],
        default="both",
        help="serialised: per-stage times, the device synchronised between stages; overlapped: as an "
        "edit runs, with time to first frame and chunk latency (default: both)",
    )
    add("--decode", choices=VAE_DECODES, help="streaming VAE decode (see edit) (default: release_tiles)")
    add(
        "--x264_preset",
        default=DEFAULT_X264_PRESET,
        help=f"the writer's x264 preset (default {DEFAULT_X264_PRESET})",
    )
    add("--encoder", choices=ENCODERS, default="auto", help="the writer's encoder (see edit)")
    add("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    add("--compile", choices=COMPILE_MODES, help="DiT forwards: none, graph or max (default: the fastest)")
    add("--precision", choices=["bf16", "fp8", "mpq"], default="bf16", help="the DiT's GEMMs (see edit)")
    add(
        "--precision_plan",
        metavar="FILE",
        help="the plan of --precision mpq (from `sana-streaming quantize`)",
    )
    add("--out", default="bench.json", help="JSON file for the results")


def run_bench(args: argparse.Namespace) -> int:
    """Time `args.repeats` edits of a synthetic clip after a warm-up; print the medians, write JSON."""
    preset = MODE_PRESETS[args.mode]
    frames = args.num_frames or preset.num_frames
    pipe = SanaStreamingPipeline.from_config(
        args.config or preset.config, args.mode, model_path=args.model_path,
        random_weights=args.model_path is None, device=args.device, decode=args.decode,
        precision=args.precision, precision_plan=args.precision_plan,
    )  # fmt: skip
    options = EditOptions(prompt="Turn the scene into a watercolour painting", height=args.height,
                          width=args.width, compile=args.compile)  # fmt: skip
    writer = {"preset": args.x264_preset, "encoder": args.encoder}  # pipe.edit's writer arguments
    with tempfile.TemporaryDirectory() as tmp:
        warm_frames = args.warmup_frames or warmup_frames(frames, preset.chunked)
        warm = write_synthetic_clip(Path(tmp) / "warm.mp4", warm_frames, args.height, args.width)
        clip = write_synthetic_clip(Path(tmp) / "clip.mp4", frames, args.height, args.width)
        pipe.edit(warm, Path(tmp) / "warm_out.mp4", options, audio=False, **writer)
        out = Path(tmp) / "out.mp4"
        serial = args.timing in ("both", "serialised")
        overlap = args.timing in ("both", "overlapped")
        runs, overlapped = [], []
        for _ in range(args.repeats):
            if serial:
                runs.append(_timed_edit(pipe, clip, out, options, writer))
            if overlap:
                overlapped.append(_overlapped_edit(pipe, clip, out, options, writer))
    setting = {"decode": pipe.vae.decode_mode, "warmup_frames": warm_frames}
    report = _report(args, pipe.device, setting, runs, overlapped)
    _print_report(report)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


def warmup_frames(frames: int, chunked: bool, temporal_ratio: int = 8) -> int:
    """Frames of a warm-up edit with every forward shape of a timed edit of `frames` (the whole clip
    when not `chunked`): its first chunk and two of the steady size, so that the second chunk (the sink
    alone in the window), a steady chunk with the full window and a steady chunk's clean pass all run.
    The first forward of each shape compiles kernels (seconds with `--compile max`) and lets cuBLAS and
    cuDNN choose algorithms, which the timed edit should not include. CUDA graphs hold their stream's
    buffers, so every edit captures its own: those captures stay in the timed edit."""
    if not chunked:
        return frames
    steady = CHUNK_VIDEO_FRAMES // temporal_ratio
    first = chunk_sizes((frames - 1) // temporal_ratio + 1, steady)[0]
    return temporal_ratio * (first + 2 * steady - 1) + 1


def _timed_edit(
    pipe: SanaStreamingPipeline, clip: Path, output: Path, options: EditOptions, writer: dict[str, str]
) -> dict[str, float | int | None]:
    """One measured edit: wall and per-stage seconds, frames written, peak CUDA memory (GiB)."""
    device = pipe.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    timer = StageTimer(device)
    start = time.perf_counter()
    result = pipe.edit(clip, output, options, audio=False, overwrite=True, **writer, timer=timer)
    wall = time.perf_counter() - start
    stages = {name: timer.seconds.get(name, 0.0) for name in STAGES}
    return {
        "wall_s": wall,
        **{f"{k}_s": v for k, v in stages.items()},
        "other_s": wall - sum(stages.values()),
        "frames": result.frames,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }


def _overlapped_edit(
    pipe: SanaStreamingPipeline, clip: Path, output: Path, options: EditOptions, writer: dict[str, str]
) -> dict[str, object]:
    """One edit as a user runs it: wall seconds, seconds to the first frame handed to the writer,
    source-to-output latency per written chunk, host and GPU seconds per stage, peak CUDA memory."""
    device = pipe.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    timer = EventStageTimer(device)
    first_write: list[float] = []

    def on_write(event: ProgressEvent) -> None:
        if event.stage == "write" and event.done > 0 and not first_write:
            first_write.append(time.perf_counter())

    log = LatencyLog(then=on_write)
    start = time.perf_counter()
    result = pipe.edit(clip, output, options, audio=False, overwrite=True, **writer,
                       progress=log, timer=timer)  # fmt: skip
    wall = time.perf_counter() - start
    summary = log.summary()
    return {
        "wall_s": wall,
        "first_frame_s": first_write[0] - start if first_write else None,
        "chunk_latency_s": summary["newest_latency_s"],
        "host_stage_s": dict(timer.seconds),
        "gpu_stage_s": timer.gpu_seconds(),
        "frames": result.frames,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }


def _report(
    args: argparse.Namespace,
    device: torch.device,
    setting: dict[str, object],
    runs: list[dict],
    overlapped: list[dict],
) -> dict[str, object]:
    """The JSON report: the setting, the medians of every timed stage, the rates and each run."""
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "mode": args.mode,
        "size": [args.height, args.width],
        "x264_preset": args.x264_preset,
        "encoder": args.encoder,
        "compile": args.compile,
        "precision": args.precision,
        "repeats": args.repeats,
        **setting,
    }
    if runs:
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k.endswith("_s")}
        frames = runs[0]["frames"]
        report |= {
            "frames": frames,
            "median": median,
            "fps_end_to_end": frames / median["wall_s"],
            "fps_dit": frames / median["dit_s"] if median["dit_s"] else None,
            "peak_gib": max((r["peak_gib"] or 0) for r in runs) or None,
            "runs": runs,
        }
    if overlapped:
        wall = statistics.median(r["wall_s"] for r in overlapped)
        frames = overlapped[0]["frames"]
        report["overlapped"] = {
            "wall_s": wall,
            "fps_end_to_end": frames / wall,
            "first_frame_s": statistics.median(r["first_frame_s"] for r in overlapped),
            "chunk_latency_s": {
                k: statistics.median(r["chunk_latency_s"][k] for r in overlapped)
                for k in ("median", "p95", "max")
            },
            "peak_gib": max((r["peak_gib"] or 0) for r in overlapped) or None,
            "runs": overlapped,
        }
        report.setdefault("frames", frames)
    return report


def _print_report(report: dict) -> None:
    """The report as a table of median seconds per stage, then the rates."""
    height, width = report["size"]
    print(f"{report['device']}  torch {report['torch']}  {report['mode']}  {report['frames']} frames "
          f"{height}x{width}  median of {report['repeats']}")  # fmt: skip
    if "median" in report:
        print("  serialised (the device synchronised between stages):")
        for key, seconds in report["median"].items():
            print(f"    {key[:-2]:<8} {seconds:9.2f} s")
        print(f"    end-to-end {report['fps_end_to_end']:.1f} FPS; DiT alone "
              f"{report['fps_dit'] or 0:.1f} FPS; peak {report['peak_gib'] or 0:.1f} GiB")  # fmt: skip
    if "overlapped" in report:
        o = report["overlapped"]
        latency = o["chunk_latency_s"]
        gpu = ", ".join(f"{k} {v:.2f}" for k, v in o["runs"][0]["gpu_stage_s"].items())
        print(f"  overlapped (as an edit runs): {o['wall_s']:.2f} s = {o['fps_end_to_end']:.1f} FPS; "
              f"first frame after {o['first_frame_s']:.2f} s; chunk latency median "
              f"{latency['median']:.2f} s, p95 {latency['p95']:.2f} s; "
              f"peak {o['peak_gib'] or 0:.1f} GiB")  # fmt: skip
        if gpu:
            print(f"    GPU span per stage in the first run (s): {gpu}")
