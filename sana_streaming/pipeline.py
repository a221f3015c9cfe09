"""SanaStreamingPipeline: source frames → VAE encode → DiT sampler → VAE decode → frames, a chunk at a time.

`long_streaming` moves one DiT chunk (3 latent frames = 24 video frames) per step of the stream;
`bidirectional_short` is the same stream with one chunk holding the whole clip (the release's
whole-clip VAE and DPM-Solver, for parity). Memory in streaming mode is flat in video length except the
starting noise of a source of known length, which the release draws in one call for the whole latent
(`noise_bytes`); a source of unknown length (a pipe, a live stream) gets its noise per chunk from the
same seeded generator instead, and is cut into chunks of 3 latent frames as it arrives.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor

from sana_streaming.background import BackgroundSink, Prefetch
from sana_streaming.checkpoint import load_dit_checkpoint
from sana_streaming.config import MODE_SAMPLERS, SamplerConfig, SanaStreamingConfig, load_config
from sana_streaming.downloads import model_needs, resolve_needs
from sana_streaming.files import make_temp_beside, publish
from sana_streaming.models.dit import StreamingState, build_dit, randomize_dit_
from sana_streaming.models.text_encoder import TextEncoder, positive_prompt_text
from sana_streaming.models.vae import LTX2VAE, load_vae
from sana_streaming.provenance import edit_settings
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver
from sana_streaming.sampling.streaming import (
    StreamingConditions,
    StreamingSampler,
    WindowPolicy,
    chunk_boundaries,
)
from sana_streaming.timing import StageTimer
from sana_streaming.video.reader import VideoReader, VideoSource, open_video
from sana_streaming.video.writer import X264_OPTIONS, VideoWriter, frames_to_uint8

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
RELEASE_FPS = Fraction(16)  # the release writes every output at 16 fps
# The LTX-2 decoder reflect-pads each latent frame by one row and column before its convolutions
# (`decoder_spatial_padding_mode: reflect`), which needs at least 2 latent rows and columns.
MIN_LATENT_SIDE = 2


class EditError(ValueError):
    """An edit cannot run with these inputs or settings (the CLI prints it on one line, exit 1)."""


class SourceTooShortError(EditError):
    """The source has fewer frames than the edit asks for."""


class DebugFileError(EditError):
    """A `--input_latent_path` / `--input_text_embed_path` file has the wrong content."""


def smallest_frame_side(stride: int = 32) -> int:
    """The smallest height or width in pixels the VAE decodes at spatial `stride`."""
    return MIN_LATENT_SIDE * stride


def check_frame_size(height: int, width: int, stride: int = 32) -> None:
    """Raise `EditError` unless `height`×`width` (pixels) gives at least `MIN_LATENT_SIDE` latent rows
    and columns at the VAE's spatial `stride`."""
    smallest = smallest_frame_side(stride)
    for name, value in (("height", height), ("width", width)):
        if value < smallest:
            raise EditError(f"{name} must be at least {smallest} (the VAE's smallest frame), got {value}")


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
    max_frames: int | None = None  # read at most this many source frames (a live source's end)
    max_seconds: float | None = None  # read at most this long, at the source's average frame rate


@dataclass
class SourceLatents:
    """Latents given instead of a video (the release's `--input_latent_path`): (1, C, T, h, w) each."""

    noise: Tensor
    source: Tensor


@dataclass
class PromptEmbeddings:
    """Encoded prompts given instead of text (the release's `--input_text_embed_path`)."""

    positive: StreamingConditions
    negative: StreamingConditions


@dataclass
class LatentRecord:
    """Noise, source and result latents of one edit, for `--save_latent` (grows with the video)."""

    noise: list[Tensor] = field(default_factory=list)
    source: list[Tensor] = field(default_factory=list)
    result: list[Tensor] = field(default_factory=list)

    def stacked(self) -> Tensor:
        """The release's debug layout: stack([noise, source, result], dim=1)[0] → (3, C, T, h, w) float32."""
        parts = [torch.cat(p, dim=2).float().cpu() for p in (self.noise, self.source, self.result)]
        return torch.stack(parts, dim=1)[0]


