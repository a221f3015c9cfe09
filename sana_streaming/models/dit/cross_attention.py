"""Text cross-attention (dit.md §4.10): un-normalised, un-modulated and un-gated in the block."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sana_streaming.models.dit.layers import RMSNorm

MASK_BIAS = -10000.0  # additive bias of padded text tokens, as the release (not -inf)


def text_mask_bias(mask: Tensor, batch: int, dtype) -> Tensor:
    """(B or 1, L) mask with 1 = valid → additive bias (B, 1, 1, L) in `dtype`."""
    if mask.shape[0] != batch:
        mask = mask.expand(batch, -1)
    return ((1 - mask.to(dtype)) * MASK_BIAS)[:, None, None, :]


class CrossAttention(nn.Module):
    """Queries from the residual stream, keys/values from the caption, q/k RMSNorm (eps 1e-6)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_linear = nn.Linear(hidden_size, hidden_size)
        self.kv_linear = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.q_norm = RMSNorm(hidden_size, eps=1e-6)
        self.k_norm = RMSNorm(hidden_size, eps=1e-6)

    def forward(self, x: Tensor, y: Tensor, mask_bias: Tensor) -> Tensor:
        """x: (B, N, C); y: (B, L, C) caption; mask_bias: (B, 1, 1, L)."""
        B, N, C = x.shape
        L = y.shape[1]
        q = self.q_norm(self.q_linear(x)).view(B, N, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv_linear(y).chunk(2, dim=-1)
        k = self.k_norm(k).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, L, D)
        v = v.reshape(B, L, self.heads, self.head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias.to(q.dtype))
        return self.proj(o.transpose(1, 2).reshape(B, N, C))
