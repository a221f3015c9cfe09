"""Latent normalisation of the LTX-2 VAE, exactly as the release does it.

Source: meefs/Sana @ 5498e5b, `diffusion/model/builder.py`, `vae_encode` / `vae_decode` (branches
`LTX2VAE_chunk_tile` and `LTX2VAE_diffusers`, identical formulas); docs/vae.md. The per-channel
`latents_mean` / `latents_std` buffers are viewed as `(1, C, 1, 1, 1)` and cast to the dtype of the tensor
they act on, so with bf16 latents the arithmetic is bf16, in this operation order.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class LatentStatistics:
    """Per-channel latent statistics (`latents_mean`, `latents_std`, shape `(C,)`) and the scaling factor."""

    mean: Tensor
    std: Tensor
    scaling_factor: float

    def _view(self, stat: Tensor, like: Tensor) -> Tensor:
        return stat.view(1, -1, 1, 1, 1).to(like.device, like.dtype)

    def normalise(self, z: Tensor) -> Tensor:
        """Raw posterior mode -> the DiT's latent space: `(z - mean) * s / std`, in `z`'s dtype."""
        return (z - self._view(self.mean, z)) * self.scaling_factor / self._view(self.std, z)

    def denormalise(self, z: Tensor) -> Tensor:
        """The DiT's latent space -> raw decoder input: `z * std / s + mean`, in `z`'s dtype."""
        return z * self._view(self.std, z) / self.scaling_factor + self._view(self.mean, z)
