"""The FFN's spatial depthwise 3x3 convolution, its bias and the GLU in one Triton kernel.

Eagerly, `GLUMBConvTemp` runs them as four kernels over a (B·T, H, W, 2F) bf16 tensor (cuDNN's
depthwise convolution, a broadcast bias add, SiLU of the gate half, the product), ~6 ms of a 35 ms
1280x704 streaming forward on an H200; this kernel reads the input about once from memory and writes
only the (B·T, H, W, F) product. Accumulation and the GLU are fp32; the output is rounded once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_W = 8  # columns per program (a 1280-wide frame has 40 latent columns)
BLOCK_C = 64  # channels per program: 128 contiguous bytes of bf16 per row


@triton.jit
def _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, dh: tl.constexpr, half: tl.constexpr):
    """Σ_dw x[row, col + dw - 1, half·F + c] · w[half·F + c, dh, dw] over one input row, fp32."""
    acc = tl.zeros((cols.shape[0], chans.shape[0]), dtype=tl.float32)
    for dw in tl.static_range(3):
        ww = cols + dw - 1
        mask = ((ww >= 0) & (ww < W))[:, None] & cmask[None, :]
        offs = (row_offs + ww.to(tl.int64))[:, None] * (2 * F) + (chans + half * F)[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + (chans + half * F) * 9 + (dh * 3 + dw), mask=cmask, other=0.0).to(tl.float32)
        acc += x * w[None, :]
    return acc


@triton.jit
def _glu_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, H, W, F,
    BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """One column strip of one frame, all rows: y[r, h, w, c] = a · SiLU(g), a/g the depthwise conv
    (zero padding) plus bias of channels c and F + c.

    The program walks the input rows once; input row i adds its kernel row dh to output row
    i + 1 - dh, so three running accumulators (outputs i - 1, i, i + 1) see each input element
    loaded three times (once per column tap, from L1) instead of nine."""
    frame = tl.program_id(0)  # over B·T
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    chans = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < F
    out_mask = (cols < W)[:, None] & cmask[None, :]
    bias_a = tl.load(b_ptr + chans, mask=cmask, other=0.0).to(tl.float32)[None, :]
    bias_g = tl.load(b_ptr + chans + F, mask=cmask, other=0.0).to(tl.float32)[None, :]
    # running sums for outputs i - 1 (prev) and i (cur), before input row i
    prev_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    prev_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for i in range(0, H):
        row_offs = (frame * H + i).to(tl.int64) * W
        prev_a += _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, 2, 0)
        prev_g += _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, 2, 1)
        if i > 0:  # output i - 1 is complete
            a = prev_a + bias_a
            g = prev_g + bias_g
            out = (row_offs - W + cols.to(tl.int64))[:, None] * F + chans[None, :]
            tl.store(y_ptr + out, (a * (g * tl.sigmoid(g))).to(y_ptr.dtype.element_ty), mask=out_mask)
        prev_a = cur_a + _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, 1, 0)
        prev_g = cur_g + _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, 1, 1)
        cur_a = _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, 0, 0)
        cur_g = _taps(x_ptr, row_offs, cols, W, F, chans, cmask, w_ptr, 0, 1)
    a = prev_a + bias_a  # the last row: no input row below it
    g = prev_g + bias_g
    out = ((frame * H + H - 1).to(tl.int64) * W + cols.to(tl.int64))[:, None] * F + chans[None, :]
    tl.store(y_ptr + out, (a * (g * tl.sigmoid(g))).to(y_ptr.dtype.element_ty), mask=out_mask)


def glu_conv_triton(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x: (R, H, W, 2F) contiguous, channels last (R = B·T frames); weight (2F, 1, 3, 3) and bias (2F,)
    of the depthwise convolution. Returns a · SiLU(g) of the convolved halves, (R, H, W, F)."""
    R, H, W, C2 = x.shape
    if not x.is_contiguous() or C2 % 2 or weight.shape != (C2, 1, 3, 3) or bias.shape != (C2,):
        raise ValueError(
            f"glu_conv_triton: x {tuple(x.shape)} (contiguous {x.is_contiguous()}), weight "
            f"{tuple(weight.shape)}, bias {tuple(bias.shape)}"
        )
    F = C2 // 2
    y = torch.empty((R, H, W, F), device=x.device, dtype=x.dtype)
    grid = (R, triton.cdiv(W, BLOCK_W), triton.cdiv(F, BLOCK_C))
    _glu_conv_kernel[grid](
        x, weight.contiguous(), bias.contiguous(), y, H, W, F, BLOCK_W=BLOCK_W, BLOCK_C=BLOCK_C
    )
    return y
