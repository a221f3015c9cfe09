"""SanaStreamingPipeline: source frames → VAE encode → DiT sampler → VAE decode → frames, a chunk at a time.

`long_streaming` moves one DiT chunk (3 latent frames = 24 video frames) per step of the stream;
`bidirectional_short` is the same stream with one chunk holding the whole clip (the release's
whole-clip VAE and DPM-Solver, for parity). Memory in streaming mode is flat in video length except the
starting noise, which the release draws in one call for the whole latent (`noise_bytes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor

from sana_streaming.checkpoint import load_dit_checkpoint
from sana_streaming.config import MODE_SAMPLERS, SamplerConfig, SanaStreamingConfig, load_config
from sana_streaming.hub import resolve_path
from sana_streaming.models.dit import StreamingState, build_dit, randomize_dit_
from sana_streaming.models.text_encoder import TextEncoder, positive_prompt_text
from sana_streaming.models.vae import LTX2VAE, load_vae
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver
from sana_streaming.sampling.streaming import (
    StreamingConditions,
    StreamingSampler,
    WindowPolicy,
    chunk_boundaries,
)
from sana_streaming.video.reader import open_video
from sana_streaming.video.writer import VideoWriter

logger = logging.getLogger(__name__)

# Source: NVlabs/Sana, inference_video_scripts/v2v/inference_sana_streaming.py (per-mode defaults).
MODE_DEFAULTS: dict[str, dict[str, object]] = {
    "bidirectional_short": {
        "config": "configs/sana_streaming/sana_streaming_bidirectional_2b_720p.yaml",
        "model_path": "hf://Efficient-Large-Model/SANA-Streaming_bidirectional/dit/sana_bidirectional_short.pth",
        "num_frames": 81,
        "motion_score": 10,
        "negative_prompt": (
            "A chaotic sequence with misshapen, deformed limbs in heavy motion blur, sudden disappearance, "
            "jump cuts, jerky movements, rapid shot changes, frames out of sync, inconsistent character "
            "shapes, temporal artifacts, jitter, and ghosting effects, creating a disorienting visual "
            "experience."
        ),
    },
    "long_streaming": {
        "config": "configs/sana_streaming/sana_streaming_2b_720p.yaml",
        "model_path": "hf://Efficient-Large-Model/SANA-Streaming/dit/sana_streaming_ar.pth",
        "num_frames": 969,
        "motion_score": 0,
        "negative_prompt": "",
    },
}


class SourceTooShortError(ValueError):
    """The source has fewer frames than the edit asks for."""


ProgressFn = Callable[[str, int, int | None], None]  # (stage, done, total or None)


@dataclass(frozen=True)
class EditOptions:
    """Per-edit settings; None means the mode's default (see `MODE_DEFAULTS`, `MODE_SAMPLERS`)."""

    prompt: str
    negative_prompt: str | None = None
    num_frames: int | None = None  # video frames to edit (floored to 8k+1); None: the whole source
    height: int = 704
    width: int = 1280
    steps: int | None = None
    cfg_scale: float | None = None
    flow_shift: float | None = None
    seed: int = 0
    motion_score: int | None = None
    num_cached_blocks: int = 2
    sink_token: bool = True


@dataclass
class EditResult:
    """What `edit` wrote."""

    path: Path
    frames: int
    fps: Fraction
    audio: bool


