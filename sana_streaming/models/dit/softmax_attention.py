"""Gated softmax self-attention, with an optional post-RoPE K/V window."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sana_streaming.models.dit.cache import KVWindow
from sana_streaming.models.dit.kernels import EAGER, BlockKernels, apply_linear
from sana_streaming.models.dit.layers import RMSNorm, TapLinear
from sana_streaming.models.dit.rope import RopeTables
from sana_streaming.numerics import compute_dtype


class SoftmaxAttention(nn.Module):
    """q/k RMSNorm over all channels, RoPE on q and k, full attention, SiLU output gate.

    `qk_taps` is 1 for the bidirectional checkpoint (q/k stored as Linear) and 3 for the streaming
    one (stored as Conv1d kernel 3, only the centre tap applied)."""

    def __init__(self, hidden_size: int, head_dim: int, qk_taps: int) -> None:
        super().__init__()
        self.heads = hidden_size // head_dim
        self.head_dim = head_dim
        if qk_taps == 1:
            self.q = nn.Linear(hidden_size, hidden_size, bias=False)
            self.k = nn.Linear(hidden_size, hidden_size, bias=False)
        else:
            self.q = TapLinear(hidden_size, hidden_size, taps=qk_taps)
            self.k = TapLinear(hidden_size, hidden_size, taps=qk_taps)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.q_norm = RMSNorm(hidden_size, eps=1e-5)
        self.k_norm = RMSNorm(hidden_size, eps=1e-5)
        self.output_gate = nn.Linear(hidden_size, hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.stacked = None  # QuantizedProjections of q, k, v and the output gate when quantised

    def forward(
        self,
        u: Tensor,
        rope: RopeTables,
        window: KVWindow | None = None,
        cached_tokens: int = 0,
        kernels: BlockKernels = EAGER,
    ) -> Tensor:
        """u: (B, N, C). With a window, the current K/V are written at [cached_tokens, cached_tokens+N)
        and the queries attend to the whole prefix [0, cached_tokens+N)."""
        B, N, C = u.shape
        if self.stacked is not None:
            q, k, v, gate = apply_linear(u, self.stacked, kernels.quantize_rows)
        else:
            q, k, v, gate = kernels.projections(u, (self.q, self.k, self.v, self.output_gate))
        q = kernels.norm_rope(q, self.q_norm.weight, self.q_norm.eps, self.heads, rope.cos, rope.sin)
        k = kernels.norm_rope(k, self.k_norm.weight, self.k_norm.eps, self.heads, rope.cos, rope.sin)
        v = v.view(B, N, self.heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, N, D)
        if window is not None:
            end = cached_tokens + N
            window.key[:, :, cached_tokens:end].copy_(k)
            window.value[:, :, cached_tokens:end].copy_(v)
            k, v = window.key[:, :, :end], window.value[:, :, :end]
        o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, D), scale 1/sqrt(D)
        o = o.transpose(1, 2).reshape(B, N, C)
        gate = F.silu(gate.to(compute_dtype(u.dtype))).to(o.dtype)  # SiLU in ≥ fp32
        return apply_linear(o * gate, self.proj, kernels.quantize_rows)
