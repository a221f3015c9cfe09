"""sana-streaming: text-instructed video editing with SANA-Streaming, streamed chunk by chunk."""

from typing import Any

from sana_streaming.config import DiTConfig, SanaStreamingConfig, load_config
from sana_streaming.models.dit import build_dit

__all__ = [
    "DiTConfig",
    "EditOptions",
    "SanaStreamingConfig",
    "SanaStreamingPipeline",
    "build_dit",
    "load_config",
]
__version__ = "0.1.0"

_PIPELINE_NAMES = ("EditOptions", "SanaStreamingPipeline")


def __getattr__(name: str) -> Any:
    """The pipeline imports diffusers, transformers and PyAV: load it on first use only."""
    if name in _PIPELINE_NAMES:
        from sana_streaming import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'sana_streaming' has no attribute {name!r}")
