"""Frame-wise gated delta rule (GDN) in plain PyTorch: the oracle and the fast form.

Notation follows `shared/spec/kernels.md` §1.3. Per batch element and head, frame t holds S tokens with
rotated keys k̃, un-rotated keys k, values v, write strengths β and one decay g_t. States are key-major:
M ∈ R^{D_k×D_v}, z ∈ R^{D_k}.

    forward:   M_t = g_t (I − P_t) M_{t−1} + A_t,   P_t = Σ_s β_s k̃_s k̃_sᵀ,  A_t = Σ_s β_s k̃_s v_sᵀ
               z_t = g_t (I − Π_t) z_{t−1} + b_t,   Π_t = Σ_s β_s k_s k_sᵀ,    b_t = Σ_s β_s k_s
    backward:  R_{T−1} = 0,  R_t = g_{t+1} (I − P_{t+1}) R_{t+1} + A_{t+1}   (ζ likewise, zero-seeded)
    readout:   num = q̃ᵀ (M_t + R_t),  den = qᵀ (z_t + ζ_t)

Two implementations of the same scan:
- `gdn_scan_oracle`: the token-level statement (every token of a frame reads the decayed pre-frame
  snapshot and adds its own correction), written as loops; the test oracle, run in float64.
- `gdn_scan`: per-frame reductions with batched einsums, then the T-step scans; the CPU/fallback path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class GDNState:
    """Recurrent state of one GDN layer, key-major, float32 (the forward scan's final state)."""

    kv: Tensor  # (B, H, D_k, D_v)
    z: Tensor  # (B, H, D_k)

    @classmethod
    def zeros(
        cls, batch: int, heads: int, head_dim: int, device=None, dtype: torch.dtype = torch.float32
    ) -> GDNState:
        kv = torch.zeros(batch, heads, head_dim, head_dim, device=device, dtype=dtype)
        z = torch.zeros(batch, heads, head_dim, device=device, dtype=dtype)
        return cls(kv=kv, z=z)

    def nbytes(self) -> int:
        return self.kv.nbytes + self.z.nbytes


@dataclass
class GDNFeatures:
    """Inputs of the scan, one tensor per role, laid out (B, T, S, H, ...)."""

    q_rot: Tensor  # (B, T, S, H, D) rotated query features (numerator)
    q: Tensor  # (B, T, S, H, D) un-rotated query features (normaliser)
    k_rot: Tensor  # (B, T, S, H, D) rotated, κ-scaled key features
    k: Tensor  # (B, T, S, H, D) un-rotated, κ-scaled key features
    v: Tensor  # (B, T, S, H, D)
    beta: Tensor  # (B, T, S, H)
    decay: Tensor  # (B, T, H)


@dataclass
class GDNScanOutput:
    num: Tensor  # (B, T, S, H, D): forward + backward numerator
    den: Tensor  # (B, T, S, H): forward + backward normaliser
    final_state: GDNState  # forward scan's state after the last frame


def gdn_scan_oracle(features: GDNFeatures, initial_state: GDNState | None = None) -> GDNScanOutput:
    """Token-level statement of the bidirectional block delta rule (slow; for tests)."""
    f = features
    B, T, S, H, D = f.v.shape
    dtype = f.v.dtype
    num = torch.zeros(B, T, S, H, D, dtype=dtype)
    den = torch.zeros(B, T, S, H, dtype=dtype)
    final_kv = torch.zeros(B, H, D, D, dtype=dtype)
    final_z = torch.zeros(B, H, D, dtype=dtype)

    def absorb(state_kv: Tensor, state_z: Tensor, b: int, h: int, t: int) -> tuple[Tensor, Tensor]:
        snapshot_kv = f.decay[b, t, h] * state_kv  # every token reads the decayed pre-frame state
        snapshot_z = f.decay[b, t, h] * state_z
        new_kv, new_z = snapshot_kv.clone(), snapshot_z.clone()
        for s in range(S):
            kr, k, beta = f.k_rot[b, t, s, h], f.k[b, t, s, h], f.beta[b, t, s, h]
            prediction = snapshot_kv.T @ kr  # (D_v,)
            new_kv += beta * torch.outer(kr, f.v[b, t, s, h] - prediction)
            new_z += beta * k * (1 - k @ snapshot_z)
        return new_kv, new_z

    for b in range(B):
        for h in range(H):
            if initial_state is None:
                kv, z = torch.zeros(D, D, dtype=dtype), torch.zeros(D, dtype=dtype)
            else:
                kv, z = initial_state.kv[b, h].to(dtype), initial_state.z[b, h].to(dtype)
            for t in range(T):  # forward: absorb frame t, then read frame t
                kv, z = absorb(kv, z, b, h, t)
                num[b, t, :, h] += f.q_rot[b, t, :, h] @ kv
                den[b, t, :, h] += f.q[b, t, :, h] @ z
            final_kv[b, h], final_z[b, h] = kv, z
            kv, z = torch.zeros(D, D, dtype=dtype), torch.zeros(D, dtype=dtype)
            for t in range(T - 2, -1, -1):  # backward: absorb frame t+1, then read frame t
                kv, z = absorb(kv, z, b, h, t + 1)
                num[b, t, :, h] += f.q_rot[b, t, :, h] @ kv
                den[b, t, :, h] += f.q[b, t, :, h] @ z
    return GDNScanOutput(num=num, den=den, final_state=GDNState(kv=final_kv, z=final_z))


def gdn_scan(features: GDNFeatures, initial_state: GDNState | None = None) -> GDNScanOutput:
    """Fast form: per-frame reductions as batched einsums, then two T-step scans.

    Computes in the dtype of `features` (the model path passes float32)."""
    f = features
    B, T, _, H, D = f.v.shape
    kr_beta = f.k_rot * f.beta[..., None]  # (B, T, S, H, D)
    k_beta = f.k * f.beta[..., None]
    p = torch.einsum("btshd,btshe->bthde", kr_beta, f.k_rot)  # P_t (B, T, H, D, D)
    a = torch.einsum("btshd,btshe->bthde", kr_beta, f.v)  # A_t
    pz = torch.einsum("btshd,btshe->bthde", k_beta, f.k)  # Π_t
    bz = k_beta.sum(dim=2)  # b_t (B, T, H, D)
    g = f.decay.to(f.v.dtype)[..., None, None]  # (B, T, H, 1, 1)

    def step(t: int, kv: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        kv = g[:, t] * (kv - p[:, t] @ kv) + a[:, t]  # identity applied exactly, not via (I - P)
        z = g[:, t, ..., 0] * (z - (pz[:, t] @ z[..., None])[..., 0]) + bz[:, t]
        return kv, z

    if initial_state is None:
        kv = f.v.new_zeros(B, H, D, D)
        z = f.v.new_zeros(B, H, D)
    else:
        kv, z = initial_state.kv.to(f.v.dtype), initial_state.z.to(f.v.dtype)
    kv_hist, z_hist = [], []
    for t in range(T):
        kv, z = step(t, kv, z)
        kv_hist.append(kv)
        z_hist.append(z)
    final_state = GDNState(kv=kv, z=z)
    back_kv, back_z = torch.zeros_like(kv), torch.zeros_like(z)
    for t in range(T - 2, -1, -1):
        back_kv, back_z = step(t + 1, back_kv, back_z)
        kv_hist[t] = kv_hist[t] + back_kv
        z_hist[t] = z_hist[t] + back_z
    kv_all = torch.stack(kv_hist, dim=1)  # (B, T, H, D, D)
    z_all = torch.stack(z_hist, dim=1)  # (B, T, H, D)
    num = torch.einsum("btshd,bthde->btshe", f.q_rot, kv_all)
    den = torch.einsum("btshd,bthd->btsh", f.q, z_all)
    return GDNScanOutput(num=num, den=den, final_state=final_state)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The scan's arithmetic dtype: float32 for bf16/fp16/fp32 activations, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_normalise(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the full last dimension in at least float32 (no cast back)."""
    x = x.to(compute_dtype(x.dtype))
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.to(x.dtype)


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs (x_2j, x_2j+1) by the angle whose cos/sin are given per pair.

    x: (..., N, H, D); cos, sin: (N, D/2)."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., N, H, D/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]  # (N, 1, D/2)
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


def gdn_features(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    decay: Tensor,
    q_norm_weight: Tensor,
    k_norm_weight: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    frames: int,
    heads: int,
    key_scale: float,
    norm_eps: float = 1e-5,
) -> GDNFeatures:
    """Feature maps of kernels.md §1.3 in float32: inverse-RMS × weight, ReLU, κ on keys, RoPE.

    q, k, v: (B, N, C) projections; beta: (B, N, H); decay: (B, T, H); cos, sin: (N, D/2)."""
    B, N, C = q.shape
    D = C // heads
    S = N // frames
    dtype = compute_dtype(v.dtype)
    phi_q = F.relu(rms_normalise(q, q_norm_weight, norm_eps)).view(B, N, heads, D)  # (B, N, H, D)
    phi_k = (F.relu(rms_normalise(k, k_norm_weight, norm_eps)) * key_scale).view(B, N, heads, D)
    cos, sin = cos.to(dtype), sin.to(dtype)
    shape = (B, frames, S, heads, D)
    return GDNFeatures(
        q_rot=rotate_pairs(phi_q, cos, sin).view(shape),
        q=phi_q.view(shape),
        k_rot=rotate_pairs(phi_k, cos, sin).view(shape),
        k=phi_k.view(shape),
        v=v.to(dtype).view(shape),
        beta=beta.to(dtype).view(B, frames, S, heads),
        decay=decay.to(dtype),
    )


def gdn_core_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gate: Tensor,
    beta: Tensor,
    decay: Tensor,
    q_norm_weight: Tensor,
    k_norm_weight: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    frames: int,
    heads: int,
    key_scale: float,
    state: GDNState | None = None,
    update_state: bool = False,
    eps: float = 1e-8,
    norm_eps: float = 1e-5,
) -> Tensor:
    """The whole GDN core in PyTorch: features, both scans, division and the SiLU output gate.

    Returns the gated output (B, N, C) in the dtype of `v`; with `update_state` the forward scan's
    final state is written into `state` (read first as the initial state)."""
    B, N, C = q.shape
    features = gdn_features(
        q, k, v, beta, decay, q_norm_weight, k_norm_weight, cos, sin,
        frames=frames, heads=heads, key_scale=key_scale, norm_eps=norm_eps,
    )  # fmt: skip
    out = gdn_scan(features, state)
    o = out.num / (out.den[..., None] + eps)  # (B, T, S, H, D)
    y = o.reshape(B, N, C) * F.silu(gate.to(o.dtype))
    if update_state:
        if state is None:
            raise ValueError("update_state needs a state to write into")
        state.kv.copy_(out.final_state.kv)
        state.z.copy_(out.final_state.z)
    return y.to(v.dtype)