@dataclass
class EditResult:
    """What `edit` wrote."""

    path: Path
    frames: int
    fps: Fraction
    audio: bool


def load_latent_file(path: str | Path) -> SourceLatents:
    """Read a `--save_latent` file (3, C, T, h, w): entry 0 the noise, 1 the source (2 is ignored)."""
    stacked = _load_debug_file(path)
    if not isinstance(stacked, Tensor) or stacked.ndim != 5 or stacked.shape[0] < 2:
        raise DebugFileError(f"{path}: expected a tensor (3, C, T, h, w) of [noise, source, result] latents")
    return SourceLatents(noise=stacked[0:1].float(), source=stacked[1:2])


def load_text_embed_file(path: str | Path) -> PromptEmbeddings:
    """Read a dict with `prompt_embeds`, `prompt_mask`, `negative_embeds`, `negative_mask`."""
    data = _load_debug_file(path)
    keys = ("prompt_embeds", "prompt_mask", "negative_embeds", "negative_mask")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise DebugFileError(f"{path}: expected a dict with keys {list(keys)}")
    return PromptEmbeddings(
        positive=StreamingConditions(data["prompt_embeds"], data["prompt_mask"]),
        negative=StreamingConditions(data["negative_embeds"], data["negative_mask"]),
    )


