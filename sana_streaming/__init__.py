"""sana-streaming: text-instructed video editing with SANA-Streaming, streamed chunk by chunk.

Everything is loaded on first use: the package imports torch, diffusers, transformers and PyAV only
when one of its names is asked for, so `sana-streaming --help` starts fast and Ctrl-C during start-up
reaches the command line's handler.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "DiTConfig": "sana_streaming.config",
    "SanaStreamingConfig": "sana_streaming.config",
    "load_config": "sana_streaming.config",
    "build_dit": "sana_streaming.models.dit",
    "TextCache": "sana_streaming.models.dit",
    "PromptPair": "sana_streaming.conditioning",
    "TextConditioning": "sana_streaming.conditioning",
    "EditOptions": "sana_streaming.options",
    "EditResult": "sana_streaming.options",
    "ModePreset": "sana_streaming.config",
    "MODE_PRESETS": "sana_streaming.config",
    "validate_options": "sana_streaming.options",
    "SourceLatents": "sana_streaming.debug_files",
    "ProgressFn": "sana_streaming.stages",
    "PromptChange": "sana_streaming.prompt_schedule",
    "read_prompt_schedule": "sana_streaming.prompt_schedule",
    # the errors an edit raises, each printed on one line by the command line
    "EditError": "sana_streaming.errors",
    "OptionError": "sana_streaming.errors",
    "SourceTooShortError": "sana_streaming.errors",
    "PromptScheduleError": "sana_streaming.prompt_schedule",
    "DebugFileError": "sana_streaming.debug_files",
    "CheckpointError": "sana_streaming.checkpoint",
    "ConfigError": "sana_streaming.config",
    "HubError": "sana_streaming.hub",
    "TextEncoderError": "sana_streaming.models.text_encoder",
    "VAELoadError": "sana_streaming.models.vae",
    "VideoReadError": "sana_streaming.video.reader",
    "VideoWriteError": "sana_streaming.video.writer",
    "PrecisionPlan": "sana_streaming.models.dit.quantize",
    "PrecisionPlanError": "sana_streaming.models.dit.quantize",
    "SanaStreamingPipeline": "sana_streaming.pipeline",
    "StreamRun": "sana_streaming.stages",
    "ProgressEvent": "sana_streaming.stages",
    "SourceEncoder": "sana_streaming.stages",
    # the stages, to drive by hand (docs/streaming.md)
    "ChunkStreamer": "sana_streaming.sampling",
    "DenoisedChunk": "sana_streaming.sampling",
    "LatentRecord": "sana_streaming.sampling",
    "SourceChunk": "sana_streaming.sampling",
    "StreamingSampler": "sana_streaming.sampling",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sana_streaming' has no attribute {name!r}")
