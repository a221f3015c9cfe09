"""The shared numerics: arithmetic dtype, the one RMS normalisation and the RoPE pair rotation."""

import math

import pytest
import torch

from sana_streaming.models.dit.layers import RMSNorm
from sana_streaming.numerics import compute_dtype, rms_normalise, rotate_pairs
from sana_streaming.ops.gdn_reference import GDNInputs, gdn_features


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(torch.bfloat16, torch.float32), (torch.float16, torch.float32), (torch.float32, torch.float32),
     (torch.float64, torch.float64)],
)  # fmt: skip
def test_compute_dtype_is_float32_except_for_float64(dtype, expected):
    assert compute_dtype(dtype) == expected


def test_rotate_pairs_interleaved_convention():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=torch.float64)  # (N=1, H=1, D=4)
    theta = torch.tensor([[0.3, 1.1]], dtype=torch.float64)
    out = rotate_pairs(x, theta.cos(), theta.sin())[0, 0]
    c0, s0, c1, s1 = math.cos(0.3), math.sin(0.3), math.cos(1.1), math.sin(1.1)
    expected = torch.tensor([1 * c0 - 2 * s0, 1 * s0 + 2 * c0, 3 * c1 - 4 * s1, 3 * s1 + 4 * c1])
    torch.testing.assert_close(out, expected.double())


def test_rms_normalise_matches_the_formula_and_keeps_float32_for_bf16():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=gen, dtype=torch.float64) * 4
    w = 1 + 0.1 * torch.randn(16, generator=gen, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).sum(-1, keepdim=True) / 16 + 1e-5) * w
    torch.testing.assert_close(rms_normalise(x, w, 1e-5), expected, rtol=1e-12, atol=1e-12)
    out = rms_normalise(x.bfloat16(), w.bfloat16(), 1e-5)
    assert out.dtype == torch.float32  # no cast back: the GDN features stay in float32
    torch.testing.assert_close(out, rms_normalise(x.bfloat16().float(), w.bfloat16().float(), 1e-5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_rmsnorm_layer_is_rms_normalise_cast_back(dtype):
    gen = torch.Generator().manual_seed(1)
    norm = RMSNorm(24, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(24, generator=gen))
    x = (3 * torch.randn(2, 7, 24, generator=gen)).to(dtype)
    out = norm(x)
    assert out.dtype == dtype
    assert torch.equal(out, rms_normalise(x, norm.weight, 1e-6).to(dtype))


def test_gdn_features_normalise_q_and_k_exactly_like_the_layers_rmsnorm():
    """The GDN core's q/k norm (no cast back) and the softmax layers' RMSNorm are one computation:
    bit-equal in float32, before the ReLU and κ."""
    gen = torch.Generator().manual_seed(2)
    B, T, S, H, D = 1, 2, 3, 2, 8
    N, C = T * S, H * D

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    norm_q, norm_k = RMSNorm(C, eps=1e-5), RMSNorm(C, eps=1e-5)
    with torch.no_grad():
        norm_q.weight.copy_(1 + 0.1 * rnd(C))
        norm_k.weight.copy_(1 + 0.1 * rnd(C))
    q, k = rnd(B, N, C), rnd(B, N, C)
    angles = rnd(N, D // 2)
    inputs = GDNInputs(
        q, k, rnd(B, N, C), rnd(B, N, C),
        torch.rand(B, N, H, generator=gen), torch.rand(B, T, H, generator=gen),
        norm_q.weight.detach(), norm_k.weight.detach(), angles.cos(), angles.sin(),
        frames=T, heads=H, key_scale=0.7,
    )  # fmt: skip
    f = gdn_features(inputs)
    assert torch.equal(f.q.reshape(B, N, C), torch.relu(norm_q(q)))
    assert torch.equal(f.k.reshape(B, N, C), torch.relu(norm_k(k)) * 0.7)
