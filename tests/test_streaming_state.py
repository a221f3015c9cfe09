"""Streaming state: carried GDN state, the post-RoPE K/V window and buffer reuse."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sana_streaming import build_dit, load_config
from sana_streaming.models.dit import StreamingState, randomize_dit_
from sana_streaming.models.dit.cache import BlockState, KVWindow
from sana_streaming.models.dit.rope import apply_rope, rope_tables
from sana_streaming.models.dit.softmax_attention import SoftmaxAttention
from sana_streaming.ops.gdn_reference import GDNFeatures, gdn_features, gdn_scan

H, W = 2, 3
S = H * W
CHUNKS = [0, 4, 7, 10, 13]


def tiny_model():
    model = build_dit(load_config("tiny_random"), dtype=torch.float64)
    return randomize_dit_(model, seed=11)


def test_carried_gdn_state_equals_one_scan_over_all_clean_passes(monkeypatch):
    """After each cache pass, every GDN block's state equals one forward scan, from zero, over the
    inputs its clean passes received in all chunks so far."""
    import sana_streaming.models.dit.gdn as gdn_module

    model = tiny_model()
    recorded: dict[int, list[GDNFeatures]] = {}
    real_core = gdn_module.gdn_core

    def recording_core(inputs, **kwargs):
        if kwargs["update_state"]:
            recorded.setdefault(id(kwargs["state"]), []).append(gdn_features(inputs))
        return real_core(inputs, **kwargs)

    monkeypatch.setattr(gdn_module, "gdn_core", recording_core)
    gen = torch.Generator().manual_seed(0)
    T = CHUNKS[-1]
    source = torch.randn(1, 16, T, H, W, generator=gen, dtype=torch.float64)
    caption = torch.randn(1, 1, 16, 64, generator=gen, dtype=torch.float64)
    mask = torch.ones(1, 16)
    state = StreamingState.allocate(model.config, batch=1, height=H, width=W, window_frames=10,
                                    dtype=torch.float64)  # fmt: skip
    for c in range(3):
        s, e = CHUNKS[c], CHUNKS[c + 1]
        clean = torch.randn(1, 16, e - s, H, W, generator=gen, dtype=torch.float64)
        model(clean, torch.zeros(1), caption, mask, source[:, :, s:e], state=state, frame_offset=s, save=True)
        state.commit_chunk(c, e - s)
        state.retain([0, c])
        for block in state.blocks:
            if block.gdn is None:
                continue
            feats = recorded[id(block.gdn)]
            assert len(feats) == c + 1
            joined = GDNFeatures(**{n: torch.cat([getattr(f, n) for f in feats], dim=1)
                                    for n in GDNFeatures.__dataclass_fields__})  # fmt: skip
            expected = gdn_scan(joined).final_state
            torch.testing.assert_close(block.gdn.kv, expected.kv.double(), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(block.gdn.z, expected.z.double(), rtol=1e-9, atol=1e-12)


def test_window_attention_equals_explicit_concatenation_with_absolute_positions():
    """Sink chunk 0 + previous chunk + current chunk, keys rotated at their own absolute frames."""
    torch.manual_seed(1)
    layer = SoftmaxAttention(224, 112, qk_taps=3).double()
    randomize_dit_(layer, seed=5)
    inputs = [torch.randn(1, (CHUNKS[c + 1] - CHUNKS[c]) * S, 224, dtype=torch.float64) for c in range(4)]
    shape = (1, 2, 10 * S, 112)
    window = KVWindow(
        key=torch.zeros(shape, dtype=torch.float64), value=torch.zeros(shape, dtype=torch.float64)
    )
    state = StreamingState(blocks=[], tokens_per_frame=S, capacity_tokens=10 * S)

    def rotated_kv(c):
        u = inputs[c]
        rope = rope_tables(CHUNKS[c], CHUNKS[c + 1] - CHUNKS[c], H, W, 112, dtype=torch.float64)
        k = apply_rope(layer.k_norm(layer.k(u)).view(1, -1, 2, 112), rope).double()
        v = layer.v(u).view(1, -1, 2, 112)
        return k, v

    for c in range(4):
        frames = CHUNKS[c + 1] - CHUNKS[c]
        rope = rope_tables(CHUNKS[c], frames, H, W, 112, dtype=torch.float64)
        ours = layer(inputs[c], rope, window=window, cached_tokens=state.cached_tokens)
        visible = [seg.chunk for seg in state.segments] + [c]
        keys, values = zip(*(rotated_kv(i) for i in visible), strict=True)
        k = torch.cat(keys, dim=1).transpose(1, 2)  # (1, heads, L, D)
        v = torch.cat(values, dim=1).transpose(1, 2)
        q = apply_rope(layer.q_norm(layer.q(inputs[c])).view(1, -1, 2, 112), rope).double().transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / 112**0.5, dim=-1)
        o = (weights @ v).transpose(1, 2).reshape(1, -1, 224)
        expected = layer.proj(o * F.silu(layer.output_gate(inputs[c])))
        torch.testing.assert_close(ours, expected)
        # the sampler's policy: commit the chunk, keep the sink and the newest chunk
        window_start = state.cached_tokens
        state.blocks = [BlockState(ffn_tail=torch.zeros(1, S, 224, dtype=torch.float64), window=window)]
        state.commit_chunk(c, frames)
        assert state.segments[-1].start == window_start
        state.retain([0, c])
        state.blocks = []
    assert [s.chunk for s in state.segments] == [0, 3]


def test_retain_compacts_segments_in_place():
    config = load_config("tiny_random").dit
    state = StreamingState.allocate(config, batch=1, height=1, width=2, window_frames=9, dtype=torch.float64)
    window = state.blocks[3].window
    ptr = window.key.data_ptr()
    for c, frames in enumerate([2, 3, 4]):
        start = state.cached_tokens
        window.key[:, :, start : start + 2 * frames] = c + 1
        state.commit_chunk(c, frames)
    state.retain([0, 2])
    assert [(s.chunk, s.start, s.length) for s in state.segments] == [(0, 0, 4), (2, 4, 8)]
    assert window.key[0, 0, :12, 0].tolist() == [1.0] * 4 + [3.0] * 8
    assert window.key.data_ptr() == ptr


def test_state_bytes_do_not_grow_and_overflow_is_refused():
    config = load_config("tiny_random").dit
    state = StreamingState.allocate(config, batch=1, height=H, width=W, window_frames=7, dtype=torch.float32)
    before = state.nbytes()
    state.commit_chunk(0, 4)
    state.retain([0])
    assert state.nbytes() == before
    try:
        state.commit_chunk(1, 4)
    except ValueError as exc:
        assert "overflow" in str(exc)
    else:
        raise AssertionError("window overflow was not detected")


def test_retain_restores_the_newest_kept_chunks_ffn_tail_for_softmax_blocks_only():
    """Save passes write every block's tail; after `retain`, a softmax block's tail is the newest kept
    chunk's (zeros when none is kept), a GDN block's stays the last saved chunk's; all in place."""
    config = load_config("tiny_random").dit
    state = StreamingState.allocate(config, batch=1, height=H, width=W, window_frames=9, window_chunks=3,
                                    dtype=torch.float64)  # fmt: skip
    pointers = [b.ffn_tail.data_ptr() for b in state.blocks]
    gen = torch.Generator().manual_seed(2)
    written = []  # per chunk, per block
    for c, keep in enumerate([[0], [0], [0, 2], [2, 3], []]):
        written.append([torch.randn(1, S, 224, generator=gen, dtype=torch.float64) for _ in state.blocks])
        for block, tail in zip(state.blocks, written[c], strict=True):
            block.ffn_tail.copy_(tail)  # what the save pass writes
        state.commit_chunk(c, 1)
        state.retain(keep)
        for b, block in enumerate(state.blocks):
            if block.window is None:
                assert torch.equal(block.ffn_tail, written[c][b])
            elif keep:
                assert torch.equal(block.ffn_tail, written[max(keep)][b]), (c, b)
            else:
                assert torch.count_nonzero(block.ffn_tail) == 0
    assert pointers == [b.ffn_tail.data_ptr() for b in state.blocks]


def test_window_chunks_bounds_the_tail_slots():
    config = load_config("tiny_random").dit
    state = StreamingState.allocate(config, batch=1, height=H, width=W, window_frames=9, window_chunks=2,
                                    dtype=torch.float32)  # fmt: skip
    state.commit_chunk(0, 1)
    state.commit_chunk(1, 1)
    with pytest.raises(ValueError, match="overflow: more than 2 chunks"):
        state.commit_chunk(2, 1)


def tensors_in(obj) -> list[torch.Tensor]:
    """Every tensor reachable through dataclass fields and lists."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in tensors_in(item)]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in tensors_in(getattr(obj, f.name))]
    return []


def test_nbytes_counts_every_buffer():
    config = load_config("tiny_random").dit
    for chunks in (None, 3):
        state = StreamingState.allocate(config, batch=2, height=H, width=W, window_frames=7,
                                        window_chunks=chunks, dtype=torch.float32)  # fmt: skip
        held = tensors_in(state)
        assert any(t.dim() == 4 and t.shape[0] == (chunks or 7) for t in held)  # the tail slots
        assert state.nbytes() == sum(t.nbytes for t in held)
