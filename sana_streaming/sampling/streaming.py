"""The streaming sampler of `long_streaming` (pipeline.md §6): chunks of latent frames, 4 Euler steps
each, a clean cache pass at t = 0, and the softmax window policy (sink chunk + recent chunks).

The DiT only consumes the `StreamingState` and the absolute frame offset it is given; this module
decides what stays in the window.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sana_streaming.models.dit import StreamingState
from sana_streaming.models.dit.model import SanaStreamingDiT

# Source: NVlabs/Sana, diffusion/scheduler/sana_streaming_sampler.py (hard-coded distilled timesteps).
DISTILLED_TIMESTEPS: dict[int, tuple[float, ...]] = {
    4: (1000.0, 961.0, 893.0, 743.0),
    2: (1000.0, 743.0),
}


def chunk_boundaries(latent_frames: int, base_chunk_frames: int = 3) -> list[int]:
    """[0, b + r, 2b + r, …, T]: chunks of `b` latent frames, the remainder r = T mod b added to the
    first chunk (969 frames → T = 122 → 0, 5, 8, …, 122)."""
    if latent_frames <= base_chunk_frames:
        raise ValueError(
            f"streaming needs more than {base_chunk_frames} latent frames "
            f"(more than {8 * base_chunk_frames - 7} video frames), got {latent_frames}"
        )
    remainder = latent_frames % base_chunk_frames
    count = latent_frames // base_chunk_frames
    return [0] + [base_chunk_frames * (i + 1) + remainder for i in range(count)]


def streaming_schedule(steps: int, shift: float) -> tuple[Tensor, Tensor]:
    """(timesteps (steps,), sigmas (steps+1,)) in float32, the last sigma 0.

    4 and 2 steps use the release's fixed timesteps (shift has no effect); other counts follow
    diffusers' flow-match Euler schedule with `shift`, whose σ is shifted twice (pipeline.md §6.3)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps in DISTILLED_TIMESTEPS:
        timesteps = torch.tensor(DISTILLED_TIMESTEPS[steps], dtype=torch.float32)
        sigmas = timesteps / 1000
    else:

        def shifted(x):
            return shift * x / (1 + (shift - 1) * x)

        sigma_max, sigma_min = shifted(1.0), shifted(0.001)
        t_lin = torch.linspace(1000 * sigma_max, 1000 * sigma_min, steps, dtype=torch.float64)
        sigmas = shifted(t_lin / 1000).to(torch.float32)
        timesteps = sigmas * 1000
    return timesteps, torch.cat([sigmas, torch.zeros(1)])


@dataclass(frozen=True)
class WindowPolicy:
    """Which earlier chunks the softmax blocks see (pipeline.md §6.5): the `num_cached_blocks` most
    recent, or with the sink chunk 0 plus the `num_cached_blocks − 1` most recent; ≤ 0 keeps all."""

    num_cached_blocks: int = 2
    sink: bool = True

    def visible(self, chunk: int) -> list[int]:
        n = self.num_cached_blocks
        if n <= 0:
            return list(range(chunk))
        if self.sink and chunk - n + 1 > 0:
            return [0, *range(chunk - n + 1, chunk)]
        return list(range(max(chunk - n, 0), chunk))

    def window_frames(self, boundaries: list[int]) -> int:
        """Largest window (visible chunks + the current one) over the chunks, in latent frames."""
        sizes = [b - a for a, b in itertools.pairwise(boundaries)]
        return max(sum(sizes[i] for i in self.visible(c)) + sizes[c] for c in range(len(sizes)))

    def window_chunks(self, boundaries: list[int]) -> int:
        """Most segments the window holds at once (visible chunks + the committing one), the
        `window_chunks` of `StreamingState.allocate`."""
        return max(len(self.visible(c)) + 1 for c in range(len(boundaries) - 1))


@dataclass
class StreamingConditions:
    """What every DiT call of a stream shares."""

    caption: Tensor  # (1, 1, L, C_txt)
    mask: Tensor  # (1, L)


@dataclass
class _CleanPass:
    """A denoised chunk whose clean pass has not run yet."""

    latents: Tensor  # (B, C, T, H, W), the sampler's own copy, in the noise's dtype
    source: Tensor  # (B, C, T, H, W)
    start: int  # absolute first latent frame


class StreamingSampler:
    """Denoises one chunk at a time, carrying the DiT's `StreamingState` between chunks; one sampler per
    stream (it holds the last chunk's deferred clean pass)."""

    def __init__(
        self,
        model: SanaStreamingDiT,
        conditions: StreamingConditions,
        state: StreamingState,
        *,
        steps: int = 4,
        shift: float = 8.0,
        policy: WindowPolicy | None = None,
        on_forward: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.conditions = conditions
        self.state = state
        self.policy = policy or WindowPolicy()
        self.timesteps, self.sigmas = streaming_schedule(steps, shift)
        self.on_forward = on_forward
        self.chunk = 0  # chunks committed to the state so far
        self._uncommitted: _CleanPass | None = None

    def _forward(self, x: Tensor, t: float, source: Tensor, start: int, save: bool) -> Tensor:
        timestep = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        c = self.conditions
        v = self.model(
            x, timestep, c.caption, c.mask, source, state=self.state, frame_offset=start, save=save
        )
        if self.on_forward is not None:
            self.on_forward()
        return v

    def denoise_chunk(self, noise: Tensor, source: Tensor, start: int) -> Tensor:
        """Denoise the chunk whose first latent frame is `start`. Returns float32 latents, rounded to the
        model dtype after every Euler step as the release does.

        The chunk's clean pass at t = 0 (which writes it into the state, commits its K/V and applies the
        window policy) runs at the start of the next call, not here: the chunk's latents are out one
        forward sooner, and the stream's last chunk — known or not — never runs one."""
        self._run_clean_pass()
        x = noise.float()
        sigmas = self.sigmas.to(x.device)
        for j, t in enumerate(self.timesteps.tolist()):
            v = self._forward(x.to(noise.dtype), t, source, start, save=False)
            # diffusers' Euler step: the 0-dim float32 dt times v stays in v's dtype (bf16 product),
            # is added to the float32 sample, and the result is cast back to v's dtype
            x = (x + (sigmas[j + 1] - sigmas[j]) * v).to(v.dtype).float()
        self._uncommitted = _CleanPass(x.to(noise.dtype, copy=True), source, start)  # x is the caller's
        return x

    def _run_clean_pass(self) -> None:
        """The previous chunk's deferred clean pass, then its commit and the window policy (which also
        picks the softmax blocks' FFN left context: the newest kept chunk's last frame)."""
        if self._uncommitted is None:
            return
        done, self._uncommitted = self._uncommitted, None
        self._forward(done.latents, 0.0, done.source, done.start, save=True)
        self.state.commit_chunk(self.chunk, done.latents.shape[2])
        self.state.retain(self.policy.visible(self.chunk + 1))
        self.chunk += 1
