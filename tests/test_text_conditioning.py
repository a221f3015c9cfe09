"""The text side of the DiT: a prepared `TextCache` gives the same forward as the raw caption, bit for
bit, and a stream (or a bidirectional sample) computes the caption's K/V once, not every forward."""

from collections import Counter
from dataclasses import replace

import pytest
import torch

from sana_streaming import PromptPair, TextCache, TextConditioning, build_dit, load_config
from sana_streaming.config import MODE_PRESETS
from sana_streaming.debug_files import SourceLatents
from sana_streaming.models.dit import randomize_dit_
from sana_streaming.options import EditOptions
from sana_streaming.pipeline import SanaStreamingPipeline
from sana_streaming.sampling import ChunkStreamer, SourceChunk, StreamingSampler

CONFIG = load_config("tiny_random").dit
L, C_TXT = 16, 64


def random_model(variant: str, dtype=torch.float32):
    return randomize_dit_(build_dit(replace(CONFIG, variant=variant), dtype=dtype), seed=11)


def random_conditioning(gen: torch.Generator, batch: int = 1) -> TextConditioning:
    """Random states; each row's mask keeps a different number of tokens (padding exercised)."""
    mask = torch.zeros(batch, L, dtype=torch.int64)
    for row in range(batch):
        mask[row, : 5 + 3 * row] = 1
    return TextConditioning(torch.randn(batch, 1, L, C_TXT, generator=gen), mask)


def random_latents(gen: torch.Generator, batch: int, frames: int = 2) -> torch.Tensor:
    return torch.randn(batch, 16, frames, 2, 3, generator=gen)


def count_calls(model) -> Counter:
    """Calls per module of the text side (`kv_linear`, `y_embedder`) and of the forwards (`q_linear`)."""
    calls: Counter = Counter()

    def hook(name):
        return lambda module, args, out: calls.update([name])

    model.y_embedder.register_forward_hook(hook("y_embedder"))
    for i, block in enumerate(model.blocks):
        block.cross_attn.kv_linear.register_forward_hook(hook(f"kv{i}"))
        block.cross_attn.q_linear.register_forward_hook(hook(f"q{i}"))
    return calls


@pytest.mark.parametrize("variant", ["streaming", "bidirectional"])
@pytest.mark.parametrize("batch", [1, 2])
def test_prepared_text_equals_the_raw_caption(variant, batch):
    """A forward with `prepare_text`'s cache equals the forward that projects the caption itself,
    for a batch-1 conditioning broadcast over the batch and for a CFG-style batch of two prompts."""
    model = random_model(variant)
    gen = torch.Generator().manual_seed(batch)
    x, source = random_latents(gen, batch), random_latents(gen, 1)
    t = torch.tensor([700.0, 300.0][:batch])
    for conditioning in (random_conditioning(gen, 1), random_conditioning(gen, batch)):
        raw = model(x, t, conditioning.embeds, conditioning.mask, source)
        cache = model.prepare_text(conditioning, batch=batch)
        assert isinstance(cache, TextCache) and cache.batch == batch
        assert torch.equal(model(x, t, cache, None, source), raw)


def test_prepared_text_in_bf16_equals_the_raw_caption():
    model = random_model("streaming", torch.bfloat16)
    gen = torch.Generator().manual_seed(5)
    conditioning = random_conditioning(gen)
    x = random_latents(gen, 1)
    raw = model(x, torch.tensor([500.0]), conditioning.embeds, conditioning.mask, x)
    assert torch.equal(model(x, torch.tensor([500.0]), model.prepare_text(conditioning), None, x), raw)


def test_forward_refuses_a_mismatched_text_cache():
    model = random_model("streaming")
    gen = torch.Generator().manual_seed(6)
    conditioning = random_conditioning(gen)
    x = random_latents(gen, 2)
    cache = model.prepare_text(conditioning)  # batch 1
    with pytest.raises(ValueError, match="TextCache of batch 1 for a forward of batch 2"):
        model(x, torch.tensor([1.0]), cache, None, x)
    with pytest.raises(ValueError, match="carries its mask"):
        model(x[:1], torch.tensor([1.0]), cache, conditioning.mask, x[:1])
    with pytest.raises(ValueError, match="needs its mask"):
        model(x[:1], torch.tensor([1.0]), conditioning.embeds, None, x[:1])


def test_text_cache_nbytes_counts_the_kv_storage():
    """The bias, each block's k-normed keys and the K/V projection's whole output (the values' base)."""
    model = random_model("streaming")
    cache = model.prepare_text(random_conditioning(torch.Generator().manual_seed(7)))
    C = CONFIG.hidden_size
    assert cache.nbytes() == 4 * (L + CONFIG.depth * (L * C + 2 * L * C))


