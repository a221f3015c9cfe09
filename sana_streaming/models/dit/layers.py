"""Small building blocks of the DiT: norms, embedders, the taps-aware projection, modulation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from sana_streaming.numerics import rms_normalise

_DERIVED = WeakIdKeyDictionary()  # first source → {name: (stamps of all sources, derived tensor)}


def derived_weight(sources: tuple[Tensor, ...], name: str, derive: Callable[..., Tensor]) -> Tensor:
    """`derive(*sources)` (a contiguous copy of a strided tap, several weights stacked), computed once
    and kept while the first source lives, instead of on every call; recomputed when any source's
    storage or in-place version changes (a new checkpoint loaded into it). An inference tensor (made
    under `inference_mode`) has no version counter, so a derivation from one is not cached."""
    if any(t.is_inference() for t in sources):
        return derive(*sources)
    entries = _DERIVED.setdefault(sources[0], {})
    stamp = tuple((t.data_ptr(), t._version) for t in sources)
    hit = entries.get(name)
    if hit is None or hit[0] != stamp:
        hit = entries[name] = (stamp, derive(*sources))
    return hit[1]


class RMSNorm(nn.Module):
    """`rms_normalise` with a learned weight: reduced in float32 (float64 inputs stay float64) and cast
    back to the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_normalise(x, self.weight, self.eps).to(x.dtype)


class TapLinear(nn.Module):
    """A per-token linear map stored as a Conv1d weight (out, in, taps) of which one tap is used.

    The release stores GDN q/k as Conv1d(kernel 1) and the streaming softmax q/k as Conv1d(kernel 3),
    but applies only the centre tap with no temporal mixing; keeping the stored shape
    lets the released checkpoints load unchanged. A strided centre tap (taps > 1) is copied once
    (`derived_weight`), not at every call."""

    def __init__(self, in_features: int, out_features: int, taps: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, taps))
        self.tap = taps // 2

    @property
    def matrix(self) -> Tensor:
        """The applied tap (out, in), a view of the stored weight."""
        return self.weight[:, :, self.tap]

    def forward(self, x: Tensor) -> Tensor:
        weight = self.matrix
        if not weight.is_contiguous():
            weight = derived_weight((self.weight,), "tap", lambda w: w[:, :, self.tap].contiguous())
        return F.linear(x, weight)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: x·(1 + scale) + shift."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoid of the integer-truncated timestep → MLP."""

    frequency_size = 256
    max_period = 10000

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(self.frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def sinusoid(self, timestep: Tensor) -> Tensor:
        """[cos | sin] embedding (cos half first) of `timestep` truncated toward zero, in float32."""
        t = timestep.long().float()  # 999.7 -> 999 (timestep_norm_scale_factor == 1)
        half = self.frequency_size // 2
        exponent = (
            -math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None] * torch.exp(exponent)[None]  # (B, 128)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, timestep: Tensor) -> Tensor:
        return self.mlp(self.sinusoid(timestep).to(self.mlp[0].weight.dtype))


class CaptionMlp(nn.Module):
    """fc1 → GELU(tanh) → fc2."""

    def __init__(self, in_features: int, hidden_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """Projects text-encoder states to the hidden size. `y_embedding` (the learned null caption of
    training-time dropout) is unused at inference but part of the checkpoint."""

    def __init__(self, caption_channels: int, hidden_size: int, max_length: int) -> None:
        super().__init__()
        self.y_proj = CaptionMlp(caption_channels, hidden_size)
        self.register_buffer("y_embedding", torch.zeros(max_length, caption_channels))

    def forward(self, y: Tensor) -> Tensor:
        return self.y_proj(y)


class PatchEmbed(nn.Module):
    """1×1×1 Conv3d over [noisy latent | source latent], applied as a per-token linear map."""

    def __init__(self, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, T, H, W) → tokens (B, T·H·W, hidden), frame-major then row then column."""
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C_in)
        return F.linear(tokens, self.proj.weight.flatten(1), self.proj.bias)


class FinalLayer(nn.Module):
    """LN → modulate with t_emb (rows: shift, scale) → linear to the latent channels."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels)
        self.scale_shift_table = nn.Parameter(torch.zeros(2, hidden_size))

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)  # (B, 1, C) each
        return self.linear(modulate(self.norm_final(x), shift, scale))
