"""SanaStreamingPipeline: source frames → VAE encode → DiT sampler → VAE decode → frames, a chunk at a time.

`long_streaming` moves one DiT chunk (3 latent frames = 24 video frames) per step of the stream, through
the stages `ChunkedEncoder` → `ChunkStreamer` → `IncrementalDecoder`; `bidirectional_short` is the same
stream with one chunk holding the whole clip (the release's whole-clip VAE and DPM-Solver, for parity).
Each `stream` call returns a `StreamRun` that holds everything of its own, so one pipeline serves several
streams at once. Memory in streaming mode is flat in video length except the starting noise of a source
of known length, which the release draws in one call for the whole latent (`StreamRun.noise_bytes`); a
source of unknown length (a pipe, a live stream) gets its noise per chunk from the same seeded generator
instead, and is cut into chunks of 3 latent frames as it arrives.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor

from sana_streaming.background import BackgroundSink
from sana_streaming.checkpoint import load_dit_checkpoint
from sana_streaming.conditioning import PromptPair, TextConditioning
from sana_streaming.config import (
    MODE_PRESETS,
    RELEASE_HEIGHT,
    RELEASE_WIDTH,
    SamplerConfig,
    SanaStreamingConfig,
    VAEConfig,
    load_config,
)
from sana_streaming.debug_files import SourceLatents
from sana_streaming.debug_files import load_latent_file as load_latent_file  # the CLI's debug flags
from sana_streaming.debug_files import load_text_embed_file as load_text_embed_file
from sana_streaming.downloads import model_needs, resolve_needs
from sana_streaming.errors import EditError, OptionError
from sana_streaming.files import make_temp_beside, publish
from sana_streaming.models.dit import build_dit, randomize_dit_
from sana_streaming.models.text_encoder import TextEncoder, positive_prompt_text
from sana_streaming.models.vae import LTX2VAE, IncrementalDecoder, load_vae
from sana_streaming.provenance import edit_settings
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver
from sana_streaming.sampling.streaming import ChunkStreamer, DenoisedChunk, LatentRecord
from sana_streaming.stages import LatentFeed, ProgressFn, SourceEncoder, StreamRun, floor_8k1
from sana_streaming.timing import StageTimer
from sana_streaming.video.reader import VideoReader, VideoSource, open_video
from sana_streaming.video.writer import X264_OPTIONS, VideoWriter, frames_to_uint8

logger = logging.getLogger(__name__)

RELEASE_FPS = Fraction(16)  # the release writes every output at 16 fps
# The LTX-2 decoder reflect-pads each latent frame by one row and column before its convolutions
# (`decoder_spatial_padding_mode: reflect`), which needs at least 2 latent rows and columns.
MIN_LATENT_SIDE = 2


def smallest_frame_side(stride: int = 32) -> int:
    """The smallest height or width in pixels the VAE decodes at spatial `stride`."""
    return MIN_LATENT_SIDE * stride


def validate_options(options: EditOptions, mode: str, vae: VAEConfig | None = None) -> None:
    """Raise `OptionError` for a value the mode cannot run; the one check of the API and the CLI."""
    preset, vae = MODE_PRESETS[mode], vae or VAEConfig()
    for name in ("num_frames", "steps", "max_frames", "max_seconds"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise OptionError(name, f"must be positive, got {value}")
    shortest = preset.shortest_source(vae)
    if options.num_frames is not None and floor_8k1(options.num_frames) < shortest:
        raise OptionError("num_frames", f"must be at least {shortest} in {mode}, got {options.num_frames}")
    if options.cfg_scale is not None and options.cfg_scale < 1:
        raise OptionError("cfg_scale", f"must be >= 1, got {options.cfg_scale}")
    if options.cfg_scale not in (None, 1) and preset.chunked:
        raise OptionError("cfg_scale", f"must be 1 in {mode} (the release's streaming sampler has no CFG)")
    smallest = smallest_frame_side(vae.vae_downsample_rate)
    for name in ("height", "width"):
        if getattr(options, name) < smallest:
            raise OptionError(name, f"must be at least {smallest} (the VAE's smallest frame), got "
                              f"{getattr(options, name)}")  # fmt: skip


@dataclass(frozen=True)
class EditOptions:
    """Per-edit settings; None means the mode's default (`config.MODE_PRESETS`)."""

    prompt: str
    negative_prompt: str | None = None
    num_frames: int | None = None  # video frames to edit (floored to 8k+1); None: the whole source
    height: int = RELEASE_HEIGHT
    width: int = RELEASE_WIDTH
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
class EditResult:
    """What `edit` wrote."""

    path: Path
    frames: int
    fps: Fraction
    audio: bool