def _load_debug_file(path: str | Path) -> object:
    """`torch.load` with weights only; anything unreadable (text, truncated, a pickle carrying code)
    becomes one `DebugFileError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DebugFileError(f"{path}: refused, not a plain tensor file (weights-only load)") from exc
    except Exception as exc:  # the unpickler fails on arbitrary bytes with many error types
        raise DebugFileError(f"{path}: not a torch tensor file ({type(exc).__name__}: {exc})") from exc


class SanaStreamingPipeline:
    """Wires reader → encoder → sampler → decoder → writer. Build with `from_config`/`from_pretrained`."""

    def __init__(
        self,
        mode: str,
        config: SanaStreamingConfig,
        dit: torch.nn.Module,
        vae: LTX2VAE,
        text_encoder: TextEncoder | None,
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
        self._held: dict[str, object] = {}  # what the running stream holds between chunks (`live_bytes`)
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
        load_text_encoder: bool = True,
    ) -> SanaStreamingPipeline:
        """Build every component of `config`: released weights from `model_path` and the config's
        VAE/text-encoder sources, or random weights (`random_weights`, for smoke runs and benchmarks)."""
        if isinstance(config, str):
            config = load_config(config)
        if decode is not None:
            config = replace(config, vae=replace(config.vae, decode=decode))
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # bf16 is slow on CPUs
        text = None
        vae_config = config.vae
        if random_weights:
            dit = randomize_dit_(build_dit(config, device=device, dtype=dtype), seed=0)
            if load_text_encoder:
                text = TextEncoder.from_config(config.text_encoder, device=device, dtype=dtype)
        else:
            if model_path is None:
                raise ValueError("model_path is required unless random_weights is set")
            # every file and folder first (fetched, or one error naming all that are missing), before the
            # fp32 DiT is built
            local = resolve_needs(model_needs(config, model_path, text_encoder=load_text_encoder))
            vae_config = replace(config.vae, vae_pretrained=str(local["vae"]))
            dit = build_dit(config, device="cpu", dtype=torch.float32)
            load_dit_checkpoint(dit, local["model_path"], strict)
            dit = dit.to(device=device, dtype=dtype)  # the release loads in fp32, then casts to bf16
            if load_text_encoder:
                text = TextEncoder.from_pretrained(
                    config.text_encoder, local["text_encoder"], device=device, dtype=dtype
                )
        vae_dtype = dtype if random_weights or device.type == "cpu" else None
        vae = load_vae(vae_config, device=device, dtype=vae_dtype, random_weights=random_weights)
        return cls(mode, config, dit, vae, text, device, dtype)

    @classmethod
    def from_pretrained(cls, mode: str = "long_streaming", **kwargs: object) -> SanaStreamingPipeline:
        """The released weights of `mode` with its release config."""
        defaults = MODE_DEFAULTS[mode]
        kwargs.setdefault("model_path", defaults["model_path"])
        return cls.from_config(str(defaults["config"]), mode, **kwargs)  # type: ignore[arg-type]

    # ---- settings -----------------------------------------------------------------------------------

    def sampler_settings(self, options: EditOptions) -> SamplerConfig:
        """The mode's sampler defaults with the edit's overrides; flow shift from the config."""
        base = MODE_SAMPLERS[self.mode]
        if options.cfg_scale is not None and options.cfg_scale < 1:
            raise EditError(f"cfg_scale must be >= 1, got {options.cfg_scale}")
        if options.steps is not None and options.steps < 1:
            raise EditError(f"steps must be >= 1, got {options.steps}")
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

    def encode_prompts(self, options: EditOptions) -> PromptEmbeddings:
        """Positive (chi prefix, motion score) and negative prompt embeddings; the text encoder leaves
        the GPU afterwards."""
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text encoder; pass prompt embeddings")
        defaults = MODE_DEFAULTS[self.mode]
        motion = defaults["motion_score"] if options.motion_score is None else options.motion_score
        negative_text = options.negative_prompt
        if negative_text is None:
            negative_text = str(defaults["negative_prompt"])
        positive_text = positive_prompt_text(options.prompt, int(motion))
        encoder = self.text_encoder
        move = self.device.type == "cuda" and not encoder.is_cached(positive_text, negative_text)
        if move:
            encoder.offload(self.device)  # back from the host after an earlier edit
        negative = encoder.encode_negative(negative_text)
        positive = encoder.encode_prompt(positive_text)
        if move:
            encoder.offload("cpu")  # 5 GB the DiT and VAE can use
        return PromptEmbeddings(
            positive=StreamingConditions(positive.embeds, positive.mask),
            negative=StreamingConditions(negative.embeds, negative.mask),
        )

    # ---- streaming ----------------------------------------------------------------------------------

    def live_bytes(self) -> int:
        """Bytes of every tensor the running stream holds between chunks (DiT state, VAE stream
        state, pending source latents), not counting the whole-latent noise of file mode
        (`noise_bytes`) or a `LatentRecord` asked for."""
        total = 0
        for held in self._held.values():
            if isinstance(held, Tensor):
                total += held.nbytes
            elif isinstance(held, StreamingState):
                total += held.nbytes()
            else:
                total += held.state_bytes()
        return total

    @torch.no_grad()
    def stream(
        self,
        source: VideoSource | VideoReader | SourceLatents,
        options: EditOptions,
        *,
        prompts: PromptEmbeddings | None = None,
        record: LatentRecord | None = None,
        progress: ProgressFn | None = None,
        timer: StageTimer | None = None,
    ) -> Iterator[Tensor]:
        """Yield edited frames `[3, F, H, W]` (VAE dtype, about [-1, 1]) chunk by chunk.

        `source` is a video (path, URL or binary stream; an open `VideoReader` of the edit's size is
        used as is) or `SourceLatents`; `prompts` replaces text encoding; `record` collects the
        latents (`--save_latent`); `timer` measures the stages (benchmarks)."""
        settings = self.sampler_settings(options)
        with _stage(timer, "text"):
            prompts = prompts or self.encode_prompts(options)
        prompts = PromptEmbeddings(self._on_device(prompts.positive), self._on_device(prompts.negative))
        run = _Run(settings, prompts, options.seed, record, progress, timer)
        if isinstance(source, SourceLatents):
            _, _, T, h, w = source.source.shape
            noise = source.noise.to(self.device)
            yield from self._sample(iter([source.source.to(self.device)]), T, (h, w), noise, run)
            return
        stride = self.config.vae.vae_downsample_rate
        check_frame_size(options.height, options.width, stride)
        h, w = options.height // stride, options.width // stride
        if isinstance(source, VideoReader):
            opened = contextlib.nullcontext(source)
        else:
            opened = open_video(source, 32 * h, 32 * w, chunk_frames=24, max_frames=options.num_frames)
        with opened as reader:
            decoded = Prefetch(iter(reader), depth=2)  # decode ahead on a thread
            try:
                yield from self._from_pixels(reader, decoded, options, (h, w), run)
            finally:
                if not decoded.close():  # stuck in a read of a stalled live source
                    reader.abandon()

    def _from_pixels(
        self,
        reader: VideoReader,
        decoded: Iterator[Tensor],
        options: EditOptions,
        latent_hw: tuple[int, int],
        run: _Run,
    ) -> Iterator[Tensor]:
        total = reader.info.num_frames if options.num_frames is None else options.num_frames
        pixels = decoded
        if total is not None:
            total = _floor_8k1(total)
            pixels = _limit_frames(pixels, total, asked=options.num_frames is not None)
        if self.mode == "bidirectional_short":  # the release encodes the whole clip at once
            clip = torch.cat(list(pixels), dim=1)
            clip = clip[:, : _floor_8k1(clip.shape[1])]
            with run.stage("encode"):
                latents = self.vae.encode(clip[None].to(self.device))
            yield from self._sample(iter([latents]), latents.shape[2], latent_hw, None, run)
        else:
            frames = None if total is None else (total - 1) // 8 + 1
            latents = self._encode(pixels, known_length=total is not None, run=run)
            yield from self._sample(latents, frames, latent_hw, None, run)

    def _on_device(self, conditions: StreamingConditions) -> StreamingConditions:
        return StreamingConditions(conditions.caption.to(self.device), conditions.mask.to(self.device))

    def _encode(self, pixels: Iterator[Tensor], known_length: bool, run: _Run) -> Iterator[Tensor]:
        """Normalised source latents as soon as the chunked causal encoder makes them final."""
        encoder = self.vae.chunked_encoder()
        self._held["encoder"] = encoder
        for chunk in pixels:
            with run.stage("encode"):
                z = encoder.push(chunk[None].to(self.device))
            if z.shape[2]:
                yield z
        if known_length:  # checks the 8k+1 length; a causal encoder has nothing left to emit
            yield encoder.flush()

    def _sample(
        self,
        latents: Iterator[Tensor],
        latent_frames: int | None,
        latent_hw: tuple[int, int],
        noise: Tensor | None,
        run: _Run,
    ) -> Iterator[Tensor]:
        gen = torch.Generator(self.device).manual_seed(run.seed)
        if noise is None and latent_frames is not None:
            shape = (1, self.vae.latent_channels, latent_frames, *latent_hw)
            noise = torch.randn(shape, generator=gen, device=self.device)  # one call, as the release draws it
        self.noise_bytes = 0 if noise is None else noise.nbytes
        try:
            if self.mode == "bidirectional_short":
                yield from self._bidirectional(torch.cat(list(latents), dim=2), noise, run)
            else:
                yield from self._streaming(latents, latent_frames, latent_hw, noise, gen, run)
        finally:
            self._held = {}

    def _bidirectional(self, source: Tensor, noise: Tensor, run: _Run) -> Iterator[Tensor]:
        settings, prompts = run.settings, run.prompts
        source = source.to(self.dtype)
        guided = settings.cfg_scale > 1.0
        caption, mask, source_in = prompts.positive.caption, prompts.positive.mask, source
        if guided:  # batch order [uncond, cond]
            caption = torch.cat([prompts.negative.caption, caption])
            mask = torch.cat([prompts.negative.mask, mask])
            source_in = torch.cat([source, source])

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return self.dit(x, t, caption, mask, source_in)

        with run.stage("dit"):
            latents = sample_flow_dpm_solver(
                velocity, noise, steps=settings.steps, shift=settings.flow_shift,
                cfg_scale=settings.cfg_scale, on_step=lambda done, total: run.report("denoise", done, total),
            )  # fmt: skip
        run.keep(noise, source, latents)
        with run.stage("decode"):
            frames = self.vae.decode(latents.to(self.dtype))[0]
        yield frames

    def _streaming(
        self,
        latents: Iterator[Tensor],
        latent_frames: int | None,
        latent_hw: tuple[int, int],
        noise: Tensor | None,
        gen: torch.Generator,
        run: _Run,
    ) -> Iterator[Tensor]:
        settings = run.settings
        if settings.cfg_scale != 1.0:
            raise EditError(
                "classifier-free guidance is not supported in long_streaming (the release crashes)"
            )
        base = settings.base_chunk_frames
        policy = WindowPolicy(settings.num_cached_blocks, settings.sink_token)
        if latent_frames is not None:
            try:
                boundaries = chunk_boundaries(latent_frames, base)
            except ValueError as exc:
                raise SourceTooShortError(str(exc)) from exc
            sizes = [b - a for a, b in itertools.pairwise(boundaries)]
            window, segments = policy.window_frames(boundaries), policy.window_chunks(boundaries)
        elif settings.num_cached_blocks > 0:  # chunks of `base` as they arrive
            sizes, segments = [], settings.num_cached_blocks + 1
            window = base * segments
        else:
            raise EditError("num_cached_blocks <= 0 (full history) needs a source of known length")
        state = StreamingState.allocate(
            self.dit.config, batch=1, height=latent_hw[0], width=latent_hw[1], window_frames=window,
            window_chunks=segments, device=self.device, dtype=self.dtype,
        )  # fmt: skip
        sampler = StreamingSampler(self.dit, run.prompts.positive, state, steps=settings.steps,
                                   shift=settings.flow_shift, policy=policy)  # fmt: skip
        decoder = self.vae.incremental_decoder()
        pending = torch.empty(
            1, self.vae.latent_channels, 0, *latent_hw, device=self.device, dtype=self.vae.dtype
        )
        self._held.update(state=state, decoder=decoder, pending=pending)
        start = chunk = 0

        def size_of(c: int) -> int:
            return sizes[c] if latent_frames is not None else base

        def denoise(n: int) -> Tensor:
            nonlocal pending, start, chunk
            source = pending[:, :, :n].to(self.dtype)
            pending = pending[:, :, n:].clone()  # drop the consumed frames' storage
            self._held["pending"] = pending
            if noise is not None:
                chunk_noise = noise[:, :, start : start + n]
            else:  # unknown length: per-chunk noise from the seeded generator
                shape = (1, self.vae.latent_channels, n, *latent_hw)
                chunk_noise = torch.randn(shape, generator=gen, device=self.device)
            with run.stage("dit"):
                x = sampler.denoise_chunk(chunk_noise, source, start)
            run.keep(chunk_noise, source, x)
            start, chunk = start + n, chunk + 1
            run.report("chunk", chunk, len(sizes) or None)
            with run.stage("decode"):
                return decoder.push(x.to(self.dtype))

        for z in latents:
            pending = torch.cat([pending, z], dim=2)
            self._held["pending"] = pending
            while (latent_frames is None or chunk < len(sizes)) and pending.shape[2] >= size_of(chunk):
                frames = denoise(size_of(chunk))
                if frames.shape[2]:
                    yield frames[0]
        if latent_frames is None and pending.shape[2]:  # the stream ended inside a chunk
            if chunk == 0:
                raise SourceTooShortError(
                    f"the source is too short to stream ({pending.shape[2]} latent frames)"
                )
            frames = denoise(pending.shape[2])
            if frames.shape[2]:
                yield frames[0]
        if latent_frames is not None and start != latent_frames:
            raise SourceTooShortError(f"the source gave {start} of {latent_frames} latent frames")
        with run.stage("decode"):
            tail = decoder.flush()
        if tail.shape[2]:
            yield tail[0]

    # ---- files --------------------------------------------------------------------------------------

    def edit(
        self,
        source: str | Path | SourceLatents,
        output: str | Path,
        options: EditOptions,
        *,
        fps: float | None = None,
        audio: bool = True,
        overwrite: bool = False,
        preset: str = X264_OPTIONS["preset"],
        prompts: PromptEmbeddings | None = None,
        latent_path: str | Path | None = None,
        progress: ProgressFn | None = None,
        timer: StageTimer | None = None,
        metadata: dict[str, object] | None = None,
    ) -> EditResult:
        """Edit `source` into the MP4 `output` (written atomically). Without `fps`, output frame i keeps
        source frame i's presentation time (a variable-rate source keeps its timing; 16 fps for
        latents); an explicit `fps` spaces the frames evenly. The source audio of the edited span is
        copied (from the reader's own demuxer) unless `audio` is off or `fps` differs from the source's.
        `preset` is x264's (the release's: medium). `latent_path` also saves the release's debug
        latents. The edit's settings (and `metadata`) are written into the file's `comment` tag.

        A file source that fails leaves nothing; a live source (unknown length) that is interrupted
        (Ctrl-C, SIGTERM) keeps what was edited so far in a finished file, then the interrupt is
        re-raised."""
        settings = edit_settings(self.mode, options, self.sampler_settings(options), metadata)
        if isinstance(source, SourceLatents):
            opened: contextlib.AbstractContextManager = contextlib.nullcontext(source)
        else:
            opened = open_source(source, options)
            if options.max_frames is not None or options.max_seconds is not None:
                options = replace(options, num_frames=None)  # at most: the reader's limit bounds it
        with opened as reader:
            record = LatentRecord() if latent_path is not None else None
            writer = self._writer_for(reader, output, options, fps, audio, overwrite, preset, settings)
            live = isinstance(reader, VideoReader) and reader.is_live
            with writer:
                stream = self.stream(reader, options, prompts=prompts, record=record, progress=progress,
                                     timer=timer)  # fmt: skip
                cut = _write_frames(stream, writer, live, timer)
        if cut is not None:
            logger.warning("interrupted: %s keeps the %d frames edited so far", output, writer.frames_written)
            raise cut
        if record is not None:  # after the video: a failed edit leaves neither file
            _save_atomically(record.stacked(), Path(latent_path), overwrite)  # type: ignore[arg-type]
        return EditResult(
            path=Path(output), frames=writer.frames_written, fps=writer.fps, audio=writer.has_audio
        )

    def _writer_for(
        self,
        reader: VideoReader | SourceLatents,
        output: str | Path,
        options: EditOptions,
        fps: float | None,
        audio: bool,
        overwrite: bool,
        preset: str,
        settings: dict[str, str],
    ) -> VideoWriter:
        """The output writer: the source's frame times and audio when it has them, else `fps`."""
        width, height = options.width // 32 * 32, options.height // 32 * 32
        source_fps, has_audio = RELEASE_FPS, False
        if isinstance(reader, SourceLatents):
            width, height = 32 * reader.source.shape[4], 32 * reader.source.shape[3]
        else:
            source_fps, has_audio = reader.info.fps or RELEASE_FPS, reader.info.has_audio
        out_fps = Fraction(fps).limit_denominator(100_000) if fps else source_fps
        keep_audio = audio and has_audio
        if keep_audio and out_fps != source_fps:
            logger.warning(
                "dropping the audio: --fps %s differs from the source rate %s", out_fps, source_fps
            )
            keep_audio = False
        follow = fps is None and isinstance(reader, VideoReader)  # the source's frame times
        return VideoWriter(
            output, out_fps, width, height, overwrite=overwrite, preset=preset,
            audio_from=reader.audio_feed() if keep_audio else None,  # type: ignore[union-attr]
            timestamps=reader.frame_times() if follow else None,  # type: ignore[union-attr]
            metadata=settings,
        )  # fmt: skip


