"""The FFN's SiLU, spatial depthwise 3x3 convolution, its bias and the GLU in one Triton kernel.

Eagerly, `GLUMBConvTemp` runs them as five kernels over a (B·T, H, W, 2F) bf16 tensor (SiLU of the
inverted conv's output, cuDNN's depthwise convolution, a broadcast bias add, SiLU of the gate half,
the product), ~7 ms of a 35 ms 1280x704 streaming forward on an H200; this kernel reads the input
about once from memory and writes only the (B·T, H, W, F) product. The first SiLU is rounded to the
input dtype as the release stores it; accumulation and the GLU are fp32, the output rounded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor


@dataclass(frozen=True)
class GluConvLaunch:
    """How the kernel tiles its work: each program computes `rows` output rows (walking them once, with
    one halo row each side) of `block_w` columns and `block_c` channels of one frame, with `num_warps`
    warps. Every launch computes the same values in the same order; only the speed differs
    (`kernels/bench_glu_conv.py` times the choices)."""

    block_w: int = 4  # columns (a 1280-wide frame has 40 latent columns)
    block_c: int = 64  # channels: 128 contiguous bytes of bf16 per pixel
    rows: int = 32  # a 704-high frame has 22: one program per column strip; splitting a frame's rows
    # over more programs measured slower on an H200 (halo rows read twice)
    num_warps: int = 4

    def grid(self, frames: int, height: int, width: int, channels: int) -> tuple[int, int, int]:
        """Programs for `frames` frames of `height`×`width` and `channels` output channels."""
        return (
            frames * triton.cdiv(height, self.rows),
            triton.cdiv(width, self.block_w),
            triton.cdiv(channels, self.block_c),
        )


DEFAULT_LAUNCH = GluConvLaunch()


@triton.jit
def _silu(x, dtype):
    """SiLU of fp32 values, rounded to `dtype` as the release's separate SiLU kernel stores it."""
    return (x * tl.sigmoid(x)).to(dtype).to(tl.float32)


@triton.jit
def _row(x_ptr, row_offs, row_ok, cols, W, F, chans, cmask, half: tl.constexpr):
    """SiLU of one input row's three column neighbours (col - 1, col, col + 1) of channels half·F + c,
    fp32, zero outside the frame (row_ok: the row exists, as a vector over the columns)."""
    offs = (row_offs + cols.to(tl.int64))[:, None] * (2 * F) + (chans + half * F)[None, :]
    cm = cmask[None, :]
    left = (row_ok & (cols >= 1) & (cols <= W))[:, None] & cm
    mid = (row_ok & (cols < W))[:, None] & cm
    right = (row_ok & (cols + 1 < W))[:, None] & cm
    x0 = tl.load(x_ptr + offs - 2 * F, mask=left, other=0.0).to(tl.float32)
    x1 = tl.load(x_ptr + offs, mask=mid, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + offs + 2 * F, mask=right, other=0.0).to(tl.float32)
    dtype = x_ptr.dtype.element_ty
    return _silu(x0, dtype), _silu(x1, dtype), _silu(x2, dtype)  # SiLU(0) = 0: the zero padding holds


