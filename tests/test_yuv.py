"""The device-side RGB -> yuv420p conversion against swscale (the writer's CPU path) and its use by
the writer and the edit's output path."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from sana_streaming.output import HostPlanes
from sana_streaming.video.writer import VideoWriter, frames_to_uint8
from sana_streaming.video.yuv import CHROMA_TAPS, frames_to_yuv420


def swscale_yuv420(images: np.ndarray) -> np.ndarray:
    """uint8 RGB `[F, H, W, 3]` -> yuv420p planes `[F, 3H/2, W]` as the writer's `write_images` does."""
    return np.stack([
        av.VideoFrame.from_ndarray(image, format="rgb24")
        .reformat(format="yuv420p", interpolation="BICUBIC")
        .to_ndarray()
        for image in images
    ])  # fmt: skip


def test_chroma_taps_are_the_half_scale_bicubic() -> None:
    taps = np.array(CHROMA_TAPS)
    assert taps.sum() == pytest.approx(1.0)
    assert np.allclose(taps, taps[::-1])  # centred between the two luma rows
    # Keys' kernel with a = -0.6 at distances 0.25, 0.75, 1.25, 1.75, normalised by their sum 2
    assert np.allclose(taps[4:], np.array([0.871875, 0.240625, -0.084375, -0.028125]) / 2)


@pytest.mark.parametrize("content", ["noise", "gradients"])
def test_frames_to_yuv420_matches_swscale_within_one_level(content: str) -> None:
    gen = torch.Generator().manual_seed(3)
    frames, height, width = 3, 48, 64
    if content == "noise":
        chunk = torch.rand(3, frames, height, width, generator=gen) * 2.2 - 1.1  # clamped at both ends
    else:
        yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        phase = torch.rand(3, frames, 1, 1, generator=gen) * 6
        chunk = torch.sin(0.11 * xx + 0.07 * yy + phase) + 0.05 * torch.randn(
            3, frames, height, width, generator=gen
        )
    ours = frames_to_yuv420(chunk).numpy().astype(int)
    theirs = swscale_yuv420(frames_to_uint8(chunk)).astype(int)
    assert ours.shape == theirs.shape == (frames, height * 3 // 2, width)
    diff = np.abs(ours - theirs)
    luma, chroma = diff[:, :height], diff[:, height:]
    assert luma.max() <= 1 and chroma.max() <= 1
    assert (luma > 0).mean() < 0.02 and (chroma > 0).mean() < 0.2
    assert abs((ours - theirs)[:, height:].mean()) < 0.1  # no bias beyond swscale's rounding
    # a wrong filter (e.g. plain 2x2 averaging) is far more than one level off on these images
    assert np.abs(ours[:, height:] - ours[:, height:].mean()).max() > 10


def test_frames_to_yuv420_refuses_odd_sizes_and_bad_layouts() -> None:
    with pytest.raises(ValueError, match="even"):
        frames_to_yuv420(torch.rand(3, 1, 10, 15))
    with pytest.raises(ValueError, match=r"\[3, F, H, W\]"):
        frames_to_yuv420(torch.rand(1, 10, 16))


def test_writer_paths_agree(tmp_path) -> None:
    """`write` (device conversion) and `write_images` (swscale) give files of the same fidelity."""
    gen = torch.Generator().manual_seed(5)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    phase = torch.rand(3, 4, 1, 1, generator=gen) * 6
    chunk = torch.sin(0.05 * xx + phase) * torch.cos(0.04 * yy) + 0.02 * torch.randn(
        3, 4, 64, 96, generator=gen
    )
    source = frames_to_uint8(chunk).astype(float)
    writes = {"device": lambda w: w.write(chunk), "swscale": lambda w: w.write_images(frames_to_uint8(chunk))}
    psnr = {}
    for name, write in writes.items():
        path = tmp_path / f"{name}.mp4"
        with VideoWriter(path, 24, 96, 64) as writer:
            write(writer)
        with av.open(str(path)) as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(
                float
            )
        assert decoded.shape == source.shape
        psnr[name] = 10 * np.log10(255**2 / np.mean((decoded - source) ** 2))
    assert psnr["device"] > 30
    assert abs(psnr["device"] - psnr["swscale"]) < 0.5, psnr


def test_writer_refuses_planes_of_another_size(tmp_path) -> None:
    with VideoWriter(tmp_path / "out.mp4", 24, 64, 32) as writer, pytest.raises(ValueError, match="yuv420p"):
        writer.write_yuv(np.zeros((1, 32, 64), np.uint8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_conversion_and_pinned_copy_on_the_gpu() -> None:
    """The copy is still running when `copy_of` returns (the stream is held up first); `numpy()`
    waits for it and gives the planes the CPU computes."""
    chunk = torch.rand(3, 5, 704, 1280, generator=torch.Generator().manual_seed(9)) * 2 - 1
    on_cpu = frames_to_yuv420(chunk).numpy().astype(int)
    on_gpu = chunk.cuda()
    # a first conversion and copy load the kernels (a first launch waits for the device) and leave a
    # pinned block in PyTorch's cache, so nothing below has to wait for the device
    HostPlanes.copy_of(frames_to_yuv420(on_gpu)).numpy()
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU cycles ahead of the conversion and the copy
    host = HostPlanes.copy_of(frames_to_yuv420(on_gpu))
    assert host.planes.is_pinned() and not host.copied.query()
    assert np.abs(host.numpy().astype(int) - on_cpu).max() <= 1
    assert host.copied.query()
