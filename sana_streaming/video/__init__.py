"""Video I/O with PyAV: a chunked reader with the release's transform, and an atomic H.264 writer."""

from sana_streaming.video.reader import (
    VideoInfo,
    VideoReader,
    VideoReadError,
    open_video,
    resize_crop_geometry,
    transform_frames,
)
from sana_streaming.video.writer import VideoWriteError, VideoWriter, frames_to_uint8
from sana_streaming.video.yuv import frames_to_yuv420

__all__ = [
    "VideoInfo",
    "VideoReadError",
    "VideoReader",
    "VideoWriteError",
    "VideoWriter",
    "frames_to_uint8",
    "frames_to_yuv420",
    "open_video",
    "resize_crop_geometry",
    "transform_frames",
]
