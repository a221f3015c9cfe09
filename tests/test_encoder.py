"""The H.264 encoder choice (`--encoder`): NVENC where it opens, x264 otherwise, with a notice when
NVENC was asked for and is not there."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
import torch
from helpers_video import make_clip, probe
from test_cli import tiny_args, workdir  # noqa: F401  (the fixture)

from sana_streaming.cli import main
from sana_streaming.video import writer as writer_module
from sana_streaming.video.writer import VideoWriter, choose_encoder, nvenc_missing

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _nvenc(monkeypatch, missing: str | None) -> list[int]:
    """Pretend NVENC opens (`missing` None) or not; returns the list of probe calls."""
    calls: list[int] = []

    def probe_nvenc() -> str | None:
        calls.append(1)
        return missing

    monkeypatch.setattr(writer_module, "nvenc_missing", probe_nvenc)
    return calls


def test_x264_and_auto_on_the_cpu_never_probe(monkeypatch) -> None:
    calls = _nvenc(monkeypatch, None)
    assert choose_encoder("x264", CUDA) == "x264"
    assert choose_encoder("auto", CPU) == "x264"
    assert calls == []


def test_auto_takes_nvenc_where_it_opens_and_x264_quietly_where_not(monkeypatch, caplog) -> None:
    _nvenc(monkeypatch, None)
    assert choose_encoder("auto", CUDA) == "nvenc"
    _nvenc(monkeypatch, "h264_nvenc does not open here (no device)")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert choose_encoder("auto", CUDA) == "x264"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_nvenc_asked_for_and_missing_falls_back_with_the_reason(monkeypatch, caplog) -> None:
    _nvenc(monkeypatch, "h264_nvenc does not open here (no device)")
    with caplog.at_level(logging.WARNING):
        assert choose_encoder("nvenc", CUDA) == "x264"
    assert "--encoder nvenc: h264_nvenc does not open here (no device); encoding with x264" in caplog.text


def test_unknown_encoders_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        choose_encoder("vp9", CPU)
    with pytest.raises(ValueError, match="x264 or nvenc"):
        VideoWriter(tmp_path / "out.mp4", 24, 64, 32, encoder="auto")
    assert list(tmp_path.iterdir()) == []


def test_the_probe_answers_in_one_line() -> None:
    missing = nvenc_missing()
    assert missing is None or (missing and "\n" not in missing)


def test_cli_nvenc_without_nvenc_still_edits(workdir, caplog) -> None:  # noqa: F811
    if nvenc_missing() is None:
        pytest.skip("NVENC opens here: nothing to fall back from")
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    with caplog.at_level(logging.WARNING):
        code = main(tiny_args(src, "--num_frames", "all", "--encoder", "nvenc", "--output_name", "n.mp4"))
    assert code == 0 and "encoding with x264" in caplog.text
    out = workdir / "outputs" / "n.mp4"
    assert probe(out)["frames"] == 25 and b"x264" in out.read_bytes()


@pytest.mark.skipif(nvenc_missing() is not None, reason="needs a GPU with NVENC")
def test_nvenc_writes_a_file_that_decodes(tmp_path) -> None:
    chunk = torch.rand(3, 12, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    path = tmp_path / "nvenc.mp4"
    with VideoWriter(path, 24, 96, 64, encoder="nvenc") as writer:
        writer.write(chunk)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and np.std(frames) > 10
