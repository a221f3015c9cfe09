"""The `bidirectional_short` sampler: the whole clip as one chunk, denoised by flow DPM-Solver++ with
classifier-free guidance, conditioned on the clean source latents at every step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sana_streaming.conditioning import PromptPair
from sana_streaming.config import SamplerConfig
from sana_streaming.models.dit.graphs import resolve_compile
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver


def sample_whole_clip(
    dit: torch.nn.Module,
    source: Tensor,
    noise: Tensor,
    prompts: PromptPair,
    settings: SamplerConfig,
    *,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """The edited latents of the whole clip `source` (1, C, T, h, w), from `noise` of the same shape.
    With guidance (`settings.cfg_scale > 1`) the model runs on the release's batch [uncond, cond]; the
    caption's cross-attention K/V are prepared once for every step. `on_step(done, total)` reports.
    The forwards run eagerly, through the fused kernels when `settings.compile` resolves to "max"
    (no graphs: each step is one forward of a shape seen once per sample)."""
    guided = settings.cfg_scale > 1.0
    conditioning, source_in = prompts.positive, source
    if guided:  # batch order [uncond, cond]
        conditioning, source_in = prompts.guidance_batch(), torch.cat([source, source])
    text = dit.prepare_text(conditioning)  # once for every step of the sample
    fused = resolve_compile(settings.compile, source.device) == "max"

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        return dit(x, t, text, None, source_in, fused=fused)

    return sample_flow_dpm_solver(
        velocity, noise, steps=settings.steps, shift=settings.flow_shift, cfg_scale=settings.cfg_scale,
        on_step=on_step,
    )  # fmt: skip
