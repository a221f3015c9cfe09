"""The streaming sampler of `long_streaming`: chunks of latent frames, 4 Euler steps
each, a clean cache pass at t = 0, and the softmax window policy (sink chunk + recent chunks).

The DiT only consumes the `StreamingState` and the absolute frame offset it is given; this module
decides what stays in the window. `ChunkStreamer` is the chunk loop as a stage: source latents in as
they arrive (`SourceChunk`), denoised chunks out (`DenoisedChunk`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sana_streaming.conditioning import TextConditioning
from sana_streaming.config import CompileMode, SamplerConfig
from sana_streaming.errors import EditError, SourceTooShortError
from sana_streaming.models.dit import StreamingState
from sana_streaming.models.dit.graphs import StreamForward
from sana_streaming.models.dit.model import SanaStreamingDiT
from sana_streaming.prompt_schedule import chunk_first_frame

# Source: NVlabs/Sana, diffusion/scheduler/sana_streaming_sampler.py (hard-coded distilled timesteps).
DISTILLED_TIMESTEPS: dict[int, tuple[float, ...]] = {
    4: (1000.0, 961.0, 893.0, 743.0),
    2: (1000.0, 743.0),
}


def chunk_boundaries(latent_frames: int, base_chunk_frames: int = 3) -> list[int]:
    """[0, b + r, 2b + r, …, T]: chunks of `b` latent frames, the remainder r = T mod b added to the
    first chunk (969 frames → T = 122 → 0, 5, 8, …, 122)."""
    if latent_frames <= base_chunk_frames:
        raise ValueError(
            f"streaming needs more than {base_chunk_frames} latent frames "
            f"(more than {8 * base_chunk_frames - 7} video frames), got {latent_frames}"
        )
    remainder = latent_frames % base_chunk_frames
    count = latent_frames // base_chunk_frames
    return [0] + [base_chunk_frames * (i + 1) + remainder for i in range(count)]


def streaming_schedule(steps: int, shift: float) -> tuple[Tensor, Tensor]:
    """(timesteps (steps,), sigmas (steps+1,)) in float32, the last sigma 0.

    4 and 2 steps use the release's fixed timesteps (shift has no effect); other counts follow
    diffusers' flow-match Euler schedule with `shift`, whose σ is shifted twice."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps in DISTILLED_TIMESTEPS:
        timesteps = torch.tensor(DISTILLED_TIMESTEPS[steps], dtype=torch.float32)
        sigmas = timesteps / 1000
    else:

        def shifted(x):
            return shift * x / (1 + (shift - 1) * x)

        sigma_max, sigma_min = shifted(1.0), shifted(0.001)
        t_lin = torch.linspace(1000 * sigma_max, 1000 * sigma_min, steps, dtype=torch.float64)
        sigmas = shifted(t_lin / 1000).to(torch.float32)
        timesteps = sigmas * 1000
    return timesteps, torch.cat([sigmas, torch.zeros(1)])


@dataclass(frozen=True)
class WindowPolicy:
    """Which earlier chunks the softmax blocks see: the `num_cached_blocks` most
    recent, or with the sink chunk 0 plus the `num_cached_blocks − 1` most recent; ≤ 0 keeps all."""

    num_cached_blocks: int = 2
    sink: bool = True

    def visible(self, chunk: int) -> list[int]:
        n = self.num_cached_blocks
        if n <= 0:
            return list(range(chunk))
        if self.sink and chunk - n + 1 > 0:
            return [0, *range(chunk - n + 1, chunk)]
        return list(range(max(chunk - n, 0), chunk))

    def window_frames(self, boundaries: list[int]) -> int:
        """Largest window (visible chunks + the current one) over the chunks, in latent frames."""
        sizes = [b - a for a, b in itertools.pairwise(boundaries)]
        return max(sum(sizes[i] for i in self.visible(c)) + sizes[c] for c in range(len(sizes)))

    def window_chunks(self, boundaries: list[int]) -> int:
        """Most segments the window holds at once (visible chunks + the committing one), the
        `window_chunks` of `StreamingState.allocate`."""
        return max(len(self.visible(c)) + 1 for c in range(len(boundaries) - 1))


@dataclass
class _CleanPass:
    """A denoised chunk whose clean pass has not run yet."""

    latents: Tensor  # (B, C, T, H, W), the sampler's own copy, in the noise's dtype
    source: Tensor  # (B, C, T, H, W)
    start: int  # absolute first latent frame


