"""The fused kernel set's functions against the op-by-op ones: the FFN's Triton depthwise-conv GLU
(interpreted on CPU, compiled on CUDA), the temporal conv on a cached permuted weight, and the cache."""

import pytest
import torch
from helpers_triton import interpreted

from sana_streaming.models.dit.kernels import (
    STACK_ROWS,
    prepared_temporal_conv,
    silu_glu_conv_eager,
    stacked_projections,
    temporal_conv,
    temporal_conv_taps,
)
from sana_streaming.models.dit.layers import TapLinear, derived_weight


def depthwise(channels: int, gen: torch.Generator, dtype=torch.float32, device="cpu") -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels).to(device, dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64))
        conv.bias.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
    return conv


def test_temporal_conv_applies_each_tap_to_its_neighbour_and_the_cached_weight_is_kept_current():
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(2, 3, 5, 8, generator=gen, dtype=torch.float64)
    left = torch.randn(2, 1, 5, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(8, 8, 3, 1, generator=gen, dtype=torch.float64)
    want = temporal_conv(p, left, weight)
    K = [weight[:, :, k, 0].T for k in range(3)]
    first = p[:, 0] + left[:, 0] @ K[0] + p[:, 0] @ K[1] + p[:, 1] @ K[2]
    last = p[:, 2] + p[:, 1] @ K[0] + p[:, 2] @ K[1]  # zero right edge
    torch.testing.assert_close(want[:, 0], first, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(want[:, 2], last, rtol=1e-12, atol=1e-12)
    prepared = prepared_temporal_conv(temporal_conv_taps)
    torch.testing.assert_close(prepared(p, left, weight), want, rtol=1e-12, atol=1e-12)
    weight.mul_(-2)  # an in-place change (a checkpoint loaded into the weight) refreshes the cache
    torch.testing.assert_close(
        prepared(p, left, weight), temporal_conv(p, left, weight), rtol=1e-12, atol=1e-12
    )


def test_derived_weight_is_computed_once_per_version():
    calls = []
    weight = torch.randn(4, 4, 3)

    def derive(w):
        calls.append(1)
        return w[:, :, 1].contiguous()

    first = derived_weight((weight,), "tap", derive)
    assert derived_weight((weight,), "tap", derive) is first and len(calls) == 1
    weight.add_(1)
    torch.testing.assert_close(derived_weight((weight,), "tap", derive), weight[:, :, 1])
    assert len(calls) == 2


def test_stacked_projections_equal_the_separate_layers_and_follow_every_weight():
    """q/k/v/gate/β as one GEMM: each view equals its layer's own output (float64), the stack's rows
    are padded to 16-byte-aligned outputs, and a change to any stacked weight or bias is picked up."""
    gen = torch.Generator().manual_seed(4)
    layers = (TapLinear(24, 24, taps=3), torch.nn.Linear(24, 24, bias=False), torch.nn.Linear(24, 24),
              torch.nn.Linear(24, 3))  # fmt: skip
    for layer in layers:
        for param in layer.parameters():
            with torch.no_grad():
                param.copy_(torch.randn(param.shape, generator=gen))
    layers = tuple(layer.double() for layer in layers)
    x = torch.randn(2, 5, 24, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        stacked = stacked_projections(x, layers)
        assert stacked[0].stride(1) % STACK_ROWS == 0  # one (2, 5, 128) output underneath
        for got, layer in zip(stacked, layers, strict=True):
            torch.testing.assert_close(got, layer(x), rtol=1e-12, atol=1e-12)
        layers[3].bias.mul_(-1)  # the last layer's bias, in place
        torch.testing.assert_close(stacked_projections(x, layers)[3], layers[3](x), rtol=1e-12, atol=1e-12)


def test_tap_linear_uses_the_centre_tap_only():
    gen = torch.Generator().manual_seed(3)
    layer = TapLinear(6, 5, taps=3)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, 6, 3, generator=gen))
    x = torch.randn(2, 7, 6, generator=gen)
    torch.testing.assert_close(layer(x), x @ layer.weight[:, :, 1].T)
    with torch.no_grad():
        layer.weight[:, :, 1].zero_()
    assert torch.count_nonzero(layer(x)) == 0  # the cached copy followed the change


@interpreted
@pytest.mark.parametrize("shape", [(2, 3, 5, 12), (1, 11, 11, 260), (1, 1, 3, 4)])  # ragged tiles, one row
@pytest.mark.parametrize(
    "tiles", [(4, 64, 32), (4, 64, 4), (2, 4, 1), (8, 2, 3)]
)  # (columns, channels, rows) per program: a frame column strip, row groups, single rows, ragged
def test_glu_conv_kernel_interpreted_matches_the_eager_ops(shape, tiles):
    pytest.importorskip("triton")
    from sana_streaming.ops.glu_conv_triton import GluConvLaunch, glu_conv_triton

    launch = GluConvLaunch(*tiles)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen)
    conv = depthwise(shape[-1], gen)
    with torch.no_grad():
        got = glu_conv_triton(x, conv.weight, conv.bias, launch)
        want = silu_glu_conv_eager(x.clone(), conv)
    assert got.shape == (*shape[:-1], shape[-1] // 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_glu_conv_kernel_on_cuda_in_bf16_within_rounding_of_float64():
    """At the released width (2F = 13440) on a 22×40 frame: within bf16 rounding of a float64
    reference, and no worse than the eager bf16 ops."""
    from sana_streaming.ops.glu_conv_triton import glu_conv_triton

    gen = torch.Generator().manual_seed(2)
    x64 = torch.randn(3, 22, 40, 13440, generator=gen, dtype=torch.float64)
    conv64 = depthwise(13440, gen, torch.float64)
    conv = depthwise(13440, gen, torch.bfloat16, "cuda")
    conv.load_state_dict(conv64.state_dict())
    conv64 = conv64.cuda()
    with torch.no_grad():
        want = silu_glu_conv_eager(x64.cuda().bfloat16().double(), conv64.to(torch.float64))
        got = glu_conv_triton(x64.cuda().bfloat16(), conv.weight, conv.bias).double()
        eager = silu_glu_conv_eager(x64.cuda().bfloat16(), conv).double()
    err = ((got - want).norm() / want.norm()).item()
    eager_err = ((eager - want).norm() / want.norm()).item()
    assert err <= 1e-2 and err <= eager_err * 1.01, (err, eager_err)
