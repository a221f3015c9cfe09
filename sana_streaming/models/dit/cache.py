"""Streaming state of the DiT: preallocated buffers the forward writes by index.

Per block: the FFN temporal-conv tail (the left context of the chunk's first frame: the last frame of a
saved chunk's pre-conv activation); per GDN block the forward scan's fp32 state; per softmax block a
post-RoPE K/V window. All softmax blocks share one window layout: retained chunks are packed at the
front of the buffer, oldest first, and every forward writes the current chunk's K/V right after them,
so attention reads one contiguous prefix.

Which chunk the tail comes from depends on the block kind, as in the release: a GDN block's tail is
the previous chunk's (written by its save pass), a softmax block's the newest chunk the window keeps,
zeros if none. A softmax block therefore keeps one tail per window segment, moved with its K/V, and
`retain` restores the newest kept one (with `num_cached_blocks` 1 and the sink, that is chunk 0's).

The *policy* (which chunks stay in the window; the sink) belongs to the sampler, which calls
`commit_chunk` after a save pass and `retain` to evict. Nothing here allocates per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sana_streaming.config import DiTConfig
from sana_streaming.numerics import compute_dtype
from sana_streaming.ops import GDNState


@dataclass
class KVWindow:
    """Post-RoPE keys and values of one softmax block: (B, heads, capacity_tokens, head_dim) each."""

    key: Tensor
    value: Tensor


@dataclass
class BlockState:
    """Everything one block carries from chunk to chunk."""

    ffn_tail: Tensor  # (B, S, C): the FFN's left temporal context; zeros before the first save
    gdn: GDNState | None = None  # GDN blocks
    window: KVWindow | None = None  # softmax blocks
    segment_tails: Tensor | None = None  # softmax blocks: (slots, B, S, C), each segment's FFN tail


@dataclass(frozen=True)
class WindowSegment:
    """A chunk's K/V inside the window buffer."""

    chunk: int
    start: int  # token offset
    length: int  # tokens


@dataclass
class StreamingState:
    """The state of all blocks plus the shared window layout."""

    blocks: list[BlockState]
    tokens_per_frame: int
    capacity_tokens: int
    segments: list[WindowSegment] = field(default_factory=list)

    @classmethod
    def allocate(
        cls,
        config: DiTConfig,
        *,
        batch: int,
        height: int,
        width: int,
        window_frames: int,
        window_chunks: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> StreamingState:
        """Buffers for latent frames of `height`×`width` and a softmax window of `window_frames`
        frames, counting the current chunk (sink + cached chunks + the largest chunk).

        `window_chunks` bounds the segments the window holds at once, the committing chunk included
        (one FFN tail slot per segment and softmax block); by default `window_frames`, since every
        chunk holds at least one frame."""
        tokens = height * width
        capacity = window_frames * tokens
        slots = window_frames if window_chunks is None else window_chunks
        heads, head_dim, C = config.linear_heads, config.linear_head_dim, config.hidden_size
        blocks = []
        for index in range(config.depth):
            tail = torch.zeros(batch, tokens, C, device=device, dtype=dtype)
            if index in config.softmax_layer_indices:
                shape = (batch, heads, capacity, head_dim)
                window = KVWindow(
                    key=torch.zeros(shape, device=device, dtype=dtype),
                    value=torch.zeros(shape, device=device, dtype=dtype),
                )
                tails = torch.zeros(slots, batch, tokens, C, device=device, dtype=dtype)
                blocks.append(BlockState(ffn_tail=tail, window=window, segment_tails=tails))
            else:
                gdn = GDNState.zeros(
                    batch, heads, head_dim, device, dtype=compute_dtype(dtype)
                )  # fp32 for bf16
                blocks.append(BlockState(ffn_tail=tail, gdn=gdn))
        return cls(blocks=blocks, tokens_per_frame=tokens, capacity_tokens=capacity)

    @property
    def cached_tokens(self) -> int:
        """Tokens of retained chunks at the front of the window; the current chunk goes after them."""
        return sum(s.length for s in self.segments)

    def check_fits(self, chunk_tokens: int) -> None:
        if self.cached_tokens + chunk_tokens > self.capacity_tokens:
            raise ValueError(
                f"softmax window overflow: {self.cached_tokens} cached + {chunk_tokens} current tokens "
                f"> capacity {self.capacity_tokens}"
            )

    def commit_chunk(self, chunk: int, frames: int) -> None:
        """After a save pass: the K/V the pass wrote after the cached tokens become a retained segment,
        and each softmax block's FFN tail (the chunk's last frame) that segment's tail."""
        length = frames * self.tokens_per_frame
        self.check_fits(length)
        index = len(self.segments)
        tails = [block for block in self.blocks if block.segment_tails is not None]
        if tails and index >= tails[0].segment_tails.shape[0]:
            raise ValueError(f"softmax window overflow: more than {index} chunks")
        for block in tails:
            block.segment_tails[index].copy_(block.ffn_tail)
        self.segments.append(WindowSegment(chunk=chunk, start=self.cached_tokens, length=length))

    def retain(self, chunks: list[int]) -> None:
        """Keep only the segments of `chunks` (in their current order), packed at the front; each
        softmax block's FFN tail becomes the newest kept segment's (zeros if none is kept)."""
        kept = [(i, s) for i, s in enumerate(self.segments) if s.chunk in chunks]
        offset = 0
        packed = []
        for slot, (index, segment) in enumerate(kept):
            self._move_segment(segment, offset, index, slot)
            packed.append(WindowSegment(segment.chunk, offset, segment.length))
            offset += segment.length
        self.segments = packed
        self._restore_softmax_tails()

    def _move_segment(self, segment: WindowSegment, offset: int, index: int, slot: int) -> None:
        """Move a kept segment's K/V to token `offset` and its FFN tails from slot `index` to `slot`."""
        for block in self.blocks:
            if block.window is not None and segment.start != offset:
                for buf in (block.window.key, block.window.value):
                    _move_tokens(buf, segment.start, offset, segment.length)
            if block.segment_tails is not None and index != slot:
                block.segment_tails[slot].copy_(block.segment_tails[index])

    def _restore_softmax_tails(self) -> None:
        """Each softmax block's FFN left context: the newest retained segment's tail, or zeros."""
        for block in self.blocks:
            if block.segment_tails is None:
                continue
            if self.segments:
                block.ffn_tail.copy_(block.segment_tails[len(self.segments) - 1])
            else:
                block.ffn_tail.zero_()

    def nbytes(self) -> int:
        """Bytes held by every buffer of the state."""
        total = 0
        for block in self.blocks:
            total += block.ffn_tail.nbytes
            if block.gdn is not None:
                total += block.gdn.nbytes()
            if block.window is not None:
                total += block.window.key.nbytes + block.window.value.nbytes
            if block.segment_tails is not None:
                total += block.segment_tails.nbytes
        return total


def _move_tokens(buf: Tensor, src: int, dst: int, length: int) -> None:
    """Move `length` tokens left from `src` to `dst` (dst < src) along dim 2, in place.

    Moves in pieces no longer than the gap so source and destination never overlap."""
    step = src - dst
    for lo in range(0, length, step):
        n = min(step, length - lo)
        buf[:, :, dst + lo : dst + lo + n].copy_(buf[:, :, src + lo : src + lo + n])
