"""The streaming sampler against the release's run (golden `dit_streaming`) and pipeline.md §6."""

import json

import pytest
import torch
from golden import GOLDEN, golden, golden_dit_config, golden_state_dict, rel_err

from sana_streaming import build_dit
from sana_streaming.models.dit import StreamingState
from sana_streaming.sampling.streaming import (
    StreamingConditions,
    StreamingSampler,
    WindowPolicy,
    chunk_boundaries,
    streaming_schedule,
)


def test_chunk_boundaries():
    b = chunk_boundaries(122)
    assert b[:7] == [0, 5, 8, 11, 14, 17, 20] and b[-1] == 122 and len(b) == 41
    assert chunk_boundaries(121)[:3] == [0, 4, 7] and len(chunk_boundaries(121)) == 41
    assert chunk_boundaries(11) == [0, 5, 8, 11]
    assert chunk_boundaries(13) == [0, 4, 7, 10, 13]
    with pytest.raises(ValueError, match="more than 3 latent frames"):
        chunk_boundaries(3)


def test_schedules():
    t, s = streaming_schedule(4, 8.0)
    assert t.tolist() == [1000.0, 961.0, 893.0, 743.0]
    assert torch.allclose(s, torch.tensor([1.0, 0.961, 0.893, 0.743, 0.0]))
    assert streaming_schedule(2, 3.0)[0].tolist() == [1000.0, 743.0]
    for steps, expected in {3: [1000, 890.448, 60.207], 5: [1000, 960.406, 890.448, 733.482, 60.207]}.items():
        assert torch.allclose(streaming_schedule(steps, 8.0)[0], torch.tensor(expected), atol=2e-3)


def test_window_policy_matches_worked_example():
    """pipeline.md §6.8: visible chunks and window sizes for chunks 0–5 of the default run."""
    policy = WindowPolicy(num_cached_blocks=2, sink=True)
    assert [policy.visible(c) for c in range(6)] == [[], [0], [0, 1], [0, 2], [0, 3], [0, 4]]
    assert policy.window_frames(chunk_boundaries(122)) == 11  # chunk 2: 5 + 3 cached + 3 current
    no_sink = WindowPolicy(num_cached_blocks=2, sink=False)
    assert [no_sink.visible(c) for c in range(5)] == [[], [0], [0, 1], [1, 2], [2, 3]]
    assert WindowPolicy(num_cached_blocks=0).visible(4) == [0, 1, 2, 3]


def test_golden_streaming_sample_call_by_call():
    g = golden("dit_streaming")
    calls = json.loads((GOLDEN / "manifest.json").read_text())["fixtures"]["dit_streaming"]["calls"]
    model = build_dit(golden_dit_config("streaming"), dtype=torch.float32)
    model.load_state_dict(golden_state_dict("streaming"))
    boundaries = chunk_boundaries(13)
    policy = WindowPolicy()
    frames = policy.window_frames(boundaries)
    state = StreamingState.allocate(model.config, batch=1, height=4, width=6, window_frames=frames,
                                    dtype=torch.float32)  # fmt: skip
    conditions = StreamingConditions(g["input.y"], g["input.mask"])
    sampler = StreamingSampler(model, conditions, state, policy=policy)
    recorded = []
    real_forward = model.forward

    def spy(x, t, *args, **kwargs):
        out = real_forward(x, t, *args, **kwargs)
        recorded.append((x, t, kwargs["frame_offset"], kwargs["save"], out))
        return out

    model.forward = spy
    chunks = []
    for c in range(4):
        s, e = boundaries[c], boundaries[c + 1]
        chunks.append(sampler.denoise_chunk(g["input.noise"][:, :, s:e], g["input.source"][:, :, s:e], s))
    assert len(recorded) == 19
    for n, (call, (x, t, offset, save, v)) in enumerate(zip(calls, recorded, strict=True)):
        assert t.item() == call["timestep"] and save == call["save_kv_cache"], n
        assert offset == call["chunk_frames"][0]
        assert rel_err(x, g[f"call.{n:02d}.x"]) <= 1e-4, n
        assert rel_err(v, g[f"call.{n:02d}.velocity"]) <= 1e-4, n
    assert rel_err(torch.cat(chunks, dim=2), g["output.latents"]) <= 1e-3
    assert [s.chunk for s in state.segments] == [0, 2]


class ScriptedModel:
    """Returns preset bf16 velocities, one per call, in place of the DiT."""

    def __init__(self, velocities):
        self.velocities = list(velocities)

    def __call__(self, x, timestep, caption, mask, source, **kwargs):
        return self.velocities.pop(0)


def test_bf16_euler_steps_equal_diffusers_scheduler():
    """The release steps with diffusers' FlowMatchEulerDiscreteScheduler on a bf16 velocity: the
    product dt·v is rounded to bf16 before the float32 add. Our steps must match it bit for bit."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 3, 2, 3, generator=gen)
    velocities = [torch.randn(1, 16, 3, 2, 3, generator=gen).bfloat16() for _ in range(4)]
    model = ScriptedModel(velocities)
    sampler = StreamingSampler(model, StreamingConditions(torch.zeros(1), torch.zeros(1)), state=None)
    ours = sampler.denoise_chunk(noise, noise, start=0)

    scheduler = FlowMatchEulerDiscreteScheduler(shift=8.0)
    scheduler.set_timesteps(4)
    scheduler.timesteps = torch.tensor([1000.0, 961.0, 893.0, 743.0])
    scheduler.sigmas = torch.cat([scheduler.timesteps / 1000, torch.zeros(1)])
    latents = noise.clone()
    for t, v in zip(scheduler.timesteps, velocities, strict=True):
        latents = scheduler.step(v, t, latents.float()).prev_sample.float()
    assert torch.equal(ours, latents)
    naive = noise.clone()  # the float32-product variant differs in the last bf16 bit somewhere
    for j, v in enumerate(velocities):
        naive = (
            (naive + (scheduler.sigmas[j + 1] - scheduler.sigmas[j]).item() * v.float()).bfloat16().float()
        )
    assert not torch.equal(naive, latents)
