"""The command line end to end on the tiny config with random weights, and its error handling."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_video import make_clip, probe

from sana_streaming.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_args(video, *extra):
    return ["--config", "tiny_random", "--random_weights", "--device", "cpu", "--video_path", str(video),
            "--prompt", "make it blue", "--height", "64", "--width", "96", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "extra", "frames"),
    [
        ("long_streaming", ["--num_frames", "all"], 57),
        ("bidirectional_short", ["--num_frames", "17", "--step", "3"], 17),
    ],
)
def test_cli_edits_a_clip_end_to_end(workdir, mode, extra, frames):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=60, fps=24, width=100, height=70, audio=True)
    assert main(["--mode", mode, *tiny_args(src, *extra)]) == 0
    out = workdir / "outputs" / f"clip_{mode}.mp4"
    info = probe(out)
    assert (info["frames"], info["width"], info["height"], info["fps"]) == (frames, 96, 64, 24.0)
    assert abs(info["audio_seconds"] - info["video_seconds"]) <= 0.1  # AAC frames are 64 ms here


def test_no_audio_and_existing_output(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16, audio=True)
    assert main(tiny_args(src, "--no_audio", "--num_frames", "all", "--output_name", "a.mp4")) == 0
    assert probe(workdir / "outputs" / "a.mp4")["audio_seconds"] is None
    assert main(tiny_args(src, "--no_audio", "--num_frames", "all", "--output_name", "a.mp4")) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--height", "16"], "at least 32"),
        (["--num_frames", "0"], "positive"),
        (["--step", "-1"], "positive"),
        (["--sink_token", "maybe"], "sink_token"),
        (["--cfg_scale", "0.5"], ">= 1"),
        (["--cfg_scale", "3"], "long_streaming"),
        (["--num_frames", "17"], "at least 25"),
    ],
)
def test_usage_errors_exit_2(workdir, capsys, extra, message):
    src = workdir / "clip.mp4"
    src.write_bytes(b"")
    assert main(tiny_args(src, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2
    assert not (workdir / "outputs").exists() or not any((workdir / "outputs").iterdir())


def test_unknown_mode_exits_2(workdir):
    with pytest.raises(SystemExit) as info:
        main(["--mode", "sideways"])
    assert info.value.code == 2


@pytest.mark.parametrize("kind", ["missing", "corrupt", "short"])
def test_runtime_errors_exit_1_without_output(workdir, capsys, kind):
    src = workdir / "clip.mp4"
    if kind == "corrupt":
        src.write_bytes(b"not a video at all" * 100)
    elif kind == "short":
        make_clip(src, num_frames=30, fps=16)
    extra = ["--num_frames", "49"] if kind == "short" else []
    assert main(tiny_args(src, *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("sana-streaming: error:") and "Traceback" not in err
    if kind == "short":
        assert "30" in err and "49" in err and "--num_frames all" in err
    outputs = workdir / "outputs"
    assert not outputs.exists() or list(outputs.iterdir()) == []


def test_release_entry_point_script_dry_run(workdir):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    script = REPO / "inference_video_scripts" / "v2v" / "inference_sana_streaming.py"
    done = subprocess.run([sys.executable, str(script), *tiny_args(src, "--dry_run")], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "output: " + str(workdir / "outputs" / "clip_long_streaming.mp4") in done.stdout
