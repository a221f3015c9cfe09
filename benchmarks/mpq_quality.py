"""Decoded-frame PSNR of the FP8 precisions against bf16 over a whole streaming edit (6 DiT chunks).

One pipeline (random full-size weights, a synthetic clip) edits the clip in bf16; then copies of its
DiT quantised by each `--precision` edit the same clip with the same noise, and every piece of
frames the decoder yields (7: one per DiT chunk and the decoder's final flush) is compared with
bf16's. Random weights show how the arithmetic's error carries through six
chunks of streaming state and the VAE decode, not how an edit with the released weights looks.

    PYTHONPATH=. python benchmarks/mpq_quality.py --plan sana_streaming/configs/plans/mpq_h200.json \
        --out benchmarks/results/mpq_quality_h200.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from sana_streaming import EditOptions, SanaStreamingPipeline
from sana_streaming.models.dit.quantize import quantize_dit_, resolve_precision
from sana_streaming.video.synthetic import write_synthetic_clip

FRAMES = 145  # 19 latent frames: DiT chunks of 4, 3, 3, 3, 3, 3


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def edited_chunks(pipe: SanaStreamingPipeline, clip: Path, options: EditOptions) -> list[Tensor]:
    return [chunk.float().clamp(-1, 1).cpu() for chunk in pipe.stream(clip, options)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sana_streaming_2b_720p")
    parser.add_argument("--plan", help="the mpq plan (default: the shipped H200 plan)")
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--compile", default="max", choices=["none", "graph", "max"])
    parser.add_argument("--out", default="mpq_quality.json")
    args = parser.parse_args()
    pipe = SanaStreamingPipeline.from_config(args.config, random_weights=True)
    options = EditOptions(prompt="make it winter", num_frames=FRAMES, height=args.height, width=args.width,
                          compile=args.compile)  # fmt: skip
    precisions = {"fp8": None, "mpq": args.plan}
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"gpu": gpu, "torch": torch.__version__, "frames": FRAMES, "size": [args.height, args.width],
              "compile": args.compile, "plan": args.plan, "psnr_db": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_synthetic_clip(Path(tmp) / "clip.mp4", FRAMES, args.height, args.width)
        bf16_dit = pipe.dit
        reference = edited_chunks(pipe, clip, options)
        for precision, plan_path in precisions.items():
            pipe.dit = copy.deepcopy(bf16_dit)
            quantize_dit_(pipe.dit, resolve_precision(precision, len(bf16_dit.blocks), plan_path))
            chunks = edited_chunks(pipe, clip, options)
            per_chunk = [psnr(c, r) for c, r in zip(chunks, reference, strict=True)]
            whole = psnr(torch.cat(chunks, 1), torch.cat(reference, 1))
            report["psnr_db"][precision] = {"chunks": per_chunk, "whole": whole}
            print(f"{precision:<4} PSNR vs bf16: {whole:5.1f} dB over {len(chunks)} decoded pieces "
                  f"(per piece {', '.join(f'{p:.1f}' for p in per_chunk)})", flush=True)  # fmt: skip
            del pipe.dit  # free this copy before the next is made
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
