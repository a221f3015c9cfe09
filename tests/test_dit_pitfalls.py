"""One small test per known pitfall of reimplementing the release, with expected values computed by
hand here."""

import math

import pytest
import torch

from sana_streaming import load_config
from sana_streaming.models.dit import build_dit, randomize_dit_
from sana_streaming.models.dit.cross_attention import text_mask_bias
from sana_streaming.models.dit.ffn import GLUMBConvTemp
from sana_streaming.models.dit.layers import TimestepEmbedder
from sana_streaming.models.dit.rope import rope_axis_dims, rope_tables
from sana_streaming.models.dit.softmax_attention import SoftmaxAttention
from sana_streaming.ops.gdn_reference import GDNInputs, gdn_features

torch.manual_seed(0)


def test_timestep_truncated_toward_zero():
    emb = TimestepEmbedder(8)
    a = emb.sinusoid(torch.tensor([999.7]))
    assert torch.equal(a, emb.sinusoid(torch.tensor([999.0])))
    assert not torch.equal(a, emb.sinusoid(torch.tensor([1000.0])))


def test_timestep_sinusoid_is_cos_then_sin():
    e = TimestepEmbedder(8).sinusoid(torch.tensor([3.0]))[0].double()
    i = 5
    freq = math.exp(-math.log(10000) * i / 128)
    assert e[i].item() == pytest.approx(math.cos(3 * freq), abs=1e-6)
    assert e[128 + i].item() == pytest.approx(math.sin(3 * freq), abs=1e-6)


def test_rope_split_and_interleaved_pairs():
    assert rope_axis_dims(112) == (40, 36, 36)
    assert rope_axis_dims(64) == (24, 20, 20)
    tables = rope_tables(frame_start=7, frames=2, height=3, width=4, head_dim=112, dtype=torch.float64)
    token = (1 * 3 + 2) * 4 + 3  # frame 1 (absolute 8), row 2, column 3
    angles = torch.atan2(tables.sin[token], tables.cos[token])
    # pair -> (position on its axis, index within the axis, axis dims)
    expected_pairs = {0: (8, 0, 40), 19: (8, 19, 40), 20: (2, 0, 36), 37: (2, 17, 36), 38: (3, 0, 36)}
    for pair, (position, index, dims) in expected_pairs.items():
        expected = position * 10000 ** (-2 * index / dims)
        assert math.remainder(angles[pair].item() - expected, 2 * math.pi) == pytest.approx(0, abs=1e-9)


def test_rope_positions_beyond_the_release_table():
    """Frame 5000 (the release's table stops at 1023) gets its own angle, not a capped one."""
    t = rope_tables(frame_start=5000, frames=1, height=1, width=1, head_dim=112, dtype=torch.float64)
    assert t.cos[0, 1].item() == pytest.approx(math.cos(5000 * 10000 ** (-2 / 40)), abs=1e-9)


