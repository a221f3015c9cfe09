"""FP8 activation quantisers as single Triton passes: each program holds one row in registers, takes
its amax in fp32 and stores the e4m3 codes and the row's scale.

`quantize_rows_triton` is `quantize_rows`; `quantize_neighbours_triton` is `quantize_rows` of the
temporal conv's GEMM input [p_{t-1} | p_t | p_{t+1}] read straight from p, so that (M, 3C) bf16
tensor is never written (on an H200 its concatenation took ~0.5 ms of a 1280x704 streaming forward).
torch.compile's `quantize_rows` measured ~19 µs a call there, several times the time of reading the
rows once. The arithmetic is the PyTorch function's: scale = max(amax · fp32(1/448), 1e-12), codes =
round-to-nearest-even of clamp(x · (1 / scale), ±448) with the reciprocal IEEE-rounded, so both give
the same bits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from sana_streaming.ops.quant import FP8, FP8_MAX, MIN_SCALE

MAX_ROW = 16384  # widest row held in one program's registers (the DiT's widest is 3·2240 = 6720)


@triton.jit
def _scale_of(amax, LIMIT: tl.constexpr, FLOOR: tl.constexpr):
    return tl.maximum(amax * (1.0 / LIMIT), FLOOR)  # an fp32 product, as quantize_rows


@triton.jit
def _codes(x, inverse, LIMIT: tl.constexpr):
    return tl.clamp(x * inverse, -LIMIT, LIMIT).to(tl.float8e4nv)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_x, BLOCK: tl.constexpr, LIMIT: tl.constexpr,
                          FLOOR: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < K
    x = tl.load(x_ptr + row * stride_x + cols, mask=inside, other=0.0).to(tl.float32)
    scale = _scale_of(tl.max(tl.abs(x), axis=0), LIMIT, FLOOR)
    tl.store(q_ptr + row * K + cols, _codes(x, tl.div_rn(1.0, scale), LIMIT), mask=inside)
    tl.store(s_ptr + row, scale)


@triton.jit
def _quantize_neighbours_kernel(p_ptr, left_ptr, q_ptr, s_ptr, T, S, C, BLOCK: tl.constexpr,
                                LIMIT: tl.constexpr, FLOOR: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # (b, t, s) of p (B, T, S, C), flattened
    s = row % S
    t = (row // S) % T
    b = row // (S * T)
    cols = tl.arange(0, BLOCK)
    inside = cols < C
    before = tl.where(t > 0, p_ptr + (row - S) * C, left_ptr + (b * S + s) * C)  # left: (B, 1, S, C)
    prev = tl.load(before + cols, mask=inside, other=0.0).to(tl.float32)
    cur = tl.load(p_ptr + row * C + cols, mask=inside, other=0.0).to(tl.float32)
    after = inside & (t + 1 < T)  # zeros after the last frame
    nxt = tl.load(p_ptr + (row + S) * C + cols, mask=after, other=0.0).to(tl.float32)
    amax = tl.maximum(tl.maximum(tl.max(tl.abs(prev), axis=0), tl.max(tl.abs(cur), axis=0)),
                      tl.max(tl.abs(nxt), axis=0))  # fmt: skip
    scale = _scale_of(amax, LIMIT, FLOOR)
    inverse = tl.div_rn(1.0, scale)
    out = q_ptr + row * 3 * C + cols
    tl.store(out, _codes(prev, inverse, LIMIT), mask=inside)
    tl.store(out + C, _codes(cur, inverse, LIMIT), mask=inside)
    tl.store(out + 2 * C, _codes(nxt, inverse, LIMIT), mask=inside)
    tl.store(s_ptr + row, scale)


def _warps(block: int) -> int:
    return 4 if block <= 4096 else 8


def quantize_rows_triton(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) → (e4m3 (M, K), fp32 scales (M, 1)), equal to `quantize_rows(x)` on a GPU."""
    M, K = x.shape
    if K > MAX_ROW:
        raise ValueError(f"rows of at most {MAX_ROW} values fit one program, got {K}")
    if x.stride(1) != 1:
        x = x.contiguous()  # the kernel steps over rows by stride but reads each row's values densely
    codes = torch.empty(M, K, dtype=FP8, device=x.device)
    scales = torch.empty(M, 1, dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(K)
    _quantize_rows_kernel[(M,)](
        x, codes, scales, K, x.stride(0), BLOCK=block, LIMIT=FP8_MAX, FLOOR=MIN_SCALE, num_warps=_warps(block)
    )  # fmt: skip
    return codes, scales


def quantize_neighbours_triton(p: Tensor, left: Tensor) -> tuple[Tensor, Tensor]:
    """p (B, T, S, C), left (B, 1, S, C) → (e4m3 (B·T·S, 3C), fp32 scales (B·T·S, 1)), equal to
    `quantize_rows` of `temporal_neighbours(p, left)` on a GPU."""
    B, T, S, C = p.shape
    if 3 * C > MAX_ROW:
        raise ValueError(f"rows of at most {MAX_ROW} values fit one program, got 3·{C}")
    p, left = p.contiguous(), left.to(p.dtype).contiguous()
    codes = torch.empty(B * T * S, 3 * C, dtype=FP8, device=p.device)
    scales = torch.empty(B * T * S, 1, dtype=torch.float32, device=p.device)
    block = triton.next_power_of_2(C)
    _quantize_neighbours_kernel[(B * T * S,)](
        p, left, codes, scales, T, S, C, BLOCK=block, LIMIT=FP8_MAX, FLOOR=MIN_SCALE,
        num_warps=_warps(3 * block),
    )  # fmt: skip
    return codes, scales
