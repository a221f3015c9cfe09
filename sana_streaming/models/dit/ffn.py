"""GLUMBConvTemp: spatial GLU conv per frame, then a full temporal conv with an inner
residual. With a tail buffer it is the streaming form (`CachedGLUMBConvTemp`): the left temporal
neighbour of the chunk's first frame comes from the streaming state (an earlier chunk's last frame,
chosen per block kind, see `cache`); the right edge is zero-padded."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sana_streaming.models.dit.kernels import (
    EAGER,
    QUANTIZED,
    BlockKernels,
    apply_linear,
    temporal_conv_quantized,
)


class ConvLayer(nn.Module):
    """Holder that keeps the release's `<name>.conv.weight` key layout."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv


class GLUMBConvTemp(nn.Module):
    def __init__(self, hidden_size: int, ffn_hidden: int, t_kernel_size: int) -> None:
        super().__init__()
        if t_kernel_size != 3:
            raise ValueError(f"only temporal kernel 3 is supported, got {t_kernel_size}")
        self.ffn_hidden = ffn_hidden
        self.inverted_conv = ConvLayer(nn.Conv2d(hidden_size, 2 * ffn_hidden, 1))
        self.depth_conv = ConvLayer(
            nn.Conv2d(2 * ffn_hidden, 2 * ffn_hidden, 3, padding=1, groups=2 * ffn_hidden)
        )
        self.point_conv = ConvLayer(nn.Conv2d(ffn_hidden, hidden_size, 1, bias=False))
        self.t_conv = nn.Conv2d(hidden_size, hidden_size, (t_kernel_size, 1), padding=(1, 0), bias=False)

    def spatial(
        self, m: Tensor, frames: int, height: int, width: int, kernels: BlockKernels = EAGER
    ) -> Tensor:
        """Steps 1–4: (B, N, C) → p (B, T, S, C)."""
        B, N, C = m.shape
        h = apply_linear(m, self.inverted_conv.conv, kernels.quantize_rows)  # (B, N, 2F): 1×1 conv
        glu = kernels.silu_glu_conv(
            h.view(B * frames, height, width, -1), self.depth_conv.conv
        )  # (B·T, H, W, F)
        p = apply_linear(glu.reshape(B, N, -1), self.point_conv.conv, kernels.quantize_rows)  # (B, N, C)
        return p.view(B, frames, height * width, C)

    def forward(
        self,
        m: Tensor,
        frames: int,
        height: int,
        width: int,
        tail: Tensor | None = None,
        save: bool = False,
        kernels: BlockKernels = EAGER,
    ) -> Tensor:
        """m: modulated input (B, N, C); tail: (B, S, C) the left context (an earlier chunk's last
        pre-conv frame), overwritten with this chunk's last frame when `save`."""
        p = self.spatial(m, frames, height, width, kernels)  # (B, T, S, C)
        left = torch.zeros_like(p[:, :1]) if tail is None else tail[:, None].to(p.dtype)
        if isinstance(self.t_conv, QUANTIZED):
            out = temporal_conv_quantized(p, left, self.t_conv, kernels.quantize_neighbours)  # (B, T, S, C)
        else:
            out = kernels.temporal_conv(p, left, self.t_conv.weight)
        if save and tail is not None:
            tail.copy_(p[:, -1])
        B, T, S, C = out.shape
        return out.view(B, T * S, C)