class SanaStreamingPipeline:
    """Wires reader → encoder → sampler → decoder → writer. Build with `from_config`/`from_pretrained`.
    It holds the models only: each `stream` carries its own state (`StreamRun`)."""

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
        if mode not in MODE_PRESETS:
            raise ValueError(f"unknown mode {mode!r}; choose from {sorted(MODE_PRESETS)}")
        self.mode = mode
        self.config = config
        self.dit = dit
        self.vae = vae
        self.text_encoder = text_encoder
        self.device = device
        self.dtype = dtype

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
        preset = MODE_PRESETS[mode]
        kwargs.setdefault("model_path", preset.model_path)
        return cls.from_config(preset.config, mode, **kwargs)  # type: ignore[arg-type]

    # ---- settings -----------------------------------------------------------------------------------

    def sampler_settings(self, options: EditOptions) -> SamplerConfig:
        """The mode's sampler defaults with the edit's overrides; flow shift from the config."""
        validate_options(options, self.mode, self.config.vae)
        base = MODE_PRESETS[self.mode].sampler(self.config.vae)
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

    def encode_prompts(self, options: EditOptions) -> PromptPair:
        """Positive (chi prefix, motion score) and negative prompt embeddings; the text encoder leaves
        the GPU afterwards."""
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text encoder; pass prompt embeddings")
        preset = MODE_PRESETS[self.mode]
        motion = preset.motion_score if options.motion_score is None else options.motion_score
        negative_text = options.negative_prompt
        if negative_text is None:
            negative_text = preset.negative_prompt
        positive_text = positive_prompt_text(options.prompt, int(motion))
        encoder = self.text_encoder
        move = self.device.type == "cuda" and not encoder.is_cached(positive_text, negative_text)
        if move:
            encoder.offload(self.device)  # back from the host after an earlier edit
        negative = encoder.encode_negative(negative_text)
        positive = encoder.encode_prompt(positive_text)
        if move:
            encoder.offload("cpu")  # 5 GB the DiT and VAE can use
        return PromptPair(positive=positive, negative=negative)

    # ---- streaming ----------------------------------------------------------------------------------

    def stream(
        self,
        source: VideoSource | VideoReader | SourceLatents,
        options: EditOptions,
        *,
        prompts: PromptPair | None = None,
        record: LatentRecord | None = None,
        progress: ProgressFn | None = None,
        timer: StageTimer | None = None,
    ) -> StreamRun:
        """A run yielding edited frames `[3, F, H, W]` (VAE dtype, about [-1, 1]) chunk by chunk.

        `source` is a video (path, URL or binary stream; an open `VideoReader` of the edit's size is
        used as is) or `SourceLatents`; `prompts` replaces text encoding; `record` collects the
        latents (`--save_latent`); `timer` measures the stages (benchmarks)."""
        return StreamRun(
            lambda run: self._compose(run, source, options, prompts), record=record, progress=progress,
            timer=timer,
        )  # fmt: skip

    @torch.no_grad()
    def _compose(
        self,
        run: StreamRun,
        source: VideoSource | VideoReader | SourceLatents,
        options: EditOptions,
        prompts: PromptPair | None,
    ) -> Generator[Tensor, None, None]:
        """The run's body: prompts, then reader → encoder → sampler → decoder (the writer is the caller)."""
        settings = self.sampler_settings(options)
        with run.stage("text"):
            prompts = prompts or self.encode_prompts(options)
        run.report("text", 1, 1, "prompt")
        prompts = prompts.to(self.device)
        generator = torch.Generator(self.device).manual_seed(options.seed)
        try:
            with self._latents(source, options, run) as feed:
                if self.mode == "bidirectional_short":
                    yield self._bidirectional(feed, settings, prompts, generator, run)
                else:
                    yield from self._streaming(feed, settings, prompts.positive, generator, run)
        finally:
            run.release()

    @contextlib.contextmanager
    def _latents(
        self, source: VideoSource | VideoReader | SourceLatents, options: EditOptions, run: StreamRun
    ) -> Iterator[LatentFeed]:
        """The source as latents: given ones, or reader → encoder at the edit's frame size."""
        if isinstance(source, SourceLatents):
            yield LatentFeed.given(source, self.device)
            return
        stride = self.config.vae.vae_downsample_rate
        with contextlib.ExitStack() as stack:
            if not isinstance(source, VideoReader):
                reader, options = open_source(source, options)
                source = stack.enter_context(reader)
            encoder = SourceEncoder(self.vae, self.device, whole_clip=self.mode == "bidirectional_short")
            latent_hw = (options.height // stride, options.width // stride)
            with encoder.open(source, latent_hw, options.num_frames, run) as feed:
                yield feed

    def _whole_noise(
        self, latent_frames: int, latent_hw: tuple[int, int], generator: torch.Generator
    ) -> Tensor:
        """The starting noise of the whole latent, in one call as the release draws it."""
        shape = (1, self.vae.latent_channels, latent_frames, *latent_hw)
        return torch.randn(shape, generator=generator, device=self.device)

    def _streaming(
        self,
        feed: LatentFeed,
        settings: SamplerConfig,
        conditioning: TextConditioning,
        generator: torch.Generator,
        run: StreamRun,
    ) -> Iterator[Tensor]:
        """Source latents → `ChunkStreamer` → incremental decoder, a chunk at a time."""
        noise = feed.noise
        if noise is None and feed.latent_frames is not None:
            noise = self._whole_noise(feed.latent_frames, feed.latent_hw, generator)
        run.streamer = streamer = ChunkStreamer.open(
            self.dit, conditioning, settings, latent_hw=feed.latent_hw, latent_frames=feed.latent_frames,
            device=self.device, dtype=self.dtype, noise=noise, generator=generator, record=run.record,
        )  # fmt: skip
        run.noise_bytes = streamer.noise_bytes
        run.decoder = decoder = self.vae.incremental_decoder()
        for source in itertools.chain(feed.chunks, [None]):  # None: the source ended
            with run.stage("dit"):
                denoised = streamer.flush() if source is None else streamer.push(source)
            yield from self._decode(denoised, streamer.total_chunks, decoder, run)
        with run.stage("decode"):
            tail = decoder.flush()
        if tail.shape[2]:
            run.count_frames("decode", tail.shape[2], tail[0])
            yield tail[0]

    def _decode(
        self, chunks: list[DenoisedChunk], total: int | None, decoder: IncrementalDecoder, run: StreamRun
    ) -> Iterator[Tensor]:
        """The frames `chunks` make final, one `[3, F, H, W]` per chunk that makes any."""
        for chunk in chunks:
            run.report("denoise", chunk.index + 1, total, "chunk", tensor=chunk.latents, start=chunk.start)
            with run.stage("decode"):
                frames = decoder.push(chunk.latents.to(self.dtype))
            if frames.shape[2]:
                run.count_frames("decode", frames.shape[2], frames[0])
                yield frames[0]

    def _bidirectional(
        self,
        feed: LatentFeed,
        settings: SamplerConfig,
        prompts: PromptPair,
        generator: torch.Generator,
        run: StreamRun,
    ) -> Tensor:
        """The whole clip as one chunk: DPM-Solver with CFG, then a whole-clip decode `[3, F, H, W]`."""
        source = torch.cat([chunk.latents for chunk in feed.chunks], dim=2).to(self.dtype)
        noise = feed.noise
        if noise is None:
            noise = self._whole_noise(source.shape[2], feed.latent_hw, generator)
        run.noise_bytes = noise.nbytes
        guided = settings.cfg_scale > 1.0
        conditioning, source_in = prompts.positive, source
        if guided:  # batch order [uncond, cond]
            conditioning, source_in = prompts.guidance_batch(), torch.cat([source, source])
        text = self.dit.prepare_text(conditioning)  # once for every step of the sample

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            return self.dit(x, t, text, None, source_in)

        with run.stage("dit"):
            latents = sample_flow_dpm_solver(
                velocity, noise, steps=settings.steps, shift=settings.flow_shift,
                cfg_scale=settings.cfg_scale, on_step=functools.partial(_report_step, run),
            )  # fmt: skip
        if run.record is not None:
            run.record.keep(noise, source, latents)
        with run.stage("decode"):
            frames = self.vae.decode(latents.to(self.dtype))[0]
        run.count_frames("decode", frames.shape[1], frames)
        return frames

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
        prompts: PromptPair | None = None,
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
            opened, options = open_source(source, options)
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


def open_source(source: VideoSource, options: EditOptions) -> tuple[VideoReader, EditOptions]:
    """Open a source video at the edit's size; returns it with the options the edit runs with. With
    `options.max_frames` / `max_seconds` the reader stops there and `num_frames` becomes an upper
    bound too (the edit ends with the source or the limit, whichever comes first, without an error)."""
    width, height = options.width // 32 * 32, options.height // 32 * 32
    reader = open_video(source, height, width, chunk_frames=24, max_frames=options.num_frames)
    limits = [] if options.max_frames is None else [options.max_frames]
    if options.max_seconds is not None:
        limits.append(max(1, math.ceil(options.max_seconds * (reader.info.fps or RELEASE_FPS))))
    if not limits:
        return reader, options
    try:
        reader.limit(min(limits))
    except BaseException:
        reader.close()
        raise
    return reader, replace(options, num_frames=None)


def _report_step(run: StreamRun, done: int, total: int) -> None:
    run.report("denoise", done, total, "step")


def _write_frames(
    stream: StreamRun, writer: VideoWriter, live: bool, timer: StageTimer | None
) -> KeyboardInterrupt | None:
    """Feed the stream's frames to `writer` on a background thread (x264 runs beside the GPU work).
    A live source's interrupt is returned after the frames already edited were written, so the
    caller can publish them; anything else aborts and propagates."""
    sink = BackgroundSink(writer.write_images, depth=2)
    try:
        for frames in stream:
            with _stage(timer, "write"):  # the uint8 conversion and any wait for the writer
                sink.put(frames_to_uint8(frames))
            stream.count_frames("write", frames.shape[1])  # handed to the writer's thread
        with _stage(timer, "write"):
            sink.close()
    except KeyboardInterrupt as exc:
        stream.close()
        if not live:
            sink.cancel()
            raise
        sink.close()  # what was edited goes into the file
        return exc
    except BaseException:
        try:
            stream.close()  # end the stream's threads while its reader is open
        finally:
            sink.cancel()  # and the writer's thread before the writer aborts
        raise
    return None


def _stage(timer: StageTimer | None, name: str) -> contextlib.AbstractContextManager:
    """Time a stage when a timer was given (benchmarks), else do nothing."""
    return timer(name) if timer is not None else contextlib.nullcontext()


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
