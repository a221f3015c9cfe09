"""Numerics shared by the DiT layers and the GDN kernels' PyTorch path: the arithmetic dtype, the one
RMS normalisation and the interleaved-pair rotation of RoPE.

They live here, outside both `models` and `ops`, so each can use them without depending on the other's
internals.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic dtype of reductions and gates: float32 for bf16/fp16/fp32 activations, float64
    for float64 (reference runs stay exact)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_normalise(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the full last dimension in `compute_dtype(x.dtype)`, without casting back (the
    GDN features stay in float32; `RMSNorm` casts back to the activation dtype)."""
    x = x.to(compute_dtype(x.dtype))
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.to(x.dtype)


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs (x_2j, x_2j+1) by the angle whose cos/sin are given per pair.

    x: (..., N, H, D); cos, sin: (N, D/2)."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., N, H, D/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]  # (N, 1, D/2)
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)
