"""Frame-wise Gated DeltaNet self-attention: projections and gates here, the
scan in `sana_streaming.ops.gdn_core` (Triton on CUDA, PyTorch elsewhere)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sana_streaming.models.dit.kernels import EAGER, BlockKernels, apply_linear
from sana_streaming.models.dit.layers import RMSNorm, TapLinear
from sana_streaming.models.dit.rope import RopeTables
from sana_streaming.numerics import compute_dtype
from sana_streaming.ops import Backend, GDNInputs, GDNState, check_backend, gdn_core


class GDNAttention(nn.Module):
    """Bidirectional within the call, causal across calls through the carried forward state.

    `backend` picks the `gdn_core` implementation (see `sana_streaming.ops`), fixed at construction."""

    def __init__(self, hidden_size: int, head_dim: int, backend: Backend = "auto") -> None:
        super().__init__()
        self.heads = hidden_size // head_dim
        self.head_dim = head_dim
        # 1. Projections (q/k stored as Conv1d kernel 1, v as Linear; no bias).
        self.q = TapLinear(hidden_size, hidden_size, taps=1)
        self.k = TapLinear(hidden_size, hidden_size, taps=1)
        self.v = nn.Linear(hidden_size, hidden_size, bias=False)
        self.q_norm = RMSNorm(hidden_size, eps=1e-5)
        self.k_norm = RMSNorm(hidden_size, eps=1e-5)
        # 2. Gates: β per token and head, decay per frame and head (Mamba-style).
        self.beta_proj = nn.Linear(hidden_size, self.heads)
        self.gate_proj = nn.Linear(hidden_size, self.heads)
        self.A_log = nn.Parameter(torch.zeros(self.heads))
        self.dt_bias = nn.Parameter(torch.zeros(self.heads))
        # 3. Output gate and projection.
        self.output_gate = nn.Linear(hidden_size, hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.stacked = None  # QuantizedProjections of q, k, v, output gate and β when quantised
        self.backend = check_backend(backend)

    def decay(self, u: Tensor, frames: int) -> Tensor:
        """Decay g (B, T, H) of the frames' mean input, computed in fp32 and rounded to the activation
        dtype like the release (`_compute_frame_gates`)."""
        B, N, C = u.shape
        frame_mean = u.view(B, frames, N // frames, C).mean(dim=2)  # (B, T, C)
        dtype = compute_dtype(u.dtype)
        a = self.gate_proj(frame_mean).to(dtype)
        decay_log = -self.A_log.to(dtype).exp() * F.softplus(a + self.dt_bias.to(dtype))
        return decay_log.exp().to(u.dtype)

    def forward(
        self,
        u: Tensor,
        frames: int,
        rope: RopeTables,
        state: GDNState | None = None,
        save: bool = False,
        kernels: BlockKernels = EAGER,
    ) -> Tensor:
        """u: modulated input (B, N, C). With `save`, the final forward state is written into `state`."""
        N = u.shape[1]
        if self.stacked is not None:
            q, k, v, gate, beta = apply_linear(u, self.stacked, kernels.quantize_rows)
        else:
            q, k, v, gate, beta = kernels.projections(
                u, (self.q, self.k, self.v, self.output_gate, self.beta_proj)
            )
        key_scale = (self.head_dim * (N // frames)) ** -0.5  # κ = (D·S)^(-1/2), S of this call
        inputs = GDNInputs(
            q, k, v, gate, torch.sigmoid(beta), self.decay(u, frames),
            self.q_norm.weight, self.k_norm.weight, rope.cos, rope.sin,
            frames=frames, heads=self.heads, key_scale=key_scale,
        )  # fmt: skip
        y = gdn_core(inputs, state=state, update_state=save and state is not None, backend=self.backend)
        return apply_linear(y, self.proj, kernels.quantize_rows)
