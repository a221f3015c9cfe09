"""FP8 (e4m3) W8A8 linears for the DiT's large token-wise GEMMs (MPQ, Hopper and later).

Weights carry one fp32 scale per output channel (amax/448, computed once when a layer is
quantised); activations one fp32 scale per token, computed on the fly, so no calibration is needed
across the four denoising timesteps and the t = 0 cache pass, whose ranges differ
(../shared/spec/kernels.md §4.4). The product is `torch._scaled_mm` with row-wise scales and a bf16
output (cuBLASLt/CUTLASS on sm_89+; PyTorch also runs it on the CPU, which the tests use).
`fp8_linear_reference` dequantises in float64: the exact value the kernel approximates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 value
MIN_SCALE = 1e-12  # a row of zeros gets this scale, not a division by zero
ALIGN = 16  # _scaled_mm needs K and N multiples of 16

RowQuantizer = Callable[[Tensor], tuple[Tensor, Tensor]]


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) → (e4m3 (M, K), fp32 scales (M, 1)) with x ≈ q·scale, each row's amax mapped to 448.
    The scale is amax times fp32(1/448) (what PyTorch's CUDA division by a scalar computes, spelled
    out), values are multiplied by the scale's IEEE fp32 reciprocal (one division per row: a division
    per value made the Triton kernel compute-bound), so the Triton pass gives the same bits."""
    scale = (x.abs().amax(dim=-1, keepdim=True).float() * (1.0 / FP8_MAX)).clamp_min(MIN_SCALE)
    return (x.float() * scale.reciprocal()).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def fp8_eligible(in_features: int, out_features: int) -> bool:
    """Whether `_scaled_mm` takes a (out, in) weight: both sizes multiples of 16."""
    return in_features % ALIGN == 0 and out_features % ALIGN == 0


class FP8Linear(nn.Module):
    """y = x Wᵀ + b with W stored as e4m3 (out, in) plus per-output-channel fp32 scales.

    Built from a bf16/fp32 matrix by `from_matrix`; its state dict (`weight` e4m3, `weight_scale`,
    `bias` in the model's dtype) saves and loads as safetensors. The output has the input's dtype
    (bf16 on CUDA, where the row-wise kernel needs it; fp32 in CPU tests)."""

    def __init__(
        self, in_features: int, out_features: int, bias_dtype: torch.dtype | None, device=None
    ) -> None:
        super().__init__()
        if not fp8_eligible(in_features, out_features):
            raise ValueError(f"FP8 linears need multiples of {ALIGN}, got {in_features}→{out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8, device=device), False)
        self.weight_scale = nn.Parameter(torch.empty(out_features, dtype=torch.float32, device=device), False)
        self.bias = None  # bias_dtype None: no bias
        if bias_dtype is not None:
            self.bias = nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), False)

    @classmethod
    @torch.no_grad()
    def from_matrix(cls, matrix: Tensor, bias: Tensor | None = None) -> FP8Linear:
        """Quantise a (out, in) matrix per output channel; the bias is kept in its dtype."""
        bias_dtype = None if bias is None else bias.dtype
        layer = cls(matrix.shape[1], matrix.shape[0], bias_dtype, device=matrix.device)
        data, scale = quantize_rows(matrix)
        layer.weight.copy_(data)
        layer.weight_scale.copy_(scale[:, 0])
        if bias is not None:
            layer.bias.copy_(bias)
        return layer

    def forward(self, x: Tensor, quantize: RowQuantizer = quantize_rows) -> Tensor:
        """x (…, in) → (…, out) in x's dtype; `quantize` makes the activation's e4m3 rows and scales (a fused
        kernel under `--compile max`)."""
        rows = x.reshape(-1, self.in_features)  # (M, K)
        return self.product(*quantize(rows), x.dtype).view(*x.shape[:-1], self.out_features)

    def product(self, data: Tensor, scale: Tensor, out_dtype: torch.dtype) -> Tensor:
        """The layer applied to quantised rows: e4m3 `data` (M, in) with fp32 `scale` (M, 1) → (M, out)."""
        return torch._scaled_mm(
            data, self.weight.t(), scale_a=scale, scale_b=self.weight_scale[None],
            bias=self.bias, out_dtype=out_dtype,
        )  # fmt: skip

    def dequantized(self) -> Tensor:
        """The weight the layer applies, as float32 (out, in)."""
        return self.weight.float() * self.weight_scale[:, None]

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}, e4m3"


def fp8_linear_reference(x: Tensor, layer: FP8Linear) -> Tensor:
    """What `layer(x)` computes, in float64: the activation quantised the same way, both operands
    dequantised, the product and bias exact."""
    rows = x.reshape(-1, layer.in_features)
    data, scale = quantize_rows(rows)
    a = data.double() * scale.double()
    out = a @ layer.dequantized().double().t()
    if layer.bias is not None:
        out = out + layer.bias.double()
    return out.view(*x.shape[:-1], layer.out_features)


class QuantizedProjections(nn.Module):
    """Several projections of one input as one quantised GEMM over their stacked weights (an
    `FP8Linear`, or an `ops.nvfp4.NVFP4EmulatedLinear`); returns views of its output, one per
    projection (widths `sizes`)."""

    def __init__(self, linear: nn.Module, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = linear
        self.sizes = sizes

    def forward(self, x: Tensor, quantize: RowQuantizer = quantize_rows) -> tuple[Tensor, ...]:
        out = self.linear(x, quantize)  # (…, Σsizes padded to STACK_ROWS)
        return tuple(out.split([*self.sizes, out.shape[-1] - sum(self.sizes)], dim=-1)[:-1])
