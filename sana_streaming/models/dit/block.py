"""One DiT block: LN → modulate → self-attention → gate; cross-attention added ungated; LN → modulate
→ FFN → gate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sana_streaming.config import DiTConfig
from sana_streaming.models.dit.cache import BlockState
from sana_streaming.models.dit.cross_attention import CrossAttention, TextKV
from sana_streaming.models.dit.ffn import GLUMBConvTemp
from sana_streaming.models.dit.gdn import GDNAttention
from sana_streaming.models.dit.kernels import EAGER, BlockKernels
from sana_streaming.models.dit.rope import RopeTables
from sana_streaming.models.dit.softmax_attention import SoftmaxAttention
from sana_streaming.ops import Backend


@dataclass
class BlockContext:
    """Per-forward inputs shared by every block."""

    frames: int
    height: int
    width: int
    rope: RopeTables
    mask_bias: Tensor  # (B, 1, 1, L) of the caption
    cached_tokens: int = 0  # softmax window: retained tokens before the current chunk
    save: bool = False  # write this chunk's state (GDN state, FFN tail)
    kernels: BlockKernels = EAGER  # the elementwise work: op by op, or fused


class SanaBlock(nn.Module):
    def __init__(self, config: DiTConfig, softmax: bool, gdn_backend: Backend = "auto") -> None:
        super().__init__()
        C = config.hidden_size
        self.softmax = softmax
        # 1. Self-attention: GDN or gated softmax.
        if softmax:
            taps = 3 if config.variant == "streaming" else 1
            self.attn: nn.Module = SoftmaxAttention(C, config.linear_head_dim, qk_taps=taps)
        else:
            self.attn = GDNAttention(C, config.linear_head_dim, backend=gdn_backend)
        # 2. Cross-attention.
        self.cross_attn = CrossAttention(C, config.num_heads)
        # 3. Feed-forward.
        self.mlp = GLUMBConvTemp(C, config.ffn_hidden, config.t_kernel_size)
        self.scale_shift_table = nn.Parameter(torch.zeros(6, C))

    def forward(
        self, x: Tensor, t0: Tensor, ctx: BlockContext, state: BlockState | None, text: TextKV
    ) -> Tensor:
        """x: (B, N, C) residual stream; t0: (B, 6·C) timestep modulation; text: this block's K/V of
        the caption."""
        B, k = x.shape[0], ctx.kernels
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = (self.scale_shift_table[None] + t0.view(B, 6, -1)).chunk(6, dim=1)
        a = k.ln_modulate(x, sh_a, sc_a)
        if self.softmax:
            window = state.window if state is not None else None
            attn = self.attn(a, ctx.rope, window=window, cached_tokens=ctx.cached_tokens, kernels=k)
        else:
            gdn_state = state.gdn if state is not None else None
            attn = self.attn(a, ctx.frames, ctx.rope, state=gdn_state, save=ctx.save, kernels=k)
        x = k.gated_add(x, g_a, attn)
        x = x + self.cross_attn(x, text, ctx.mask_bias, kernels=k)
        m = k.ln_modulate(x, sh_m, sc_m)
        tail = state.ffn_tail if state is not None else None
        y = self.mlp(m, ctx.frames, ctx.height, ctx.width, tail=tail, save=ctx.save, kernels=k)
        return k.gated_add(x, g_m, y)
