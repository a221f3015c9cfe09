"""The LTX-2 encoder and decoder as chains of streams (`streams.py`), built from diffusers' modules.

The order of stages follows the module structure of `LTX2VideoEncoder3d` / `LTX2VideoDecoder3d`
(patchify, conv_in, down/mid/up blocks, norm_out, activation, conv_out, unpatchify); each stage calls the
loaded submodule. Layer types the LTX-2 VAE does not use raise `ValueError` instead of being guessed at.
"""

from __future__ import annotations

from diffusers.models.autoencoders.autoencoder_kl_ltx2 import (
    LTX2VideoDecoder3d,
    LTX2VideoDownsampler3d,
    LTX2VideoEncoder3d,
    LTX2VideoUpsampler3d,
)
from einops import rearrange
from torch import Tensor

from sana_streaming.models.vae.streams import (
    Chain,
    Downsampler,
    Pointwise,
    ResnetBlock,
    Stream,
    TemporalConv,
    Upsampler,
)


def _check_patching(patch_size_t: int) -> None:
    if patch_size_t != 1:
        raise ValueError(f"only patch_size_t 1 can be streamed (LTX-2 uses 1), got {patch_size_t}")


def encoder_chain(encoder: LTX2VideoEncoder3d, causal: bool, latent_channels: int) -> Chain:
    """Pixels `[B, 3, F, H, W]` -> posterior mode `[B, latent_channels, F', H/32, W/32]`, as a stream."""
    _check_patching(encoder.patch_size_t)
    p = encoder.patch_size

    def patchify(x: Tensor) -> Tensor:
        # (B, C, F, H·p, W·p) -> (B, C·p·p, F, H, W); channels ordered (c, column offset, row offset)
        return rearrange(x, "b c f (h ph) (w pw) -> b (c pw ph) f h w", ph=p, pw=p)

    stages: list[Stream] = [Pointwise(patchify), TemporalConv(encoder.conv_in, causal)]
    for block in encoder.down_blocks:
        stages += [ResnetBlock(resnet, causal) for resnet in block.resnets]
        for downsampler in block.downsamplers or []:
            if not isinstance(downsampler, LTX2VideoDownsampler3d):
                raise ValueError(
                    f"downsampler {type(downsampler).__name__} is not streamable (LTX-2 has none)"
                )
            stages.append(Downsampler(downsampler, causal))
    stages += [ResnetBlock(resnet, causal) for resnet in encoder.mid_block.resnets]
    stages.append(Pointwise(lambda h: encoder.conv_act(encoder.norm_out(h))))
    stages.append(TemporalConv(encoder.conv_out, causal))
    # conv_out gives the means and one shared log-variance channel; the posterior mode is the means.
    stages.append(Pointwise(lambda h: h[:, :latent_channels]))
    return Chain(stages)


def decoder_chain(decoder: LTX2VideoDecoder3d, causal: bool) -> Chain:
    """Latents `[B, C, T, h, w]` -> pixels `[B, 3, 8(T-1)+1, 32h, 32w]` (whole-clip equal), as a stream."""
    _check_patching(decoder.patch_size_t)
    if decoder.timestep_scale_multiplier is not None:
        raise ValueError("timestep-conditioned decoders are not supported (LTX-2's decoder is unconditioned)")
    p = decoder.patch_size

    def unpatchify(x: Tensor) -> Tensor:
        # (B, C·p·p, T, H, W) -> (B, C, T, H·p, W·p), the inverse of the encoder's patchify
        return rearrange(x, "b (c pw ph) t h w -> b c t (h ph) (w pw)", ph=p, pw=p)

    stages: list[Stream] = [TemporalConv(decoder.conv_in, causal)]
    stages += [ResnetBlock(resnet, causal) for resnet in decoder.mid_block.resnets]
    for block in decoder.up_blocks:
        if block.conv_in is not None:
            stages.append(ResnetBlock(block.conv_in, causal))
        for upsampler in block.upsamplers or []:
            if not isinstance(upsampler, LTX2VideoUpsampler3d):
                raise ValueError(f"upsampler {type(upsampler).__name__} is not streamable")
            stages.append(Upsampler(upsampler, causal))
        stages += [ResnetBlock(resnet, causal) for resnet in block.resnets]
    stages.append(Pointwise(lambda h: decoder.conv_act(decoder.norm_out(h))))
    stages.append(TemporalConv(decoder.conv_out, causal))
    stages.append(Pointwise(unpatchify))
    return Chain(stages)
