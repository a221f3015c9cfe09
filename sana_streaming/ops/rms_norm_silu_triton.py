"""The Triton kernel of `ops.rms_norm_silu`: channel RMS norm then SiLU of `[B, C, T, H, W]`, one pass.

One program takes BLOCK_S positions of one frame and walks the channels twice: the first walk sums the
squares (each square rounded to the input dtype, as `x**2` stores it; the sum in fp32), the second
divides and applies the SiLU. The mean, the root and the quotient are rounded to the input dtype as the
eager ops store them (for bf16 and fp16; in fp32 Triton may fuse a multiply-add); root and quotient are
IEEE-rounded, as CUDA computes them, the SiLU's exp is Triton's (approximate) one.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_C = 32  # channels per step of a walk
WIDE = 256  # positions per program for large frames (contiguous: 512 bytes of bf16 per channel row)
NARROW = 64  # positions per program when a wide block would leave the GPU's SMs idle


@triton.jit
def _round(x, dtype):
    return x.to(dtype).to(tl.float32)


# One compiled kernel per dtype and block size: the sizes and strides differ from layer to layer and
# with the frames per call, and specialising on them (Triton's default: divisibility by 16) would
# compile a variant for each pattern while an edit runs.
@triton.jit(do_not_specialize=["C", "HW", "sxb", "sxc", "sxt", "syb", "syc", "syt"])
def _rms_norm_silu_kernel(
    x_ptr, y_ptr, C, HW, sxb, sxc, sxt, syb, syc, syt, eps, inv_c,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    pos = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    t = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    pmask = pos < HW
    x_base = x_ptr + b * sxb + t * sxt
    y_base = y_ptr + b * syb + t * syt
    dtype = x_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_S], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        ch = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        mask = (ch < C)[:, None] & pmask[None, :]
        v = tl.load(x_base + ch[:, None] * sxc + pos[None, :], mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum(_round(v * v, dtype), axis=0)
    mean = _round(acc * inv_c, dtype)
    rms = _round(tl.sqrt_rn(_round(mean + eps, dtype)), dtype)[None, :]
    for c0 in range(0, C, BLOCK_C):
        ch = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        mask = (ch < C)[:, None] & pmask[None, :]
        v = tl.load(x_base + ch[:, None] * sxc + pos[None, :], mask=mask, other=0.0).to(tl.float32)
        h = _round(tl.div_rn(v, rms), dtype)
        out = tl.div_rn(h, 1.0 + tl.exp(-h))
        tl.store(y_base + ch[:, None] * syc + pos[None, :], out.to(dtype), mask=mask)


@functools.cache
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (1 for the CPU of Triton's interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def rms_norm_silu_5d(x: Tensor, eps: float) -> Tensor:
    """SiLU of `x` normalised by its RMS over dim 1; x `[B, C, T, H, W]` on CUDA (any B, C, T strides,
    H·W contiguous, else copied once)."""
    B, C, T, H, W = x.shape
    if x.stride(4) != 1 or x.stride(3) != W:
        x = x.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    HW = H * W
    block_s = WIDE if B * T * triton.cdiv(HW, WIDE) >= 4 * _sm_count(x.device) else NARROW
    grid = (triton.cdiv(HW, block_s), T, B)
    _rms_norm_silu_kernel[grid](
        x, y, C, HW, x.stride(0), x.stride(1), x.stride(2), y.stride(0), y.stride(1), y.stride(2),
        eps, 1.0 / C, BLOCK_C=BLOCK_C, BLOCK_S=block_s,
    )  # fmt: skip
    return y
