"""Faster modules for memory-bound steps of the LTX-2 VAE, swapped into diffusers' model (docs/vae.md).

`swap_fast_modules_` replaces every reflect-padded `nn.Conv3d` with `CopyReflectConv3d` (the same pad
made by copies instead of PyTorch's slow `reflection_pad3d` kernel, then the same convolution call: the
same bits) and every `PerChannelRMSNorm` that a SiLU follows with `RMSNormSiLU` (`ops.rms_norm_silu`),
the SiLU with an identity. The new modules hold the same parameters under the same names, so the state
dict and every caller (diffusers' forwards, the streams of `streams.py`) are unchanged.
"""

from __future__ import annotations

import torch
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import (
    AutoencoderKLLTX2Video,
    LTX2VideoResnetBlock3d,
    PerChannelRMSNorm,
)
from torch import Tensor, nn

from sana_streaming.ops.rms_norm_silu import rms_norm_silu


def reflect_pad_hw(x: Tensor, pad_h: int, pad_w: int) -> Tensor:
    """`F.pad(x, (pad_w, pad_w, pad_h, pad_h, 0, 0), mode="reflect")` of `x` `[B, C, T, H, W]`, by copies
    into one new buffer: the interior, then the mirrored edge rows and columns."""
    *lead, height, width = x.shape
    if pad_h >= height or pad_w >= width:
        raise ValueError(f"reflect padding ({pad_h}, {pad_w}) needs a larger frame than {height}x{width}")
    out = x.new_empty(*lead, height + 2 * pad_h, width + 2 * pad_w)
    cols = slice(pad_w, pad_w + width)
    out[..., pad_h : pad_h + height, cols] = x
    for i in range(1, pad_h + 1):  # mirrored rows (the edge row itself is not repeated)
        out[..., pad_h - i, cols] = out[..., pad_h + i, cols]
        out[..., pad_h + height - 1 + i, cols] = out[..., pad_h + height - 1 - i, cols]
    for j in range(1, pad_w + 1):  # mirrored columns of the row-padded frames: the corners too
        out[..., pad_w - j] = out[..., pad_w + j]
        out[..., pad_w + width - 1 + j] = out[..., pad_w + width - 1 - j]
    return out


class CopyReflectConv3d(nn.Conv3d):
    """An `nn.Conv3d` with `padding_mode="reflect"` whose padding is made by `reflect_pad_hw` (no
    temporal padding: the LTX-2 convs pad time themselves)."""

    @classmethod
    def sharing(cls, conv: nn.Conv3d) -> CopyReflectConv3d:
        """A copy of `conv`'s configuration holding the very same weight and bias parameters."""
        if conv.padding_mode != "reflect" or conv.padding[0] != 0:
            raise ValueError("only spatially reflect-padded convolutions (no time padding) are swapped")
        fast = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode="reflect", device="meta",
        )  # fmt: skip
        fast.weight = conv.weight
        fast.bias = conv.bias
        fast.train(conv.training)
        return fast

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        padded = reflect_pad_hw(input, self.padding[1], self.padding[2])
        return nn.functional.conv3d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)


class RMSNormSiLU(nn.Module):
    """`PerChannelRMSNorm` (channel dim 1) followed by SiLU, as one step (`ops.rms_norm_silu`)."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm_silu(x, self.eps)


def _fusable(norm: nn.Module, activation: nn.Module) -> bool:
    """A channel RMS norm (diffusers' own class, channel dim 1) and a SiLU."""
    return type(norm) is PerChannelRMSNorm and norm.channel_dim == 1 and isinstance(activation, nn.SiLU)


@torch.no_grad()
def swap_fast_modules_(model: AutoencoderKLLTX2Video) -> int:
    """Swap the faster modules into `model` in place; returns how many modules were swapped.

    A norm is fused with its SiLU only where nothing runs between them: in residual blocks without
    timestep conditioning (`scale_shift_table`), and at the end of an encoder or of a decoder without a
    time embedder."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv3d) and child.padding_mode == "reflect":
                setattr(parent, name, CopyReflectConv3d.sharing(child))
                swapped += 1
    for block in model.modules():
        if isinstance(block, LTX2VideoResnetBlock3d) and block.scale_shift_table is None:
            if _fusable(block.norm1, block.nonlinearity) and _fusable(block.norm2, block.nonlinearity):
                block.norm1, block.norm2 = RMSNormSiLU(block.norm1.eps), RMSNormSiLU(block.norm2.eps)
                block.nonlinearity = nn.Identity()
                swapped += 3
    for coder in (model.encoder, model.decoder):
        if getattr(coder, "time_embedder", None) is None and _fusable(coder.norm_out, coder.conv_act):
            coder.norm_out, coder.conv_act = RMSNormSiLU(coder.norm_out.eps), nn.Identity()
            swapped += 2
    return swapped
