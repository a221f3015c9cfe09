"""SanaStreamingPipeline: source frames → VAE encode → DiT sampler → VAE decode → frames, a chunk at a time.

`long_streaming` moves one DiT chunk (3 latent frames = 24 video frames) per step of the stream, through
the stages `ChunkedEncoder` → `ChunkStreamer` → `IncrementalDecoder`; `bidirectional_short` is the same
stream with one chunk holding the whole clip (the release's whole-clip VAE and DPM-Solver, for parity).
Each `stream` call returns a `StreamRun` that holds everything of its own, so one pipeline serves several
streams at once. Memory in streaming mode is flat in video length except the starting noise of a source
of known length, which the release draws in one call for the whole latent (`StreamRun.noise_bytes`); a
source of unknown length (a pipe, a live stream) gets its noise per chunk from the same seeded generator
instead, and is cut into chunks of 3 latent frames as it arrives.

The parts live in modules of their own: the options (`options`), the models (`loading`), the source
(`sources`), the stages (`stages`, `sampling`) and the output video (`output`); this one composes them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from sana_streaming.conditioning import PromptPair, TextConditioning
from sana_streaming.config import (
    DEFAULT_X264_PRESET,
    MODE_PRESETS,
    SamplerConfig,
    SanaStreamingConfig,
    load_config,
)
from sana_streaming.debug_files import SourceLatents, save_latent_file
from sana_streaming.loading import load_models
from sana_streaming.models.dit.graphs import resolve_compile
from sana_streaming.models.dit.quantize import resolve_precision
from sana_streaming.models.text_encoder import TextEncoder
from sana_streaming.models.vae import LTX2VAE, IncrementalDecoder
from sana_streaming.options import EditOptions, EditResult, prompt_texts, sampler_settings
from sana_streaming.output import open_writer, write_frames
from sana_streaming.provenance import edit_settings
from sana_streaming.sampling.bidirectional import sample_whole_clip
from sana_streaming.sampling.streaming import ChunkStreamer, DenoisedChunk, LatentRecord
from sana_streaming.sources import open_latents, open_source
from sana_streaming.stages import LatentFeed, ProgressFn, StreamRun
from sana_streaming.timing import StageTimer
from sana_streaming.video.reader import VideoReader, VideoSource
from sana_streaming.video.writer import choose_encoder

logger = logging.getLogger(__name__)


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
        precision: str = "bf16",
        precision_plan: str | None = None,
    ) -> SanaStreamingPipeline:
        """Build every component of `config` (`loading.load_models`): released weights from `model_path`
        and the config's VAE/text-encoder sources, or random weights (`random_weights`, for smoke runs
        and benchmarks). `decode` overrides the config's VAE decode; `precision` (bf16, fp8 or mpq
        with `precision_plan`, see `models.dit.quantize.resolve_precision`) the DiT's GEMMs."""
        if isinstance(config, str):
            config = load_config(config)
        config = config.with_decode(decode)
        plan = resolve_precision(precision, config.dit.depth, precision_plan)
        models = load_models(
            config, model_path=model_path, random_weights=random_weights, device=device, strict=strict,
            load_text_encoder=load_text_encoder, precision=plan,
        )  # fmt: skip
        return cls(mode, config, models.dit, models.vae, models.text_encoder, models.device, models.dtype)

    @classmethod
    def from_pretrained(cls, mode: str = "long_streaming", **kwargs: object) -> SanaStreamingPipeline:
        """The released weights of `mode` with its release config."""
        preset = MODE_PRESETS[mode]
        kwargs.setdefault("model_path", preset.model_path)
        return cls.from_config(preset.config, mode, **kwargs)  # type: ignore[arg-type]

    # ---- settings -----------------------------------------------------------------------------------

    def sampler_settings(self, options: EditOptions) -> SamplerConfig:
        """The sampler this pipeline runs `options` with (`options.sampler_settings` of its mode)."""
        return sampler_settings(options, self.mode, self.config)

    def encode_prompts(self, options: EditOptions) -> PromptPair:
        """Positive (chi prefix, motion score) and negative prompt embeddings; the text encoder leaves
        the GPU afterwards."""
        if self.text_encoder is None:
            raise ValueError("this pipeline has no text encoder; pass prompt embeddings")
        positive_text, negative_text = prompt_texts(options, self.mode)
        encoder = self.text_encoder
        move = self.device.type == "cuda" and not encoder.is_cached(positive_text, negative_text)
        if move:
            encoder.offload(self.device)  # back from the host after an earlier edit
        negative = encoder.encode_negative(negative_text)
        positive = encoder.encode_prompt(positive_text)
        if move:
            encoder.offload("cpu")  # 5 GB the DiT and VAE can use
        return PromptPair(positive=positive, negative=negative)

    def _positive(self, options: EditOptions, prompt: str) -> TextConditioning:
        """The positive conditioning of another instruction of the same edit (streaming has no CFG)."""
        with torch.no_grad():
            return self.encode_prompts(replace(options, prompt=prompt)).positive.to(self.device)

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
        whole_clip = self.mode == "bidirectional_short"
        stride = self.config.vae.vae_downsample_rate
        try:
            with open_latents(
                source, options, self.vae, self.device, run, stride=stride, whole_clip=whole_clip
            ) as feed:
                if whole_clip:
                    yield self._bidirectional(feed, settings, prompts, generator, run)
                else:
                    yield from self._streaming(feed, settings, prompts.positive, generator, run, options)
        finally:
            run.release()

    def _noise(
        self, feed: LatentFeed, latent_frames: int | None, generator: torch.Generator
    ) -> Tensor | None:
        """The given noise, else the whole latent's in one call as the release draws it (None when the
        length is unknown: the streamer draws it per chunk)."""
        if feed.noise is not None or latent_frames is None:
            return feed.noise
        shape = (1, self.vae.latent_channels, latent_frames, *feed.latent_hw)
        return torch.randn(shape, generator=generator, device=self.device)

    def _streaming(
        self,
        feed: LatentFeed,
        settings: SamplerConfig,
        conditioning: TextConditioning,
        generator: torch.Generator,
        run: StreamRun,
        options: EditOptions,
    ) -> Iterator[Tensor]:
        """Source latents → `ChunkStreamer` → incremental decoder, a chunk at a time; the options'
        prompt schedule and the prompts asked for while the run goes (`StreamRun.change_prompt`) switch
        the conditioning at chunk boundaries."""
        run.streamer = streamer = ChunkStreamer.open(
            self.dit, conditioning, settings, latent_hw=feed.latent_hw, latent_frames=feed.latent_frames,
            device=self.device, dtype=self.dtype, noise=self._noise(feed, feed.latent_frames, generator),
            generator=generator, record=run.record, compile=resolve_compile(settings.compile, self.device),
        )  # fmt: skip
        for change in options.prompt_schedule:
            streamer.change_prompt(self._positive(options, change.prompt), frame=change.frame)
        run.noise_bytes = streamer.noise_bytes
        run.decoder = decoder = self.vae.incremental_decoder()
        for source in itertools.chain(feed.chunks, [None]):  # None: the source ended
            for prompt in run.take_prompt_requests():
                streamer.change_prompt(self._positive(options, prompt))
            with run.stage("dit"):
                denoised = streamer.flush() if source is None else streamer.push(source)
            yield from self._decode(denoised, streamer.total_chunks, decoder, run)
        with run.stage("decode"):
            tail = decoder.flush()
        if tail.shape[2]:
            run.count_frames("decode", tail.shape[2], tensor=tail[0])
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
                run.count_frames("decode", frames.shape[2], tensor=frames[0])
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
        noise = self._noise(feed, source.shape[2], generator)
        run.noise_bytes = noise.nbytes
        with run.stage("dit"):
            latents = sample_whole_clip(
                self.dit, source, noise, prompts, settings,
                on_step=lambda done, total: run.report("denoise", done, total, "step"),
            )  # fmt: skip
        if run.record is not None:
            run.record.keep(noise, source, latents)
        with run.stage("decode"):
            frames = self.vae.decode(latents.to(self.dtype))[0]
        run.count_frames("decode", frames.shape[1], tensor=frames)
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
        preset: str = DEFAULT_X264_PRESET,
        encoder: str = "auto",
        prompts: PromptPair | None = None,
        latent_path: str | Path | None = None,
        progress: ProgressFn | None = None,
        timer: StageTimer | None = None,
        metadata: dict[str, object] | None = None,
        fragmented: bool = False,
    ) -> EditResult:
        """Edit `source` into the MP4 `output` (written atomically). Without `fps`, output frame i keeps
        source frame i's presentation time (a variable-rate source keeps its timing; 16 fps for
        latents); an explicit `fps` spaces the frames evenly. The source audio of the edited span is
        copied (from the reader's own demuxer) unless `audio` is off or `fps` differs from the source's.
        `preset` is x264's (default superfast; the release's is medium); `encoder` is `auto`, `x264` or
        `nvenc` (`video.writer.choose_encoder`). `fragmented` writes an .mp4/.mov in place as
        fragmented MP4, playable while it grows. `latent_path` also saves the release's debug
        latents. The edit's settings (and `metadata`) are written into the file's `comment` tag.

        A file source that fails leaves nothing; a live source (unknown length) that is interrupted
        (Ctrl-C, SIGTERM) keeps what was edited so far in a finished file, then the interrupt is
        re-raised."""
        settings = edit_settings(self.mode, options, self.sampler_settings(options), metadata)
        if isinstance(source, SourceLatents):
            opened: contextlib.AbstractContextManager = contextlib.nullcontext(source)
        else:
            opened, options = open_source(source, options, self.device)
        with opened as reader:
            record = LatentRecord() if latent_path is not None else None
            writer = open_writer(reader, output, options, fps=fps, audio=audio, overwrite=overwrite,
                                 preset=preset, settings=settings, fragmented=fragmented,
                                 encoder=choose_encoder(encoder, self.device))  # fmt: skip
            live = isinstance(reader, VideoReader) and reader.is_live
            with writer:
                stream = self.stream(reader, options, prompts=prompts, record=record, progress=progress,
                                     timer=timer)  # fmt: skip
                cut = write_frames(stream, writer, live, timer)
        if cut is not None:
            logger.warning("interrupted: %s keeps the %d frames edited so far", output, writer.frames_written)
            raise cut
        if record is not None:  # after the video: a failed edit leaves neither file
            save_latent_file(record.stacked(), Path(latent_path), overwrite)  # type: ignore[arg-type]
        return EditResult(
            path=writer.target if writer.streamed else Path(output),
            frames=writer.frames_written,
            fps=writer.fps,
            audio=writer.has_audio,
            dropped_frames=reader.dropped_frames if isinstance(reader, VideoReader) else 0,
        )
