"""Time the full-size DiT streaming a 1280x704 edit in each compile mode (eager, CUDA graphs, graphs with
fused kernels) in one process.

For each compile mode: a stream of `--chunks` chunks (the first of 5 latent frames, then 3 = 24 video
frames each) through `ChunkStreamer` with random weights (seed 0), random source, noise and prompt; the
time of every push (CUDA events; a steady push is the previous chunk's clean pass plus 4 denoise
forwards), the steady chunk time (median over the chunks after every forward kind has been captured),
DiT FPS, achieved TFLOP/s against the measured bf16 GEMM rate of the model's own GEMM shapes, the
kernels of one steady forward (profiled as launched one by one: in the graph modes, the kernels a replay
runs) and peak memory. The graph stream's latents are compared with the eager stream's, chunk by chunk.
`--bidirectional` also times one 81-frame, 50-step, CFG 6 sample of the bidirectional model, op by op,
with the fused kernels and with them in FP8. A mode `MODE:PRECISION` (`max:fp8`, `max:mpq` with
`--plan`) streams a copy of the model with its GEMMs quantised (`models.dit.quantize`), compared with
the eager bf16 stream like the others. The modes run one after another, each stream freed before the
next, so a mode's peak memory is the bf16 model, the mode's quantised copy (if any) and its own stream.
Prints tables and writes JSON for `render_results.py`.

    PYTHONPATH=. python benchmarks/dit_stream.py --out benchmarks/results/dit_stream_h200.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time
from collections import Counter
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from sana_streaming import build_dit, load_config
from sana_streaming.conditioning import TextConditioning
from sana_streaming.config import MODE_PRESETS
from sana_streaming.models.dit import randomize_dit_
from sana_streaming.models.dit.quantize import quantize_dit_, resolve_precision
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver
from sana_streaming.sampling.streaming import ChunkStreamer, SourceChunk

H, W = 22, 40  # latent rows and columns of 704x1280
FIRST, STEADY = 5, 3  # latent frames of the first chunk (969 frames: 122 % 3 = 2 extra) and the rest
VIDEO_FRAMES_PER_CHUNK = 24


def cuda_ms(fn, repeats: int = 1) -> list[float]:
    """Milliseconds of each of `repeats` calls of `fn`, by CUDA events."""
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def gemm_rates(tokens: int, hidden: int, ffn_hidden: int, repeats: int) -> dict[str, float]:
    """TFLOP/s of bf16 matmuls of the DiT's own shapes (tokens x hidden by hidden x out)."""
    rates = {}
    for name, n_out, k in (
        ("C->C", hidden, hidden),
        ("C->4C", 4 * hidden, hidden),  # the stacked q/k/v/gate projections of --compile max
        ("C->2F", 2 * ffn_hidden, hidden),
        ("F->C", hidden, ffn_hidden),
    ):
        a = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n_out, k, device="cuda", dtype=torch.bfloat16)
        cuda_ms(lambda: torch.nn.functional.linear(a, b), 5)  # noqa: B023
        ms = statistics.median(cuda_ms(lambda: torch.nn.functional.linear(a, b), repeats))  # noqa: B023
        rates[name] = 2 * tokens * k * n_out / ms / 1e9
    return rates