class RawCaptionModel:
    """The DiT driven as before the text cache: every forward gets the raw caption and mask."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def prepare_text(self, conditioning):
        return conditioning

    def __call__(self, x, t, conditioning, mask, source, **kwargs):
        assert mask is None
        return self.model(x, t, conditioning.embeds, conditioning.mask, source, **kwargs)


def stream_three_chunks(model, conditioning, source, noise):
    """A 9-latent-frame stream (chunks of 3): 3 × 4 Euler forwards and 2 deferred clean passes."""
    settings = replace(MODE_PRESETS["long_streaming"].sampler(), flow_shift=8.0)
    streamer = ChunkStreamer.open(
        model, conditioning, settings, latent_hw=(2, 3), latent_frames=9, device=torch.device("cpu"),
        dtype=torch.float32, noise=noise,
    )  # fmt: skip
    chunks = streamer.push(SourceChunk(source, 0)) + streamer.flush()
    assert [c.start for c in chunks] == [0, 3, 6]
    return torch.cat([c.latents for c in chunks], dim=2), streamer.sampler


def test_a_stream_computes_the_caption_kv_once_per_block():
    """Before: every one of the 14 forwards of a 3-chunk stream projected the caption again (14 calls of
    each block's `kv_linear`); now the stream prepares it once, with the same latents bit for bit."""
    model = random_model("streaming")
    gen = torch.Generator().manual_seed(8)
    conditioning = random_conditioning(gen)
    source, noise = random_latents(gen, 1, 9), random_latents(gen, 1, 9)
    expected, _ = stream_three_chunks(RawCaptionModel(model), conditioning, source, noise)

    calls = count_calls(model)
    latents, sampler = stream_three_chunks(model, conditioning, source, noise)
    assert torch.equal(latents, expected)
    depth = len(model.blocks)
    assert calls == Counter({"y_embedder": 1, **{f"kv{i}": 1 for i in range(depth)},
                             **{f"q{i}": 14 for i in range(depth)}})  # fmt: skip
    deferred = 2 * source[:, :, 6:].nbytes  # the last chunk's latents and source, never cleaned
    assert sampler.nbytes() == sampler.state.nbytes() + deferred + sampler.text.nbytes()


def test_streaming_sampler_prepares_its_prompt_on_creation():
    model = random_model("streaming")
    calls = count_calls(model)
    StreamingSampler(model, random_conditioning(torch.Generator().manual_seed(9)), state=None)
    assert calls["y_embedder"] == 1 and calls["kv0"] == 1 and calls["q0"] == 0


def test_bidirectional_sample_computes_the_cfg_batch_kv_once():
    """3 DPM-Solver steps with guidance: the [uncond, cond] caption K/V once per block, of batch 2."""
    pipe = SanaStreamingPipeline.from_config("tiny_random", "bidirectional_short", random_weights=True,
                                             device="cpu")  # fmt: skip
    gen = torch.Generator().manual_seed(10)
    prompts = PromptPair(positive=random_conditioning(gen), negative=random_conditioning(gen))
    latents = SourceLatents(noise=random_latents(gen, 1, 3), source=random_latents(gen, 1, 3))
    batches = []
    pipe.dit.blocks[0].cross_attn.kv_linear.register_forward_hook(
        lambda m, a, out: batches.append(a[0].shape[0])
    )
    calls = count_calls(pipe.dit)
    options = EditOptions(prompt="unused", height=64, width=96, steps=3)
    frames = torch.cat(list(pipe.stream(latents, options, prompts=prompts)), dim=1)
    assert frames.shape[1] == 17 and batches == [2]
    assert calls["y_embedder"] == 1 and calls["kv0"] == 1 and calls["q0"] == 3


def test_prompt_pair_guidance_batch_and_to():
    gen = torch.Generator().manual_seed(12)
    pair = PromptPair(positive=random_conditioning(gen), negative=random_conditioning(gen))
    batch = pair.guidance_batch()  # [uncond, cond]
    assert torch.equal(batch.embeds, torch.cat([pair.negative.embeds, pair.positive.embeds]))
    assert torch.equal(batch.mask, torch.cat([pair.negative.mask, pair.positive.mask]))
    moved = pair.to("meta")
    assert moved.positive.embeds.is_meta and moved.negative.mask.is_meta
    assert pair.positive.embeds.device.type == "cpu"  # frozen: a new pair, the old one untouched
