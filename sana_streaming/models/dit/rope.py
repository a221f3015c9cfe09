"""Wan-style 3-D rotary position tables, for any absolute frame index.

The head dimension is split into [frame | height | width] = [D − 2·2⌊D/6⌋ | 2⌊D/6⌋ | 2⌊D/6⌋]
(40 | 36 | 36 for D = 112); each axis with d dims has d/2 pair frequencies ω_i = θ^(−2i/d), computed
in float64 like the release. Unlike the release's 1024-row table, positions are computed directly,
so long or live streams are never capped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sana_streaming.numerics import compute_dtype, rotate_pairs

ROPE_THETA = 10000.0


@dataclass
class RopeTables:
    """cos and sin of the rotation angle of every (token, pair): (N, D/2) each."""

    cos: Tensor
    sin: Tensor


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """(frame, height, width) dims of the split: height = width = 2·⌊D/6⌋, frame takes the rest."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _axis_angles(positions: Tensor, dims: int) -> Tensor:
    """(P,) positions → (P, dims/2) angles p·ω_i in float64."""
    exponents = torch.arange(0, dims, 2, dtype=torch.float64, device=positions.device)[: dims // 2] / dims
    freqs = 1.0 / (ROPE_THETA**exponents)
    return positions.double()[:, None] * freqs[None]


def rope_tables(
    frame_start: int | Tensor,
    frames: int,
    height: int,
    width: int,
    head_dim: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> RopeTables:
    """Tables for tokens of absolute latent frames [frame_start, frame_start + frames), frame-major.

    `frame_start` may be a 0-dim integer tensor on `device`, so a captured CUDA graph reads the chunk's
    position from memory instead of baking it in."""
    d_f, d_h, d_w = rope_axis_dims(head_dim)
    f = _axis_angles(torch.arange(frames, device=device) + frame_start, d_f)
    h = _axis_angles(torch.arange(height, device=device), d_h)
    w = _axis_angles(torch.arange(width, device=device), d_w)
    angles = torch.cat(
        [
            f[:, None, None, :].expand(frames, height, width, -1),
            h[None, :, None, :].expand(frames, height, width, -1),
            w[None, None, :, :].expand(frames, height, width, -1),
        ],
        dim=-1,
    ).reshape(frames * height * width, head_dim // 2)  # (N, D/2)
    return RopeTables(cos=angles.cos().to(dtype), sin=angles.sin().to(dtype))


def apply_rope(x: Tensor, tables: RopeTables) -> Tensor:
    """Rotate interleaved pairs of x (B, N, H, D) in float32 (float64 stays float64)."""
    dtype = compute_dtype(x.dtype)
    return rotate_pairs(x.to(dtype), tables.cos.to(dtype), tables.sin.to(dtype))
