"""SiLU(x / sqrt(mean(x², channels) + eps)): the LTX-2 VAE's `PerChannelRMSNorm` and the SiLU after it.

Eagerly that is six kernels over a `[B, C, T, H, W]` activation (square, mean, + eps, root, division,
SiLU). On CUDA one Triton kernel (`rms_norm_silu_triton`) reads the input twice and writes once,
rounding each intermediate to the input dtype as the eager ops store them; it differs from them in rare
roundings only (the fp32 sum's order, Triton's approximate exp), within bf16's tolerance (docs/vae.md).
Elsewhere, and where autograd needs a graph, the eager ops run.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm_silu_reference(x: Tensor, eps: float) -> Tensor:
    """diffusers' `PerChannelRMSNorm` (channel dim 1) then SiLU, op by op in x's dtype."""
    mean_sq = torch.mean(x**2, dim=1, keepdim=True)
    return F.silu(x / torch.sqrt(mean_sq + eps))


@functools.cache
def _triton_available() -> bool:
    try:
        import sana_streaming.ops.rms_norm_silu_triton  # noqa: F401
    except ImportError:  # no Triton (CPU-only torch): the eager ops
        return False
    return True


def rms_norm_silu(x: Tensor, eps: float) -> Tensor:
    """`rms_norm_silu_reference(x, eps)` of a `[B, C, T, H, W]` tensor, in one kernel on CUDA."""
    needs_graph = torch.is_grad_enabled() and x.requires_grad  # the kernel has no backward
    if x.is_cuda and x.ndim == 5 and x.dtype in (torch.bfloat16, torch.float16, torch.float32):
        if _triton_available() and not needs_graph:
            from sana_streaming.ops.rms_norm_silu_triton import rms_norm_silu_5d

            return rms_norm_silu_5d(x, eps)
    return rms_norm_silu_reference(x, eps)
