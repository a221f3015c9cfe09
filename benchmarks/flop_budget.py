"""Count the work of each stage of a 1280x704 edit per 24 video frames, and the frame rate it allows.

Counted, not timed: the full-size models are built on PyTorch's meta device (no weights, no GPU, a
minute on a laptop CPU) and `FlopCounterMode` counts what it knows (GEMMs, convolutions, attention; the
GDN recurrence as the PyTorch path computes it). Each stage is pushed until it is steady, and the steady
push is counted:

- `encode`: the streaming (chunked, causal) LTX-2 encoder, one push of 24 frames;
- `dit`: the long_streaming DiT, one chunk of 3 latent frames (4 denoise forwards and the previous
  chunk's clean pass) with a full K/V window;
- `decode <mode>`: each `--decode` path, one push of 3 latent frames (24 video frames);
- the bidirectional sample: 81 frames, the release's 50 flow-DPM-Solver steps at CFG 6 (each guided
  step one forward of the [uncond, cond] pair).

The bound is the time the count takes at `--peak_tflops` (default: the H200's dense bf16 tensor-core
rate); no run reaches it, so every frame rate derived from it is a ceiling. Writes JSON for
`render_results.py`:

    python benchmarks/flop_budget.py --out benchmarks/results/flop_budget_1280x704.json
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import AutoencoderKLLTX2Video
from torch.utils.flop_counter import FlopCounterMode

from sana_streaming import build_dit, load_config
from sana_streaming.conditioning import TextConditioning
from sana_streaming.config import MODE_PRESETS
from sana_streaming.files import publish_text
from sana_streaming.models.vae import LTX2VAE
from sana_streaming.models.vae.autoencoder import LTX2_RELEASE_ARCHITECTURE
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver
from sana_streaming.sampling.streaming import ChunkStreamer, SourceChunk

META = torch.device("meta")
DTYPE = torch.bfloat16
STEADY_LATENTS = 3  # latent frames of a steady chunk
FRAMES_PER_CHUNK = 24  # its video frames
# NVIDIA H200 datasheet: 1,979 bf16 tensor-core TFLOPS "with sparsity"; dense is half.
H200_BF16_DENSE_TFLOPS = 989.5


def counted(fn: Callable[[], object]) -> int:
    """FLOPs that PyTorch counts in `fn()`."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def caption(dim: int, batch: int = 1) -> TextConditioning:
    """A 300-token caption, the Gemma-2 encoder's padded length (its values do not change a count)."""
    return TextConditioning(
        torch.empty(batch, 1, 300, dim, device=META, dtype=DTYPE),
        torch.ones(batch, 300, dtype=torch.long, device=META),
    )


def vae_flops(height: int, width: int) -> dict[str, int]:
    """FLOPs of a steady push of the streaming encoder and of each decode path."""
    with META:
        model = AutoencoderKLLTX2Video(**LTX2_RELEASE_ARCHITECTURE).to(DTYPE)
        causal = AutoencoderKLLTX2Video(**{**LTX2_RELEASE_ARCHITECTURE, "decoder_causal": True}).to(DTYPE)
    vae = LTX2VAE(model, load_config("sana_streaming_2b_720p").vae.vae_type, causal_decoder=causal)
    flops: dict[str, int] = {}
    with torch.inference_mode():
        encoder = vae.chunked_encoder(normalise=False)
        chunk = torch.empty(1, 3, FRAMES_PER_CHUNK, height, width, device=META, dtype=DTYPE)
        encoder.push(chunk[:, :, :1])  # the first frame is a latent frame of its own
        encoder.push(chunk)  # fills the causal context
        flops["encode"] = counted(lambda: encoder.push(chunk))
        ratio = vae.spatial_ratio
        latents = torch.empty(1, vae.latent_channels, STEADY_LATENTS, height // ratio, width // ratio,
                              device=META, dtype=DTYPE)  # fmt: skip
        for mode in ("release_tiles", "exact", "causal"):
            decoder = vae.incremental_decoder(mode, normalise=False)
            pushes = decoder.lookahead_latents // STEADY_LATENTS + 2  # past the look-ahead: steady
            for _ in range(pushes):
                decoder.push(latents)
            flops[f"decode {mode}"] = counted(lambda decoder=decoder: decoder.push(latents))
    return flops


