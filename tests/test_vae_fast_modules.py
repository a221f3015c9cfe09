"""The VAE's swapped-in modules (`models/vae/fast_modules.py`, `ops/rms_norm_silu*.py`) against the
modules they replace: the copy-made reflect pad and the norm-SiLU reference bit for bit on the CPU, the
Triton kernel in Triton's interpreter (fp32, fp16) and on CUDA (fp32, bf16), within the dtype's
tolerance and with under 1 % of elements rounded differently."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLLTX2Video
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import LTX2VideoResnetBlock3d, PerChannelRMSNorm
from helpers_triton import interpreted

from sana_streaming.config import load_config
from sana_streaming.models.random_init import redraw_
from sana_streaming.models.vae import LTX2_RELEASE_ARCHITECTURE, load_vae
from sana_streaming.models.vae.fast_modules import (
    CopyReflectConv3d,
    RMSNormSiLU,
    reflect_pad_hw,
    swap_fast_modules_,
)
from sana_streaming.models.vae.graph import decoder_chain
from sana_streaming.models.vae.streams import cat_frames
from sana_streaming.ops.rms_norm_silu import rms_norm_silu, rms_norm_silu_reference

NARROW_VAE = {  # the released structure with narrow channels
    **LTX2_RELEASE_ARCHITECTURE,
    "latent_channels": 16,
    "block_out_channels": [8, 16, 32, 32],
    "decoder_block_out_channels": [8, 16, 32],
}


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("pads", [(1, 1), (2, 1), (1, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reflect_pad_equals_torch_reflect_padding(pads, dtype) -> None:
    x = _randn(2, 3, 4, 7, 9, seed=1, dtype=dtype)[:, :, 1:]  # a time slice: not contiguous
    pad_h, pad_w = pads
    want = F.pad(x, (pad_w, pad_w, pad_h, pad_h, 0, 0), mode="reflect")
    assert torch.equal(reflect_pad_hw(x, pad_h, pad_w), want)


def test_reflect_pad_refuses_a_frame_too_small_to_mirror() -> None:
    with pytest.raises(ValueError, match="larger frame"):
        reflect_pad_hw(_randn(1, 1, 1, 2, 5, seed=0), 2, 1)


def test_copy_reflect_conv_shares_the_parameters_and_equals_the_conv() -> None:
    conv = torch.nn.Conv3d(6, 5, 3, padding=(0, 1, 1), padding_mode="reflect")
    with torch.no_grad():
        conv.weight.copy_(_randn(*conv.weight.shape, seed=2))
        conv.bias.copy_(_randn(5, seed=3))
    fast = CopyReflectConv3d.sharing(conv)
    assert fast.weight is conv.weight and fast.bias is conv.bias
    assert fast.state_dict().keys() == conv.state_dict().keys()
    x = _randn(1, 6, 5, 8, 10, seed=4)
    with torch.no_grad():
        assert torch.equal(fast(x), conv(x))
    with pytest.raises(ValueError, match="reflect"):
        CopyReflectConv3d.sharing(torch.nn.Conv3d(2, 2, 3, padding=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_silu_reference_equals_diffusers_norm_then_silu(dtype) -> None:
    x = 3 * _randn(2, 12, 3, 5, 6, seed=5, dtype=dtype)
    want = F.silu(PerChannelRMSNorm()(x))
    assert torch.equal(RMSNormSiLU(1e-8)(x), want)
    exact = x.double() / (x.double().pow(2).mean(1, keepdim=True) + 1e-8).sqrt()
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(rms_norm_silu_reference(x, 1e-8).double(), F.silu(exact), rtol=tol, atol=tol)


def _vae(architecture: dict, seed: int) -> AutoencoderKLLTX2Video:
    return redraw_(AutoencoderKLLTX2Video(**architecture), seed=seed).eval()


def test_swapping_keeps_the_state_dict_and_every_output_bit_for_bit() -> None:
    model = _vae(NARROW_VAE, seed=6)
    fast = copy.deepcopy(model)
    reflect = sum(isinstance(m, torch.nn.Conv3d) and m.padding_mode == "reflect" for m in model.modules())
    resnets = sum(isinstance(m, LTX2VideoResnetBlock3d) for m in model.modules())
    # every reflect conv (the decoder's), two norms and the SiLU of every resnet, norm and SiLU at both ends
    assert swap_fast_modules_(fast) == reflect + 3 * resnets + 4 and reflect > 0
    assert all(type(m) is not torch.nn.Conv3d or m.padding_mode != "reflect" for m in fast.modules())
    assert not any(isinstance(m, CopyReflectConv3d) for m in fast.encoder.modules())  # zero padding
    assert not any(type(m) is PerChannelRMSNorm for m in fast.modules())
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(fast.state_dict()[k], v) for k, v in model.state_dict().items())
    video = _randn(1, 3, 9, 64, 64, seed=7)
    latents = _randn(1, 16, 3, 2, 2, seed=8)
    with torch.no_grad():
        assert torch.equal(fast.encoder(video), model.encoder(video))
        for causal in (False, True):  # the release's call, and causality switched on
            assert torch.equal(fast.decoder(latents, None, causal), model.decoder(latents, None, causal))
        chain = decoder_chain(fast.decoder, causal=False)  # the streams call the swapped modules
        streamed = cat_frames(chain.push(latents), chain.flush())
    torch.testing.assert_close(streamed, model.decoder(latents, None), rtol=1e-5, atol=1e-5)


def test_norms_with_timestep_conditioning_between_them_are_not_fused() -> None:
    conditioned = {**NARROW_VAE, "timestep_conditioning": True, "decoder_inject_noise": [True] * 4}
    model = _vae(conditioned, seed=9)
    swap_fast_modules_(model)
    assert all(type(m) is PerChannelRMSNorm for m in (model.decoder.norm_out, *_resnet_norms(model.decoder)))
    assert not any(type(m) is PerChannelRMSNorm for m in model.encoder.modules())  # unconditioned


def _resnet_norms(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m.norm1 for m in module.modules() if isinstance(m, LTX2VideoResnetBlock3d)]


@interpreted
@pytest.mark.parametrize("shape", [(1, 40, 3, 5, 7), (2, 7, 2, 9, 31), (1, 64, 2, 6, 40)])
def test_triton_kernel_interpreted_equals_the_reference(shape) -> None:
    """fp32, and fp16, whose roundings the interpreter makes as the GPU does (its bf16 truncates)."""
    from sana_streaming.ops.rms_norm_silu_triton import rms_norm_silu_5d

    x = 2 * _randn(shape[0], shape[1], shape[2] + 1, *shape[3:], seed=10)[:, :, 1:]  # strided in time
    want = rms_norm_silu_reference(x, 1e-8)
    torch.testing.assert_close(rms_norm_silu_5d(x, 1e-8), want, rtol=1e-6, atol=1e-6)
    half = x.half()
    got, want = rms_norm_silu_5d(half, 1e-8).float(), rms_norm_silu_reference(half, 1e-8).float()
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-3)
    assert (got != want).float().mean().item() < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", [(1, 256, 5, 176, 320), (1, 1024, 4, 22, 40), (2, 130, 3, 17, 33)])
def test_triton_kernel_on_cuda_matches_the_eager_ops_within_bf16_tolerance(shape) -> None:
    x = (3 * _randn(shape[0], shape[1], shape[2] + 1, *shape[3:], seed=11)).cuda()[:, :, 1:]
    got, want = rms_norm_silu(x, 1e-8), rms_norm_silu_reference(x, 1e-8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # fp32: only the sum's order differs
    xb = x.bfloat16()
    got, want = rms_norm_silu(xb, 1e-8).float(), rms_norm_silu_reference(xb, 1e-8).float()
    # bf16: the roundings of the eager ops, so only rare elements differ (a mean rounded the other way,
    # Triton's exp), by up to a few units in the last place where the SiLU's tail is steep
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)
    assert (got != want).float().mean().item() < 1e-2


def test_load_vae_swaps_unless_told_not_to() -> None:
    config = load_config("tiny_random").vae
    swapped = load_vae(config, random_weights=True).model
    plain = load_vae(config, random_weights=True, fast_modules=False).model
    assert not any(type(m) is PerChannelRMSNorm for m in swapped.modules())
    assert any(type(m) is PerChannelRMSNorm for m in plain.modules())
    assert all(torch.equal(swapped.state_dict()[k], v) for k, v in plain.state_dict().items())
