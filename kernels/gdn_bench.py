"""Benchmark the fused Triton GDN core against the PyTorch path (kernels.md §7.3).

For every shape: CUDA-event medians of eager calls and of CUDA-graph replays, rotating over four input
sets (so q/k/v do not sit in L2 between calls), for the Triton core (default precision for bf16
inputs) and the PyTorch path (`gdn_core_torch`). Per-kernel times and launch-config variants are
`gdn_profile.py`'s job. Writes JSON; `make_results.py` renders it.

    PYTHONPATH=. python kernels/gdn_bench.py --out gdn_bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics

import torch
import triton
from gdn_common import SHAPES, make_inputs

from sana_streaming.ops.gdn_reference import gdn_core_torch
from sana_streaming.ops.gdn_triton import LaunchConfig, gdn_core_triton_parts

SETS = 4  # input sets rotated per timing (4 × 24 MB > 50 MB of L2 at the hot loop)


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median of per-call CUDA-event times (events recorded back to back, one sync at the end)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)
    ]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events)


def graph_ms(calls, repeats: int) -> float:
    """Median time per call of a CUDA graph that runs `calls` once each."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warm-up / compile outside the capture
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    return median_ms(graph.replay, repeats) / len(calls)


def calls_for(shape, backend: str, config: LaunchConfig | None = None):
    """One closure per input set; each runs one GDN layer (state read, not written)."""
    calls = []
    for i in range(SETS):
        inputs, state = make_inputs(shape, seed=100 + i)
        if backend == "triton":
            calls.append(lambda i=inputs, s=state: gdn_core_triton_parts(i, state=s, config=config))
        else:
            calls.append(lambda i=inputs, s=state: gdn_core_torch(i, state=s))
    return calls


def rotating(calls):
    it = iter(range(10**9))
    return lambda: calls[next(it) % len(calls)]()


def traffic_and_flops(shape) -> tuple[float, float]:
    """Fewest bytes (inputs read once, output written once, bf16) and FLOPs of one call."""
    B, T, S, H, D = shape
    N, C = T * S, H * D
    bytes_ = 2 * (5 * B * N * C + B * N * H) + 4 * (2 * N * D // 2 + 2 * C) + 8 * B * H * D * D
    scans = (2 * T - 1) * 2 * D**3 * H * B
    flops = 3 * 2 * S * D * D * H * T * B + scans + 2 * S * D * D * H * T * B
    return bytes_, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gdn_bench.json")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--torch-repeats", type=int, default=10)
    args = parser.parse_args()
    results = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sets": SETS,
        "default_config": dataclasses.asdict(LaunchConfig()),  # frames < 8; LaunchConfig.for_frames
        "shapes": [],
    }
    with torch.no_grad():
        for name, shape in SHAPES.items():
            row = {"name": name, "shape": shape}
            bytes_, flops = traffic_and_flops(shape)
            row["min_bytes"], row["flops"] = bytes_, flops
            tri = calls_for(shape, "triton")
            row["triton_eager_ms"] = median_ms(rotating(tri), args.repeats)
            row["triton_graph_ms"] = graph_ms(tri, args.repeats)
            del tri
            ref = calls_for(shape, "torch")
            row["torch_eager_ms"] = median_ms(rotating(ref), args.torch_repeats, warmup=2)
            del ref
            torch.cuda.empty_cache()
            results["shapes"].append(row)
            with open(args.out, "w") as f:  # written as we go: a later failure keeps what was measured
                json.dump(results, f, indent=1)
            print(
                f"{name:<13} {shape!s:<22} triton eager {row['triton_eager_ms']:7.3f} ms  graph "
                f"{row['triton_graph_ms']:7.3f} ms  torch {row['torch_eager_ms']:7.3f} ms",
                flush=True,
            )
    print(f"\n{results['gpu']}  torch {results['torch']}  triton {results['triton']}")
    header = ("shape", "(B,T,S,H,D)", "triton graph", "triton eager", "torch", "speed-up", "GB/s")
    print("{:<13} {:<22} {:>12} {:>12} {:>9} {:>8} {:>6}".format(*header))
    for r in results["shapes"]:
        gbps = r["min_bytes"] / (r["triton_graph_ms"] * 1e-3) / 1e9
        speedup = r["torch_eager_ms"] / r["triton_graph_ms"]
        print(
            f"{r['name']:<13} {r['shape']!s:<22} {r['triton_graph_ms']:10.3f}ms "
            f"{r['triton_eager_ms']:10.3f}ms {r['torch_eager_ms']:7.3f}ms {speedup:7.1f}x {gbps:6.0f}"
        )
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