class StreamingSampler:
    """Denoises one chunk at a time, carrying the DiT's `StreamingState` between chunks; one sampler per
    stream (it holds the last chunk's deferred clean pass, and the prompt's `TextCache`, prepared once
    for every forward of the stream). `compile="graph"` replays the forwards from CUDA graphs,
    `"max"` also fuses their elementwise work (both CUDA only; `graphs.resolve_compile` picks)."""

    def __init__(
        self,
        model: SanaStreamingDiT,
        conditioning: TextConditioning,
        state: StreamingState,
        *,
        steps: int = 4,
        shift: float = 8.0,
        policy: WindowPolicy | None = None,
        on_forward: Callable[[], None] | None = None,
        compile: CompileMode = "none",
    ) -> None:
        self.model = model
        self.text = model.prepare_text(conditioning)
        self.state = state
        self.compile = compile
        self.forward = StreamForward.for_mode(model, self.text, state, compile)
        self.policy = policy or WindowPolicy()
        self.timesteps, self.sigmas = streaming_schedule(steps, shift)
        self.on_forward = on_forward
        self.chunk = 0  # chunks committed to the state so far
        self._uncommitted: _CleanPass | None = None

    def _forward(self, x: Tensor, t: float, source: Tensor, start: int, save: bool) -> Tensor:
        timestep = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
        v = self.forward(x, timestep, source, start, save)
        if self.on_forward is not None:
            self.on_forward()
        return v

    def denoise_chunk(self, noise: Tensor, source: Tensor, start: int) -> Tensor:
        """Denoise the chunk whose first latent frame is `start`. Returns float32 latents, rounded to the
        model dtype after every Euler step as the release does.

        The chunk's clean pass at t = 0 (which writes it into the state, commits its K/V and applies the
        window policy) runs at the start of the next call, not here: the chunk's latents are out one
        forward sooner, and the stream's last chunk — known or not — never runs one."""
        self._run_clean_pass()
        x = noise.float()
        sigmas = self.sigmas.to(x.device)
        for j, t in enumerate(self.timesteps.tolist()):
            v = self._forward(x.to(noise.dtype), t, source, start, save=False)
            # diffusers' Euler step: the 0-dim float32 dt times v stays in v's dtype (bf16 product),
            # is added to the float32 sample, and the result is cast back to v's dtype
            x = (x + (sigmas[j + 1] - sigmas[j]) * v).to(v.dtype).float()
        self._uncommitted = _CleanPass(x.to(noise.dtype, copy=True), source, start)  # x is the caller's
        return x

    def change_prompt(self, conditioning: TextConditioning) -> None:
        """Denoise the chunks from now on with `conditioning`. The last chunk's deferred clean pass runs
        first, with the prompt that chunk was denoised with; the new prompt's K/V are copied into the
        stream's `TextCache`, whose buffers the captured CUDA graphs read (a caption of another padded
        length gets new buffers and new graphs)."""
        self._run_clean_pass()
        text = self.model.prepare_text(conditioning)
        if not self.text.copy_from(text):
            self.text = text
            self.forward = StreamForward.for_mode(self.model, text, self.state, self.compile)

    def nbytes(self) -> int:
        """Bytes held between chunks: the `StreamingState`, the deferred clean pass's latents and the
        prompt's `TextCache`."""
        held = self._uncommitted
        deferred = 0 if held is None else held.latents.nbytes + held.source.nbytes
        return self.state.nbytes() + deferred + self.text.nbytes()

    def _run_clean_pass(self) -> None:
        """The previous chunk's deferred clean pass, then its commit and the window policy (which also
        picks the softmax blocks' FFN left context: the newest kept chunk's last frame)."""
        if self._uncommitted is None:
            return
        done, self._uncommitted = self._uncommitted, None
        self._forward(done.latents, 0.0, done.source, done.start, save=True)
        self.state.commit_chunk(self.chunk, done.latents.shape[2])
        self.state.retain(self.policy.visible(self.chunk + 1))
        self.chunk += 1


@dataclass(frozen=True)
class SourceChunk:
    """Source latents entering a `ChunkStreamer`, any number of frames at a time, in order."""

    latents: Tensor  # (1, C, T, h, w), normalised (the DiT's space)
    start: int  # absolute first latent frame


@dataclass(frozen=True)
class DenoisedChunk:
    """One chunk out of a `ChunkStreamer`."""

    latents: Tensor  # (1, C, T, h, w) float32, rounded to the model dtype after every step
    start: int  # absolute first latent frame
    index: int  # the chunk's number in the stream: 0, 1, …


