"""Shared pieces of the GDN workbench scripts: realistic random inputs, the float64 reference, errors.

Inputs follow kernels.md §7.3: q/k/v/gate ~ N(0.3, 1) as views of one (B, N, 4C) GEMM output, norm
weights 1 + 0.2·N(0, 1), β = σ(N(0, 1)), g ∈ [0.5, 1), RoPE angles uniform in [0, 2π), state ≈ 0.05.
"""

from __future__ import annotations

import math

import torch

from sana_streaming.ops.gdn_reference import GDNFeatures, GDNInputs, GDNState, gdn_features, gdn_scan

SHAPES = {  # name: (B, T, S, H, D)
    "hot loop": (1, 3, 880, 20, 112),
    "first chunk": (1, 5, 880, 20, 112),
    "single frame": (1, 1, 880, 20, 112),
    "ragged S": (2, 3, 37, 3, 112),
    "D=64": (1, 3, 880, 20, 64),
    "D=128": (1, 3, 880, 20, 128),
    "bidir CFG": (2, 11, 880, 20, 112),
    "bidir 21": (1, 21, 880, 20, 112),
}


def make_inputs(shape, *, seed: int = 0, dtype=torch.bfloat16, device="cuda", with_state: bool = True):
    """(inputs, state or None) for one GDN layer call."""
    B, T, S, H, D = shape
    N, C = T * S, H * D
    gen = torch.Generator(device).manual_seed(seed)

    def rnd(*size):
        return torch.randn(*size, generator=gen, device=device)

    qkvg = (rnd(B, N, 4 * C) + 0.3).to(dtype)
    q, k, v, gate = qkvg.split(C, dim=-1)  # (B, N, C) views with row stride 4C
    angles = torch.rand(N, D // 2, generator=gen, device=device, dtype=torch.float64) * 2 * math.pi
    inputs = GDNInputs(
        q=q, k=k, v=v, gate=gate,
        beta=torch.sigmoid(rnd(B, N, H)).to(dtype),
        decay=(0.5 + 0.5 * torch.rand(B, T, H, generator=gen, device=device)).to(dtype),
        q_norm_weight=1 + 0.2 * rnd(C), k_norm_weight=1 + 0.2 * rnd(C),
        cos=angles.cos().float(), sin=angles.sin().float(),
        frames=T, heads=H, key_scale=(D * S) ** -0.5,
    )  # fmt: skip
    state = GDNState(kv=0.05 * rnd(B, H, D, D), z=0.05 * rnd(B, H, D)) if with_state else None
    return inputs, state


def reference(inputs: GDNInputs, state):
    """float64 (num (B,N,C), den (B,N,H), final kv, final z, gated y) from the einsum form."""
    f = gdn_features(inputs.map_tensors(torch.Tensor.double))
    f = GDNFeatures(**{n: getattr(f, n).double() for n in f.__dataclass_fields__})
    state64 = None if state is None else GDNState(kv=state.kv.double(), z=state.z.double())
    ref = gdn_scan(f, state64)
    B, T, S, H, D = f.v.shape
    num = ref.num.reshape(B, T * S, H * D)
    den = ref.den.reshape(B, T * S, H)
    o = ref.num / (ref.den[..., None] + 1e-8)
    y = o.reshape(B, T * S, H * D) * torch.nn.functional.silu(inputs.gate.double())
    return dict(num=num, den=den, kv=ref.final_state.kv, z=ref.final_state.z, y=y)


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative Frobenius, relative max) error of a against the reference b."""
    diff = a.double() - b
    return (diff.norm() / b.norm()).item(), (diff.abs().max() / b.abs().max()).item()
