"""The work around the DiT's big GEMMs, eager or fused.

A block's eager forward runs each projection as its own GEMM and its norms, adaLN modulation, gates
and residual adds as separate PyTorch kernels, each a full pass over a (B, N, C) activation; at
1280x704 they and the FFN's convolution glue take ~20 of a streaming forward's 35 ms on an H200,
against ~14 ms of GEMMs. `BlockKernels` names that work once; `EAGER` runs it op by op (the release's
rounding, every intermediate in the activation dtype), `fused_kernels()` as one compiled kernel per
function (torch.compile / inductor: fp32 inside, rounded once), the Triton FFN kernel of
`ops.glu_conv_triton`, the one-pass FP8 activation quantiser of `ops.quant_triton`, and the
projections of one input as one stacked GEMM. The fused set needs CUDA and a compiler toolchain;
`--compile max` selects it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sana_streaming.models.dit.layers import TapLinear, derived_weight, modulate
from sana_streaming.models.dit.rope import RopeTables, apply_rope
from sana_streaming.numerics import rms_normalise
from sana_streaming.ops.nvfp4 import NVFP4EmulatedLinear
from sana_streaming.ops.quant import FP8Linear, QuantizedProjections, RowQuantizer, quantize_rows

Projection = torch.nn.Linear | TapLinear  # a per-token linear map of a block's input
LN_EPS = 1e-6  # the blocks' LayerNorm (no affine), as the release


def ln_modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """LayerNorm, then adaLN: LN(x)·(1 + scale) + shift. x: (B, N, C); shift, scale: (B, 1, C)."""
    return modulate(F.layer_norm(x, x.shape[-1:], eps=LN_EPS), shift, scale)


def gated_add(x: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """The gated residual x + gate·y; gate (B, 1, C)."""
    return x + gate * y


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm reduced in float32, cast back to the activation dtype."""
    return rms_normalise(x, weight, eps).to(x.dtype)


