"""What one edit asks for (`EditOptions`), what it wrote (`EditResult`), the one check of the options
that the API and the command line share (`validate_options`), and the options resolved against the
mode's defaults (`sampler_settings`, `prompt_texts`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import get_args

from sana_streaming.config import (
    COMPILE_MODES,
    MODE_PRESETS,
    RELEASE_HEIGHT,
    RELEASE_WIDTH,
    CompileMode,
    SamplerConfig,
    SanaStreamingConfig,
    VAEConfig,
)
from sana_streaming.errors import OptionError
from sana_streaming.models.text_encoder import positive_prompt_text
from sana_streaming.prompt_schedule import PromptChange, PromptScheduleError, check_schedule
from sana_streaming.stages import FrameDropPolicy, floor_8k1

FRAME_DROP_POLICIES = get_args(FrameDropPolicy)

# The LTX-2 decoder reflect-pads each latent frame by one row and column before its convolutions
# (`decoder_spatial_padding_mode: reflect`), which needs at least 2 latent rows and columns.
MIN_LATENT_SIDE = 2


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
    compile: CompileMode | None = None  # DiT forwards: "none" (eager), "graph" (CUDA graphs), "max" (graphs +
    # fused kernels); None: "graph" on CUDA, "none" elsewhere (`resolve_compile`)
    prompt_schedule: tuple[PromptChange, ...] = ()  # later prompts by video frame (long_streaming)
    live_frame_drop: FrameDropPolicy = (
        "auto"  # a live source's newest chunk is dropped while the editor is behind:
    )
    # "auto" for sources that run in real time (network streams, capture devices), "on" for any source
    # of unknown length (pipes too), "off" never (the source then waits, or loses data in its buffers)


@dataclass
class EditResult:
    """What `edit` wrote."""

    path: Path | str  # a str for a streamed output (- or a URL)
    frames: int
    fps: Fraction
    audio: bool
    dropped_frames: int = 0  # source frames skipped because the edit ran behind a live source


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
    if options.compile is not None and options.compile not in COMPILE_MODES:
        raise OptionError("compile", f"must be one of {', '.join(COMPILE_MODES)}, got {options.compile!r}")
    if options.live_frame_drop not in FRAME_DROP_POLICIES:
        raise OptionError(
            "live_frame_drop",
            f"must be one of {', '.join(FRAME_DROP_POLICIES)}, got {options.live_frame_drop!r}",
        )
    if options.prompt_schedule and not preset.chunked:
        raise OptionError("prompt_schedule", f"needs a streaming mode; {mode} edits the clip as one chunk")
    try:
        check_schedule(options.prompt_schedule)
    except PromptScheduleError as exc:
        raise OptionError("prompt_schedule", str(exc)) from None
    smallest = smallest_frame_side(vae.vae_downsample_rate)
    for name in ("height", "width"):
        if getattr(options, name) < smallest:
            raise OptionError(name, f"must be at least {smallest} (the VAE's smallest frame), got "
                              f"{getattr(options, name)}")  # fmt: skip


def sampler_settings(options: EditOptions, mode: str, config: SanaStreamingConfig) -> SamplerConfig:
    """The mode's sampler defaults with the edit's overrides (validated first); without an explicit
    flow shift, the config scheduler's `inference_flow_shift`, else its `flow_shift`."""
    validate_options(options, mode, config.vae)
    base = MODE_PRESETS[mode].sampler(config.vae)
    shift = options.flow_shift
    if shift is None:
        shift = config.scheduler.sampling_shift
    return replace(
        base,
        steps=options.steps or base.steps,
        cfg_scale=base.cfg_scale if options.cfg_scale is None else options.cfg_scale,
        flow_shift=shift,
        num_cached_blocks=options.num_cached_blocks,
        sink_token=options.sink_token,
        compile=options.compile,
    )


def prompt_texts(options: EditOptions, mode: str) -> tuple[str, str]:
    """(positive, negative) prompt text of the edit: the instruction with the chi prefix and the motion
    score, and the negative prompt, each the mode's default where the options leave it None."""
    preset = MODE_PRESETS[mode]
    motion = preset.motion_score if options.motion_score is None else options.motion_score
    negative = preset.negative_prompt if options.negative_prompt is None else options.negative_prompt
    return positive_prompt_text(options.prompt, int(motion)), negative
