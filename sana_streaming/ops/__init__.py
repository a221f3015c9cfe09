"""Kernels behind dispatch functions, with PyTorch fallbacks.

`gdn_core` is the one entry point of the GDN layers. `backend="auto"` takes the fused Triton kernel
when it is installed and the tensors live on a CUDA device, and the PyTorch path otherwise;
`"triton"` raises instead of falling back (so tests prove the kernel ran); `"torch"` forces the
reference path, which `"auto"` also takes for float64 tensors. The DiT fixes it at build time:
`build_dit(config, gdn_backend=...)`.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from sana_streaming.ops.gdn_reference import GDNInputs, GDNState, gdn_core_torch

Backend = Literal["auto", "triton", "torch"]

__all__ = [
    "Backend",
    "GDNInputs",
    "GDNState",
    "KernelUnavailableError",
    "check_backend",
    "gdn_core",
    "triton_gdn_available",
]


class KernelUnavailableError(RuntimeError):
    """A Triton kernel was requested but cannot run here."""


def check_backend(backend: str) -> Backend:
    """`backend` itself if it names a GDN backend; ValueError otherwise (so a model built with a typo
    fails at build time, not at its first forward)."""
    if backend not in get_args(Backend):
        raise ValueError(f"unknown GDN backend {backend!r}; expected one of {', '.join(get_args(Backend))}")
    return backend  # type: ignore[return-value]


def triton_gdn_available() -> bool:
    """Whether the fused Triton GDN kernels can be imported."""
    try:
        from sana_streaming.ops import gdn_triton  # noqa: F401
    except ImportError:
        return False
    return True


def gdn_core(
    inputs: GDNInputs,
    *,
    state: GDNState | None = None,
    update_state: bool = False,
    backend: Backend = "auto",
) -> Tensor:
    """Fused GDN core: from the projection outputs to the gated output that `proj` reads.

    `state`: the forward scan's initial state (zeros if None), overwritten in place with the final
    state when `update_state`. Returns (B, N, C) in the dtype of `v`. See docs/kernels.md."""
    check_backend(backend)
    on_cuda, dtype = inputs.q.is_cuda, inputs.v.dtype
    if backend == "torch" or (backend == "auto" and (not on_cuda or dtype == torch.float64)):
        # float64 (reference runs) stays on the exact path
        return gdn_core_torch(inputs, state=state, update_state=update_state)
    try:
        from sana_streaming.ops.gdn_triton import gdn_core_triton
    except ImportError as exc:
        if backend == "triton":
            raise KernelUnavailableError(f"Triton GDN kernels unavailable: {exc}") from exc
        return gdn_core_torch(inputs, state=state, update_state=update_state)
    if backend == "triton" and not on_cuda:
        raise KernelUnavailableError("the Triton GDN kernels need CUDA tensors")
    return gdn_core_triton(inputs, state=state, update_state=update_state)
