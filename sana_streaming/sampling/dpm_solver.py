"""Flow DPM-Solver++ (multistep, order 2) as the release's bidirectional mode runs it (docs/sampling.md).

Written here rather than taken from diffusers' `DPMSolverMultistepScheduler` because the release's
grid (`time_uniform_flow`: shift applied to a linspace ending at t = 0 exactly), its v→ε→x0 chain with
guidance on ε, and its forced first-order last step are not options of that scheduler; the golden
fixture `dpm_solver` pins the exact arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# velocity(x (B, C, T, H, W), t_model (B,) on the 0–1000 scale) -> v, same shape as x
VelocityFn = Callable[[Tensor, Tensor], Tensor]


def flow_time_grid(steps: int, shift: float) -> Tensor:
    """The `time_uniform_flow` grid: steps+1 descending times in float32, last exactly 0."""
    b = torch.linspace(1.0, 0.001, steps + 1, dtype=torch.float32)
    u = 1 - b
    return torch.flip(shift * u / (1 + (shift - 1) * u), dims=[0])


def _lambda(t: Tensor) -> Tensor:
    """Half log-SNR of the flow schedule: log α − log σ with α = 1 − t, σ = t."""
    return torch.log(1 - t) - torch.log(t)


def guided_data_prediction(velocity: VelocityFn, x: Tensor, t: Tensor, cfg_scale: float) -> Tensor:
    """x0 at time t: the DiT's velocity → ε = (1 − t)·v + x, guidance on ε with batch order
    [uncond, cond], then x0 = (x − t·ε)/(1 − t). Guidance is on iff cfg ≠ 1 and 0 < t < 1."""
    guided = cfg_scale != 1.0 and 0 < t.item() < 1
    x_in = torch.cat([x, x]) if guided else x
    t_model = (t * 1000).expand(x_in.shape[0])
    v = velocity(x_in, t_model).float()
    eps = (1 - t) * v + x_in
    if guided:
        eps_uncond, eps_cond = eps.chunk(2)
        eps = eps_uncond + cfg_scale * (eps_cond - eps_uncond)
    return (x - t * eps) / (1 - t)


def sample_flow_dpm_solver(
    velocity: VelocityFn,
    noise: Tensor,
    *,
    steps: int,
    shift: float,
    cfg_scale: float,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Run `steps` model evaluations from `noise` (float32 arithmetic) and return the clean latents.

    Step 1 is first order, steps 2 … N−1 second order, the last step first order (to t = 0, where it
    returns the last data prediction)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    grid = flow_time_grid(steps, shift).to(noise.device)
    x = noise.float()
    preds: list[Tensor] = []
    for i in range(steps):
        preds.append(guided_data_prediction(velocity, x, grid[i], cfg_scale))
        if on_step is not None:
            on_step(i + 1, steps)
        t_prev, t = grid[i], grid[i + 1]
        if i == steps - 1:  # lower_order_final: first order to t = 0 gives x0 itself
            x = preds[-1]
            break
        h = _lambda(t) - _lambda(t_prev)
        alpha = torch.exp(torch.log(1 - t))
        x = (t / t_prev) * x - alpha * torch.expm1(-h) * preds[-1]
        if i >= 1:  # second order ("dpmsolver" variant) with the previous two predictions
            h0 = _lambda(t_prev) - _lambda(grid[i - 1])
            delta = (preds[-1] - preds[-2]) / (h0 / h)
            x = x - 0.5 * alpha * torch.expm1(-h) * delta
        preds = preds[-2:]
    return x