def streaming_dit_flops(height: int, width: int, chunks: int = 5) -> int:
    """FLOPs of a steady long_streaming chunk (the `chunks`-th: the window is full by then), in a
    stream whose first chunk has 5 latent frames, as a 969-frame edit's (its sink chunk)."""
    config = load_config(MODE_PRESETS["long_streaming"].config)
    model = build_dit(config, device=META, dtype=DTYPE, gdn_backend="torch")
    settings = replace(
        MODE_PRESETS["long_streaming"].sampler(config.vae), flow_shift=config.scheduler.flow_shift
    )
    h, w = height // 32, width // 32
    first = STEADY_LATENTS + 2
    frames = first + STEADY_LATENTS * (chunks - 1)  # chunk_sizes puts the remainder 2 first
    streamer = ChunkStreamer.open(
        model, caption(config.dit.caption_channels), settings, latent_hw=(h, w), latent_frames=frames,
        device=META, dtype=DTYPE, noise=torch.empty(1, 128, frames, h, w, device=META),
    )  # fmt: skip
    source = torch.empty(1, 128, frames, h, w, device=META, dtype=DTYPE)
    with torch.inference_mode():
        streamer.push(SourceChunk(source[:, :, :first], 0))
        for start in range(first, frames - STEADY_LATENTS, STEADY_LATENTS):
            streamer.push(SourceChunk(source[:, :, start : start + STEADY_LATENTS], start))
        last = frames - STEADY_LATENTS
        return counted(lambda: streamer.push(SourceChunk(source[:, :, last:], last)))


def bidirectional_flops(height: int, width: int, frames: int = 81) -> dict[str, int]:
    """FLOPs of one bidirectional sample: its model calls (counted by running the solver on a stand-in
    velocity) times the FLOPs of one forward at each batch size it calls with."""
    preset = MODE_PRESETS["bidirectional_short"]
    config = load_config(preset.config)
    shift = config.scheduler.sampling_shift
    batches: list[int] = []

    def stand_in(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batches.append(x.shape[0])
        return torch.ones_like(x)

    sample_flow_dpm_solver(stand_in, torch.randn(1, 1, 1, 1, 1), steps=preset.steps, shift=shift,
                           cfg_scale=preset.cfg_scale)  # fmt: skip
    model = build_dit(config, device=META, dtype=DTYPE, gdn_backend="torch")
    t, h, w = (frames - 1) // 8 + 1, height // 32, width // 32
    per_batch = {}
    with torch.inference_mode():
        for batch in set(batches):
            x = torch.empty(batch, 128, t, h, w, device=META, dtype=DTYPE)
            text = model.prepare_text(caption(config.dit.caption_channels, batch))
            timestep = torch.empty(batch, device=META)
            forward = functools.partial(model, x, timestep, text, None, x)
            per_batch[batch] = counted(forward)
    return {
        "frames": frames,
        "latent_frames": t,
        "steps": preset.steps,
        "cfg_scale": preset.cfg_scale,
        "model_calls": len(batches),
        "guided_calls": sum(b == 2 for b in batches),
        "flops": sum(per_batch[b] for b in batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--peak_tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                        help="the rate the bounds are computed at (default: H200, dense bf16)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write the counts as JSON here")
    args = parser.parse_args()
    if args.height % 32 or args.width % 32:
        parser.error("--height and --width must be multiples of 32")

    start = time.perf_counter()
    stages = {**vae_flops(args.height, args.width), "dit": streaming_dit_flops(args.height, args.width)}
    bidirectional = bidirectional_flops(args.height, args.width)
    report = {
        "kind": "flop_budget",
        "torch": torch.__version__,
        "size": [args.height, args.width],
        "frames_per_chunk": FRAMES_PER_CHUNK,
        "peak_tflops": args.peak_tflops,
        "stage_flops": stages,
        "bidirectional": bidirectional,
    }
    peak = args.peak_tflops * 1e12
    print(f"per {FRAMES_PER_CHUNK} video frames at {args.height}x{args.width} "
          f"(bounds at {args.peak_tflops:g} TFLOP/s):")  # fmt: skip
    for name, flops in stages.items():
        print(f"  {name:<22} {flops / 1e12:8.1f} TFLOP  {flops / peak * 1e3:7.1f} ms")
    for decode in ("release_tiles", "exact", "causal"):
        total = stages["encode"] + stages["dit"] + stages[f"decode {decode}"]
        print(f"  edit, decode {decode:<13} {total / 1e12:5.1f} TFLOP: at most "
              f"{FRAMES_PER_CHUNK * peak / total:.0f} FPS")  # fmt: skip
    b = bidirectional
    print(f"bidirectional sample ({b['frames']} frames, {b['model_calls']} model calls, {b['guided_calls']} "
          f"guided): {b['flops'] / 1e15:.2f} PFLOP, at least {b['flops'] / peak:.1f} s")  # fmt: skip
    print(f"counted in {time.perf_counter() - start:.0f} s")
    if args.out is not None:
        publish_text(args.out, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
