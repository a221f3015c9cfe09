"""Stateful temporal streams over the layers of diffusers' `AutoencoderKLLTX2Video`.

Each stream takes frames in time order (`push`), returns every output frame that is already final, and
at the end of the stream (`flush`) returns the rest. Frames travel as `[B, C, T, H, W]` tensors, or
`None` when a step has nothing to pass on. The streams call diffusers' own submodules (their `nn.Conv3d`,
norms, activations) with the loaded weights; only the temporal bookkeeping (padding, carried context,
frame grouping, residual alignment) is ours, because diffusers' modules see a whole clip at once.

Why the results equal a whole-clip pass: every temporal operation in the LTX-2 VAE is a 3-tap convolution
(padded with copies of the first and, if non-causal, the last frame), a per-frame operation, or a fixed
regrouping of frames (depth-to-space / space-to-depth with a first-frame prefix or trim). Carrying the
last `kernel - 1` padded input frames of each convolution, the unpaired frames of each temporal
downsampler and the trim flag of each upsampler reproduces exactly the sequence each layer sees in a
whole-clip pass. A non-causal convolution holds back its last input frame until the next one arrives (or
the stream ends), so a non-causal stack has a fixed look-ahead (`frames_out`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from diffusers.models.autoencoders.autoencoder_kl_ltx2 import (
    LTX2VideoCausalConv3d,
    LTX2VideoDownsampler3d,
    LTX2VideoResnetBlock3d,
    LTX2VideoUpsampler3d,
)
from einops import rearrange, reduce
from torch import Tensor

Frames = Tensor | None  # [B, C, T, H, W], or None for "no frames"


class Stream(Protocol):
    """A temporal stage: frames in, final frames out; `flush` ends the stream."""

    def push(self, x: Frames) -> Frames: ...

    def flush(self) -> Frames: ...

    def state_tensors(self) -> list[Tensor]: ...

    def frames_out(self, frames_in: int, ended: bool) -> int: ...


def cat_frames(*parts: Frames) -> Frames:
    """Concatenate along time, skipping `None`."""
    present = [p for p in parts if p is not None and p.shape[2] > 0]
    if not present:
        return None
    return present[0] if len(present) == 1 else torch.cat(present, dim=2)


def _keep(x: Tensor) -> Tensor:
    """A compact copy of a slice kept as state, so state does not pin the larger tensor it came from."""
    return x.clone(memory_format=torch.contiguous_format)


class FrameQueue:
    """Frames waiting for their partner on another path (the residual branch of a block)."""

    def __init__(self) -> None:
        self.frames: Frames = None

    def append(self, x: Frames) -> None:
        self.frames = cat_frames(self.frames, x)

    def pop(self, n: int) -> Tensor:
        assert self.frames is not None and self.frames.shape[2] >= n, "residual queue out of step"
        head = self.frames[:, :, :n]
        rest = self.frames[:, :, n:]
        self.frames = _keep(rest) if rest.shape[2] > 0 else None
        return head

    def state_tensors(self) -> list[Tensor]:
        return [] if self.frames is None else [self.frames]


class Pointwise:
    """A per-frame function (norm, activation, patching): no temporal state."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def push(self, x: Frames) -> Frames:
        return None if x is None else self.fn(x)

    def flush(self) -> Frames:
        return None

    def state_tensors(self) -> list[Tensor]:
        return []

    def frames_out(self, frames_in: int, ended: bool) -> int:
        return frames_in


class TemporalConv:
    """`LTX2VideoCausalConv3d` over a stream.

    Causal: `kernel - 1` copies of the first frame on the left. Non-causal: `(kernel - 1) // 2` copies of
    the first frame on the left and of the last frame on the right, the right ones added by `flush`.
    State: the last `kernel - 1` frames of the padded input seen so far; the last of them is the last real
    frame, which `flush` replicates.
    """

    def __init__(self, module: LTX2VideoCausalConv3d, causal: bool) -> None:
        kernel_t = module.kernel_size[0]
        if module.conv.stride[0] != 1 or module.conv.dilation[0] != 1:
            raise ValueError("only temporal stride 1, dilation 1 convolutions can be streamed")
        self.conv = module.conv  # nn.Conv3d; pads space itself (zeros or reflect), never time
        self.context_len = kernel_t - 1
        self.left = kernel_t - 1 if causal else (kernel_t - 1) // 2
        self.right = 0 if causal else (kernel_t - 1) // 2
        self.context: Frames = None  # last `context_len` padded input frames
        self.started = False

    def push(self, x: Frames) -> Frames:
        if x is None:
            return None
        if not self.started:  # first frame of the stream: replicate it on the left
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.left, -1, -1), x], dim=2)
            self.started = True
        return self._run(cat_frames(self.context, x))

    def flush(self) -> Frames:
        if self.context is None or self.right == 0:
            return None
        last = self.context[:, :, -1:]
        out = self._run(torch.cat([self.context, last.expand(-1, -1, self.right, -1, -1)], dim=2))
        self.context = None
        return out

    def _run(self, padded: Tensor) -> Frames:
        # padded: (B, C, context + new, H, W); outputs need `context_len` frames of history each
        self.context = _keep(padded[:, :, -self.context_len :]) if self.context_len else None
        if padded.shape[2] <= self.context_len:
            return None
        return self.conv(padded)

    def state_tensors(self) -> list[Tensor]:
        return [] if self.context is None else [self.context]

    def frames_out(self, frames_in: int, ended: bool) -> int:
        if frames_in == 0:
            return 0
        return frames_in if ended else max(frames_in - self.right, 0)


class Chain:
    """Streams applied one after another."""

    def __init__(self, stages: Sequence[Stream]) -> None:
        self.stages = list(stages)

    def push(self, x: Frames) -> Frames:
        for stage in self.stages:
            x = stage.push(x)
        return x

    def flush(self) -> Frames:
        # Depth first: each stage's last frames go through the later stages (which still hold theirs back)
        # before the next stage is flushed, so no step processes more than a few frames at once.
        out: list[Frames] = []
        for i, stage in enumerate(self.stages):
            tail = stage.flush()
            for later in self.stages[i + 1 :]:
                tail = later.push(tail)
            out.append(tail)
        return cat_frames(*out)

    def state_tensors(self) -> list[Tensor]:
        return [t for stage in self.stages for t in stage.state_tensors()]

    def frames_out(self, frames_in: int, ended: bool) -> int:
        for stage in self.stages:
            frames_in = stage.frames_out(frames_in, ended)
        return frames_in


class ResnetBlock:
    """`LTX2VideoResnetBlock3d` over a stream: norm → act → conv, twice, plus the (shortcut) input.

    The input is queued until the two convolutions release the matching frames (non-causal convs lag).
    """

    def __init__(self, module: LTX2VideoResnetBlock3d, causal: bool) -> None:
        if module.per_channel_scale1 is not None or module.scale_shift_table is not None:
            raise ValueError(
                "noise injection and timestep conditioning are not supported (LTX-2 has neither)"
            )
        self.module = module
        self.conv1 = TemporalConv(module.conv1, causal)
        self.conv2 = TemporalConv(module.conv2, causal)
        self.skip = FrameQueue()

    def _pre1(self, x: Tensor) -> Tensor:
        return self.module.nonlinearity(self.module.norm1(x))

    def _pre2(self, h: Tensor) -> Tensor:
        return self.module.dropout(self.module.nonlinearity(self.module.norm2(h)))

    def push(self, x: Frames) -> Frames:
        if x is None:
            return None
        self.skip.append(x)
        h = self.conv1.push(self._pre1(x))
        return self._finish(self.conv2.push(None if h is None else self._pre2(h)))

    def flush(self) -> Frames:
        h = self.conv1.flush()
        h = cat_frames(self.conv2.push(None if h is None else self._pre2(h)), self.conv2.flush())
        return self._finish(h)

    def _finish(self, h: Frames) -> Frames:
        if h is None:
            return None
        shortcut = self.skip.pop(h.shape[2])
        if self.module.norm3 is not None:
            shortcut = self.module.norm3(shortcut.movedim(1, -1)).movedim(-1, 1)  # LayerNorm over channels
        if self.module.conv_shortcut is not None:
            shortcut = self.module.conv_shortcut(shortcut)
        return h + shortcut

    def state_tensors(self) -> list[Tensor]:
        return self.conv1.state_tensors() + self.conv2.state_tensors() + self.skip.state_tensors()

    def frames_out(self, frames_in: int, ended: bool) -> int:
        return self.conv2.frames_out(self.conv1.frames_out(frames_in, ended), ended)


