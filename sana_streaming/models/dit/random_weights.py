"""Random, non-degenerate weights for tests, benchmarks and `--random_weights` runs.

The release's own initialisation makes every GDN decay exactly 1 and β constant, which hides bugs;
this follows the golden fixtures' rule instead (shared/golden/README.md, "Weights")."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize_dit_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter in place: matrices/convs N(0, 1/fan_in), biases N(0, 0.1²), norm weights
    1 + N(0, 0.1²), modulation tables N(0, 0.1²), A_log = log U(1, 16), dt_bias N(−2, 0.5²)."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in model.named_parameters():
        if param.device not in generators:  # draw where the weights live (fast on a GPU)
            generators[param.device] = torch.Generator(param.device).manual_seed(seed)
        gen = generators[param.device]
        leaf = name.rsplit(".", 1)[-1]
        shape = param.shape
        if leaf == "A_log":
            value = torch.log(1 + 15 * torch.rand(shape, generator=gen, device=param.device))
        elif leaf == "dt_bias":
            value = -2 + 0.5 * torch.randn(shape, generator=gen, device=param.device)
        elif leaf == "scale_shift_table":
            value = 0.1 * torch.randn(shape, generator=gen, device=param.device)
        elif leaf == "bias":
            value = 0.1 * torch.randn(shape, generator=gen, device=param.device)
        elif param.ndim == 1:  # norm weights
            value = 1 + 0.1 * torch.randn(shape, generator=gen, device=param.device)
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen, device=param.device) / math.sqrt(fan_in)
        param.copy_(value.to(param.dtype))
    return model
