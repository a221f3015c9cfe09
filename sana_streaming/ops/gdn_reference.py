"""Frame-wise gated delta rule (GDN) in plain PyTorch: the oracle and the fast form.

Notation follows docs/kernels.md. Per batch element and head, frame t holds S tokens with
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

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from sana_streaming.numerics import compute_dtype, rms_normalise, rotate_pairs


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
class GDNInputs:
    """The operands of one GDN layer call (docs/kernels.md), as every implementation of the core takes
    them: raw projections, gates, norm weights, RoPE tables and the call's constants."""

    q: Tensor  # (B, N, C) raw projections; any strides (e.g. views of one (B, N, 4C) GEMM output)
    k: Tensor  # (B, N, C)
    v: Tensor  # (B, N, C)
    gate: Tensor  # (B, N, C) output gate before its SiLU
    beta: Tensor  # (B, N, H) write strengths after the sigmoid, in [0, 1]
    decay: Tensor  # (B, T, H) per-frame decay g
    q_norm_weight: Tensor  # (C,)
    k_norm_weight: Tensor  # (C,)
    cos: Tensor  # (N, D/2) RoPE tables of the tokens
    sin: Tensor  # (N, D/2)
    frames: int  # T
    heads: int  # H
    key_scale: float  # κ on the key features
    eps: float = 1e-8  # added to the normaliser before the division
    norm_eps: float = 1e-5  # inside the q/k RMSNorm

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> GDNInputs:
        """A copy with `fn` applied to every tensor (dtype or device changes, slicing)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{name: fn(x) for name, x in values.items() if isinstance(x, Tensor)})


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


def gdn_features(inputs: GDNInputs) -> GDNFeatures:
    """Feature maps of docs/kernels.md in float32 (float64 for float64 inputs): inverse-RMS × weight,
    ReLU, κ on keys, RoPE."""
    x = inputs
    B, N, C = x.q.shape
    T, H = x.frames, x.heads
    D, S = C // H, N // T
    dtype = compute_dtype(x.v.dtype)
    phi_q = F.relu(rms_normalise(x.q, x.q_norm_weight, x.norm_eps)).view(B, N, H, D)  # (B, N, H, D)
    phi_k = (F.relu(rms_normalise(x.k, x.k_norm_weight, x.norm_eps)) * x.key_scale).view(B, N, H, D)
    cos, sin = x.cos.to(dtype), x.sin.to(dtype)
    shape = (B, T, S, H, D)
    return GDNFeatures(
        q_rot=rotate_pairs(phi_q, cos, sin).view(shape),
        q=phi_q.view(shape),
        k_rot=rotate_pairs(phi_k, cos, sin).view(shape),
        k=phi_k.view(shape),
        v=x.v.to(dtype).view(shape),
        beta=x.beta.to(dtype).view(B, T, S, H),
        decay=x.decay.to(dtype),
    )


def gdn_core_torch(inputs: GDNInputs, *, state: GDNState | None = None, update_state: bool = False) -> Tensor:
    """The whole GDN core in PyTorch: features, both scans, division and the SiLU output gate.

    Returns the gated output (B, N, C) in the dtype of `v`; `state` is the forward scan's initial
    state (zeros if None), overwritten with its final state when `update_state`."""
    if update_state and state is None:
        raise ValueError("update_state needs a state to write into")
    B, N, C = inputs.q.shape
    out = gdn_scan(gdn_features(inputs), state)
    o = out.num / (out.den[..., None] + inputs.eps)  # (B, T, S, H, D)
    y = o.reshape(B, N, C) * F.silu(inputs.gate.to(o.dtype))
    if update_state:
        state.kv.copy_(out.final_state.kv)
        state.z.copy_(out.final_state.z)
    return y.to(inputs.v.dtype)