def space_to_depth(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """(B, C, T·st, H·sh, W·sw) -> (B, C·st·sh·sw, T, H, W), channel-major like diffusers' downsampler."""
    st, sh, sw = stride
    return rearrange(x, "b c (t st) (h sh) (w sw) -> b (c st sh sw) t h w", st=st, sh=sh, sw=sw)


def depth_to_space(x: Tensor, stride: tuple[int, int, int]) -> Tensor:
    """(B, C·st·sh·sw, T, H, W) -> (B, C, T·st, H·sh, W·sw), the inverse of `space_to_depth`."""
    st, sh, sw = stride
    return rearrange(x, "b (c st sh sw) t h w -> b c (t st) (h sh) (w sw)", st=st, sh=sh, sw=sw)


class Downsampler:
    """`LTX2VideoDownsampler3d` over a stream.

    The whole-clip layer prepends its first `st - 1` frames, convolves, and folds each run of `st`
    frames (and 2×2 pixels) into channels, adding the group-mean of the folded input as a residual.
    State: the prefix flag (first frames seen), the conv's context, the residual queue, and the frames of
    an incomplete group ("pending"), which wait for the next push.
    """

    def __init__(self, module: LTX2VideoDownsampler3d, causal: bool) -> None:
        self.stride: tuple[int, int, int] = tuple(module.stride)  # type: ignore[assignment]
        self.group_size = module.group_size
        self.conv = TemporalConv(module.conv, causal)
        self.skip = FrameQueue()
        self.started = False
        self.pending_conv: Frames = None
        self.pending_input: Frames = None

    def push(self, x: Frames) -> Frames:
        if x is None:
            return None
        if not self.started:
            x = torch.cat([x[:, :, : self.stride[0] - 1], x], dim=2)  # first-frame prefix
            self.started = True
        self.skip.append(x)
        return self._group(self.conv.push(x))

    def flush(self) -> Frames:
        out = self._group(self.conv.flush())
        if self.pending_conv is not None:
            raise ValueError(
                f"the encoder stream ended inside a temporal group of {self.stride[0]} frames: "
                "the total frame count must be 1 + a multiple of the temporal compression (8k+1)"
            )
        return out

    def _group(self, h: Frames) -> Frames:
        if h is None:
            return None
        conv = cat_frames(self.pending_conv, h)
        residual_in = cat_frames(self.pending_input, self.skip.pop(h.shape[2]))
        assert conv is not None and residual_in is not None
        usable = conv.shape[2] // self.stride[0] * self.stride[0]
        self.pending_conv = _keep(conv[:, :, usable:]) if usable < conv.shape[2] else None
        self.pending_input = _keep(residual_in[:, :, usable:]) if usable < conv.shape[2] else None
        if usable == 0:
            return None
        residual = space_to_depth(residual_in[:, :, :usable], self.stride)
        residual = reduce(residual, "b (c g) t h w -> b c t h w", "mean", g=self.group_size)
        return space_to_depth(conv[:, :, :usable], self.stride) + residual

    def state_tensors(self) -> list[Tensor]:
        own = [t for t in (self.pending_conv, self.pending_input) if t is not None]
        return self.conv.state_tensors() + self.skip.state_tensors() + own

    def frames_out(self, frames_in: int, ended: bool) -> int:
        if frames_in == 0:
            return 0
        return self.conv.frames_out(frames_in + self.stride[0] - 1, ended) // self.stride[0]


class Upsampler:
    """`LTX2VideoUpsampler3d` over a stream.

    The whole-clip layer convolves, unfolds channels into `st` frames (and 2×2 pixels) per input frame,
    optionally adds the unfolded, channel-repeated input, and drops the first `st - 1` output frames.
    State: the conv's context, the residual queue, and whether the first frames were already dropped.
    """

    def __init__(self, module: LTX2VideoUpsampler3d, causal: bool) -> None:
        self.stride: tuple[int, int, int] = tuple(module.stride)  # type: ignore[assignment]
        self.residual = module.residual
        self.repeats = (self.stride[0] * self.stride[1] * self.stride[2]) // module.upscale_factor
        self.conv = TemporalConv(module.conv, causal)
        self.skip = FrameQueue()
        self.trimmed = False

    def push(self, x: Frames) -> Frames:
        if x is None:
            return None
        if self.residual:
            self.skip.append(x)
        return self._unfold(self.conv.push(x))

    def flush(self) -> Frames:
        return self._unfold(self.conv.flush())

    def _unfold(self, h: Frames) -> Frames:
        if h is None:
            return None
        out = depth_to_space(h, self.stride)
        if self.residual:
            out = out + depth_to_space(self.skip.pop(h.shape[2]), self.stride).repeat(
                1, self.repeats, 1, 1, 1
            )
        if not self.trimmed:
            out = out[:, :, self.stride[0] - 1 :]
            self.trimmed = True
        return out

    def state_tensors(self) -> list[Tensor]:
        return self.conv.state_tensors() + self.skip.state_tensors()

    def frames_out(self, frames_in: int, ended: bool) -> int:
        produced = self.conv.frames_out(frames_in, ended)
        return max(produced * self.stride[0] - (self.stride[0] - 1), 0)
