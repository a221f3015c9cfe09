"""Atomic outputs get the permissions a plain open() would give, not mkstemp's owner-only ones."""

import os
import stat

import numpy as np
import pytest
import torch

from sana_streaming.checkpoint import convert_checkpoint
from sana_streaming.files import make_temp_beside, publish
from sana_streaming.video.writer import VideoWriteError, VideoWriter


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_are_world_readable(tmp_path, umask_022):
    temp = make_temp_beside(tmp_path / "sub" / "x.bin")
    publish(temp, tmp_path / "sub" / "x.bin", overwrite=False)
    assert mode(tmp_path / "sub" / "x.bin") == 0o644 and not temp.exists()
    with VideoWriter(tmp_path / "out.mp4", 8, 32, 32) as writer:
        writer.write_images(np.full((3, 32, 32, 3), 100, dtype=np.uint8))
    assert mode(tmp_path / "out.mp4") == 0o644
    torch.save({"a": torch.ones(2)}, tmp_path / "in.pth")
    convert_checkpoint(tmp_path / "in.pth", tmp_path / "out.safetensors")
    assert mode(tmp_path / "out.safetensors") == 0o644


def test_writer_refuses_frames_after_abort(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", 8, 32, 32)
    writer.abort()
    with pytest.raises(VideoWriteError, match="closed"):
        writer.write_images(np.zeros((1, 32, 32, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []
