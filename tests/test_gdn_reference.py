"""The GDN oracle (token-level loops) against the fast form and against hand-written formulas."""

import math

import pytest
import torch

from sana_streaming.ops import GDNInputs, gdn_core
from sana_streaming.ops.gdn_reference import (
    GDNFeatures,
    GDNState,
    gdn_features,
    gdn_scan,
    gdn_scan_oracle,
)


def random_features(B=2, T=4, S=5, H=3, D=8, seed=0, dtype=torch.float64) -> GDNFeatures:
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    kappa = 1 / math.sqrt(D * S)
    phi_q = torch.relu(rnd(B, T, S, H, D) + 0.3)
    phi_k = torch.relu(rnd(B, T, S, H, D) + 0.3) * kappa
    angles = torch.rand(T, S, 1, D // 2, generator=gen, dtype=dtype) * 2 * math.pi

    def rot(x):
        pairs = x.unflatten(-1, (-1, 2))
        c, s = angles.cos(), angles.sin()
        return torch.stack((pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 0] * s + pairs[..., 1] * c), -1)

    return GDNFeatures(
        q_rot=rot(phi_q).flatten(-2),
        q=phi_q,
        k_rot=rot(phi_k).flatten(-2),
        k=phi_k,
        v=rnd(B, T, S, H, D),
        beta=torch.sigmoid(rnd(B, T, S, H)),
        decay=0.5 + 0.49 * torch.rand(B, T, H, generator=gen, dtype=dtype),
    )


def random_state(B=2, H=3, D=8, seed=1) -> GDNState:
    gen = torch.Generator().manual_seed(seed)
    return GDNState(
        kv=0.05 * torch.randn(B, H, D, D, generator=gen, dtype=torch.float64),
        z=0.05 * torch.randn(B, H, D, generator=gen, dtype=torch.float64),
    )


@pytest.mark.parametrize("T", [1, 3, 4])
@pytest.mark.parametrize("with_state", [False, True])
def test_fast_scan_equals_token_level_oracle(T, with_state):
    f = random_features(T=T)
    state = random_state() if with_state else None
    ref = gdn_scan_oracle(f, state)
    fast = gdn_scan(f, state)
    for name, a, b in [
        ("num", fast.num, ref.num),
        ("den", fast.den, ref.den),
        ("kv", fast.final_state.kv, ref.final_state.kv),
        ("z", fast.final_state.z, ref.final_state.z),
    ]:
        err = (a - b).norm() / b.norm()
        assert err <= 1e-10, (name, err.item())
    assert ref.num.abs().max() > 1e-3 and ref.den.abs().max() > 1e-3


def test_oracle_matches_closed_form_two_frames():
    """Two frames, one head, written out by hand: forward and backward contributions."""
    f = random_features(B=1, T=2, S=3, H=1, D=4, seed=5)
    ref = gdn_scan_oracle(f)
    g = f.decay[0, :, 0]
    kr, k, v, beta = f.k_rot[0, :, :, 0], f.k[0, :, :, 0], f.v[0, :, :, 0], f.beta[0, :, :, 0]
    eye = torch.eye(4, dtype=torch.float64)
    P = [kr[t].T @ torch.diag(beta[t]) @ kr[t] for t in range(2)]
    A = [kr[t].T @ torch.diag(beta[t]) @ v[t] for t in range(2)]
    Pz = [k[t].T @ torch.diag(beta[t]) @ k[t] for t in range(2)]
    bz = [k[t].T @ beta[t] for t in range(2)]
    M0 = A[0]
    M1 = g[1] * (eye - P[1]) @ M0 + A[1]
    z0 = bz[0]
    z1 = g[1] * (eye - Pz[1]) @ z0 + bz[1]
    # frame 0 reads its forward state plus the backward state that absorbed frame 1 (from zero)
    num0 = f.q_rot[0, 0, :, 0] @ (M0 + A[1])
    den0 = f.q[0, 0, :, 0] @ (z0 + bz[1])
    num1 = f.q_rot[0, 1, :, 0] @ M1  # last frame: no backward contribution
    torch.testing.assert_close(ref.num[0, 0, :, 0], num0)
    torch.testing.assert_close(ref.den[0, 0, :, 0], den0)
    torch.testing.assert_close(ref.num[0, 1, :, 0], num1)
    torch.testing.assert_close(ref.final_state.kv[0, 0], M1)
    torch.testing.assert_close(ref.final_state.z[0, 0], z1)


def test_two_chunks_with_carried_state_equal_one_forward_scan():
    """The forward state after chunk 2 (seeded by chunk 1's state) is the state of one 6-frame scan."""
    f = random_features(T=6, seed=3)

    def part(lo, hi):
        return GDNFeatures(**{n: getattr(f, n)[:, lo:hi] for n in f.__dataclass_fields__})

    whole = gdn_scan(f)
    first = gdn_scan(part(0, 3))
    second = gdn_scan(part(3, 6), first.final_state)
    torch.testing.assert_close(second.final_state.kv, whole.final_state.kv)
    torch.testing.assert_close(second.final_state.z, whole.final_state.z)


def test_core_torch_features_and_gate():
    """gdn_core (torch backend) = features by hand + oracle + division + SiLU gate."""
    gen = torch.Generator().manual_seed(7)
    B, T, S, H, D = 1, 3, 4, 2, 8
    N, C = T * S, H * D
    q, k, v, gate = (torch.randn(B, N, C, generator=gen, dtype=torch.float64) + 0.3 for _ in range(4))
    beta = torch.sigmoid(torch.randn(B, N, H, generator=gen, dtype=torch.float64))
    decay = 0.5 + 0.4 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    wq, wk = (1 + 0.2 * torch.randn(C, generator=gen, dtype=torch.float64) for _ in range(2))
    angles = torch.rand(N, D // 2, generator=gen, dtype=torch.float64) * 6.28
    kappa = (D * S) ** -0.5
    state = random_state(B=1, H=2, D=8)
    state_in = GDNState(kv=state.kv.clone(), z=state.z.clone())
    inputs = GDNInputs(
        q, k, v, gate, beta, decay, wq, wk, angles.cos(), angles.sin(), frames=T, heads=H, key_scale=kappa
    )
    y = gdn_core(inputs, state=state, update_state=True, backend="torch")

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w

    feats = gdn_features(inputs)
    torch.testing.assert_close(
        feats.q.double().reshape(B, N, C), torch.relu(rms(q, wq)), rtol=1e-6, atol=1e-7
    )
    torch.testing.assert_close(
        feats.k.double().reshape(B, N, C), torch.relu(rms(k, wk)) * kappa, rtol=1e-6, atol=1e-8
    )
    f64 = GDNFeatures(**{n: getattr(feats, n).double() for n in feats.__dataclass_fields__})
    ref = gdn_scan_oracle(f64, state_in)
    o = ref.num / (ref.den[..., None] + 1e-8)
    expected = o.reshape(B, N, C) * torch.nn.functional.silu(gate)
    assert ((y.double() - expected).norm() / expected.norm()) < 1e-5
    assert ((state.kv - ref.final_state.kv).norm() / ref.final_state.kv.norm()) < 1e-5
    assert not torch.equal(state.kv, state_in.kv)
