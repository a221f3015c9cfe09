"""CUDA-graph replay of the DiT's streaming forwards.

An eager streaming forward at 1280x704 launches ~2,000 kernels for ~11 TFLOP, and its host time (Python,
launches) is a large part of its wall time. Yet a stream's forwards come in a handful of shapes (first
chunk, second chunk, steady chunks; denoise or save pass) and change only four inputs: the noisy
latents, the source latents, the timestep and the frame offset. Everything else (weights, the prompt's
`TextCache`, the `StreamingState` buffers) stays at fixed addresses, and the forward writes the state in
place. So each distinct forward is captured once into a CUDA graph and replayed: the inputs are copied
into the graph's static buffers and the replay runs the same kernels on the same memory as the eager
forward would.

A forward of a new kind runs eagerly the first time (its warm-up: Triton compiles, cuBLAS picks its
algorithms) and is captured the second time, so a kind that occurs once (the first chunk's save pass)
never pays for a capture.

`compile="max"` adds the fused elementwise kernels (`kernels.fused_kernels`: torch.compile'd norms,
modulation, gates and the Triton FFN convolution) to the captured forwards. They compile during the
warm-up forwards, a few seconds per distinct chunk shape; if compiling fails (no toolchain), the
stream continues with the op-by-op kernels and one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from sana_streaming.config import COMPILE_MODES, CompileMode
from sana_streaming.models.dit.cache import StreamingState
from sana_streaming.models.dit.cross_attention import TextCache
from sana_streaming.models.dit.model import SanaStreamingDiT

logger = logging.getLogger(__name__)


def resolve_compile(mode: str | None, device: torch.device) -> CompileMode:
    """The compile mode a stream on `device` runs: `mode` itself, or by default the fastest that works
    there: "graph" on CUDA (bit-identical to eager and faster from the first chunks on), "none"
    elsewhere. "max" is faster per chunk (134 vs 175 ms on an H200) but compiles its fused kernels for
    seconds per new chunk shape, which a 241-frame edit did not earn back (benchmarks/RESULTS.md), so
    it is asked for. Asking for graphs or fusion off CUDA falls back with one notice."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    if mode == "none" or (mode is None and device.type != "cuda"):
        return "none"
    if device.type != "cuda":
        logger.warning("--compile %s needs a CUDA device; running the DiT eagerly on %s", mode, device)
        return "none"
    return "graph" if mode is None else mode  # type: ignore[return-value]


@dataclass(frozen=True)
class ForwardKind:
    """What makes two streaming forwards the same graph."""

    x_shape: tuple[int, ...]  # (B, C, T, H, W)
    source_shape: tuple[int, ...]
    cached_tokens: int  # window tokens before the chunk: the softmax K/V length
    save: bool  # the clean pass, which writes the state


@dataclass
class CapturedForward:
    """One captured forward and the static buffers it reads and writes."""

    graph: torch.cuda.CUDAGraph
    x: Tensor
    source: Tensor
    timestep: Tensor  # (B,) float32
    frame_offset: Tensor  # 0-dim int64
    out: Tensor

    def replay(self, x: Tensor, timestep: Tensor, source: Tensor, frame_offset: int) -> Tensor:
        """Copy the inputs in, replay, and return a copy of the output (the buffer is reused)."""
        self.x.copy_(x)
        self.source.copy_(source)
        self.timestep.copy_(timestep)
        self.frame_offset.fill_(frame_offset)
        self.graph.replay()
        return self.out.clone()


class StreamForward:
    """The DiT's forwards of one stream (one model, prompt and state): eager, or with `capture` replayed
    from CUDA graphs; with `fused`, through the fused elementwise kernels.

    The graphs of one stream share one memory pool, which is safe because they replay one after another
    on one CUDA stream. If a capture fails, the stream continues eagerly with one warning."""

    def __init__(
        self,
        model: SanaStreamingDiT,
        text: TextCache,
        state: StreamingState,
        capture: bool,
        fused: bool = False,
    ) -> None:
        self.model = model
        self.fused = fused
        self.text = text
        self.state = state
        self.capture = capture
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.graphs: dict[ForwardKind, CapturedForward] = {}
        self.seen: set[ForwardKind] = set()
        self.replays = 0

    def __call__(self, x: Tensor, timestep: Tensor, source: Tensor, frame_offset: int, save: bool) -> Tensor:
        """The velocity of chunk `x` (its first latent frame `frame_offset`); `save` is the clean pass."""
        if not self.capture:
            return self._eager(x, timestep, source, frame_offset, save)
        kind = ForwardKind(tuple(x.shape), tuple(source.shape), self.state.cached_tokens, save)
        captured = self.graphs.get(kind)
        if captured is None and kind in self.seen:
            captured = self._capture(kind, x, timestep, source)
        if captured is None:
            self.seen.add(kind)
            return self._eager(x, timestep, source, frame_offset, save)
        self.replays += 1
        return captured.replay(x, timestep, source, frame_offset)

    @classmethod
    def for_mode(
        cls, model: SanaStreamingDiT, text: TextCache, state: StreamingState, mode: CompileMode
    ) -> StreamForward:
        """The forwards of a stream run in compile `mode` (see `resolve_compile`)."""
        return cls(model, text, state, capture=mode in ("graph", "max"), fused=mode == "max")

    def _eager(self, x: Tensor, timestep: Tensor, source: Tensor, offset: int | Tensor, save: bool) -> Tensor:
        """One forward launched op by op (or through the fused kernels). A fused forward whose kernels
        fail to compile is run again unfused: it fails at its first functions, before it writes
        anything but this chunk's own K/V slots, which the rerun overwrites."""
        if self.fused:
            try:
                return self._forward(x, timestep, source, offset, save)
            except torch._dynamo.exc.TorchDynamoException as exc:
                self.fused = False
                reason = str(exc).splitlines()[0]
                logger.warning("fused kernels failed to compile, running unfused: %s", reason)
        return self._forward(x, timestep, source, offset, save)

    def _forward(
        self, x: Tensor, timestep: Tensor, source: Tensor, offset: int | Tensor, save: bool
    ) -> Tensor:
        return self.model(
            x, timestep, self.text, None, source, state=self.state, frame_offset=offset, save=save,
            fused=self.fused,
        )  # fmt: skip

    def _capture(
        self, kind: ForwardKind, x: Tensor, timestep: Tensor, source: Tensor
    ) -> CapturedForward | None:
        """Capture the forward of `kind` (recording only: the state is not touched until a replay)."""
        static_x, static_source, static_t = x.clone(), source.clone(), timestep.clone()
        offset = torch.zeros((), dtype=torch.long, device=x.device)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread-local: the reader's and writer's threads may use CUDA (pinned memory, events) while
            # a forward is captured; the global mode would fail the capture for their calls
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = self._eager(static_x, static_t, static_source, offset, kind.save)
        except RuntimeError as exc:
            self.capture = False
            logger.warning("CUDA-graph capture failed, running the DiT eagerly: %s", str(exc).splitlines()[0])
            return None
        captured = CapturedForward(graph, static_x, static_source, static_t, offset, out)
        self.graphs[kind] = captured
        return captured
