"""The samplers and the streaming stage: `ChunkStreamer` turns source latents, pushed as they arrive,
into denoised chunks (`long_streaming`); `sample_flow_dpm_solver` runs the whole-clip mode."""

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
    "streaming_schedule",
]
