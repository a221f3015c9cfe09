"""The streaming sampler against the release's run (golden `dit_streaming`) and docs/sampling.md."""

import json
from dataclasses import replace

import pytest
import torch
from golden import GOLDEN, golden, golden_dit_config, golden_state_dict, rel_err

from sana_streaming import TextConditioning, build_dit
from sana_streaming.errors import SourceTooShortError
from sana_streaming.models.dit import StreamingState
from sana_streaming.sampling import (
    ChunkStreamer,
    LatentRecord,
    SourceChunk,
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
    """The release's window (docs/sampling.md): visible chunks and window sizes, chunks 0–5 by default."""
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
    conditions = TextConditioning(g["input.y"], g["input.mask"])
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

    def prepare_text(self, conditioning):
        return None

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
    sampler = StreamingSampler(model, TextConditioning(torch.zeros(1), torch.zeros(1)), state=None)
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


def ffn_left_contexts(policy: WindowPolicy, boundaries: list[int]):
    """Run the sampler on the tiny model; record, per forward, the left context each block's FFN read,
    and per save pass each block's last-frame pre-conv activation, recomputed from the FFN's input."""
    from sana_streaming import load_config
    from sana_streaming.models.dit import randomize_dit_

    model = randomize_dit_(build_dit(load_config("tiny_random"), dtype=torch.float32), seed=3)
    H, W = 2, 3
    gen = torch.Generator().manual_seed(4)
    T = boundaries[-1]
    noise, source = (torch.randn(1, 16, T, H, W, generator=gen) for _ in range(2))
    conditions = TextConditioning(torch.randn(1, 1, 16, 64, generator=gen),
                                     torch.ones(1, 16))  # fmt: skip
    state = StreamingState.allocate(
        model.config, batch=1, height=H, width=W, window_frames=policy.window_frames(boundaries),
        window_chunks=policy.window_chunks(boundaries), dtype=torch.float32,
    )  # fmt: skip
    chunk = [0]
    contexts = []  # (chunk, block, left context)
    last_frames: dict[tuple[int, int], torch.Tensor] = {}  # (chunk, block) → (1, S, C)
    real_forward = model.forward

    def model_spy(x, t, *args, **kwargs):
        chunk[0] = boundaries.index(kwargs["frame_offset"])
        return real_forward(x, t, *args, **kwargs)

    def ffn_spy(b, mlp):
        real = mlp.forward

        def spy(m, frames, height, width, tail=None, save=False, **kwargs):
            contexts.append((chunk[0], b, tail.clone()))
            if save:
                last_frames[chunk[0], b] = mlp.spatial(m, frames, height, width)[:, -1]
            return real(m, frames, height, width, tail=tail, save=save, **kwargs)

        return spy

    model.forward = model_spy
    for b, block in enumerate(model.blocks):
        block.mlp.forward = ffn_spy(b, block.mlp)
    sampler = StreamingSampler(model, conditions, state, policy=policy)
    for c in range(len(boundaries) - 1):
        s, e = boundaries[c], boundaries[c + 1]
        sampler.denoise_chunk(noise[:, :, s:e], source[:, :, s:e], s)
    return model, contexts, last_frames


@pytest.mark.parametrize(
    ("cached", "sink", "softmax_sources"),
    [
        (1, True, [None, 0, 0, 0, 0]),  # the window holds only the sink chunk 0
        (2, True, [None, 0, 1, 2, 3]),  # sink + chunk c−1: the newest kept is c−1
        (0, True, [None, 0, 1, 2, 3]),  # full history
        (1, False, [None, 0, 1, 2, 3]),
        (3, True, [None, 0, 1, 2, 3]),
    ],
)
def test_ffn_left_context_per_block_kind(cached, sink, softmax_sources):
    """As in the release: a softmax block's FFN left context is the last pre-conv frame of the newest
    chunk its window keeps (zeros if none), a GDN block's that of chunk c−1 (zeros for chunk 0), in
    every forward of chunk c."""
    policy = WindowPolicy(num_cached_blocks=cached, sink=sink)
    boundaries = chunk_boundaries(16)  # 5 chunks: 0, 4, 7, 10, 13, 16
    model, contexts, last_frames = ffn_left_contexts(policy, boundaries)
    visible = [policy.visible(c) for c in range(len(boundaries) - 1)]
    assert [max(v, default=None) for v in visible] == softmax_sources
    assert len(contexts) == 24 * model.config.depth
    for c, b, context in contexts:
        if b in model.config.softmax_layer_indices:
            source = softmax_sources[c]
        else:
            source = c - 1 if c > 0 else None
        if source is None:
            assert torch.count_nonzero(context) == 0, (c, b)
        else:
            torch.testing.assert_close(context, last_frames[source, b], rtol=0, atol=0, msg=f"{c}, {b}")


class EchoSampler:
    """Stands in for `StreamingSampler` in `ChunkStreamer`: records each call, returns noise + 2·source."""

    def __init__(self):
        self.calls = []

    def denoise_chunk(self, noise, source, start):
        self.calls.append((noise, source, start))
        return noise.float() + 2 * source.float()

    def nbytes(self):
        return 1000


def latents(frames, seed):
    return torch.randn(1, 16, frames, 2, 3, generator=torch.Generator().manual_seed(seed))


def push_in_pieces(streamer, source, pieces):
    """Push `source` (1, C, T, h, w) in pieces of the given frame counts; [(frames pushed, chunks out)]."""
    out, start = [], 0
    for n in pieces:
        done = streamer.push(SourceChunk(source[:, :, start : start + n], start))
        start += n
        out.append((start, [(c.start, c.latents.shape[2], c.index) for c in done]))
    return out


def test_chunk_streamer_cuts_a_known_length_at_the_boundaries_and_slices_the_noise():
    """11 latent frames pushed 2 at a time: chunks [0, 5), [5, 8), [8, 11) as soon as each is complete,
    each denoised from its slice of the whole-latent noise and of the source."""
    source, noise = latents(11, 1), latents(11, 2)
    sampler, record = EchoSampler(), LatentRecord()
    streamer = ChunkStreamer(sampler, latent_frames=11, dtype=torch.bfloat16, noise=noise, record=record)
    assert streamer.total_chunks == 3 and streamer.noise_bytes == noise.nbytes
    out = push_in_pieces(streamer, source, [2, 2, 2, 2, 2, 1])
    assert out == [(2, []), (4, []), (6, [(0, 5, 0)]), (8, [(5, 3, 1)]), (10, []), (11, [(8, 3, 2)])]
    assert streamer.flush() == [] and streamer.pending.shape[2] == 0
    for (n, s, start), (a, b) in zip(sampler.calls, [(0, 5), (5, 8), (8, 11)], strict=True):
        assert start == a and torch.equal(n, noise[:, :, a:b])
        assert s.dtype == torch.bfloat16 and torch.equal(s, source[:, :, a:b].bfloat16())
    expected = noise.float() + 2 * source.bfloat16().float()
    assert torch.equal(record.stacked()[2:3], expected)
    assert torch.equal(record.stacked()[0:1], noise)


def test_chunk_streamer_of_unknown_length_draws_noise_per_chunk_and_ends_at_flush():
    """8 latent frames in pieces of 1, 4, 3: chunks of 3 as they arrive, the last 2 at `flush`; each
    chunk's noise is the next draw of the seeded generator."""
    source = latents(8, 3)
    sampler = EchoSampler()
    streamer = ChunkStreamer(sampler, latent_frames=None, dtype=torch.float32,
                             generator=torch.Generator().manual_seed(7))  # fmt: skip
    assert streamer.total_chunks is None and streamer.noise_bytes == 0
    out = push_in_pieces(streamer, source, [1, 4, 3])
    assert out == [(1, []), (5, [(0, 3, 0)]), (8, [(3, 3, 1)])]
    assert streamer.nbytes() == 1000 + source[:, :, 6:].nbytes  # the sampler's, and 2 pending frames
    last = streamer.flush()
    assert [(c.start, c.latents.shape[2], c.index) for c in last] == [(6, 2, 2)]
    assert streamer.nbytes() == 1000
    gen = torch.Generator().manual_seed(7)
    for (noise, _, _), size in zip(sampler.calls, (3, 3, 2), strict=True):
        assert torch.equal(noise, torch.randn(1, 16, size, 2, 3, generator=gen))


def test_chunk_streamer_errors():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(SourceTooShortError, match="more than 3 latent frames"):
        ChunkStreamer(EchoSampler(), latent_frames=3, dtype=torch.float32, generator=gen)
    with pytest.raises(ValueError, match="generator"):
        ChunkStreamer(EchoSampler(), latent_frames=None, dtype=torch.float32)
    streamer = ChunkStreamer(EchoSampler(), latent_frames=None, dtype=torch.float32, generator=gen)
    with pytest.raises(ValueError, match="from frame 0, got 2"):
        streamer.push(SourceChunk(latents(2, 0), 2))
    streamer.push(SourceChunk(latents(2, 0), 0))
    with pytest.raises(SourceTooShortError, match="too short to stream \\(2 latent frames\\)"):
        streamer.flush()
    known = ChunkStreamer(EchoSampler(), latent_frames=11, dtype=torch.float32, generator=gen)
    assert len(known.push(SourceChunk(latents(9, 0), 0))) == 2
    with pytest.raises(SourceTooShortError, match="gave 8 of 11 latent frames"):
        known.flush()
    with pytest.raises(ValueError, match="12 latent frames pushed into a stream of 11"):
        known.push(SourceChunk(latents(3, 0), 9))


def test_golden_streaming_sample_through_the_chunk_streamer():
    """The release's run (golden `dit_streaming`, 13 latent frames) with the source pushed one latent
    frame at a time through `ChunkStreamer.open`: the same latents as the release."""
    from sana_streaming.config import MODE_PRESETS

    g = golden("dit_streaming")
    model = build_dit(golden_dit_config("streaming"), dtype=torch.float32)
    model.load_state_dict(golden_state_dict("streaming"))
    settings = replace(MODE_PRESETS["long_streaming"].sampler(), flow_shift=8.0)
    conditions = TextConditioning(g["input.y"], g["input.mask"])
    streamer = ChunkStreamer.open(
        model, conditions, settings, latent_hw=(4, 6), latent_frames=13, device=torch.device("cpu"),
        dtype=torch.float32, noise=g["input.noise"],
    )  # fmt: skip
    chunks = [c for t in range(13) for c in streamer.push(SourceChunk(g["input.source"][:, :, t : t + 1], t))]
    assert [c.start for c in chunks] == [0, 4, 7, 10] and streamer.flush() == []
    assert rel_err(torch.cat([c.latents for c in chunks], dim=2), g["output.latents"]) <= 1e-3
