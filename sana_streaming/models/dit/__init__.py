"""The SANA-Streaming hybrid DiT."""

from sana_streaming.models.dit.cache import StreamingState
from sana_streaming.models.dit.cross_attention import TextCache
from sana_streaming.models.dit.model import SanaStreamingDiT, build_dit
from sana_streaming.models.dit.random_weights import randomize_dit_

__all__ = ["SanaStreamingDiT", "StreamingState", "TextCache", "build_dit", "randomize_dit_"]
