"""CUDA-graph replay and fused kernels of the streaming forwards: equal to eager over a stream, and the
CPU fallback."""

import logging
from dataclasses import replace

import pytest
import torch

from sana_streaming import build_dit, load_config
from sana_streaming.conditioning import TextConditioning
from sana_streaming.config import MODE_PRESETS
from sana_streaming.models.dit import randomize_dit_
from sana_streaming.models.dit.graphs import resolve_compile
from sana_streaming.sampling.streaming import ChunkStreamer, SourceChunk

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_default_compile_mode_follows_the_device(caplog):
    assert resolve_compile(None, torch.device("cpu")) == "none"
    assert resolve_compile(None, torch.device("cuda")) == "graph"
    assert resolve_compile("max", torch.device("cuda")) == "max"
    assert resolve_compile("none", torch.device("cuda")) == "none"
    assert not caplog.records  # defaults never warn


@pytest.mark.parametrize("mode", ["graph", "max"])
def test_graphs_asked_for_on_cpu_fall_back_with_one_notice(caplog, mode):
    with caplog.at_level(logging.WARNING):
        assert resolve_compile(mode, torch.device("cpu")) == "none"
    assert len(caplog.records) == 1 and "needs a CUDA device" in caplog.records[0].getMessage()


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        resolve_compile("fast", torch.device("cpu"))


def stream(model, config, prompt, source, noise, compile):
    """Push 3 latent frames at a time; (chunk latents, the stream's forward object)."""
    settings = replace(MODE_PRESETS["long_streaming"].sampler(config.vae), flow_shift=3.0)
    streamer = ChunkStreamer.open(
        model, prompt, settings, latent_hw=source.shape[-2:], latent_frames=source.shape[2],
        device=source.device, dtype=source.dtype, noise=noise, compile=compile,
    )  # fmt: skip
    chunks = []
    for start in range(0, source.shape[2], 3):
        chunks += streamer.push(SourceChunk(source[:, :, start : start + 3], start))
    chunks += streamer.flush()
    return [c.latents for c in chunks], streamer.sampler.forward


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("mode", ["graph", "max"])
def test_graph_replay_equals_eager_over_a_stream(mode):
    """A depth-4 model at the released width, random weights, 6 chunks (the first of 5 latent frames)
    at 22×40 in bf16: every chunk's latents from graph replays (with fused kernels for "max") equal
    the eager stream's within bf16 rounding, and the steady chunks really replay."""
    base = load_config("sana_streaming_2b_720p")
    dit = replace(base.dit, depth=4, softmax_layer_indices=(1, 3))
    model = randomize_dit_(build_dit(dit, device="cuda", dtype=torch.bfloat16), seed=0)
    gen = torch.Generator("cuda").manual_seed(0)
    frames = 5 + 3 * 5
    source = torch.randn(1, 128, frames, 22, 40, generator=gen, device="cuda", dtype=torch.bfloat16)
    noise = torch.randn(1, 128, frames, 22, 40, generator=gen, device="cuda")
    embeds = torch.randn(1, 1, 300, dit.caption_channels, generator=gen, device="cuda")
    mask = torch.zeros(1, 300, dtype=torch.long, device="cuda")
    mask[:, :33] = 1
    prompt = TextConditioning(embeds.bfloat16(), mask)
    with torch.inference_mode():
        eager, _ = stream(model, base, prompt, source, noise, "none")
        graphed, forward = stream(model, base, prompt, source, noise, mode)
    assert len(eager) == len(graphed) == 6
    assert forward.replays >= 12 and len(forward.graphs) >= 3
    assert forward.fused == (mode == "max")
    for index, (got, want) in enumerate(zip(graphed, eager, strict=True)):
        err = ((got - want).norm() / want.norm()).item()
        assert err <= 1e-2, (index, err)
