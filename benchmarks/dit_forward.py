"""Time one full-size DiT forward (random weights) for a streaming chunk with a cached window.

Latent chunk [1, 128, 3, 22, 40] (24 frames at 1280x704) at frame 8, the softmax window holding the
steady state of a 969-frame edit (its 5-frame sink chunk and the previous 3-frame chunk), GDN state and
FFN tails carried. Prints a median-of-repeats table (CUDA events,
after warm-up) and writes JSON.

    PYTHONPATH=. python benchmarks/dit_forward.py --out dit_forward.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sana_streaming import build_dit, load_config
from sana_streaming.models.dit import StreamingState, randomize_dit_


def time_forward(model, inputs, state, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        model(*inputs, state=state, frame_offset=8)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(*inputs, state=state, frame_offset=8)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def measure_backend(config, backend: str, inputs, state, args: argparse.Namespace) -> dict:
    """Build the bf16 DiT for GDN `backend` with random weights (seed 0: the same for every backend), then
    time its forward: build seconds, median/min/max ms and peak memory (weights included). The model
    is freed on return, so the next backend's peak holds one copy of the weights."""
    t0 = time.perf_counter()
    model = build_dit(config, device="cuda", dtype=torch.bfloat16, gdn_backend=backend)
    randomize_dit_(model, seed=0)
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    times = time_forward(model, inputs, state, args.repeats, args.warmup)
    return {
        "build_and_randomize_s": build_s,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sana_streaming_2b_720p")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["torch", "auto"])
    parser.add_argument("--out", default="dit_forward.json")
    args = parser.parse_args()

    device = torch.device("cuda")
    config = load_config(args.config)
    T, H, W = 3, 22, 40
    gen = torch.Generator(device).manual_seed(1)
    x = torch.randn(1, 128, T, H, W, device=device, generator=gen, dtype=torch.bfloat16)
    source = torch.randn(1, 128, T, H, W, device=device, generator=gen, dtype=torch.bfloat16)
    caption = torch.randn(1, 1, 300, 2304, device=device, generator=gen, dtype=torch.bfloat16)
    mask = torch.zeros(1, 300, dtype=torch.long, device=device)
    mask[:, :40] = 1
    timestep = torch.tensor([961.0], device=device)
    sink = 5  # a 969-frame edit's first chunk: 122 latent frames, the remainder 2 put first
    state = StreamingState.allocate(config.dit, batch=1, height=H, width=W, window_frames=sink + 2 * T,
                                    device=device, dtype=torch.bfloat16)  # fmt: skip
    for block in state.blocks:  # a realistic carried state: random window, tails and GDN state
        block.ffn_tail.normal_(generator=gen)
        if block.window is not None:
            block.window.key.normal_(generator=gen)
            block.window.value.normal_(generator=gen)
        if block.gdn is not None:
            block.gdn.kv.normal_(std=0.05, generator=gen)
            block.gdn.z.normal_(std=0.05, generator=gen)
    state.commit_chunk(0, sink)
    state.commit_chunk(1, T)  # the chunk at frame 8 follows: time_forward's frame_offset
    inputs = (x, timestep, caption, mask, source)
    meta_model = build_dit(config, device="meta", dtype=torch.bfloat16)  # parameter sizes, no memory
    results = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shape": [1, 128, T, H, W],
        "cached_tokens": state.cached_tokens,
        "weights_gib": sum(p.nbytes for p in meta_model.parameters()) / 2**30,
        "state_mib": state.nbytes() / 2**20,
        "backends": {},
    }
    with torch.no_grad():
        for backend in args.backends:
            try:
                results["backends"][backend] = measure_backend(config, backend, inputs, state, args)
            except Exception as exc:  # report a backend that cannot run, keep measuring the others
                results["backends"][backend] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"{results['gpu']}, torch {results['torch']}, weights {results['weights_gib']:.2f} GiB")
    print(f"{'GDN backend':<12} {'median ms':>10} {'min ms':>8} {'peak GiB':>9}")
    for backend, r in results["backends"].items():
        if "error" in r:
            print(f"{backend:<12} {r['error']}")
        else:
            print(f"{backend:<12} {r['median_ms']:>10.2f} {r['min_ms']:>8.2f} {r['peak_gib']:>9.2f}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