def norm_rope(x: Tensor, weight: Tensor, eps: float, heads: int, cos: Tensor, sin: Tensor) -> Tensor:
    """RMSNorm over all channels, then RoPE per head: (B, N, C) → (B, N, heads, D) in x's dtype."""
    B, N, C = x.shape
    normed = rms_norm(x, weight, eps).view(B, N, heads, C // heads)
    return apply_rope(normed, RopeTables(cos, sin)).to(x.dtype)


def silu_glu_conv_eager(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """The FFN's SiLU, depthwise conv and GLU as the release runs them: x (R, H, W, 2F), the inverted
    conv's output (overwritten) → (R, H, W, F)."""
    x = F.silu(x, inplace=True)
    h = conv(x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))  # (R, 2F, H, W)
    a, g = h.permute(0, 2, 3, 1).chunk(2, dim=-1)
    return a * F.silu(g)


def taps_outer(weight: Tensor) -> Tensor:
    """The temporal conv weight (C, C, 3, 1) as the (C, 3C) matrix of `temporal_conv`, taps outer."""
    return weight[..., 0].permute(0, 2, 1).flatten(1)


def temporal_conv_taps(p: Tensor, left: Tensor, kernel: Tensor) -> Tensor:
    """p + the FFN's temporal conv (kernel 3, zero right edge) of p (B, T, S, C), whose frame before
    the first is `left` (B, 1, S, C); kernel: `taps_outer` of the weight. One GEMM over the three
    neighbours: c_t = K0 p_{t-1} + K1 p_t + K2 p_{t+1}."""
    return p + F.linear(temporal_neighbours(p, left), kernel)


def temporal_neighbours(p: Tensor, left: Tensor) -> Tensor:
    """[p_{t-1} | p_t | p_{t+1}] per frame of p (B, T, S, C), `left` before the first and zeros after
    the last: (B, T, S, 3C), the temporal conv's GEMM input."""
    padded = torch.cat([left, p, torch.zeros_like(p[:, :1])], dim=1)  # (B, T+2, S, C)
    return torch.cat([padded[:, :-2], padded[:, 1:-1], padded[:, 2:]], dim=-1)  # (B, T, S, 3C)


def temporal_conv(p: Tensor, left: Tensor, weight: Tensor) -> Tensor:
    """`temporal_conv_taps` with the stored weight (C, C, 3, 1), permuted at the call."""
    return temporal_conv_taps(p, left, taps_outer(weight))


def silu_glu_conv_fused(x: Tensor, conv: torch.nn.Conv2d) -> Tensor:
    """`silu_glu_conv_eager` as one Triton kernel (CUDA)."""
    from sana_streaming.ops.glu_conv_triton import glu_conv_triton  # Triton: imported when first used

    return glu_conv_triton(x, conv.weight, conv.bias)


def quantize_rows_fused(x: Tensor) -> tuple[Tensor, Tensor]:
    """`quantize_rows` as one Triton pass (CUDA)."""
    from sana_streaming.ops.quant_triton import quantize_rows_triton  # Triton: imported when first used

    return quantize_rows_triton(x)


def prepared_temporal_conv(
    conv: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """`conv` (a `temporal_conv_taps`) reading the permuted weight from `derived_weight`."""

    def run(p: Tensor, left: Tensor, weight: Tensor) -> Tensor:
        return conv(p, left, derived_weight((weight,), "taps_outer", lambda w: taps_outer(w).contiguous()))

    return run


def apply_linear(x: Tensor, layer: torch.nn.Module, quantize: RowQuantizer = quantize_rows):
    """A block's per-token GEMM: a Linear, a 1×1 Conv2d (weight (out, in, 1, 1)) applied as one, or
    a quantised layer of `models.dit.quantize` (an FP8 one's activation rows made by `quantize`)."""
    if isinstance(layer, torch.nn.Conv2d):
        return F.linear(x, layer.weight.flatten(1), layer.bias)
    if isinstance(layer, QUANTIZED):
        return layer(x, quantize)
    return layer(x)


QUANTIZED = (FP8Linear, NVFP4EmulatedLinear, QuantizedProjections)  # what `models.dit.quantize` installs


NeighbourQuantizer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def quantize_neighbours(p: Tensor, left: Tensor) -> tuple[Tensor, Tensor]:
    """`quantize_rows` of `temporal_neighbours(p, left)`: the FP8 temporal conv's input rows (B·T·S, 3C)."""
    return quantize_rows(temporal_neighbours(p, left).flatten(0, 2))


def quantize_neighbours_fused(p: Tensor, left: Tensor) -> tuple[Tensor, Tensor]:
    """`quantize_neighbours` as one Triton pass over p (CUDA): the (B, T, S, 3C) input is never stored."""
    from sana_streaming.ops.quant_triton import quantize_neighbours_triton  # Triton: imported when first used

    return quantize_neighbours_triton(p, left)


def temporal_conv_quantized(
    p: Tensor, left: Tensor, layer: FP8Linear | NVFP4EmulatedLinear, quantize: NeighbourQuantizer
) -> Tensor:
    """`temporal_conv_taps` with the taps-outer matrix as a quantised layer; an FP8 one's input rows
    made by `quantize`, straight from p."""
    if isinstance(layer, FP8Linear):
        return p + layer.product(*quantize(p, left), p.dtype).view(p.shape)
    return p + layer(temporal_neighbours(p, left))


def separate_projections(x: Tensor, layers: tuple[Projection, ...]) -> tuple[Tensor, ...]:
    """Each layer applied to x on its own, as the release."""
    return tuple(layer(x) for layer in layers)


STACK_ROWS = 64  # the stacked weight's rows are padded to a multiple: 16-byte-aligned output rows,
# which cuBLAS's fastest bf16 kernels need (GDN's 4·2240 + 20 heads would leave rows 8-byte aligned)


def stacked_projections(x: Tensor, layers: tuple[Projection, ...]) -> tuple[Tensor, ...]:
    """The layers' projections of one input as one GEMM over their stacked weights, returned as views
    of its (…, ΣO) output. One wide GEMM runs nearer the chip's rate than several narrow ones (on an
    H200, C→4C ≈ C→2F's ~610 TFLOP/s against C→C's ~410); the sums are the same, only their order may
    differ. The stack is built once per weight version (`derived_weight`)."""
    sources = tuple(
        t for layer in layers for t in (layer.weight, getattr(layer, "bias", None)) if t is not None
    )
    weight = derived_weight(sources, "stacked_weight", lambda *_: stacked_weight(layers))
    bias = derived_weight(sources, "stacked_bias", lambda *_: stacked_bias(layers, weight.shape[0]))
    out = F.linear(x, weight, bias)  # (…, ΣO padded to STACK_ROWS)
    sizes = [projection_matrix(layer).shape[0] for layer in layers]
    starts = itertools.accumulate(sizes, initial=0)
    return tuple(out.narrow(-1, start, size) for start, size in zip(starts, sizes, strict=False))


def projection_matrix(layer: Projection) -> Tensor:
    return layer.matrix if isinstance(layer, TapLinear) else layer.weight


@torch.no_grad()
def stacked_weight(layers: tuple[Projection, ...]) -> Tensor:
    stacked = torch.cat([projection_matrix(layer) for layer in layers])  # (ΣO, in)
    pad = -stacked.shape[0] % STACK_ROWS
    return F.pad(stacked, (0, 0, 0, pad))  # zero rows: unused outputs


@torch.no_grad()
def stacked_bias(layers: tuple[Projection, ...], rows: int) -> Tensor:
    """The layers' biases (zeros for a layer without one) over the padded rows."""
    bias = torch.zeros(rows, dtype=layers[0].weight.dtype, device=layers[0].weight.device)
    start = 0
    for layer in layers:
        size = projection_matrix(layer).shape[0]
        if getattr(layer, "bias", None) is not None:
            bias[start : start + size] = layer.bias
        start += size
    return bias


@dataclass(frozen=True)
class BlockKernels:
    """The elementwise functions a forward's blocks call."""

    ln_modulate: Callable[[Tensor, Tensor, Tensor], Tensor]
    gated_add: Callable[[Tensor, Tensor, Tensor], Tensor]
    rms_norm: Callable[[Tensor, Tensor, float], Tensor]
    norm_rope: Callable[[Tensor, Tensor, float, int, Tensor, Tensor], Tensor]
    silu_glu_conv: Callable[[Tensor, torch.nn.Conv2d], Tensor]
    temporal_conv: Callable[[Tensor, Tensor, Tensor], Tensor]
    projections: Callable[[Tensor, tuple[Projection, ...]], tuple[Tensor, ...]]
    quantize_rows: RowQuantizer  # an FP8 GEMM's activation rows and scales
    quantize_neighbours: NeighbourQuantizer  # the FP8 temporal conv's rows, from p and its left frame


EAGER = BlockKernels(
    ln_modulate, gated_add, rms_norm, norm_rope, silu_glu_conv_eager, temporal_conv, separate_projections,
    quantize_rows, quantize_neighbours,
)  # fmt: skip


@functools.cache
def fused_kernels() -> BlockKernels:
    """The fused set, compiled lazily (at each function's first call per shape, a few seconds)."""

    def compiled(fn):
        return torch.compile(fn, dynamic=False, fullgraph=True)

    return BlockKernels(
        compiled(ln_modulate),
        compiled(gated_add),
        compiled(rms_norm),
        compiled(norm_rope),
        silu_glu_conv_fused,
        prepared_temporal_conv(compiled(temporal_conv_taps)),
        stacked_projections,
        quantize_rows_fused,
        quantize_neighbours_fused,
    )