def open_source(source: VideoSource, options: EditOptions) -> VideoReader:
    """Open a source video at the edit's size. With `options.max_frames` / `max_seconds` it reads at
    most that many frames and `num_frames` too becomes an upper bound."""
    width, height = options.width // 32 * 32, options.height // 32 * 32
    reader = open_video(source, height, width, chunk_frames=24, max_frames=options.num_frames)
    try:
        limits = [] if options.max_frames is None else [options.max_frames]
        if options.max_seconds is not None:
            fps = reader.info.fps or RELEASE_FPS
            limits.append(max(1, math.ceil(options.max_seconds * fps)))
        if limits:
            reader.limit(min(limits))
    except BaseException:
        reader.close()
        raise
    return reader


def _write_frames(
    stream: Iterator[Tensor], writer: VideoWriter, live: bool, timer: StageTimer | None
) -> KeyboardInterrupt | None:
    """Feed the stream's frames to `writer` on a background thread (x264 runs beside the GPU work).
    A live source's interrupt is returned after the frames already edited were written, so the
    caller can publish them; anything else aborts and propagates."""
    sink = BackgroundSink(writer.write_images, depth=2)
    try:
        for frames in stream:
            with _stage(timer, "write"):  # the uint8 conversion and any wait for the writer
                sink.put(frames_to_uint8(frames))
        with _stage(timer, "write"):
            sink.close()
    except KeyboardInterrupt as exc:
        stream.close()  # type: ignore[attr-defined]
        if not live:
            sink.cancel()
            raise
        sink.close()  # what was edited goes into the file
        return exc
    except BaseException:
        try:
            stream.close()  # type: ignore[attr-defined]  # end the stream's threads while its reader is open
        finally:
            sink.cancel()  # and the writer's thread before the writer aborts
        raise
    return None


