"""Compile the fused GDN core's kernels for a GPU target without a GPU and report registers, spills and
shared memory per kernel (ptxas -v): a free check before spending device time.

The launches of one `gdn_core_triton_parts` call on CPU tensors are recorded instead of run; each is
compiled with the argument types and divisibility the JIT would specialise on.

    python kernels/gdn_compile.py --shape "hot loop" --precision bf16 [--arch 90]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import tempfile

import torch
import triton
from gdn_common import SHAPES, make_inputs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sana_streaming.ops import gdn_triton

_TYPES = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64"}


@dataclasses.dataclass
class Launch:
    """One recorded kernel launch: the kernel and the arguments it was given."""

    fn: triton.JITFunction
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a kernel: `kernel[grid](...)` records the call instead of launching it."""

    def __init__(self, fn: triton.JITFunction, sink: list[Launch]):
        self.fn, self.sink = fn, sink

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.sink.append(Launch(self.fn, args, kwargs))


def record(shape, precision: str, config: gdn_triton.LaunchConfig) -> list[Launch]:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    inputs, state = make_inputs(shape, dtype=dtype, device="cpu")
    sink: list[Launch] = []
    names = [n for n in vars(gdn_triton) if n.endswith("_kernel")]
    originals = {n: getattr(gdn_triton, n) for n in names}
    supports_pdl = gdn_triton._supports_pdl
    try:
        gdn_triton._supports_pdl = lambda device: True  # compile what an sm_90 GPU would run
        for n in names:
            setattr(gdn_triton, n, _Recorder(originals[n], sink))
        gdn_triton.gdn_core_triton_parts(
            inputs, state=state, precision=precision, return_state=True, config=config
        )
    finally:
        gdn_triton._supports_pdl = supports_pdl
        for n, fn in originals.items():
            setattr(gdn_triton, n, fn)
    return sink


def compile_launch(launch: Launch, arch: int) -> dict:
    fn = launch.fn
    options = {
        k: launch.kwargs.pop(k)
        for k in ("num_warps", "num_stages", "maxnreg", "launch_pdl")
        if k in launch.kwargs
    }
    options = {k: v for k, v in options.items() if v is not None}
    values = dict(zip(fn.arg_names, launch.args, strict=False)) | launch.kwargs
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        value = values[name]
        if i in fn.constexprs or (type(value) is int and value == 1):  # the JIT specialises 1 too
            signature[name], constexprs[(i,)] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = _TYPES[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i64" if abs(value) >= 2**31 else "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32"
    src = ASTSource(fn, signature, constexprs, attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    ptxas = os.path.join(os.path.dirname(triton.backends.nvidia.__file__), "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        arch_flag = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        out = subprocess.run(
            [ptxas, "-v", f"--gpu-name={arch_flag}", ptx, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores", out)
    return {
        "kernel": fn.__name__,
        "registers": int(regs.group(1)) if regs else None,
        "spill_bytes": int(spill.group(1)) if spill else 0,
        "shared_bytes": kernel.metadata.shared,
        **options,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="hot loop", choices=sorted(SHAPES))
    parser.add_argument("--precision", default="bf16", choices=["bf16", "tf32", "ieee"])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--set", nargs="*", default=[], help="LaunchConfig overrides, e.g. emit_warps=4")
    args = parser.parse_args()
    change = {k: int(v) for k, v in (item.split("=") for item in args.set)}
    config = dataclasses.replace(gdn_triton.LaunchConfig.for_frames(SHAPES[args.shape][1]), **change)
    print(f"{args.shape} {SHAPES[args.shape]} {args.precision} sm_{args.arch} {change or ''}")
    for launch in record(SHAPES[args.shape], args.precision, config):
        row = compile_launch(launch, args.arch)
        print(
            f"  {row['kernel']:<22} regs {row['registers']:>4}  spill {row['spill_bytes']:>5} B  "
            f"smem {row['shared_bytes']:>6} B  warps {row.get('num_warps', 4)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
