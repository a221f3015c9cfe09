"""Render benchmarks/RESULTS.md from the JSON files in benchmarks/results/ (written by
`benchmarks/dit_forward.py`, `benchmarks/dit_stream.py`, `benchmarks/mpq_quality.py`,
`benchmarks/batch_throughput.py`, `benchmarks/x264_presets.py`, `benchmarks/flop_budget.py`,
`kernels/bench_vae.py` and `sana-streaming bench`). Run after copying new results in:

    python benchmarks/render_results.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def dit_rows(name: str, data: dict) -> list[str]:
    rows = []
    for backend, r in data["backends"].items():
        if "error" in r:
            rows.append(f"| {name} | {backend} | error: {r['error']} | | |")
        else:
            rows.append(
                f"| {name} | {backend} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['peak_gib']:.2f} |"
            )
    return rows


def stream_rows(name: str, data: dict) -> list[str]:
    rows = []
    for mode, r in data["modes"].items():
        prof = r["forward_profile"]
        rows.append(
            f"| {name} | {mode} | {r['steady_chunk_ms']:.1f} | {r['dit_fps']:.1f} | "
            f"{r['achieved_tflops']:.0f} | {prof['launches']} | {prof['gpu_busy_ms']:.1f} | "
            f"{r['peak_gib']:.2f} | {max(r['relative_error_vs_eager']):.1e} |"
        )
    return rows


def bidirectional_rows(name: str, data: dict) -> list[str]:
    b = data.get("bidirectional")
    if not b:
        return []
    frames = 8 * (b["latent_frames"] - 1) + 1
    fp8 = f"{b['fp8_fused_s']:.2f}" if "fp8_fused_s" in b else "–"  # timed since 12-07
    rate = f"{b['flops'] / b['fused_s'] / 1e12:.0f}" if "flops" in b else "–"
    return [f"| {name} | {frames} ({b['latent_frames']}) | {b['steps']} | {b['cfg_scale']:g} | "
            f"{b['eager_s']:.2f} | {b['fused_s']:.2f} | {rate} | {fp8} |"]  # fmt: skip


def flop_rows(name: str, data: dict) -> list[str]:
    """Per stage and per edit (encode + DiT + each decode): TFLOP per chunk and the bound at the peak."""
    peak = data["peak_tflops"] * 1e12
    per = data["frames_per_chunk"]
    stages = data["stage_flops"]
    named = dict(stages)
    for decode in (key.removeprefix("decode ") for key in stages if key.startswith("decode ")):
        named[f"edit with decode {decode}"] = stages["encode"] + stages["dit"] + stages[f"decode {decode}"]
    rows = [
        f"| {name} | {stage} | {flops / 1e12:.1f} | {flops / peak * 1e3:.1f} | {per * peak / flops:.0f} |"
        for stage, flops in named.items()
    ]
    return rows


def flop_sample_rows(name: str, data: dict) -> list[str]:
    b = data["bidirectional"]
    peak = data["peak_tflops"] * 1e12
    calls = f"{b['model_calls']} ({b['guided_calls']} guided)"
    return [f"| {name} | {b['frames']} ({b['latent_frames']}) | {calls} | {b['flops'] / 1e15:.2f} | "
            f"{b['flops'] / peak:.1f} |"]  # fmt: skip


def overlapped_rows(name: str, data: dict) -> list[str]:
    o = data.get("overlapped")
    if not o:
        return []
    latency = o["chunk_latency_s"]
    runs = o.get("runs", [])
    wall = f"{o['wall_s']:.1f}"
    if len(runs) > 1:  # the median, then each run's
        wall += " (" + ", ".join(f"{r['wall_s']:.1f}" for r in runs) + ")"
    decode = f", decode {data['decode']}" if "decode" in data else ""  # recorded since 12-07
    return [
        f"| {name} | {data['mode']}, x264 {data['x264_preset']}, compile {data.get('compile') or 'default'}, "
        f"{data.get('precision', 'bf16')}{decode} | {data['frames']} @ {data['size'][0]}x{data['size'][1]} | "
        f"{wall} | {o['fps_end_to_end']:.1f} | {o['first_frame_s']:.2f} | "
        f"{latency['median']:.2f} / {latency['p95']:.2f} | {o['peak_gib'] or 0:.1f} |"
    ]


def bench_rows(name: str, data: dict) -> list[str]:
    if "median" not in data:
        return []
    m = data["median"]
    stages = " / ".join(
        f"{m.get(k, 0.0):.1f}" for k in ("text_s", "encode_s", "dit_s", "decode_s", "write_s", "other_s")
    )
    return [
        f"| {name} | {data['mode']}, x264 {data.get('x264_preset', 'medium')}, "  # medium before the flag
        f"compile {data.get('compile') or 'default'} | "
        f"{data['frames']} @ {data['size'][0]}x{data['size'][1]} | "
        f"{m['wall_s']:.1f} | {stages} | {data['fps_end_to_end']:.1f} | {data['fps_dit']:.1f} | "
        f"{data['peak_gib']:.1f} |"
    ]


def preset_rows(name: str, data: dict) -> list[str]:
    return [
        f"| {name} | {data['host']} | {data['size'][0]}x{data['size'][1]} | {r['preset']} | "
        f"{r.get('path', 'swscale')} | {r['fps']:.1f} | "  # swscale, the only path before the flag
        f"{r['bytes'] / data['frames'] / 1e3:.1f} |"
        for r in data["presets"]
    ]


def quality_rows(name: str, data: dict) -> list[str]:
    return [
        f"| {name} | {precision} | {len(r['chunks'])} | {r['whole']:.1f} | {min(r['chunks']):.1f} |"
        for precision, r in data["psnr_db"].items()
    ]


def batch_rows(name: str, data: dict) -> list[str]:
    frames = data["items"] * data["num_frames"]
    return [
        f"| {name} | {data['items']} x {data['num_frames']} @ {data['size'][0]}x{data['size'][1]} | "
        f"{data['separate_total_s']:.1f} | {data['batch_total_s']:.1f} | {data['speedup']:.2f} | "
        f"{frames / data['separate_total_s']:.1f} | {frames / data['batch_total_s']:.1f} |"
    ]


def vae_rows(name: str, data: dict) -> list[str]:
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    return [
        f"| {name} | {r['path']} | {r['ms_per_24_frames']:.1f} | {cell(r['ms_steady_per_24_frames'])} | "
        f"{cell(r.get('tflops'))} | {r['peak_extra_gib']:.2f} |"  # TFLOP/s: counted since 12-07
        for r in data["results"]
    ]


def main() -> None:
    dit, stream, bidirectional, bench, presets, quality, batch, overlapped = [], [], [], [], [], [], [], []
    vae, flops, flop_samples = [], [], []
    for path in sorted((HERE / "results").glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") == "flop_budget":  # benchmarks/flop_budget.py (counted on the meta device)
            flops.extend(flop_rows(f"{path.stem} (torch {data['torch']})", data))
            flop_samples.extend(flop_sample_rows(f"{path.stem} (torch {data['torch']})", data))
            continue
        if "meta" in data and "results" in data:  # kernels/bench_vae.py
            vae.extend(
                vae_rows(f"{path.stem} ({data['meta']['device']}, torch {data['meta']['torch']})", data)
            )
            continue
        if "presets" in data:  # benchmarks/x264_presets.py (CPU only)
            presets.extend(preset_rows(path.stem, data))
            continue
        device = data.get("gpu") or data.get("device")
        label = f"{path.stem} ({device}, torch {data['torch']})"
        if "psnr_db" in data:  # benchmarks/mpq_quality.py
            quality.extend(quality_rows(label, data))
            continue
        if "speedup" in data:  # benchmarks/batch_throughput.py
            batch.extend(batch_rows(label, data))
            continue
        if "modes" in data:  # benchmarks/dit_stream.py
            stream.extend(stream_rows(label, data))
            bidirectional.extend(bidirectional_rows(label, data))
            continue
        if "backends" in data:  # benchmarks/dit_forward.py
            dit.extend(dit_rows(label, data))
            continue
        bench.extend(bench_rows(label, data))  # sana-streaming bench
        overlapped.extend(overlapped_rows(label, data))
    lines = [
        "# Benchmark results",
        "",
        "Generated by `benchmarks/render_results.py` from `benchmarks/results/*.json`; do not edit by hand.",
        "",
        "## One DiT forward (full size, random weights, bf16, latent [1,128,3,22,40], 2-chunk window)",
        "",
        "Eager forwards: the times include Python's kernel launches, which vary with the host's CPU "
        "(the `_gdn_v3` run's host ran the same PyTorch path 15% slower), so compare backends within one "
        "run; kernel-level times are in `kernels/RESULTS.md`. Runs before 12-07 held a 3-frame sink and "
        "one 3-frame chunk in the window (6 cached frames); the script now holds a 969-frame edit's 5 + 3.",
        "",
        "| run | GDN backend | median ms | min ms | peak GiB |",
        "|---|---|---|---|---|",
        *dit,
        "",
        "## The DiT streaming a 1280x704 edit (`benchmarks/dit_stream.py`, random weights, bf16)",
        "",
        "Steady chunk: the median push of 3 latent frames (24 video frames: 4 denoise forwards and the "
        "previous chunk's clean pass) after every forward kind has been captured; compile modes in one "
        "process. TFLOP/s counts PyTorch's FLOPs of 5 forwards; kernels and kernel ms are one steady "
        "forward's (in the graph modes, what one replay runs); the error is the largest relative "
        "difference of a chunk's latents from eager. Peak memory: runs before 12-07 kept every mode's "
        "stream and every quantised copy until the end, so a later mode's peak includes the earlier ones'; "
        "now a mode holds the bf16 model, its own quantised copy and its own stream.",
        "",
        "| run | compile | steady chunk ms | DiT FPS | TFLOP/s | kernels | kernel ms | peak GiB | rel err |",
        "|---|---|---|---|---|---|---|---|---|",
        *stream,
        "",
        "One bidirectional sample (flow DPM-Solver, CFG), op by op, with the fused kernels and with "
        "them in FP8; TFLOP/s of the fused run from the sample's counted FLOPs. Runs before 12-07 timed "
        "21 latent frames (161 video frames) by mistake; the release's 81 frames are 11 latent frames.",
        "",
        "| run | video (latent) frames | steps | CFG | op by op s | fused s | fused TFLOP/s | fused FP8 s |",
        "|---|---|---|---|---|---|---|---|",
        *bidirectional,
        "",
        "MODE:fp8 quantises every large GEMM to FP8 (W8A8 e4m3), MODE:mpq the groups of the run's "
        "precision plan (`sana-streaming quantize`).",
        "",
        "## Decoded frames of the FP8 precisions against bf16 (`benchmarks/mpq_quality.py`)",
        "",
        "A whole streaming edit (145 frames: 6 DiT chunks, 1280x704, random weights, synthetic clip) in "
        "bf16 and in each precision with the same noise; PSNR of the decoded frames (peak-to-peak 2) over "
        "the edit and over the worst of the decoder's pieces.",
        "",
        "| run | precision | decoded pieces | PSNR dB | worst piece dB |",
        "|---|---|---|---|---|",
        *quality,
        "",
        "## Many edits: one batch against separate processes (`benchmarks/batch_throughput.py`)",
        "",
        "Wall seconds of N `sana-streaming edit` runs one after another against one batch of the same "
        "N items (models built once); random weights, so model loading is cheaper than from disk.",
        "",
        "| run | items x frames @ HxW | separate s | batch s | speed-up | separate FPS | batch FPS |",
        "|---|---|---|---|---|---|---|",
        *batch,
        "",
        "## Whole edits (`sana-streaming bench`, random weights, synthetic clip)",
        "",
        "Stage seconds: text encoder / VAE encode / DiT / VAE decode / waiting for the writer / other "
        "(reading, glue); they add up to the wall time.",
        "",
        "| run | mode, writer | frames @ HxW | wall s | stages s | end-to-end FPS | DiT FPS | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
        *bench,
        "",
        "The same edits run as a user's edit runs (stages overlapping, `--timing overlapped`): wall "
        "seconds (the median; each run's in brackets where there were several), seconds from the edit's "
        "start (models loaded) to the first frame handed to the writer, and each written chunk's "
        "source-to-output latency (median / p95).",
        "",
        "| run | mode, writer, precision | frames @ HxW | wall s | end-to-end FPS | first frame s | "
        "chunk latency s | peak GiB |",
        "|---|---|---|---|---|---|---|---|",
        *overlapped,
        "",
        "## The VAE's paths (`kernels/bench_vae.py`, full size, random weights, bf16, 704x1280)",
        "",
        "97 frames encoded, 33 latents decoded in pushes of 3 latents; CUDA-event medians of 3 runs after "
        "a warm-up, per 24 video frames; steady: one push once the stream is full; TFLOP/s: the FLOPs "
        "PyTorch counts in the path over its median time; peak: memory above the weights and inputs. "
        "Runs before 12-07 divided by 96 and 256 frames instead of the 97 encoded and 257 decoded (their "
        "per-24-frame times are 1 % and 0.4 % high), and their peaks include the previous repeat's output.",
        "",
        "| run | path | ms / 24 frames | steady ms / 24 frames | TFLOP/s | peak GiB |",
        "|---|---|---|---|---|---|",
        *vae,
        "",
        "## The work of each stage (`benchmarks/flop_budget.py`, counted, not timed)",
        "",
        "FLOPs that PyTorch counts per 24 video frames at 1280x704 in each stage's steady state (the "
        "full-size models on the meta device), the milliseconds they take at the bf16 peak the run names "
        "(the H200's dense 989.5 TFLOP/s by default) and the frame rate that allows: ceilings, not "
        "expectations. An edit is the sum of its encode, DiT and decode.",
        "",
        "| run | stage | TFLOP / 24 frames | ms at peak | FPS at most |",
        "|---|---|---|---|---|",
        *flops,
        "",
        "One bidirectional sample (the release's 50 steps at CFG 6, each guided call a forward of the "
        "[uncond, cond] pair), whole:",
        "",
        "| run | video (latent) frames | model calls | PFLOP | s at peak |",
        "|---|---|---|---|---|",
        *flop_samples,
        "",
        "## The writer per x264 preset (`benchmarks/x264_presets.py`, crf 25, synthetic frames)",
        "",
        "Frames per second through `VideoWriter` (YUV 4:2:0, x264), median of repeats after a warm-up; "
        "medium is the release's preset (`--x264_preset`). Path `device`: the writer gets yuv420p planes "
        "converted on the GPU (the edit's path); `swscale`: it gets uint8 RGB and converts it itself.",
        "",
        "| run | host | HxW | preset | path | FPS | kB per frame |",
        "|---|---|---|---|---|---|---|",
        *presets,
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