@dataclass
class _Run:
    """What one `stream` call carries through its stages."""

    settings: SamplerConfig
    prompts: PromptEmbeddings
    seed: int
    record: LatentRecord | None
    progress: ProgressFn | None
    timer: StageTimer | None = None

    def stage(self, name: str) -> contextlib.AbstractContextManager:
        return _stage(self.timer, name)

    def report(self, stage: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def keep(self, noise: Tensor, source: Tensor, result: Tensor) -> None:
        if self.record is not None:
            self.record.noise.append(noise.cpu())
            self.record.source.append(source.cpu())
            self.record.result.append(result.cpu())


def _stage(timer: StageTimer | None, name: str) -> contextlib.AbstractContextManager:
    """Time a stage when a timer was given (benchmarks), else do nothing."""
    return timer(name) if timer is not None else contextlib.nullcontext()


def _floor_8k1(frames: int) -> int:
    """Largest 8k+1 frame count not above `frames` (the VAE's temporal stride)."""
    return (frames - 1) // 8 * 8 + 1


def _limit_frames(chunks: Iterator[Tensor], frames: int, asked: bool) -> Iterator[Tensor]:
    """Pass pixel chunks `[3, F, H, W]` through until `frames` frames were given; `asked`: the count
    came from the user (not from the container)."""
    given = 0
    for chunk in chunks:
        take = min(chunk.shape[1], frames - given)
        if take > 0:
            yield chunk[:, :take]
            given += take
        if given >= frames:
            return
    if asked:
        raise SourceTooShortError(
            f"the source has {given} frames, fewer than the {frames} asked for (use --num_frames all)"
        )
    raise SourceTooShortError(f"the source ended after {given} of the {frames} frames its container lists")


def _save_atomically(tensor: Tensor, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise EditError(f"{path} exists (use --overwrite to replace it)")
    tmp = make_temp_beside(path)
    try:
        torch.save(tensor, tmp)
        publish(tmp, path, overwrite=overwrite)
    except FileExistsError:
        raise EditError(f"{path} appeared while writing; kept (use --overwrite to replace it)") from None
    finally:
        tmp.unlink(missing_ok=True)
