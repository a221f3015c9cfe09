"""Time N edits as one `sana-streaming batch` against N separate `sana-streaming edit` processes.

Each separate run starts Python, builds the text encoder, VAE and DiT and then edits; the batch
builds them once. Sources are synthetic clips (`video.synthetic`); the models have random full-size
weights (`--random_weights`), which take seconds to build where the released ones take longer to read
from disk, so the saving measured here is a lower bound. One untimed edit first fills the compiler
caches on disk, so neither side pays for the first compilation.

    PYTHONPATH=. python benchmarks/batch_throughput.py --out benchmarks/results/batch_throughput_h200.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sana_streaming.video.synthetic import write_synthetic_clip

PROMPTS = ("make it winter", "turn it into a watercolor painting", "night, neon lights", "make it autumn")


def edit_flags(args: argparse.Namespace) -> list[str]:
    """The flags every edit of both sides gets."""
    return ["--random_weights", "--num_frames", str(args.num_frames), "--height", str(args.height),
            "--width", str(args.width), "--overwrite", *args.edit_flags]  # fmt: skip


def wall_seconds(command: list[str], label: str) -> float:
    """Run `command` (its output discarded unless it fails), print and return its wall time."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    seconds = time.perf_counter() - start
    print(f"  {label:<20} {seconds:7.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--num_frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds of both sides (median)")
    parser.add_argument("--edit_flags", nargs=argparse.REMAINDER, default=[], help="more edit flags")
    parser.add_argument("--out", default="batch_throughput.json")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "sana_streaming"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = [
            write_synthetic_clip(folder / f"clip{i}.mp4", args.num_frames, args.height, args.width)
            for i in range(args.items)
        ]
        manifest = folder / "manifest.jsonl"
        rows = [{"video_path": str(c), "prompt": PROMPTS[i % len(PROMPTS)]} for i, c in enumerate(clips)]
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
        warm = [*cli, "edit", "--video_path", str(clips[0]), "--prompt", PROMPTS[0],
                "--output", str(folder / "warmup.mp4"), *edit_flags(args)]  # fmt: skip
        warmup = wall_seconds(warm, "warm-up edit")
        separate, batch = [], []
        for round_ in range(args.repeats):
            runs = [
                wall_seconds([*cli, "edit", "--video_path", row["video_path"], "--prompt", row["prompt"],
                              "--output", str(folder / f"separate{round_}_{i}.mp4"), *edit_flags(args)],
                             f"separate edit {i}")
                for i, row in enumerate(rows)
            ]  # fmt: skip
            separate.append(runs)
            out_dir = folder / f"batch{round_}"
            batch.append(wall_seconds([*cli, "batch", str(manifest), "--output_dir", str(out_dir),
                                       *edit_flags(args)], f"batch of {args.items}"))  # fmt: skip
            written = sorted(p.name for p in out_dir.glob("*.mp4"))
            if len(written) != args.items:
                sys.exit(f"the batch wrote {len(written)} of {args.items} outputs: {written}")
    separate_s = statistics.median(sum(runs) for runs in separate)
    batch_s = statistics.median(batch)
    report = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine(),
        "torch": torch.__version__, "items": args.items, "num_frames": args.num_frames,
        "size": [args.height, args.width], "edit_flags": edit_flags(args), "repeats": args.repeats,
        "warmup_s": warmup, "separate_runs_s": separate, "batch_s": batch,
        "separate_total_s": separate_s, "batch_total_s": batch_s, "speedup": separate_s / batch_s,
    }  # fmt: skip
    frames = args.items * args.num_frames
    print(f"{args.items} edits of {args.num_frames} frames at {args.width}x{args.height} ({report['gpu']})")
    print(f"  separate processes  {separate_s:7.1f} s  {frames / separate_s:6.1f} FPS  "
          f"(per run: {', '.join(f'{s:.1f}' for s in separate[0])} s)")  # fmt: skip
    print(f"  one batch           {batch_s:7.1f} s  {frames / batch_s:6.1f} FPS  ({report['speedup']:.2f}x)")
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