def test_key_scale_after_relu_on_keys_only_and_unrotated_normaliser():
    B, T, S, H, D = 1, 2, 3, 1, 4
    N, C = T * S, H * D
    q = torch.randn(B, N, C, dtype=torch.float64)
    k = torch.randn(B, N, C, dtype=torch.float64)
    ones = torch.ones(C, dtype=torch.float64)
    angle = torch.full((N, D // 2), 0.7, dtype=torch.float64)
    inputs = GDNInputs(q, k, k, k, torch.rand(B, N, H), torch.rand(B, T, H), ones, ones, angle.cos(),
                       angle.sin(), frames=T, heads=H, key_scale=0.25)  # fmt: skip
    f = gdn_features(inputs)

    def rms(x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5)

    torch.testing.assert_close(f.q.double().reshape(B, N, C), torch.relu(rms(q)))  # q not scaled
    torch.testing.assert_close(f.k.double().reshape(B, N, C), 0.25 * torch.relu(rms(k)))
    assert not torch.allclose(f.k_rot, f.k)  # numerator keys rotated, normaliser keys not


def test_gdn_layer_uses_kappa_of_this_calls_frame_size(monkeypatch):
    import sana_streaming.models.dit.gdn as gdn_module

    seen = {}

    def spy(inputs, **kwargs):
        seen["key_scale"] = inputs.key_scale
        return inputs.v

    monkeypatch.setattr(gdn_module, "gdn_core", spy)
    layer = gdn_module.GDNAttention(224, 112)
    layer(torch.randn(1, 2 * 15, 224), frames=2, rope=rope_tables(0, 2, 3, 5, 112))
    assert seen["key_scale"] == pytest.approx((112 * 15) ** -0.5)


def test_streaming_softmax_uses_only_the_centre_tap():
    layer = SoftmaxAttention(224, 112, qk_taps=3)
    randomize_dit_(layer, seed=1)
    u = torch.randn(1, 12, 224)
    rope = rope_tables(0, 2, 2, 3, 112)
    before = layer(u, rope)
    with torch.no_grad():
        layer.q.weight[:, :, 0].normal_()
        layer.k.weight[:, :, 2].normal_()
    torch.testing.assert_close(layer(u, rope), before)
    with torch.no_grad():
        layer.q.weight[:, :, 1].normal_()
    assert not torch.allclose(layer(u, rope), before)


def test_cross_attention_sees_the_unnormalised_residual_stream():
    model = build_dit(load_config("tiny_random"), dtype=torch.float64)
    randomize_dit_(model, seed=2)
    block = model.blocks[0]
    seen = {}
    block.attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn", out))
    block.cross_attn.register_forward_hook(lambda m, a, out: seen.__setitem__("cross_in", a[0]))
    block.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    block.register_forward_pre_hook(lambda m, a: seen.__setitem__("t0", a[1]))
    x = torch.randn(1, 16, 2, 2, 3, dtype=torch.float64)
    model(x, torch.tensor([300.0]), torch.randn(1, 1, 16, 64, dtype=torch.float64), torch.ones(1, 16), x)
    gate = (block.scale_shift_table[None] + seen["t0"].view(1, 6, -1))[:, 2:3]  # row 2 = gate_msa
    torch.testing.assert_close(seen["cross_in"], seen["x"] + gate * seen["attn"])


def test_text_mask_is_an_additive_minus_10000_bias():
    bias = text_mask_bias(torch.tensor([[1, 1, 0]]), batch=2, dtype=torch.float32)
    assert bias.shape == (2, 1, 1, 3)
    assert bias[1, 0, 0].tolist() == [0.0, 0.0, -10000.0]
    assert text_mask_bias(torch.tensor([[0]]), 1, torch.bfloat16).item() == -9984.0  # as in bf16


def test_temporal_conv_streaming_right_edge_is_zero_padded():
    """Two 3-frame chunks with the tail carried equal one 6-frame call on every frame except the
    first chunk's last frame, which sees no look-ahead."""
    ffn = GLUMBConvTemp(16, 24, 3).double()
    randomize_dit_(ffn, seed=4)
    H, W = 2, 3
    m = torch.randn(1, 6 * H * W, 16, dtype=torch.float64)
    whole = ffn(m, 6, H, W).view(1, 6, H * W, 16)
    tail = torch.zeros(1, H * W, 16, dtype=torch.float64)
    first = ffn(m[:, : 3 * H * W], 3, H, W, tail=tail, save=True).view(1, 3, H * W, 16)
    second = ffn(m[:, 3 * H * W :], 3, H, W, tail=tail, save=True).view(1, 3, H * W, 16)
    torch.testing.assert_close(first[:, :2], whole[:, :2])
    torch.testing.assert_close(second, whole[:, 3:])
    assert not torch.allclose(first[:, 2], whole[:, 2])
    # The tail is the last frame of the pre-conv activation p, not of the output.
    torch.testing.assert_close(tail, ffn.spatial(m, 6, H, W)[:, 5])


def test_qk_rmsnorm_spans_all_channels_not_each_head():
    """RMS over all 224 channels of the tiny model (2 heads): scaling one head's channels changes the
    other head's normalised values."""
    layer = SoftmaxAttention(224, 112, qk_taps=1).double()
    x = torch.randn(1, 5, 224, dtype=torch.float64)
    y = x.clone()
    y[..., :112] *= 3
    a, b = layer.q_norm(x), layer.q_norm(y)
    assert not torch.allclose(a[..., 112:], b[..., 112:])
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-5).rsqrt()
    torch.testing.assert_close(a, x * rms * layer.q_norm.weight)


def test_gdn_decay_rounded_to_the_activation_dtype():
    """g = exp(−exp(A_log)·softplus(W ū + b + dt_bias)) per frame from the spatial mean, computed in
    fp32 and rounded to bf16 for bf16 activations."""
    import torch.nn.functional as F

    from sana_streaming.models.dit.gdn import GDNAttention

    layer = randomize_dit_(GDNAttention(224, 112), seed=7).bfloat16()
    u = torch.randn(1, 2 * 6, 224).bfloat16()
    decay = layer.decay(u, frames=2)
    assert decay.dtype == torch.bfloat16 and decay.shape == (1, 2, 2)
    mean = u.view(1, 2, 6, 224).mean(dim=2)
    a = layer.gate_proj(mean).float()
    expected = torch.exp(-layer.A_log.float().exp() * F.softplus(a + layer.dt_bias.float()))
    assert torch.equal(decay, expected.bfloat16())
    assert ((0 < decay) & (decay < 1)).all()
