"""`sana-streaming quantize --plan out.json`: an MPQ precision plan measured on this device.

Per GEMM group (`models.dit.quantize.GROUPS`) it measures the bf16 and the FP8 time at the shape of
a steady streaming chunk (3 latent frames at the edit size; the activation quantisation included, on
CUDA the Triton pass that `--compile max` runs; both captured in a CUDA graph), and the velocity
error that quantising this group alone causes in one forward against the bf16 forward. A group goes
to FP8 when it is at least `--min_speedup` faster and its error is at most `--max_error`; the whole
plan's error is then measured and written with the timings into the plan's notes. Random full-size
weights unless `--model_path` is given: their errors say how the arithmetic behaves, not how an edit
looks.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sana_streaming.models.dit.kernels import EAGER, fused_kernels, temporal_conv_quantized
from sana_streaming.models.dit.quantize import (
    GROUPS,
    Precision,
    PrecisionPlan,
    group_matrix,
    quantize_dit_,
    quantize_group_,
)
from sana_streaming.ops.quant import FP8Linear, fp8_eligible

FRAMES = 3  # latent frames of a steady streaming chunk


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", required=True, help="JSON file to write the plan to")
    parser.add_argument("--config", default="sana_streaming_2b_720p", help="YAML config of the DiT")
    parser.add_argument("--model_path", help="measure the errors on these weights (default: random ones)")
    parser.add_argument("--device", help="cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--height", type=int, default=704, help="edit height in pixels")
    parser.add_argument("--width", type=int, default=1280, help="edit width in pixels")
    parser.add_argument("--repeats", type=int, default=30, help="timed GEMMs per shape (median)")
    parser.add_argument("--min_speedup", type=float, default=1.05, help="FP8 must be this much faster")
    parser.add_argument("--max_error", type=float, default=1e-2, help="largest relative velocity error")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing plan file")


def _timer(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """Milliseconds per call of `fn`, the median over 5 timed runs after a warm-up. On a GPU the
    `repeats` calls are captured in one CUDA graph and each run replays it between events, so the
    time is the GPU's work as a captured streaming forward runs it: calls timed from the host measured
    its launch latency instead (a 2240→2240 FP8 GEMM 0.15 ms against 0.04 ms for bf16 on an H200)."""

    def median_ms(fn: Callable[[], object], repeats: int) -> float:
        if device.type != "cuda":
            fn()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(repeats):
                    fn()
                times.append(1e3 * (time.perf_counter() - t0) / repeats)
            return statistics.median(times)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # Triton's and cuBLAS's first calls allocate and pick kernels
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeats):
                fn()
        graph.replay()
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / repeats)
        return statistics.median(times)

    return median_ms


def time_groups(
    model: torch.nn.Module, frames: int, tokens_per_frame: int, repeats: int, device: torch.device
) -> dict[str, dict]:
    """bf16 and FP8 milliseconds per distinct (kind, in, out) GEMM at `frames` · `tokens_per_frame`
    rows, each with the kernels `--compile max` runs around it: the activation quantiser (FP8), and
    for the temporal conv the building of its three-frame input and the inner residual (both)."""
    kernels = fused_kernels() if device.type == "cuda" else EAGER
    median_ms = _timer(device)
    shapes: dict[str, dict] = {}
    for block in (model.blocks[0], model.blocks[min(model.config.softmax_layer_indices)]):
        kind = "softmax" if block.softmax else "gdn"
        for group in GROUPS:
            weight, _ = group_matrix(block, group)
            key = f"{kind}.{group}" if group == "attn.qkv" else group
            if key in shapes or not fp8_eligible(weight.shape[1], weight.shape[0]):
                continue
            fp8 = FP8Linear.from_matrix(weight)
            if group == "mlp.t_conv":
                C = weight.shape[0]
                p = torch.randn(1, frames, tokens_per_frame, C, device=device, dtype=weight.dtype)
                left = torch.randn_like(p[:, :1])
                conv = block.mlp.t_conv.weight
                bf16_ms = median_ms(lambda p=p, left=left, w=conv: kernels.temporal_conv(p, left, w), repeats)
                fp8_ms = median_ms(
                    lambda p=p, left=left, f=fp8: temporal_conv_quantized(
                        p, left, f, kernels.quantize_neighbours
                    ),
                    repeats,
                )
            else:
                x = torch.randn(frames * tokens_per_frame, weight.shape[1], device=device, dtype=weight.dtype)
                bf16_ms = median_ms(lambda w=weight, x=x: F.linear(x, w), repeats)
                fp8_ms = median_ms(lambda f=fp8, x=x: f(x, kernels.quantize_rows), repeats)
            shapes[key] = {
                "in": weight.shape[1],
                "out": weight.shape[0],
                "bf16_ms": bf16_ms,
                "fp8_ms": fp8_ms,
            }
    return shapes


def _relative(a: Tensor, b: Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def measure_plan(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> PrecisionPlan:
    """Time the group shapes, measure each group's error alone, choose, and measure the whole plan."""
    config = model.config
    H, W = args.height // 32, args.width // 32  # latent tokens per frame: the VAE's 32x space
    shapes = time_groups(model, FRAMES, H * W, args.repeats, device)
    gen = torch.Generator(device).manual_seed(0)
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, config.in_channels, FRAMES, H, W, generator=gen, device=device, dtype=dtype)
    source = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
    L = config.model_max_length
    caption = torch.randn(1, 1, L, config.caption_channels, generator=gen, device=device, dtype=dtype)
    mask = torch.ones(1, L, device=device)
    timestep = torch.tensor([961.0], device=device)  # the second of the release's four steps
    with torch.no_grad():
        want = model(x, timestep, caption, mask, source)
        errors: dict[str, dict[str, float]] = {"fp8": {}, "nvfp4": {}}
        layers: dict[str, Precision] = {}
        for i, block in enumerate(model.blocks):
            kind = "softmax" if block.softmax else "gdn"
            for group in GROUPS:
                name, key = f"blocks.{i}.{group}", f"{kind}.{group}" if group == "attn.qkv" else group
                for precision, table in errors.items():
                    trial = copy.deepcopy(block)
                    if quantize_group_(trial, group, precision):
                        model.blocks[i] = trial
                        table[name] = _relative(model(x, timestep, caption, mask, source), want)
                        model.blocks[i] = block
                fast = key in shapes and shapes[key]["bf16_ms"] >= args.min_speedup * shapes[key]["fp8_ms"]
                accurate = errors["fp8"].get(name, float("inf")) <= args.max_error
                layers[name] = "fp8" if fast and accurate else "bf16"
        plan = PrecisionPlan(layers)
        quantized = copy.deepcopy(model)
        quantize_dit_(quantized, plan)
        whole = _relative(quantized(x, timestep, caption, mask, source), want)
    notes = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "torch": torch.__version__, "weights": args.model_path or "random", "tokens": FRAMES * H * W,
        "min_speedup": args.min_speedup, "max_error": args.max_error, "gemm_ms": shapes,
        "group_error": errors["fp8"], "whole_forward_error": whole,
        "nvfp4_group_error": errors["nvfp4"],
        "block_kinds": ["softmax" if block.softmax else "gdn" for block in model.blocks],
        "nvfp4": "emulated by quantise-dequantise (ops.nvfp4): errors only, never chosen as it is not fast",
    }  # fmt: skip
    return PrecisionPlan(layers, notes)