@dataclass
class LatentRecord:
    """Noise, source and result latents of one edit, for `--save_latent` (grows with the video)."""

    noise: list[Tensor] = field(default_factory=list)
    source: list[Tensor] = field(default_factory=list)
    result: list[Tensor] = field(default_factory=list)

    def keep(self, noise: Tensor, source: Tensor, result: Tensor) -> None:
        """Add one chunk's (or the whole clip's) latents, copied to the CPU."""
        self.noise.append(noise.cpu())
        self.source.append(source.cpu())
        self.result.append(result.cpu())

    def stacked(self) -> Tensor:
        """The release's debug layout: stack([noise, source, result], dim=1)[0] → (3, C, T, h, w) float32."""
        parts = [torch.cat(p, dim=2).float().cpu() for p in (self.noise, self.source, self.result)]
        return torch.stack(parts, dim=1)[0]


class ChunkStreamer:
    """The chunk loop of `long_streaming`: cuts the source latents pushed into the stream's chunks and
    denoises each with `sampler` as soon as it is complete.

    A known length (`latent_frames`) is cut at `chunk_boundaries` (the remainder in the first chunk); an
    unknown one into chunks of `base_chunk_frames` as they arrive, the last partial chunk at `flush`.
    Each chunk's noise is its slice of `noise` (the whole latent's, as the release draws it for a file)
    or, without it, drawn from `generator` per chunk. `record` (optional) keeps every chunk's latents.
    """

    def __init__(
        self,
        sampler: StreamingSampler,
        *,
        latent_frames: int | None,
        dtype: torch.dtype,
        base_chunk_frames: int = 3,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        record: LatentRecord | None = None,
    ) -> None:
        if noise is None and generator is None:
            raise ValueError("give the whole-latent noise or a generator for per-chunk noise")
        if noise is not None and (latent_frames is None or noise.shape[2] != latent_frames):
            raise ValueError(f"whole-latent noise of {noise.shape[2]} frames for a stream of {latent_frames}")
        self.sampler = sampler
        self.latent_frames = latent_frames
        self.sizes = None if latent_frames is None else chunk_sizes(latent_frames, base_chunk_frames)
        self.base_chunk_frames = base_chunk_frames
        self.dtype = dtype  # the model's: source latents are cast to it
        self.noise = noise
        self.generator = generator
        self.record = record
        self.pending: Tensor | None = None  # (1, C, P, h, w): source latents not yet in a chunk
        self.denoised_frames = 0  # latent frames denoised so far, the next chunk's start
        self.chunks = 0  # chunks denoised so far
        self.prompt_changes: list[tuple[int, TextConditioning]] = []  # (video frame, prompt), by frame

    @classmethod
    def open(
        cls,
        model: SanaStreamingDiT,
        conditioning: TextConditioning,
        settings: SamplerConfig,
        *,
        latent_hw: tuple[int, int],
        latent_frames: int | None,
        device: torch.device,
        dtype: torch.dtype,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        record: LatentRecord | None = None,
        compile: CompileMode = "none",
    ) -> ChunkStreamer:
        """A streamer for `settings` (steps, resolved flow shift, window) with its `StreamingSampler`
        (`compile`: its forwards eager, replayed from CUDA graphs, or also fused) and a
        `StreamingState` preallocated for the largest window the stream will hold."""
        if settings.cfg_scale != 1.0:
            raise EditError(
                "classifier-free guidance is not supported in long_streaming (the release crashes)"
            )
        policy = WindowPolicy(settings.num_cached_blocks, settings.sink_token)
        base = settings.base_chunk_frames
        sizes = None if latent_frames is None else chunk_sizes(latent_frames, base)
        window, segments = window_size(policy, sizes, base)
        state = StreamingState.allocate(
            model.config, batch=1, height=latent_hw[0], width=latent_hw[1], window_frames=window,
            window_chunks=segments, device=device, dtype=dtype,
        )  # fmt: skip
        sampler = StreamingSampler(model, conditioning, state, steps=settings.steps,
                                   shift=settings.flow_shift, policy=policy, compile=compile)  # fmt: skip
        return cls(sampler, latent_frames=latent_frames, dtype=dtype, base_chunk_frames=base, noise=noise,
                   generator=generator, record=record)  # fmt: skip

    @property
    def received_frames(self) -> int:
        """Latent frames pushed so far: the `start` the next `SourceChunk` must have."""
        return self.denoised_frames + (0 if self.pending is None else self.pending.shape[2])

    @property
    def total_chunks(self) -> int | None:
        """Chunks of a stream of known length; None when the length is unknown."""
        return None if self.sizes is None else len(self.sizes)

    @property
    def noise_bytes(self) -> int:
        """Bytes of the whole-latent noise held (0 when noise is drawn per chunk)."""
        return 0 if self.noise is None else self.noise.nbytes

    def nbytes(self) -> int:
        """Bytes held between chunks, flat in the video's length: pending source latents, the sampler's
        state and deferred clean pass (not the whole-latent noise, `noise_bytes`, nor the `record`)."""
        pending = 0 if self.pending is None else self.pending.nbytes
        return pending + self.sampler.nbytes()

    def change_prompt(self, conditioning: TextConditioning, frame: int | None = None) -> None:
        """Denoise with `conditioning` from the first chunk that starts at or after video frame `frame`
        (None: the next chunk); see `prompt_schedule`."""
        at = chunk_first_frame(self.denoised_frames) if frame is None else frame
        bisect.insort(self.prompt_changes, (at, conditioning), key=lambda change: change[0])

    def push(self, source: SourceChunk) -> list[DenoisedChunk]:
        """Take the next source latents; return the chunks they completed, denoised (often none)."""
        if source.start != self.received_frames:
            raise ValueError(f"expected source latents from frame {self.received_frames}, got {source.start}")
        frames = self.received_frames + source.latents.shape[2]
        if self.latent_frames is not None and frames > self.latent_frames:
            raise ValueError(f"{frames} latent frames pushed into a stream of {self.latent_frames}")
        pending = self.pending
        self.pending = source.latents if pending is None else torch.cat([pending, source.latents], dim=2)
        done = []
        while (size := self._next_size()) and self.pending.shape[2] >= size:
            done.append(self._denoise(size))
        return done

    def flush(self) -> list[DenoisedChunk]:
        """The source ended: denoise an unknown-length stream's last partial chunk. Raises
        `SourceTooShortError` if a known length did not arrive whole or an unknown one is too short."""
        left = 0 if self.pending is None else self.pending.shape[2]
        done = []
        if self.sizes is None and left:
            if self.chunks == 0:
                raise SourceTooShortError(f"the source is too short to stream ({left} latent frames)")
            done.append(self._denoise(left))
        if self.latent_frames is not None and self.denoised_frames != self.latent_frames:
            raise SourceTooShortError(
                f"the source gave {self.denoised_frames} of {self.latent_frames} latent frames"
            )
        return done

    def _next_size(self) -> int:
        """Latent frames of the next chunk; 0 once a known length is done."""
        if self.sizes is None:
            return self.base_chunk_frames
        return self.sizes[self.chunks] if self.chunks < len(self.sizes) else 0

    def _denoise(self, size: int) -> DenoisedChunk:
        """Denoise the first `size` pending frames as the next chunk."""
        assert self.pending is not None
        source = self.pending[:, :, :size].to(self.dtype)
        self.pending = self.pending[:, :, size:].clone()  # drop the consumed frames' storage
        start = self.denoised_frames
        while self.prompt_changes and self.prompt_changes[0][0] <= chunk_first_frame(start):
            self.sampler.change_prompt(self.prompt_changes.pop(0)[1])
        noise = self._chunk_noise(source, start)
        latents = self.sampler.denoise_chunk(noise, source, start)
        if self.record is not None:
            self.record.keep(noise, source, latents)
        chunk = DenoisedChunk(latents, start, self.chunks)
        self.denoised_frames, self.chunks = start + size, self.chunks + 1
        return chunk

    def _chunk_noise(self, source: Tensor, start: int) -> Tensor:
        """The chunk's slice of the whole-latent noise, or a fresh draw of the source's shape."""
        size = source.shape[2]
        if self.noise is not None:
            return self.noise[:, :, start : start + size]
        return torch.randn(source.shape, generator=self.generator, device=source.device)


def chunk_sizes(latent_frames: int, base_chunk_frames: int = 3) -> list[int]:
    """Latent frames per chunk of a stream of known length (`chunk_boundaries`); raises
    `SourceTooShortError` for a stream too short to cut."""
    try:
        boundaries = chunk_boundaries(latent_frames, base_chunk_frames)
    except ValueError as exc:
        raise SourceTooShortError(str(exc)) from exc
    return [b - a for a, b in itertools.pairwise(boundaries)]


def window_size(policy: WindowPolicy, sizes: list[int] | None, base_chunk_frames: int) -> tuple[int, int]:
    """(window_frames, window_chunks) to preallocate: exact for known chunk `sizes`, for chunks of
    `base_chunk_frames` otherwise (which needs a bounded window)."""
    if sizes is not None:
        boundaries = [0, *itertools.accumulate(sizes)]
        return policy.window_frames(boundaries), policy.window_chunks(boundaries)
    if policy.num_cached_blocks <= 0:
        raise EditError("num_cached_blocks <= 0 (full history) needs a source of known length")
    segments = policy.num_cached_blocks + 1
    return base_chunk_frames * segments, segments
