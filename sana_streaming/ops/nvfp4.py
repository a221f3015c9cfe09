"""NVFP4 (Blackwell's 4-bit float format) emulated by quantise-dequantise: for error studies only,
slower than bf16, on any device.

An NVFP4 tensor holds e2m1 values (±{0, 0.5, 1, 1.5, 2, 3, 4, 6}) in blocks of 16 along K, each block
with an e4m3 scale, and one fp32 scale for the whole tensor (amax / (448·6), so the largest block
scale fits e4m3). A value is code · block_scale · tensor_scale. The product code · block_scale has
at most 6 significant bits, so it is exact in bf16: the emulation keeps it as the GEMM operand and
applies the two tensor scales to the fp32-accumulated product, which is how a block-scaled FP4 GEMM
computes (up to the rounding of that product to the output dtype). Both weight and activation are
NVFP4 (W4A4). No Blackwell kernel is built: a plan's `nvfp4` groups run this emulation everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sana_streaming.ops.quant import FP8, FP8_MAX

BLOCK = 16  # values per block scale
E2M1_MAX = 6.0
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # an even index is an even mantissa
MIN_TENSOR_SCALE = 1e-30  # an all-zero tensor gets this scale, not a division by zero


def nvfp4_eligible(in_features: int) -> bool:
    return in_features % BLOCK == 0


def round_e2m1(x: Tensor) -> Tensor:
    """Round fp32 values in [-6, 6] to the nearest e2m1 value, ties to the even mantissa."""
    grid = torch.tensor(E2M1_GRID, dtype=x.dtype, device=x.device)
    a = x.abs()
    low = (torch.bucketize(a, grid, right=True) - 1).clamp(0, len(E2M1_GRID) - 2)  # grid[low] <= a
    below, above = grid[low], grid[low + 1]
    up = (above - a < a - below) | ((above - a == a - below) & (low % 2 == 1))
    return torch.where(up, above, below) * x.sign()


def nvfp4_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (…, K) → (code · block_scale in x's dtype (…, K), the fp32 tensor scale (a 0-d tensor)): the
    NVFP4 encoding of x is their product."""
    *lead, K = x.shape
    xf = x.float()
    tensor_scale = (xf.abs().amax() / (FP8_MAX * E2M1_MAX)).clamp_min(MIN_TENSOR_SCALE)
    blocks = (xf / tensor_scale).view(*lead, K // BLOCK, BLOCK)  # (…, K/16, 16)
    block_scale = (blocks.abs().amax(-1, keepdim=True) / E2M1_MAX).clamp(max=FP8_MAX).to(FP8).float()
    codes = round_e2m1((blocks / block_scale.clamp_min(torch.finfo(torch.float32).tiny)).clamp(-6, 6))
    return (codes * block_scale).view(*lead, K).to(x.dtype), tensor_scale


class NVFP4EmulatedLinear(nn.Module):
    """y = x Wᵀ + b with W and x rounded to NVFP4, computed in x's dtype (emulation, not fast).

    `weight` holds code · block_scale of W (exact in bf16), `weight_scale` its tensor scale; the state
    dict saves as safetensors but takes bf16's memory, not FP4's."""

    def __init__(
        self, in_features: int, out_features: int, dtype: torch.dtype, bias: bool, device=None
    ) -> None:
        super().__init__()
        if not nvfp4_eligible(in_features):
            raise ValueError(f"NVFP4 needs in_features a multiple of {BLOCK}, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device), False)
        self.weight_scale = nn.Parameter(torch.empty((), dtype=torch.float32, device=device), False)
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), False) if bias else None
        )

    @classmethod
    @torch.no_grad()
    def from_matrix(cls, matrix: Tensor, bias: Tensor | None = None) -> NVFP4EmulatedLinear:
        layer = cls(matrix.shape[1], matrix.shape[0], matrix.dtype, bias is not None, device=matrix.device)
        parts, scale = nvfp4_parts(matrix)
        layer.weight.copy_(parts)
        layer.weight_scale.copy_(scale)
        if bias is not None:
            layer.bias.copy_(bias)
        return layer

    def forward(self, x: Tensor, quantize: object = None) -> Tensor:
        """x (…, in) → (…, out) in x's dtype; `quantize` (an FP8 row quantiser) is not used."""
        parts, scale = nvfp4_parts(x)
        out = torch.nn.functional.linear(parts, self.weight).float() * (scale * self.weight_scale)
        if self.bias is not None:
            out = out + self.bias.float()
        return out.to(x.dtype)

    def dequantized(self) -> Tensor:
        """The weight the layer applies, as float32 (out, in)."""
        return self.weight.float() * self.weight_scale

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}, nvfp4 emulated"
        )