def print_plan(path: Path, plan: PrecisionPlan) -> None:
    """The plan's choice, and per GEMM shape its times and the largest error over the blocks."""
    notes = plan.notes
    print(f"{path}: {len(plan.groups('fp8'))} of {len(plan.layers)} GEMM groups in FP8; whole-forward "
          f"velocity error {notes['whole_forward_error']:.2e} against bf16")  # fmt: skip
    header = ("bf16 ms", "fp8 ms", "fp8 err", "nvfp4 err")
    print(f"  {'group':22s} {'in->out':>11}  " + "  ".join(f"{h:>7}" for h in header) + "  fp8")
    for key, row in notes["gemm_ms"].items():
        kind, group = key.split(".", 1) if key.startswith(("gdn.", "softmax.")) else (None, key)
        names = [f"blocks.{i}.{group}" for i, k in enumerate(notes["block_kinds"]) if kind in (None, k)]
        worst = {
            table: max((notes[table][n] for n in names if n in notes[table]), default=float("nan"))
            for table in ("group_error", "nvfp4_group_error")
        }
        chosen = sum(plan.layers.get(n) == "fp8" for n in names)
        print(
            f"  {key:22s} {row['in']:>5}->{row['out']:<5}  {row['bf16_ms']:7.3f}  {row['fp8_ms']:7.3f}  "
            f"{worst['group_error']:7.1e}  {worst['nvfp4_group_error']:9.1e}  {chosen}/{len(names)}"
        )


def run_quantize(args: argparse.Namespace) -> int:
    from sana_streaming.cli import UsageError
    from sana_streaming.config import load_config
    from sana_streaming.loading import default_device, load_models

    path = Path(args.plan)
    if path.exists() and not args.overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    if args.repeats < 1:
        raise UsageError("--repeats must be at least 1")
    device = default_device(args.device)
    models = load_models(
        load_config(args.config), model_path=args.model_path, random_weights=args.model_path is None,
        device=device, load_text_encoder=False,
    )  # fmt: skip
    plan = measure_plan(models.dit, args, device)
    plan.write(path)
    print_plan(path, plan)
    return 0
