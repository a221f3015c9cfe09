"""Benchmark the VAE paths: whole-clip vs chunked encode; whole, `release_tiles`, `exact`, `causal` decode.

Full-size VAE (the released architecture, `LTX2_RELEASE_ARCHITECTURE`) with random weights, bf16, on one
GPU. Times are CUDA-event medians over `--repeats` runs after one warm-up, reported per 24 video frames;
"steady" is the median time of one push of 3 latents (24 frames) once the stream is full. TFLOP/s is
the FLOPs PyTorch counts in one run of the path (`FlopCounterMode`, an extra run before the warm-up)
over its median time. Peak memory is `max_memory_allocated` during the path minus what was allocated
before it (weights, inputs); it includes the path's own outputs (the concatenated video or latents).
"state" is the most bytes a stream held between two pushes. `--cudnn_benchmark both` runs every path
with cuDNN's heuristic algorithm choice and then with its autotuner (`torch.backends.cudnn.benchmark`),
which times the algorithms of each new convolution shape on first use.

    python kernels/bench_vae.py --out bench_vae.json            # H100: 704x1280, 97 frames / 33 latents
    python kernels/bench_vae.py --modules both --out vae.json   # diffusers' modules, then the fast ones
    python kernels/bench_vae.py --cudnn_benchmark both          # cuDNN's heuristics, then its autotuner
    python kernels/bench_vae.py --tiny --device cpu             # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sana_streaming.config import VAEConfig, load_config
from sana_streaming.models.vae import LTX2VAE, load_vae


@dataclass
class Result:
    path: str
    frames: int  # video frames produced or consumed per run
    ms_total: float
    ms_per_24_frames: float
    ms_steady_per_24_frames: float | None
    tflops: float  # counted FLOPs over the median time
    peak_extra_gib: float
    state_mib: float | None
    rel_diff_vs_whole: float | None


class Timer:
    """Wall time of a callable on the device (CUDA events on GPU, perf_counter on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> tuple[float, object]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end), out
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1e3, out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _reset_peak(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_gib(device: torch.device, base: int) -> float:
    if device.type != "cuda":
        return float("nan")
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def bench_path(
    name: str,
    run: Callable[[], tuple[torch.Tensor, list[float], int | None]],
    frames: int,
    repeats: int,
    timer: Timer,
    device: torch.device,
    reference: torch.Tensor | None,
) -> tuple[Result, torch.Tensor]:
    """`run()` returns (output, per-push steady times in ms, most state bytes held between pushes)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    run()  # warm-up
    totals: list[float] = []
    steady: list[float] = []
    base = _reset_peak(device)
    state = None
    out = None
    for _ in range(repeats):
        out = None  # the previous repeat's output is not counted in the next one's peak
        ms, (out, pushes, state) = timer(run)  # type: ignore[misc]
        totals.append(ms)
        steady += pushes
    peak = _peak_gib(device, base)
    assert out is not None
    total = statistics.median(totals)
    result = Result(
        path=name,
        frames=frames,
        ms_total=round(total, 2),
        ms_per_24_frames=round(total * 24 / frames, 2),
        ms_steady_per_24_frames=round(statistics.median(steady), 2) if steady else None,
        tflops=round(counter.get_total_flops() / total / 1e9, 1),
        peak_extra_gib=round(peak, 3),
        state_mib=None if state is None else round(state / 2**20, 1),
        rel_diff_vs_whole=None if reference is None else float(f"{_rel(out, reference):.3g}"),
    )
    return result, out


def bench_all_paths(
    vae: LTX2VAE,
    video: torch.Tensor,
    latents: torch.Tensor,
    args: argparse.Namespace,
    timer: Timer,
    device: torch.device,
    label: str,
) -> list[Result]:
    """Every encode and decode path of `vae`, each result's path prefixed with `label`."""
    model = vae.model
    results: list[Result] = []

    # ---- encode ---------------------------------------------------------------------------------------
    def encode_whole() -> tuple[torch.Tensor, list[float], int | None]:
        with torch.no_grad():
            return model.encoder(video)[:, : vae.latent_channels], [], None

    def encode_chunked(step: int) -> Callable[[], tuple[torch.Tensor, list[float], int | None]]:
        def run() -> tuple[torch.Tensor, list[float], int | None]:
            encoder = vae.chunked_encoder(normalise=False)
            sizes = [1] + [step] * ((args.frames - 1) // step)
            parts, pushes, held = [], [], 0
            for i, chunk in enumerate(video.split(sizes, dim=2)):
                ms, part = timer(lambda chunk=chunk: encoder.push(chunk))
                parts.append(part)
                held = max(held, encoder.state_bytes())
                if i > 1:  # after the first frame's push and the push that fills the causal context
                    pushes.append(ms * 24 / step)
            parts.append(encoder.flush())
            return torch.cat(parts, dim=2), pushes, held

        return run

    enc_frames = args.frames
    whole_res, whole_z = bench_path(
        "encode whole (untiled)", encode_whole, enc_frames, args.repeats, timer, device, None
    )
    results.append(whole_res)
    for step in (8, 24):
        res, _ = bench_path(
            f"encode chunked 1+{step}x",
            encode_chunked(step),
            enc_frames,
            args.repeats,
            timer,
            device,
            whole_z,
        )
        results.append(res)
    del whole_z

    # ---- decode ---------------------------------------------------------------------------------------
    dec_frames = 8 * (args.latents - 1) + 1

    def decode_whole() -> tuple[torch.Tensor, list[float], int | None]:
        with torch.no_grad():
            return model.decoder(latents, None), [], None

    def decode_stream(mode: str) -> Callable[[], tuple[torch.Tensor, list[float], int | None]]:
        def run() -> tuple[torch.Tensor, list[float], int | None]:
            decoder = vae.incremental_decoder(mode, normalise=False)  # type: ignore[arg-type]
            sizes = [args.latents % 3 or 3] + [3] * ((args.latents - 1) // 3)
            parts, pushes, held = [], [], 0
            for chunk in latents.split(sizes, dim=2):
                ms, part = timer(lambda chunk=chunk: decoder.push(chunk))
                parts.append(part)
                held = max(held, decoder.state_bytes())
                if part.shape[2] == 24:
                    pushes.append(ms)
            parts.append(decoder.flush())
            return torch.cat(parts, dim=2), pushes, held

        return run

    whole_res, whole_x = bench_path(
        "decode whole (untiled)", decode_whole, dec_frames, args.repeats, timer, device, None
    )
    results.append(whole_res)
    for mode in ("release_tiles", "exact", "causal"):
        # `causal` is another VAE's decoder: no difference to the LTX-2 decoder's output is reported
        reference = None if mode == "causal" else whole_x
        res, _ = bench_path(
            f"decode {mode}", decode_stream(mode), dec_frames, args.repeats, timer, device, reference
        )
        results.append(res)
    del whole_x
    for r in results:
        r.path = f"{label}{r.path}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--frames", type=int, default=97, help="video frames to encode (8k+1)")
    parser.add_argument("--latents", type=int, default=33, help="latent frames to decode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny_random's VAE, 64x64, float32 (script check)"
    )
    parser.add_argument(
        "--modules",
        choices=("fast", "eager", "both"),
        default="fast",
        help="the VAE as load_vae builds it (fast), with diffusers' own modules (eager), or both in turn",
    )
    parser.add_argument(
        "--cudnn_benchmark",
        choices=("off", "on", "both"),
        default="off",
        help="cuDNN's autotuner off (PyTorch's default), on, or off and then on",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.tiny:
        config = replace(load_config("tiny_random").vae, decode="causal")
        dtype = torch.float32
        args.height = args.width = 64
    else:  # `decode: causal` also builds the causal-decoder VAE (the released architecture, random)
        config = VAEConfig(weight_dtype="bfloat16", decode="causal")
        dtype = torch.bfloat16
    timer = Timer(device)
    gen = torch.Generator(device=device).manual_seed(0)
    video = (torch.rand(1, 3, args.frames, args.height, args.width, generator=gen, device=device) * 2 - 1).to(
        dtype
    )
    results: list[Result] = []
    latents = None
    module_choices = {"fast": [True], "eager": [False], "both": [False, True]}[args.modules]
    cudnn_choices = {"off": [False], "on": [True], "both": [False, True]}[args.cudnn_benchmark]
    for fast, autotune in itertools.product(module_choices, cudnn_choices):
        # the same random weights each time (a fixed seed); only the modules differ
        vae: LTX2VAE = load_vae(config, device=device, dtype=dtype, random_weights=True, fast_modules=fast)
        h, w = args.height // vae.spatial_ratio, args.width // vae.spatial_ratio
        if latents is None:
            latents = torch.randn(1, vae.latent_channels, args.latents, h, w, generator=gen, device=device)
            latents = latents.to(dtype)
        label = ("fast: " if fast else "eager: ") if args.modules == "both" else ""
        if args.cudnn_benchmark == "both":
            label += "cudnn autotuned: " if autotune else "cudnn heuristic: "
        torch.backends.cudnn.benchmark = autotune
        results += bench_all_paths(vae, video, latents, args, timer, device, label)
    torch.backends.cudnn.benchmark = False
    model = vae.model

    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype),
        "video": [1, 3, args.frames, args.height, args.width],
        "latents": [1, vae.latent_channels, args.latents, h, w],
        "parameters": sum(p.numel() for p in model.parameters()),
        "exact_lookahead_latents": vae.incremental_decoder("exact").lookahead_latents,
        "cudnn_benchmark": args.cudnn_benchmark,
    }
    print(json.dumps(meta))
    header = (
        f"{'path':46s} {'frames':>6s} {'ms total':>9s} {'ms/24f':>8s} {'steady/24f':>10s} {'TFLOP/s':>8s} "
        f"{'peak GiB':>9s} "
    )
    print(header + f"{'state MiB':>9s} {'rel vs whole':>12s}")
    for r in results:
        steady = "-" if r.ms_steady_per_24_frames is None else f"{r.ms_steady_per_24_frames:.1f}"
        state = "-" if r.state_mib is None else f"{r.state_mib:.1f}"
        rel = "-" if r.rel_diff_vs_whole is None else f"{r.rel_diff_vs_whole:.3g}"
        print(
            f"{r.path:46s} {r.frames:6d} {r.ms_total:9.1f} {r.ms_per_24_frames:8.1f} {steady:>10s} "
            f"{r.tflops:8.1f} {r.peak_extra_gib:9.2f} {state:>9s} {rel:>12s}"
        )
    if args.out is not None:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
