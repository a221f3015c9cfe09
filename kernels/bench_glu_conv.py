"""Time the FFN's fused SiLU + depthwise conv + GLU kernel (`ops.glu_conv_triton`) for each launch tiling.

The kernel reads the inverted conv's output (R, H, W, 2F) and writes (R, H, W, F), so it is bound by
memory: the floor is those bytes at the GPU's bandwidth. In a 1280x704 streaming forward it took
2.77 ms of 25.3 (20 calls of ~139 µs; `benchmarks/results/dit_stream_h200_quant_triton.json`, `max`),
about five times that floor. This script times every `GluConvLaunch` of a grid (columns, channels,
rows per program, warps) at the DiT's shapes: a steady streaming chunk (3 frames), the first chunk (5)
and the bidirectional CFG pair (2 x 11), each rotating over input sets larger than L2, CUDA-event
medians of replays of a CUDA graph of the calls (the launch cost the DiT's captured forwards have).
Every launch should give the default launch's output bit for bit (the same sums in the same order): one
that does not is marked and listed last (a fault to fix, never a choice); the eager ops
(`silu_glu_conv_eager`) are timed beside them. Prints the fastest launches per shape with their GB/s and
writes JSON after each shape.

    PYTHONPATH=. python kernels/bench_glu_conv.py --out kernels/results/glu_conv_h200.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import torch
from gdn_bench import graph_ms

from sana_streaming.models.dit.kernels import silu_glu_conv_eager
from sana_streaming.ops.glu_conv_triton import DEFAULT_LAUNCH, GluConvLaunch, glu_conv_triton

SHAPES = {  # name: (R frames, H, W, 2F) at 1280x704 with the released FFN width
    "steady chunk": (3, 22, 40, 13440),
    "first chunk": (5, 22, 40, 13440),
    "bidirectional CFG pair": (22, 22, 40, 13440),
}
L2_BYTES = 50 * 2**20  # H100 and H200: 50 MB of L2


def launches() -> list[GluConvLaunch]:
    """The grid of tilings: 2-8 columns, 32-256 channels, 4-32 rows per program, and 1-8 warps for tiles
    of 64-2048 elements (at least 64 elements a warp, at most 1024)."""
    grid = []
    for block_w, block_c, rows in itertools.product((2, 4, 8), (32, 64, 128, 256), (4, 8, 11, 32)):
        elements = block_w * block_c
        for warps in (1, 2, 4, 8):
            if 64 <= elements // warps <= 1024:
                grid.append(GluConvLaunch(block_w, block_c, rows, warps))
    if DEFAULT_LAUNCH not in grid:
        grid.append(DEFAULT_LAUNCH)
    return grid


def bench_shape(shape: tuple[int, int, int, int], grid: list[GluConvLaunch], repeats: int) -> dict:
    """Every launch of `grid` and the eager ops at `shape`, timed; the launches sorted fastest first."""
    R, H, W, C2 = shape
    gen = torch.Generator("cuda").manual_seed(0)
    sets = max(2, -(-2 * L2_BYTES // (R * H * W * C2 * 2)))  # inputs of all sets: at least twice L2
    xs = [torch.randn(shape, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(sets)]
    conv = torch.nn.Conv2d(C2, C2, 3, padding=1, groups=C2, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        conv.weight.normal_(std=0.3, generator=gen)
        conv.bias.normal_(std=0.3, generator=gen)
        weight, bias = conv.weight, conv.bias
        moved = (R * H * W * C2 + R * H * W * C2 // 2) * 2  # bytes read and written once
        reference = glu_conv_triton(xs[0], weight, bias, DEFAULT_LAUNCH)
        eager = silu_glu_conv_eager(xs[0].clone(), conv).float()
        eager_rel_diff = ((eager - reference.float()).norm() / eager.norm()).item()
        del eager
        rows = []
        for launch in grid:
            equal = torch.equal(glu_conv_triton(xs[0], weight, bias, launch), reference)
            calls = [lambda x=x, launch=launch: glu_conv_triton(x, weight, bias, launch) for x in xs]
            us = graph_ms(calls, repeats) * 1e3
            rows.append(
                {"launch": dataclasses.asdict(launch), "us": us, "gb_per_s": moved / us / 1e3, "equal": equal}
            )
        # last: the eager ops apply their SiLU in place (as in the model), which changes the inputs
        eager_us = graph_ms([lambda x=x: silu_glu_conv_eager(x, conv) for x in xs], repeats) * 1e3
    rows.sort(key=lambda r: (not r["equal"], r["us"]))  # a launch that differs is a fault, listed last
    default = next(r for r in rows if GluConvLaunch(**r["launch"]) == DEFAULT_LAUNCH)
    return {
        "shape": list(shape),
        "input_sets": sets,
        "bytes_moved": moved,
        "eager_us": eager_us,
        "eager_rel_diff": eager_rel_diff,
        "default": default,
        "launches": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--out", default="glu_conv.json")
    args = parser.parse_args()
    grid = launches()
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for name in args.shapes:
        r = results["shapes"][name] = bench_shape(SHAPES[name], grid, args.repeats)
        print(f"{name} {tuple(r['shape'])}: eager ops {r['eager_us']:.1f} µs; default launch "
              f"{r['default']['us']:.1f} µs ({r['default']['gb_per_s']:.0f} GB/s); fastest:")  # fmt: skip
        for row in r["launches"][:8]:
            launch = row["launch"]
            tiles = f"block_w {launch['block_w']} block_c {launch['block_c']:>3} rows {launch['rows']:>2}"
            print(f"  {tiles} warps {launch['num_warps']}: {row['us']:7.1f} µs  {row['gb_per_s']:5.0f} GB/s")
        if faults := [row["launch"] for row in r["launches"] if not row["equal"]]:
            print(f"  {len(faults)} launches differ from the default's output: {faults}")
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
