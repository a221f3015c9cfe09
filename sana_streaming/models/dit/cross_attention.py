"""Text cross-attention: un-normalised, un-modulated and un-gated in the block."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from sana_streaming.models.dit.kernels import EAGER, BlockKernels, apply_linear
from sana_streaming.models.dit.layers import RMSNorm

MASK_BIAS = -10000.0  # additive bias of padded text tokens, as the release (not -inf)


def text_mask_bias(mask: Tensor, batch: int, dtype) -> Tensor:
    """(B or 1, L) mask with 1 = valid → additive bias (B, 1, 1, L) in `dtype`."""
    if mask.shape[0] != batch:
        mask = mask.expand(batch, -1)
    return ((1 - mask.to(dtype)) * MASK_BIAS)[:, None, None, :]


@dataclass(frozen=True)
class TextKV:
    """One block's cross-attention keys and values of a caption."""

    keys: Tensor  # (B, heads, L, D), k-normalised
    values: Tensor  # (B, heads, L, D)


@dataclass(frozen=True)
class TextCache:
    """The DiT's text side of one conditioning, computed once by `SanaStreamingDiT.prepare_text` and
    reused by every forward of the stream (or sample)."""

    mask_bias: Tensor  # (B, 1, 1, L) additive bias in the model dtype
    blocks: tuple[TextKV, ...]  # one per DiT block

    @property
    def batch(self) -> int:
        return self.mask_bias.shape[0]

    def copy_from(self, other: TextCache) -> bool:
        """Overwrite this cache with `other`'s values in place (its buffers stay where captured graphs
        read them); False, and nothing copied, if their shapes differ."""
        mine = [self.mask_bias, *(t for kv in self.blocks for t in (kv.keys, kv.values))]
        theirs = [other.mask_bias, *(t for kv in other.blocks for t in (kv.keys, kv.values))]
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs, strict=True)):
            return False
        for a, b in zip(mine, theirs, strict=True):
            a.copy_(b)
        return True

    def nbytes(self) -> int:
        """Bytes held: the storage of the bias and of every block's keys and values (the values are a
        view of the K/V projection's output, which they keep whole)."""
        tensors = [self.mask_bias, *(t for kv in self.blocks for t in (kv.keys, kv.values))]
        return sum(t.untyped_storage().nbytes() for t in tensors)


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

    def text_kv(self, y: Tensor) -> TextKV:
        """Keys and values of the caption y: (B, L, C), the same for every forward of a prompt."""
        B, L, _ = y.shape
        k, v = self.kv_linear(y).chunk(2, dim=-1)
        k = self.k_norm(k).view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, L, D)
        v = v.reshape(B, L, self.heads, self.head_dim).transpose(1, 2)
        return TextKV(k, v)

    def forward(self, x: Tensor, kv: TextKV, mask_bias: Tensor, kernels: BlockKernels = EAGER) -> Tensor:
        """x: (B, N, C); kv: the caption's `text_kv`; mask_bias: (B, 1, 1, L)."""
        B, N, C = x.shape
        q = apply_linear(x, self.q_linear, kernels.quantize_rows)
        q = kernels.rms_norm(q, self.q_norm.weight, self.q_norm.eps)
        q = q.view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, N, D)
        o = F.scaled_dot_product_attention(q, kv.keys, kv.values, attn_mask=mask_bias.to(q.dtype))
        return apply_linear(o.transpose(1, 2).reshape(B, N, C), self.proj, kernels.quantize_rows)