class SanaStreamingPipeline:
    """Wires reader → encoder → sampler → decoder → writer. Build with `from_config`/`from_pretrained`."""

    def __init__(
        self,
        mode: str,
        config: SanaStreamingConfig,
        dit: torch.nn.Module,
        vae: LTX2VAE,
        text_encoder: TextEncoder,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if mode not in MODE_SAMPLERS:
            raise ValueError(f"unknown mode {mode!r}; choose from {sorted(MODE_SAMPLERS)}")
        self.mode = mode
        self.config = config
        self.dit = dit
        self.vae = vae
        self.text_encoder = text_encoder
        self.device = device
        self.dtype = dtype
        self._held: list[object] = []  # stream objects whose tensors count in `live_bytes`
        self.noise_bytes = 0

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: SanaStreamingConfig | str,
        mode: str = "long_streaming",
        *,
        model_path: str | None = None,
        random_weights: bool = False,
        device: torch.device | str | None = None,
        decode: str | None = None,
        strict: bool = False,
    ) -> SanaStreamingPipeline:
        """Build every component of `config`: released weights from `model_path` and the config's
        VAE/text-encoder sources, or random weights (`random_weights`, for smoke runs and benchmarks)."""
        if isinstance(config, str):
            config = load_config(config)
        if decode is not None:
            config = replace(config, vae=replace(config.vae, decode=decode))
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # bf16 is slow on CPUs
        if random_weights:
            dit = randomize_dit_(build_dit(config, device=device, dtype=dtype), seed=0)
            text = TextEncoder.from_config(config.text_encoder, device=device, dtype=dtype)
        else:
            if model_path is None:
                raise ValueError("model_path is required unless random_weights is set")
            dit = build_dit(config, device="cpu", dtype=torch.float32)
            load_dit_checkpoint(dit, resolve_path(model_path), strict)
            dit = dit.to(device=device, dtype=dtype)  # the release loads in fp32, then casts to bf16
            text = TextEncoder.from_pretrained(config.text_encoder, device=device, dtype=dtype)
        vae_dtype = dtype if random_weights or device.type == "cpu" else None
        vae = load_vae(config.vae, device=device, dtype=vae_dtype, random_weights=random_weights)
        return cls(mode, config, dit, vae, text, device, dtype)

    @classmethod
    def from_pretrained(cls, mode: str = "long_streaming", **kwargs: object) -> SanaStreamingPipeline:
        """The released weights of `mode` with its release config."""
        defaults = MODE_DEFAULTS[mode]
        kwargs.setdefault("model_path", defaults["model_path"])
        return cls.from_config(str(defaults["config"]), mode, **kwargs)  # type: ignore[arg-type]

    # ---- settings -----------------------------------------------------------------------------------

    def sampler_settings(self, options: EditOptions) -> SamplerConfig:
        base = MODE_SAMPLERS[self.mode]
        shift = options.flow_shift
        if shift is None:
            sched = self.config.scheduler
            shift = sched.inference_flow_shift if sched.inference_flow_shift is not None else sched.flow_shift
        return replace(
            base,
            steps=options.steps or base.steps,
            cfg_scale=base.cfg_scale if options.cfg_scale is None else options.cfg_scale,
            flow_shift=shift,
            num_cached_blocks=options.num_cached_blocks,
            sink_token=options.sink_token,
        )

    def encode_prompts(self, options: EditOptions) -> tuple[StreamingConditions, StreamingConditions]:
        """(positive, negative) caption embeddings and masks, on the DiT's device; the text encoder is
        moved off the GPU afterwards."""
        defaults = MODE_DEFAULTS[self.mode]
        motion = defaults["motion_score"] if options.motion_score is None else options.motion_score
        negative_text = options.negative_prompt
        if negative_text is None:
            negative_text = str(defaults["negative_prompt"])
        negative = self.text_encoder.encode_negative(negative_text)
        positive = self.text_encoder.encode_prompt(positive_prompt_text(options.prompt, int(motion)))
        if self.device.type == "cuda":
            self.text_encoder.offload("cpu")

        def conditions(encoded) -> StreamingConditions:
            return StreamingConditions(encoded.embeds.to(self.device), encoded.mask.to(self.device))

        return conditions(positive), conditions(negative)

    # ---- streaming ----------------------------------------------------------------------------------

    def live_bytes(self) -> int:
        """Bytes of every tensor the pipeline holds between chunks (DiT state, VAE stream state, pending
        latents), excluding the whole-latent starting noise of file mode (`noise_bytes`)."""
        total = 0
        for held in self._held:
            if isinstance(held, Tensor):
                total += held.nbytes
            elif isinstance(held, StreamingState):
                total += held.nbytes()
            else:
                total += held.state_bytes()
        return total

    @torch.no_grad()
    def stream(
        self, source: str | Path, options: EditOptions, progress: ProgressFn | None = None
    ) -> Iterator[Tensor]:
        """Yield edited frames `[3, F, H, W]` (float, about [-1, 1]) chunk by chunk."""
        sampler_config = self.sampler_settings(options)
        positive, negative = self.encode_prompts(options)
        reader = open_video(
            source, options.height, options.width, chunk_frames=24, max_frames=options.num_frames
        )
        with reader:
            total = reader.info.num_frames
            if options.num_frames is not None:
                total = options.num_frames
            if total is None:
                raise ValueError(f"{source}: the frame count is unknown; pass num_frames")
            frames = (total - 1) // 8 * 8 + 1
            latent_frames = (frames - 1) // 8 + 1
            h, w = options.height // 32, options.width // 32
            gen = torch.Generator(self.device).manual_seed(options.seed)
            noise = torch.randn(
                (1, self.vae.latent_channels, latent_frames, h, w), generator=gen, device=self.device
            )  # one call for the whole latent, as the release draws it
            self.noise_bytes = noise.nbytes
            chunks = _limit_frames(reader, frames)
            if self.mode == "bidirectional_short":
                yield from self._bidirectional(chunks, noise, positive, negative, sampler_config, progress)
            else:
                yield from self._streaming(chunks, noise, positive, sampler_config, progress)

    def _bidirectional(self, chunks, noise, positive, negative, settings, progress) -> Iterator[Tensor]:
        video = torch.cat(list(chunks), dim=1)[None]  # (1, 3, F, H, W): the release encodes the whole clip
        source = self.vae.encode(video).to(self.dtype)
        guided = settings.cfg_scale > 1.0
        caption = torch.cat([negative.caption, positive.caption]) if guided else positive.caption
        mask = torch.cat([negative.mask, positive.mask]) if guided else positive.mask
        source_in = torch.cat([source, source]) if guided else source

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return self.dit(x, t, caption, mask, source_in)

        def on_step(done: int, total: int) -> None:
            if progress is not None:
                progress("denoise", done, total)

        latents = sample_flow_dpm_solver(
            velocity, noise, steps=settings.steps, shift=settings.flow_shift,
            cfg_scale=settings.cfg_scale, on_step=on_step,
        )  # fmt: skip
        yield self.vae.decode(latents.to(self.dtype))[0]

    def _streaming(self, chunks, noise, positive, settings, progress) -> Iterator[Tensor]:
        if settings.cfg_scale != 1.0:
            raise ValueError(
                "classifier-free guidance is not supported in long_streaming (the release crashes)"
            )
        T, h, w = noise.shape[2], noise.shape[3], noise.shape[4]
        boundaries = chunk_boundaries(T, settings.base_chunk_frames)
        policy = WindowPolicy(settings.num_cached_blocks, settings.sink_token)
        state = StreamingState.allocate(
            self.dit.config, batch=1, height=h, width=w, window_frames=policy.window_frames(boundaries),
            device=self.device, dtype=self.dtype,
        )  # fmt: skip
        sampler = StreamingSampler(self.dit, positive, state, steps=settings.steps, shift=settings.flow_shift,
                                   policy=policy)  # fmt: skip
        encoder, decoder = self.vae.chunked_encoder(), self.vae.incremental_decoder()
        pending = noise.new_empty(1, noise.shape[1], 0, h, w, dtype=self.vae.dtype)
        self._held = [state, encoder, decoder, pending]
        chunk = 0
        for pixels in chunks:
            pending = torch.cat([pending, encoder.push(pixels[None])], dim=2)
            while (
                chunk < len(boundaries) - 1 and pending.shape[2] >= boundaries[chunk + 1] - boundaries[chunk]
            ):
                s, e = boundaries[chunk], boundaries[chunk + 1]
                source, pending = pending[:, :, : e - s].to(self.dtype), pending[:, :, e - s :].clone()
                self._held[3] = pending
                latents = sampler.denoise_chunk(noise[:, :, s:e], source, s, last=e == T)
                out = decoder.push(latents.to(self.dtype))
                chunk += 1
                if progress is not None:
                    progress("chunk", chunk, len(boundaries) - 1)
                if out.shape[2]:
                    yield out[0]
        tail = decoder.flush()
        self._held = []
        if tail.shape[2]:
            yield tail[0]

    # ---- files --------------------------------------------------------------------------------------

    def edit(
        self,
        source: str | Path,
        output: str | Path,
        options: EditOptions,
        *,
        fps: float | None = None,
        audio: bool = True,
        overwrite: bool = False,
        progress: ProgressFn | None = None,
    ) -> EditResult:
        """Edit `source` into the MP4 `output` (written atomically). `fps` defaults to the source's rate;
        the source audio of the edited span is copied unless `audio` is off or `fps` differs."""
        with open_video(source, options.height, options.width) as probe:
            info = probe.info
        source_fps = info.fps or Fraction(16)
        out_fps = Fraction(fps).limit_denominator(100_000) if fps else source_fps
        keep_audio = audio and info.has_audio
        if keep_audio and out_fps != source_fps:
            logger.warning(
                "dropping the audio: --fps %s differs from the source rate %s", out_fps, source_fps
            )
            keep_audio = False
        writer = VideoWriter(
            output, out_fps, options.width, options.height, overwrite=overwrite,
            audio_from=source if keep_audio else None,
        )  # fmt: skip
        with writer:
            for frames in self.stream(source, options, progress):
                writer.write(frames.float().cpu())
        return EditResult(path=Path(output), frames=writer.frames_written, fps=out_fps, audio=keep_audio)


def _limit_frames(chunks: Iterator[Tensor], frames: int) -> Iterator[Tensor]:
    """Pass pixel chunks `[3, F, H, W]` through until `frames` frames were given."""
    given = 0
    for chunk in chunks:
        take = min(chunk.shape[1], frames - given)
        if take > 0:
            yield chunk[:, :take]
            given += take
        if given >= frames:
            return
    if given < frames:
        raise SourceTooShortError(
            f"the source has {given} frames, fewer than the {frames} asked for (use --num_frames all)"
        )
