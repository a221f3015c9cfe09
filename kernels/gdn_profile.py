"""Per-kernel device times of the fused GDN core for launch-config variants, each in its own process
(a variant that faults cannot poison the others). Prints a table and writes JSON.

    PYTHONPATH=. python kernels/gdn_profile.py --out gdn_profile.json            # all variants
    PYTHONPATH=. python kernels/gdn_profile.py --variant default --out one.json  # one, in-process
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import torch
from gdn_common import SHAPES, make_inputs

from sana_streaming.ops.gdn_triton import LaunchConfig, gdn_core_triton_parts

VARIANTS = {  # name: (shape name, precision, changes from LaunchConfig.for_frames(T))
    "default": ("hot loop", "bf16", {}),
    "no dependent launch": ("hot loop", "bf16", {"pdl": False}),
    "readout in 64-row chunks": ("hot loop", "bf16", {"emit_block_k": 64, "emit_stages": 2}),
    "bidir default": ("bidir CFG", "bf16", {}),
    "tf32 default": ("hot loop", "tf32", {}),
}


def profile_variant(name: str, repeats: int = 20) -> dict:
    from torch.profiler import ProfilerActivity, profile

    shape_name, precision, change = VARIANTS[name]
    cfg = dataclasses.replace(LaunchConfig.for_frames(SHAPES[shape_name][1]), **change)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    sets = [make_inputs(SHAPES[shape_name], seed=i, dtype=dtype) for i in range(4)]

    def call(i):
        inputs, state = sets[i % 4]
        return gdn_core_triton_parts(inputs, state=state, precision=precision, config=cfg)

    for i in range(4):
        call(i)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(repeats):
            call(i)
        torch.cuda.synchronize()
    kernels = {}
    for evt in prof.key_averages():
        total = getattr(evt, "device_time_total", 0) or getattr(evt, "cuda_time_total", 0)
        if total > 0:
            kernels[evt.key] = total / repeats  # µs per call
    return {
        "name": name,
        "shape": shape_name,
        "precision": precision,
        "change": change,
        "kernels_us": kernels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant")
    parser.add_argument("--out", default="gdn_profile.json")
    args = parser.parse_args()
    if args.variant:
        with open(args.out, "w") as f:
            json.dump(profile_variant(args.variant), f)
        return
    rows = []
    for name in VARIANTS:
        tmp = f"{args.out}.{len(rows)}.tmp"
        cmd = [sys.executable, __file__, "--variant", name, "--out", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            ok = proc.returncode == 0 and os.path.exists(tmp)
        except subprocess.TimeoutExpired as exc:
            proc, ok = exc, False
        if ok:
            with open(tmp) as f:
                row = json.load(f)
            os.remove(tmp)
        else:
            err = getattr(proc, "stderr", "") or "timeout"
            row = {"name": name, "error": str(err)[-600:]}
        rows.append(row)
        if "error" in row:
            print(f"{name:<16} ERROR {row['error'][-300:]}", flush=True)
        else:
            parts = "  ".join(f"{k.split('_kernel')[0][-14:]} {v:7.1f}" for k, v in row["kernels_us"].items())
            total = sum(row["kernels_us"].values())
            print(f"{name:<16} total {total:8.1f} us | {parts}", flush=True)
        with open(args.out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
