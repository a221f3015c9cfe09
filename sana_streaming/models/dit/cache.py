"""Streaming state of the DiT: preallocated buffers the forward writes by index.

Per block: the FFN temporal-conv tail (last frame of the previous chunk's pre-conv activation); per GDN
block the forward scan's fp32 state; per softmax block a post-RoPE K/V window. All softmax blocks share
one window layout: retained chunks are packed at the front of the buffer, oldest first, and every
forward writes the current chunk's K/V right after them, so attention reads one contiguous prefix.

The *policy* (which chunks stay in the window; the sink) belongs to the sampler, which calls
`commit_chunk` after a save pass and `retain` to evict. Nothing here allocates per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sana_streaming.config import DiTConfig
from sana_streaming.ops import GDNState
from sana_streaming.ops.gdn_reference import compute_dtype


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
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
    ) -> StreamingState:
        """Buffers for latent frames of `height`×`width` and a softmax window of `window_frames`
        frames, counting the current chunk (sink + cached chunks + the largest chunk)."""
        tokens = height * width
        capacity = window_frames * tokens
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
                blocks.append(BlockState(ffn_tail=tail, window=window))
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
        """After a save pass: the K/V the pass wrote after the cached tokens become a retained segment."""
        length = frames * self.tokens_per_frame
        self.check_fits(length)
        self.segments.append(WindowSegment(chunk=chunk, start=self.cached_tokens, length=length))

    def retain(self, chunks: list[int]) -> None:
        """Keep only the segments of `chunks` (in their current order), packed at the front."""
        kept = [s for s in self.segments if s.chunk in chunks]
        offset = 0
        packed = []
        for segment in kept:
            if segment.start != offset:
                for block in self.blocks:
                    if block.window is not None:
                        for buf in (block.window.key, block.window.value):
                            _move_tokens(buf, segment.start, offset, segment.length)
            packed.append(WindowSegment(segment.chunk, offset, segment.length))
            offset += segment.length
        self.segments = packed

    def nbytes(self) -> int:
        """Bytes held by every buffer of the state."""
        total = 0
        for block in self.blocks:
            total += block.ffn_tail.nbytes
            if block.gdn is not None:
                total += block.gdn.nbytes()
            if block.window is not None:
                total += block.window.key.nbytes + block.window.value.nbytes
        return total


def _move_tokens(buf: Tensor, src: int, dst: int, length: int) -> None:
    """Move `length` tokens left from `src` to `dst` (dst < src) along dim 2, in place.

    Moves in pieces no longer than the gap so source and destination never overlap."""
    step = src - dst
    for lo in range(0, length, step):
        n = min(step, length - lo)
        buf[:, :, dst + lo : dst + lo + n].copy_(buf[:, :, src + lo : src + lo + n])
