"""Kernels behind dispatch functions, with PyTorch fallbacks.

`gdn_core` is the one entry point of the GDN layers. `backend="auto"` takes the fused Triton kernel
when it is installed and the tensors live on a CUDA device, and the PyTorch path otherwise;
`"triton"` raises instead of falling back (so tests prove the kernel ran); `"torch"` forces the
reference path, which `"auto"` also takes for float64 tensors.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from sana_streaming.ops.gdn_reference import GDNState, gdn_core_torch

Backend = Literal["auto", "triton", "torch"]

__all__ = ["Backend", "GDNState", "KernelUnavailableError", "gdn_core", "triton_gdn_available"]


class KernelUnavailableError(RuntimeError):
    """A Triton kernel was requested but cannot run here."""


def triton_gdn_available() -> bool:
    """Whether the fused Triton GDN kernels can be imported."""
    try:
        from sana_streaming.ops import gdn_triton  # noqa: F401
    except ImportError:
        return False
    return True


def gdn_core(
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
    backend: Backend = "auto",
) -> Tensor:
    """Fused GDN core: from the projection outputs to the gated output that `proj` reads.

    q, k, v, gate: (B, N, C) raw projections (gate before SiLU); beta: (B, N, H) after the sigmoid;
    decay: (B, T, H) per-frame decay g; cos, sin: (N, D/2) RoPE tables of the tokens; state: the
    forward scan's initial state (zeros if None), overwritten in place with the final state when
    `update_state`. Returns (B, N, C) in the dtype of `v`. See kernels.md §1.3 and §7.1."""
    kwargs = dict(
        frames=frames, heads=heads, key_scale=key_scale, state=state,
        update_state=update_state, eps=eps, norm_eps=norm_eps,
    )  # fmt: skip
    args = (q, k, v, gate, beta, decay, q_norm_weight, k_norm_weight, cos, sin)
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"unknown GDN backend {backend!r}")
    if backend == "torch" or (backend == "auto" and (not q.is_cuda or v.dtype == torch.float64)):
        return gdn_core_torch(*args, **kwargs)  # float64 (reference runs) stays on the exact path
    try:
        from sana_streaming.ops.gdn_triton import gdn_core_triton
    except ImportError as exc:
        if backend == "triton":
            raise KernelUnavailableError(f"Triton GDN kernels unavailable: {exc}") from exc
        return gdn_core_torch(*args, **kwargs)
    if backend == "triton" and not q.is_cuda:
        raise KernelUnavailableError("the Triton GDN kernels need CUDA tensors")
    return gdn_core_triton(*args, **kwargs)
