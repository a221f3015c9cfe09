"""The samplers and the streaming stage: `ChunkStreamer` turns source latents, pushed as they arrive,
into denoised chunks (`long_streaming`); `sample_whole_clip` runs the whole-clip mode
(`bidirectional_short`) on `sample_flow_dpm_solver`."""

from sana_streaming.sampling.bidirectional import sample_whole_clip
from sana_streaming.sampling.dpm_solver import sample_flow_dpm_solver
from sana_streaming.sampling.streaming import (
    ChunkStreamer,
    DenoisedChunk,
    LatentRecord,
    SourceChunk,
    StreamingSampler,
    WindowPolicy,
    chunk_boundaries,
    chunk_sizes,
    streaming_schedule,
)

__all__ = [
    "ChunkStreamer",
    "DenoisedChunk",
    "LatentRecord",
    "SourceChunk",
    "StreamingSampler",
    "WindowPolicy",
    "chunk_boundaries",
    "chunk_sizes",
    "sample_flow_dpm_solver",
    "sample_whole_clip",
    "streaming_schedule",
]
