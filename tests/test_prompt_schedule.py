"""Prompt changes in a running stream: the schedule file, the chunk each change takes effect at (the
text K/V every chunk is denoised with, checked), `StreamRun.change_prompt`, and the CLI flag. Tiny
config, random weights, CPU."""

from dataclasses import replace

import pytest
import torch
from helpers_video import clip_frames, make_clip
from test_stages import lossless_mkv

from sana_streaming.cli import main
from sana_streaming.options import EditOptions
from sana_streaming.pipeline import SanaStreamingPipeline
from sana_streaming.prompt_schedule import (
    PromptChange,
    PromptScheduleError,
    chunk_first_frame,
    read_prompt_schedule,
)
from sana_streaming.sampling import LatentRecord
from sana_streaming.sampling.streaming import StreamingSampler

OPTIONS = EditOptions(prompt="make it blue", height=64, width=96)
RED = "make it red"


@pytest.fixture(scope="module")
def pipe():
    return SanaStreamingPipeline.from_config(
        "tiny_random", "long_streaming", random_weights=True, device="cpu"
    )


@pytest.fixture
def clip(tmp_path):
    """81 frames = 11 latent frames: chunks of 5, 3 and 3 latent frames from video frames 0, 33, 57."""
    path = tmp_path / "clip.mkv"
    path.write_bytes(lossless_mkv(clip_frames(81, 70, 100, seed=3)))
    return path


def text_keys(pipe, prompt: str) -> torch.Tensor:
    """The first block's caption keys of `prompt` (what a chunk's cross-attention reads)."""
    return pipe.dit.prepare_text(pipe._positive(OPTIONS, prompt)).blocks[0].keys


def spy_chunk_texts(monkeypatch) -> list[torch.Tensor]:
    """Every denoised chunk's first-block caption keys, in order."""
    seen = []
    real = StreamingSampler.denoise_chunk

    def denoise(self, noise, source, start):
        seen.append(self.text.blocks[0].keys.clone())
        return real(self, noise, source, start)

    monkeypatch.setattr(StreamingSampler, "denoise_chunk", denoise)
    return seen


def edit(pipe, source, options):
    record = LatentRecord()
    frames = torch.cat(list(pipe.stream(source, options, record=record)), dim=1)
    return frames, record


def test_chunk_first_frames():
    assert [chunk_first_frame(s) for s in (0, 1, 5, 8)] == [0, 1, 33, 57]


def test_a_change_takes_effect_at_the_first_chunk_starting_at_or_after_its_frame(pipe, clip, monkeypatch):
    seen = spy_chunk_texts(monkeypatch)
    with torch.inference_mode():
        blue, red = text_keys(pipe, OPTIONS.prompt), text_keys(pipe, RED)
        _, plain = edit(pipe, clip, OPTIONS)
        seen.clear()
        _, changed = edit(pipe, clip, replace(OPTIONS, prompt_schedule=(PromptChange(40, RED),)))
    assert not torch.equal(blue, red)
    assert [torch.equal(k, blue) for k in seen] == [True, True, False]  # frame 40 → the chunk at frame 57
    assert torch.equal(seen[2], red)
    # the chunks before the change (5 + 3 latent frames) are the plain edit's, bit for bit; the last is not
    assert torch.equal(changed.result[0], plain.result[0]) and torch.equal(changed.result[1], plain.result[1])
    assert not torch.equal(changed.result[2], plain.result[2])


def test_a_change_at_frame_0_is_the_same_as_editing_with_that_prompt(pipe, clip):
    with torch.inference_mode():
        scheduled, _ = edit(pipe, clip, replace(OPTIONS, prompt_schedule=(PromptChange(0, RED),)))
        direct, _ = edit(pipe, clip, replace(OPTIONS, prompt=RED))
    assert torch.equal(scheduled, direct)


def test_change_prompt_while_iterating_applies_from_the_next_chunk(pipe, clip, monkeypatch):
    seen = spy_chunk_texts(monkeypatch)
    with torch.inference_mode():
        blue, red = text_keys(pipe, OPTIONS.prompt), text_keys(pipe, RED)
        run = pipe.stream(clip, OPTIONS)
        first = next(run)
        asked_after = run.streamer.chunks  # chunks denoised when the change is asked for
        run.change_prompt(RED)
        rest = list(run)
    assert first.shape[1] + sum(f.shape[1] for f in rest) == 81
    assert 0 < asked_after < 3
    assert all(torch.equal(k, blue) for k in seen[:asked_after])
    assert all(torch.equal(k, red) for k in seen[asked_after:])


def test_schedule_files(tmp_path):
    (tmp_path / "s.yaml").write_text(f"- {{frame: 90, prompt: night}}\n- {{frame: 10, prompt: {RED}}}\n")
    assert read_prompt_schedule(tmp_path / "s.yaml") == (PromptChange(10, RED), PromptChange(90, "night"))
    (tmp_path / "s.json").write_text('[{"frame": 5, "prompt": "snow"}]')
    assert read_prompt_schedule(tmp_path / "s.json") == (PromptChange(5, "snow"),)
    bad = {
        "keys.json": ('[{"frame": 5, "text": "snow"}]', "exactly the keys"),
        "twice.json": ('[{"frame": 5, "prompt": "a"}, {"frame": 5, "prompt": "b"}]', "two prompts"),
        "negative.json": ('[{"frame": -1, "prompt": "a"}]', "frame >= 0"),
        "float.json": ('[{"frame": 1.5, "prompt": "a"}]', "must be an integer"),
        "empty.yaml": ("[]", "non-empty list"),
        "broken.json": ("[{", "not a JSON or YAML list"),
    }
    for name, (text, expected) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(PromptScheduleError, match=expected):
            read_prompt_schedule(tmp_path / name)
    with pytest.raises(PromptScheduleError, match="cannot read"):
        read_prompt_schedule(tmp_path / "missing.json")


def test_cli_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip.mp4", num_frames=33, fps=24)
    (tmp_path / "s.yaml").write_text(f"- {{frame: 9, prompt: {RED}}}\n")
    flags = ["--config", "tiny_random", "--random_weights", "--device", "cpu", "--video_path", "clip.mp4",
             "--height", "64", "--width", "96", "--num_frames", "all", "--no_audio"]  # fmt: skip
    assert main([*flags, "--prompt_schedule", "s.yaml"]) == 0
    (tmp_path / "bad.json").write_text("[1]")
    capsys.readouterr()
    assert main([*flags, "--prompt_schedule", "bad.json", "--output_name", "b.mp4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "entry 1" in err[0]
    bidirectional = [*flags, "--mode", "bidirectional_short", "--num_frames", "17", "--output_name", "c.mp4"]
    assert main([*bidirectional, "--prompt_schedule", "s.yaml"]) == 2
    assert "--prompt_schedule needs a streaming mode" in capsys.readouterr().err


def test_validate_options_checks_a_schedule_given_in_python():
    from sana_streaming.errors import OptionError
    from sana_streaming.options import validate_options

    validate_options(replace(OPTIONS, prompt_schedule=(PromptChange(9, RED),)), "long_streaming")
    for bad, expected in (((PromptChange(-1, RED),), "frame >= 0"), ((PromptChange(3, " "),), "non-empty"),
                          ((PromptChange(3, RED), PromptChange(3, "b")), "two prompts")):  # fmt: skip
        with pytest.raises(OptionError, match=expected):
            validate_options(replace(OPTIONS, prompt_schedule=bad), "long_streaming")
