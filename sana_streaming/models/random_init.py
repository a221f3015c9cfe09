"""Random weights drawn from a private generator, so a random-weights model is the same in every
run whatever else the process does.

Constructing diffusers' VAE or transformers' Gemma-2 draws their initial weights from torch's global
generator; another thread using it meanwhile (a web server, a test harness, a data loader) changes
what the model gets, even under `torch.random.fork_rng` and a fixed seed (reproduced: two threads
calling `torch.randn` beside an edit changed the output by up to 216 of 255). `redraw_` replaces
every weight and bias of a layer with a matrix weight by a draw from a generator of its own,
keeping PyTorch's default scale for Linear and Conv layers (uniform in ±1/√fan_in); constant
parameters (norm scales and shifts) and buffers are left as constructed, being the same every time.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def redraw_(model: nn.Module, seed: int) -> nn.Module:
    """Redraw `model`'s layer weights and biases in place from `torch.Generator().manual_seed(seed)`."""
    generators: dict[torch.device, torch.Generator] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.ndim < 2 or weight.is_meta:
            continue  # a model on the meta device (sizes only) has no values to draw
        bound = 1 / math.sqrt(weight[0].numel())  # fan_in: every input of one output
        if weight.device not in generators:
            generators[weight.device] = torch.Generator(weight.device).manual_seed(seed)
        gen = generators[weight.device]
        for param in (weight, getattr(module, "bias", None)):
            if isinstance(param, nn.Parameter):
                draw = torch.rand(param.shape, generator=gen, device=param.device, dtype=torch.float32)
                param.copy_((2 * draw - 1) * bound)
    return model