def random_prompt(dim: int, gen: torch.Generator) -> TextConditioning:
    """A 300-token caption of which the first 40 tokens are valid."""
    embeds = torch.randn(1, 1, 300, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
    mask = torch.zeros(1, 300, dtype=torch.long, device="cuda")
    mask[:, :40] = 1
    return TextConditioning(embeds, mask)


def run_stream(model, config, prompt, source, noise, mode: str) -> dict:
    """Push the chunks one by one; return per-push ms, the latents and the stream's forward object."""
    settings = replace(
        MODE_PRESETS["long_streaming"].sampler(config.vae), flow_shift=config.scheduler.flow_shift
    )
    streamer = ChunkStreamer.open(
        model, prompt, settings, latent_hw=(H, W), latent_frames=source.shape[2], device=source.device,
        dtype=torch.bfloat16, noise=noise, compile=mode,
    )  # fmt: skip
    bounds = [0, FIRST, *range(FIRST + STEADY, source.shape[2] + 1, STEADY)]
    push_ms, latents = [], []
    torch.cuda.reset_peak_memory_stats()
    for a, b in itertools.pairwise(bounds):
        out = []
        push_ms.append(cuda_ms(lambda: out.extend(streamer.push(SourceChunk(source[:, :, a:b], a))))[0])  # noqa: B023
        latents.extend(chunk.latents for chunk in out)
    return {
        "push_ms": push_ms,
        "latents": latents,
        "forward": streamer.sampler.forward,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def steady_forward_profile(streamer_forward, x, source) -> dict:
    """Kernels launched by one steady denoise forward and the GPU time they take, by kernel name."""
    timestep = torch.full((1,), 961.0, device="cuda")
    offset = 8
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        streamer_forward._eager(x, timestep, source, offset, False)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: Counter = Counter()
    for e in kernels:
        by_name[e.name[:90]] += e.device_time
    return {
        "launches": len(kernels),
        "gpu_busy_ms": sum(e.device_time for e in kernels) / 1e3,
        "top_kernels_ms": {k: v / 1e3 for k, v in by_name.most_common(25)},
    }


def forward_flops(streamer_forward, x, source) -> int:
    """FLOPs of one steady forward that PyTorch counts (GEMMs, convolutions, attention; not the GDN
    Triton kernels, whose work is small)."""
    timestep = torch.full((1,), 961.0, device="cuda")
    counter = FlopCounterMode(display=False)
    with counter:
        streamer_forward._eager(x, timestep, source, 8, False)
    return counter.get_total_flops()


def relative_errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[float]:
    return [
        ((g.float() - w.float()).norm() / w.float().norm()).item() for g, w in zip(got, want, strict=True)
    ]


def bidirectional_sample_s(gen: torch.Generator) -> dict:
    """Seconds of one 81-frame (11 latent frames) 50-step CFG sample of the bidirectional model: op by
    op, with the fused kernels, and fused with every large GEMM in FP8; and the sample's FLOPs (one
    counted forward times the model calls)."""
    preset = MODE_PRESETS["bidirectional_short"]
    config = load_config(preset.config)
    model = build_dit(config, device="cuda", dtype=torch.bfloat16)
    randomize_dit_(model, seed=0)
    fp8 = copy.deepcopy(model)
    quantize_dit_(fp8, resolve_precision("fp8", config.dit.depth))
    T = (preset.num_frames - 1) // config.vae.vae_stride[0] + 1  # 81 frames: 11
    source = torch.randn(1, 128, T, H, W, device="cuda", generator=gen, dtype=torch.bfloat16)
    noise = torch.randn(1, 128, T, H, W, device="cuda", generator=gen)
    prompt = random_prompt(config.dit.caption_channels, gen)
    conditioning = TextConditioning(
        torch.cat([prompt.embeds, prompt.embeds.flip(2)]), prompt.mask.expand(2, -1)
    )
    text = model.prepare_text(conditioning)
    pair = torch.cat([source, source])

    shift = config.scheduler.sampling_shift
    calls: list[int] = []

    def sample(net, steps: int, fused: bool):
        def velocity(x, t):
            calls.append(x.shape[0])
            return net(x, t, text, None, pair[: x.shape[0]], fused=fused)

        return sample_flow_dpm_solver(velocity, noise, steps=steps, shift=shift, cfg_scale=preset.cfg_scale)

    seconds = {}
    with torch.inference_mode():
        variants = (("eager_s", model, False), ("fused_s", model, True), ("fp8_fused_s", fp8, True))
        for key, net, fused in variants:
            cuda_ms(lambda: sample(net, 2, fused))  # noqa: B023
            calls.clear()
            ms = cuda_ms(lambda: sample(net, preset.steps, fused))[0]  # noqa: B023
            seconds[key] = ms / 1e3
        counter = FlopCounterMode(display=False)
        timestep = torch.full((2,), 500.0, device="cuda")
        with counter:
            model(torch.cat([noise, noise]).to(torch.bfloat16), timestep, text, None, pair)
    if set(calls) != {2}:
        raise RuntimeError(f"expected only guided model calls, got batch sizes {sorted(set(calls))}")
    flops = len(calls) * counter.get_total_flops()
    return {"steps": preset.steps, "cfg_scale": preset.cfg_scale, "latent_frames": T,
            "model_calls": len(calls), "flops": flops, **seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--chunks", type=int, default=12, help="chunks per stream (the first of 5 latent frames)"
    )
    parser.add_argument(
        "--modes", nargs="+", default=["none", "graph", "max"],
        help="compile modes to measure, eager bf16 first; MODE:fp8 or MODE:mpq quantise the GEMMs",
    )  # fmt: skip
    parser.add_argument("--plan", help="the precision plan of MODE:mpq (required with it)")
    parser.add_argument("--gemm_repeats", type=int, default=20)
    parser.add_argument(
        "--bidirectional", action="store_true", help="also time a 50-step CFG bidirectional sample"
    )
    parser.add_argument("--out", default="dit_stream.json")
    args = parser.parse_args()

    config = load_config(MODE_PRESETS["long_streaming"].config)
    gen = torch.Generator("cuda").manual_seed(1)
    t0 = time.perf_counter()
    model = build_dit(config, device="cuda", dtype=torch.bfloat16)
    randomize_dit_(model, seed=0)
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    frames = FIRST + STEADY * (args.chunks - 1)
    source = torch.randn(1, 128, frames, H, W, device="cuda", generator=gen, dtype=torch.bfloat16)
    noise = torch.randn(1, 128, frames, H, W, device="cuda", generator=gen)
    prompt = random_prompt(config.dit.caption_channels, gen)
    results = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "size": [704, 1280],
        "latent_chunk": [1, 128, STEADY, H, W],
        "chunks": args.chunks,
        "build_s": build_s,
        "gemm_tflops": gemm_rates(
            STEADY * H * W, config.dit.hidden_size, config.dit.ffn_hidden, args.gemm_repeats
        ),
        "modes": {},
    }
    precisions = [spec.partition(":")[2] or "bf16" for spec in args.modes]
    variants = {"bf16": model}
    with torch.inference_mode():
        eager = None
        steady_x = torch.randn(1, 128, STEADY, H, W, device="cuda", generator=gen, dtype=torch.bfloat16)
        steady_source = source[:, :, :STEADY]
        for i, (spec, precision) in enumerate(zip(args.modes, precisions, strict=True)):
            if precision not in variants:  # built just before its first mode, so no other mode holds it
                plan_path = args.plan if precision == "mpq" else None
                plan = resolve_precision(precision, config.dit.depth, plan_path)
                variants[precision] = copy.deepcopy(model)
                results[f"{precision}_groups"] = len(quantize_dit_(variants[precision], plan))
            stream = run_stream(variants[precision], config, prompt, source, noise, spec.partition(":")[0])
            if eager is None:  # the first mode, eager bf16: the reference of the others
                eager = stream
                results["forward"] = {"flops": forward_flops(stream["forward"], steady_x, steady_source)}
            results["modes"][spec] = summarise(stream, eager, 5 * results["forward"]["flops"])
            profiled = steady_forward_profile(stream["forward"], steady_x, steady_source)
            results["modes"][spec]["forward_profile"] = profiled
            # free the stream's state and graphs (and a quantised copy no later mode uses) before the
            # next mode, so that each mode's peak holds the bf16 model, its own copy and its own stream
            stream["forward"] = None
            if precision != "bf16" and precision not in precisions[i + 1 :]:
                del variants[precision]
            del stream
            torch.cuda.empty_cache()
        del eager, model, variants
        torch.cuda.empty_cache()
    results["bidirectional"] = bidirectional_sample_s(gen) if args.bidirectional else None
    print_tables(results)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


def summarise(stream: dict, eager: dict, flops_per_chunk: int) -> dict:
    """Steady chunk ms (median of the pushes after every kind is captured: push 5 on), FPS, TFLOP/s."""
    steady = stream["push_ms"][5:]
    ms = statistics.median(steady)
    return {
        "push_ms": stream["push_ms"],
        "steady_chunk_ms": ms,
        "dit_fps": VIDEO_FRAMES_PER_CHUNK / ms * 1e3,
        "achieved_tflops": flops_per_chunk / ms / 1e9,
        "peak_gib": stream["peak_gib"],
        "replays": stream["forward"].replays,
        "graphs": len(stream["forward"].graphs),
        "relative_error_vs_eager": relative_errors(stream["latents"], eager["latents"]),
        "fused": stream["forward"].fused,
    }


def print_tables(results: dict) -> None:
    print(f"{results['gpu']}, torch {results['torch']}, 704x1280 bf16, chunks of 3 latent frames (24 frames)")
    rates = ", ".join(f"{k} {v:.0f}" for k, v in results["gemm_tflops"].items())
    print(f"bf16 GEMM TFLOP/s ({rates}); one steady forward: {results['forward']['flops'] / 1e12:.2f} "
          "TFLOP counted")  # fmt: skip
    print(f"{'compile':<10} {'steady chunk ms':>16} {'DiT FPS':>8} {'TFLOP/s':>8} {'peak GiB':>9} "
          f"{'rel err':>9} {'kernels':>9} {'kernel ms':>10}")  # fmt: skip
    for mode, r in results["modes"].items():
        err = max(r["relative_error_vs_eager"])
        prof = r["forward_profile"]
        print(f"{mode:<10} {r['steady_chunk_ms']:>16.1f} {r['dit_fps']:>8.1f} {r['achieved_tflops']:>8.0f} "
              f"{r['peak_gib']:>9.2f} {err:>9.2e} {prof['launches']:>9} "
              f"{prof['gpu_busy_ms']:>10.1f}")  # fmt: skip
    for mode, r in results["modes"].items():
        print(f"top kernels of one {mode} forward (ms):")
        for name, ms in list(r["forward_profile"]["top_kernels_ms"].items())[:12]:
            print(f"  {ms:7.2f}  {name}")
    if results["bidirectional"]:
        b = results["bidirectional"]
        rate = b["flops"] / b["fused_s"] / 1e12
        print(f"bidirectional {b['latent_frames']} latent frames, {b['steps']} steps, CFG {b['cfg_scale']} "
              f"({b['flops'] / 1e15:.2f} PFLOP counted): {b['eager_s']:.2f} s op by op, {b['fused_s']:.2f} "
              f"s fused ({rate:.0f} TFLOP/s), {b['fp8_fused_s']:.2f} s fused in FP8")  # fmt: skip


if __name__ == "__main__":
    main()
