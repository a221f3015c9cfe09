"""sana-streaming: text-instructed video editing with SANA-Streaming, streamed chunk by chunk."""

from sana_streaming.config import DiTConfig, SanaStreamingConfig, load_config
from sana_streaming.models.dit import build_dit

__all__ = ["DiTConfig", "SanaStreamingConfig", "build_dit", "load_config"]
__version__ = "0.1.0"