@triton.jit
def _kernel_row(w_ptr, chans, cmask, F, half: tl.constexpr, dh: tl.constexpr):
    """The depthwise kernel's row dh (three taps) of channels half·F + c, fp32, as (1, BLOCK_C)."""
    base = w_ptr + (chans + half * F) * 9 + dh * 3
    w0 = tl.load(base, mask=cmask, other=0.0).to(tl.float32)[None, :]
    w1 = tl.load(base + 1, mask=cmask, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(base + 2, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return w0, w1, w2


@triton.jit
def _glu_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, H, W, F,
    BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """One column strip of ROWS output rows of one frame: y[r, h, w, c] = a · SiLU(g), a/g the
    depthwise conv (zero padding) of SiLU(x) plus bias of channels c and F + c.

    The program walks its input rows (one halo row each side) once, loading each row's three column
    neighbours once; input row i adds kernel row dh to output row i + 1 - dh, so three running sums
    (outputs i - 1, i and i + 1) read every input element about once instead of nine times."""
    frame = tl.program_id(0) // tl.cdiv(H, ROWS)  # over B·T · row groups
    first = (tl.program_id(0) % tl.cdiv(H, ROWS)) * ROWS
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    chans = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < F
    out_mask = (cols < W)[:, None] & cmask[None, :]
    bias_a = tl.load(b_ptr + chans, mask=cmask, other=0.0).to(tl.float32)[None, :]
    bias_g = tl.load(b_ptr + chans + F, mask=cmask, other=0.0).to(tl.float32)[None, :]
    a00, a01, a02 = _kernel_row(w_ptr, chans, cmask, F, 0, 0)
    a10, a11, a12 = _kernel_row(w_ptr, chans, cmask, F, 0, 1)
    a20, a21, a22 = _kernel_row(w_ptr, chans, cmask, F, 0, 2)
    g00, g01, g02 = _kernel_row(w_ptr, chans, cmask, F, 1, 0)
    g10, g11, g12 = _kernel_row(w_ptr, chans, cmask, F, 1, 1)
    g20, g21, g22 = _kernel_row(w_ptr, chans, cmask, F, 1, 2)
    # running sums of outputs i - 1 (prev) and i (cur), before input row i
    prev_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    prev_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_g = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for i in range(first - 1, tl.minimum(first + ROWS + 1, H + 1)):
        row_offs = (frame * H + i).to(tl.int64) * W
        row = tl.full((BLOCK_W,), i, tl.int32)  # a vector: the interpreter's masks need one
        row_ok = (row >= 0) & (row < H)
        xa0, xa1, xa2 = _row(x_ptr, row_offs, row_ok, cols, W, F, chans, cmask, 0)
        xg0, xg1, xg2 = _row(x_ptr, row_offs, row_ok, cols, W, F, chans, cmask, 1)
        prev_a += xa0 * a20 + xa1 * a21 + xa2 * a22
        prev_g += xg0 * g20 + xg1 * g21 + xg2 * g22
        if (i > first) & (i <= H):  # output i - 1 (one of this program's rows) is complete
            a = prev_a + bias_a
            g = prev_g + bias_g
            out = (row_offs - W + cols.to(tl.int64))[:, None] * F + chans[None, :]
            tl.store(y_ptr + out, (a * (g * tl.sigmoid(g))).to(y_ptr.dtype.element_ty), mask=out_mask)
        prev_a = cur_a + xa0 * a10 + xa1 * a11 + xa2 * a12
        prev_g = cur_g + xg0 * g10 + xg1 * g11 + xg2 * g12
        cur_a = xa0 * a00 + xa1 * a01 + xa2 * a02
        cur_g = xg0 * g00 + xg1 * g01 + xg2 * g02


def glu_conv_triton(
    x: Tensor, weight: Tensor, bias: Tensor, launch: GluConvLaunch = DEFAULT_LAUNCH
) -> Tensor:
    """x: (R, H, W, 2F) contiguous, channels last (R = B·T frames), before its SiLU; weight (2F, 1, 3, 3)
    and bias (2F,) of the depthwise convolution. Returns a · SiLU(g) of the convolved halves of
    SiLU(x), (R, H, W, F)."""
    R, H, W, C2 = x.shape
    if not x.is_contiguous() or C2 % 2 or weight.shape != (C2, 1, 3, 3) or bias.shape != (C2,):
        raise ValueError(
            f"glu_conv_triton: x {tuple(x.shape)} (contiguous {x.is_contiguous()}), weight "
            f"{tuple(weight.shape)}, bias {tuple(bias.shape)}"
        )
    F = C2 // 2
    y = torch.empty((R, H, W, F), device=x.device, dtype=x.dtype)
    _glu_conv_kernel[launch.grid(R, H, W, F)](
        x, weight.contiguous(), bias.contiguous(), y, H, W, F,
        BLOCK_W=launch.block_w, BLOCK_C=launch.block_c, ROWS=launch.rows, num_warps=launch.num_warps,
    )  # fmt: skip
    return y
