"""Render kernels/RESULTS.md from the JSON the GDN workbench scripts wrote on the GPU.

    python kernels/make_results.py --bench kernels/results/gdn_bench.json \
        --check kernels/results/gdn_check.json --profile kernels/results/gdn_profile.json \
        --pytest-log "pytest -m gpu tests" kernels/results/pytest_gpu.log \
        --out kernels/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile


def bench_section(bench: dict) -> list[str]:
    lines = [
        "## Fused GDN core, one layer (median per call)",
        "",
        f"GPU **{bench['gpu']}**, PyTorch {bench['torch']}, Triton {bench['triton']}, CUDA {bench['cuda']}, "
        f"measured {bench['date']}. CUDA events, warm-up, median of repeats, {bench['sets']} input sets "
        "rotated. *Graph* = CUDA-graph replay (the launch cost of the DiT's captured forwards, "
        "`--compile graph` and `max`), *eager* = Python launches; the PyTorch path (`gdn_core_torch`, fp32 "
        "einsums) is eager. Triton runs its default precision for bf16 "
        "inputs (bf16 operands, fp32 accumulation, TF32 scan, fp32 state). GB/s = fewest bytes "
        "(inputs read once, output written once) over the graph time.",
        "",
        "| shape | (B, T, S, H, D) | Triton graph ms | Triton eager ms | PyTorch ms | speed-up | GB/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in bench["shapes"]:
        gbps = r["min_bytes"] / (r["triton_graph_ms"] * 1e-3) / 1e9
        speedup = r["torch_eager_ms"] / r["triton_graph_ms"]
        lines.append(
            f"| {r['name']} | {tuple(r['shape'])} | {r['triton_graph_ms']:.3f} | "
            f"{r['triton_eager_ms']:.3f} | {r['torch_eager_ms']:.3f} | {speedup:.1f}× | {gbps:.0f} |"
        )
    return lines


def _kernel_row(row: dict) -> str:
    if "error" in row:
        error = " ".join(row["error"].split())[-100:]
        return f"| {row['name']} | error | | {error} |"
    cells = " · ".join(
        f"{k.removeprefix('_').removesuffix('_kernel')} {v:.1f}" for k, v in row["kernels_us"].items()
    )
    return f"| {row['name']} | {row.get('shape', '')} | {sum(row['kernels_us'].values()):.1f} | {cells} |"


def profile_section(profile: dict) -> list[str]:
    """One table per profiled revision, newest first: `runs` of `kernels/gdn_profile.py` rows grouped by
    hand, or one `gdn_profile.py` output as it comes."""
    lines = [
        "## Where the time goes (profiler, device µs per call)",
        "",
        "Eager calls under the torch profiler. With programmatic dependent launch (the default on sm_90+) a "
        "kernel starts before its predecessor ends and its span includes the wait, so the per-kernel times "
        "overlap and their total exceeds the graph time above; the `no dependent launch` row does not "
        "overlap.",
    ]
    runs = profile.get("runs") or [{"title": "`gdn_profile.py` variants", "rows": profile["rows"]}]
    for run in runs:
        lines += [
            "",
            f"{run['title']}:",
            "",
            "| variant | shape | total µs | per kernel µs |",
            "|---|---|---:|---|",
            *(_kernel_row(r) for r in run["rows"]),
        ]
    return lines


def check_section(check: dict) -> list[str]:
    lines = [
        "## Correctness against the float64 reference",
        "",
        "Relative Frobenius / relative max error (kernels.md §7.3 tolerances: bf16 ≤ 1e-2 / 2e-2, "
        "TF32 ≤ 5e-3 / 1e-2, IEEE ≤ 1e-5 / 1e-4; y of bf16 inputs carries the bf16 output rounding). "
        f"{check.get('note', '')}",
        "",
        "| precision | shape | (B, T, S, H, D) | num | den | state M | state z | y | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in check["rows"]:
        cells = " | ".join(f"{e[0]:.1e} / {e[1]:.1e}" for e in r["errors"].values())
        lines.append(
            f"| {r['precision']} | {r['name']} | {tuple(r['shape'])} | {cells} | "
            f"{'yes' if r['ok'] else 'NO'} |"
        )
    return lines


def dit_section(dit: dict, source: str) -> list[str]:
    """The DiT forward table; `source` names the JSON (its name says which kernel version ran)."""
    lines = [
        "## Full-size DiT forward (random weights, bf16)",
        "",
        f"`benchmarks/dit_forward.py`: latent {dit['shape']}, {dit['cached_tokens']} cached window tokens, "
        f"{dit['gpu']}, PyTorch {dit['torch']}; eager, median of repeats (`{source}`).",
        "",
        "| GDN backend | median ms | min ms | peak GiB |",
        "|---|---:|---:|---:|",
    ]
    for backend, r in dit["backends"].items():
        if "error" in r:
            lines.append(f"| {backend} | {r['error'][:80]} | | |")
        else:
            lines.append(f"| {backend} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | {r['peak_gib']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", required=True)
    parser.add_argument("--check", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--dit")
    parser.add_argument(
        "--pytest-log",
        nargs=2,
        action="append",
        default=[],
        metavar=("COMMAND", "LOG"),
        help="a `pytest -m gpu` command and its log from the same machine (repeatable)",
    )
    parser.add_argument("--out", default="kernels/RESULTS.md")
    args = parser.parse_args()
    with open(args.bench) as f:
        bench = json.load(f)
    with open(args.check) as f:
        check = json.load(f)
    lines = [
        "# GDN kernel results",
        "",
        "Generated by `kernels/make_results.py` from the JSON in `kernels/results/` (do not edit by hand).",
        "",
    ]
    for command, log in args.pytest_log:
        with open(log) as f:
            summary = [line.strip() for line in f if " passed" in line or " failed" in line]
        lines += [f"`{command}` on the same machine: `{summary[-1]}`", ""]
    lines += bench_section(bench)
    if args.profile:
        with open(args.profile) as f:
            lines += ["", *profile_section(json.load(f))]
    lines += ["", *check_section(check)]
    if args.dit:
        with open(args.dit) as f:
            lines += ["", *dit_section(json.load(f), os.path.basename(args.dit))]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)), suffix=".md")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
