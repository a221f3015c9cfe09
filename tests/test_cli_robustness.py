"""What a user meets at the command line beyond the happy path: help, bad files and devices, signals,
full disks, repeated and concurrent runs. Tiny config, random weights, CPU."""

import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers_hub import stub_model_folders, use_cache
from helpers_video import decoded_frames, make_clip

from sana_streaming.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_args(video, *extra):
    return ["--config", "tiny_random", "--random_weights", "--device", "cpu", "--video_path", str(video),
            "--prompt", "make it blue", "--height", "64", "--width", "96", "--num_frames", "all",
            *extra]  # fmt: skip


def leftovers(folder: Path) -> list[str]:
    """Every entry in `folder`, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("sana-streaming: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_top_level_help_lists_the_edit_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--prompt", "--video_path", "--num_frames", "--sink_token", "--x264_preset", "--traceback"):
        assert flag in out
    assert "convert" in out and "bench" in out
    assert "(default: 704)" in out and "(default: 0)" in out  # defaults are shown


def test_version(capsys):
    from sana_streaming import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sana-streaming {__version__}"


def test_sink_token_spellings(workdir, capsys):
    """Help and parser agree: true/false spellings only, and `0` really drops the sink."""
    from sana_streaming.cli import _sink_token

    assert [_sink_token(t) for t in ("1", "TRUE", "yes", "y", "0", "False", "no", "N")] == [True] * 4 + [
        False
    ] * 4
    with pytest.raises(ValueError, match="true/false"):
        _sink_token("off")


def test_output_dir_that_is_a_file_exits_2(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    (workdir / "taken").write_text("a file")
    assert main(tiny_args(src, "--output_dir", "taken")) == 2
    assert "is a file" in one_error_line(capsys.readouterr().err)
    assert (workdir / "taken").read_text() == "a file"


def test_existing_output_is_left_untouched(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    out = workdir / "outputs" / "clip_long_streaming.mp4"
    out.parent.mkdir()
    out.write_bytes(b"precious")
    assert main(tiny_args(src)) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"precious" and leftovers(out.parent) == [out.name]


def test_same_seed_twice_gives_identical_frames_and_another_seed_does_not(workdir):
    """The same command run twice (two processes, as a user runs it) writes the same frames."""
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=33, fps=24, width=100, height=70)
    for name, seed in (("a.mp4", "3"), ("b.mp4", "3"), ("c.mp4", "4")):
        args = tiny_args(src, "--seed", seed, "--output_name", name, "--no_audio")
        done = subprocess.run([sys.executable, "-m", "sana_streaming.cli", *args], env=ENV, cwd=workdir,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    a, b, c = (decoded_frames(workdir / "outputs" / n) for n in ("a.mp4", "b.mp4", "c.mp4"))
    assert a.shape == (33, 64, 96, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ["text", "pickle_payload", "truncated_safetensors", "folder"])
def test_bad_model_files_exit_1_with_one_line(workdir, capsys, monkeypatch, kind):
    stub_model_folders(workdir / "hub")  # resolved (not loaded) before the checkpoint is read
    use_cache(monkeypatch, workdir / "hub", offline=True)
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    model = workdir / {"text": "notes.txt", "pickle_payload": "evil.pth",
                       "truncated_safetensors": "dit.safetensors", "folder": "weights"}[kind]  # fmt: skip
    if kind == "text":
        model.write_text("these are my notes\n" * 20)
    elif kind == "pickle_payload":
        model.write_bytes(
            pickle.dumps(os.system, protocol=2)
        )  # a code reference: weights-only loading refuses it
    elif kind == "truncated_safetensors":
        from safetensors.torch import save_file

        save_file({"w": torch.randn(64, 64)}, model)
        model.write_bytes(model.read_bytes()[:1000])
    else:
        model.mkdir()
    args = [a for a in tiny_args(src) if a != "--random_weights"]
    assert main([*args, "--model_path", str(model)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert model.name in line
    if kind == "folder":
        assert "is a folder" in line
    assert leftovers(workdir / "outputs") == []


@pytest.mark.parametrize("flag", ["--input_latent_path", "--input_text_embed_path"])
@pytest.mark.parametrize("content", ["text", "pickle_payload"])
def test_bad_debug_files_exit_1_with_one_line(workdir, capsys, flag, content):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    debug = workdir / "debug.pt"
    if content == "text":
        debug.write_text("these are my notes\n" * 20)
    else:
        debug.write_bytes(pickle.dumps(os.system, protocol=2))
    assert main(tiny_args(src, flag, str(debug))) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "debug.pt" in line
    if content == "pickle_payload":
        assert "refused" in line


class _Touch:
    """A pickled payload that would create `marker` when unpickled without weights-only loading."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_plain_pickle(path: Path, marker: Path) -> None:
    """A raw protocol-4 pickle (not a torch.save zip) with a code payload, as in the QA finding."""
    path.write_bytes(pickle.dumps({"state_dict": _Touch(marker)}, protocol=4))


def test_plain_pickle_refusal_is_exactly_one_stderr_line(workdir):
    # a fresh interpreter, so Python's default warning filters print torch's warning if it escapes
    evil, marker = workdir / "evil.pt", workdir / "PWNED"
    write_plain_pickle(evil, marker)
    command = [sys.executable, "-m", "sana_streaming", "convert", str(evil), str(workdir / "out.safetensors")]
    done = subprocess.run(command, env=ENV, cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("sana-streaming: error: refusing") and "evil.pt" in line
    assert "weights_only" not in line and "False" not in line and len(line) < 250, line
    assert not marker.exists() and not (workdir / "out.safetensors").exists()


@pytest.mark.parametrize("flag", ["--model_path", "--input_text_embed_path"])
def test_plain_pickle_refusal_warns_nothing_and_gives_no_unsafe_advice(workdir, capsys, monkeypatch, flag):
    stub_model_folders(workdir / "hub")
    use_cache(monkeypatch, workdir / "hub", offline=True)
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    evil, marker = workdir / "evil.pt", workdir / "PWNED"
    write_plain_pickle(evil, marker)
    args = tiny_args(src)
    if flag == "--model_path":
        args.remove("--random_weights")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, flag, str(evil)]) == 1
    assert [str(w.message) for w in caught if "pickle" in str(w.message)] == []
    line = one_error_line(capsys.readouterr().err)
    assert "evil.pt" in line and "refus" in line
    assert "weights_only" not in line and "False" not in line and len(line) < 250, line
    assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_exits_2(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    args = tiny_args(src)
    args[args.index("cpu")] = "cuda"
    assert main(args) == 2
    assert "no CUDA device" in one_error_line(capsys.readouterr().err)


def test_unexpected_errors_are_one_line_unless_traceback_is_asked(workdir, capsys, monkeypatch):
    from sana_streaming.sampling.streaming import StreamingSampler

    def broken(*args, **kwargs):
        raise RuntimeError("Padding size should be less than the corresponding input dimension\nmore")

    monkeypatch.setattr(StreamingSampler, "denoise_chunk", broken)
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    assert main(tiny_args(src)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "unexpected RuntimeError: Padding size" in line and "--traceback" in line
    with pytest.raises(RuntimeError, match="Padding size"):
        main(tiny_args(src, "--traceback"))
    assert leftovers(workdir / "outputs") == []


def test_a_missing_package_is_one_line_naming_it(monkeypatch, capsys):
    """An environment without torch (or another dependency) fails with one line, not a traceback from
    the error report, which itself imports torch."""
    import sana_streaming.cli as cli

    def missing():
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "build_parser", missing)
    assert main(["edit", "--prompt", "x"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "'torch' is not installed" in line and "pip install -e ." in line
    with pytest.raises(ModuleNotFoundError, match="torch"):
        main(["edit", "--prompt", "x", "--traceback"])


def test_smallest_frame_edits(workdir):
    """64x64 is the smallest size the VAE decodes; it runs end to end."""
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    args = tiny_args(src)
    args[args.index("96")] = "64"
    assert main(args) == 0
    assert decoded_frames(workdir / "outputs" / "clip_long_streaming.mp4").shape == (25, 64, 64, 3)


def test_disk_full_leaves_no_partial_file(workdir, capsys):
    full = workdir / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        src = workdir / "clip.mp4"
        make_clip(src, num_frames=120, fps=24, width=320, height=256)
        args = tiny_args(src, "--output_dir", str(full))
        args[args.index("64")], args[args.index("96")] = "256", "320"
        assert main(args) == 1
        assert "No space left on device" in one_error_line(capsys.readouterr().err)
        assert leftovers(full) == []
    finally:
        subprocess.run(["umount", str(full)], check=False)


def start_edit(workdir: Path, *extra: str) -> subprocess.Popen:
    src = workdir / "long.mp4"
    if not src.exists():
        make_clip(src, num_frames=600, fps=24, width=100, height=70)
    command = [sys.executable, "-m", "sana_streaming.cli", *tiny_args(src, *extra)]
    return subprocess.Popen(command, env=ENV, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def wait_for_output_file(folder: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    """Until the edit has started writing (its temporary file exists)."""
    deadline = time.monotonic() + seconds
    while not leftovers(folder):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the edit never started writing"
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")])  # fmt: skip
def test_signal_mid_edit_leaves_nothing(workdir, sig, code, word):
    process = start_edit(workdir)
    wait_for_output_file(workdir / "outputs", process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err and f"sana-streaming: {word}" in err
    assert leftovers(workdir / "outputs") == []


def test_ctrl_c_during_start_up_is_one_line(workdir):
    process = start_edit(workdir)
    time.sleep(0.5)  # importing torch and friends
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "sana-streaming: interrupted" in err


def test_interrupted_live_edit_keeps_what_was_edited(workdir):
    """Ctrl-C on a source of unknown length (stdin) publishes the frames edited so far."""
    src = workdir / "live.mkv"
    make_clip(src, num_frames=400, fps=24, width=100, height=70, container="matroska")
    data = src.read_bytes()
    command = [sys.executable, "-m", "sana_streaming.cli",
               *tiny_args("-", "--x264_preset", "ultrafast", "--output_name", "live.mp4")]  # fmt: skip
    process = subprocess.Popen(command, env=ENV, cwd=workdir, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(data[: len(data) // 2])  # the rest never comes: a live source still running
    process.stdin.flush()
    outputs = workdir / "outputs"
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 4096 for p in outputs.glob(".live*")):  # frames in the temp file
        assert process.poll() is None and time.monotonic() < deadline, "no frames were written"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    process.stdin.close()
    assert process.returncode == 130, err
    assert "keeps the" in err and "sana-streaming: interrupted" in err and "Traceback" not in err
    assert leftovers(outputs) == ["live.mp4"]
    frames = decoded_frames(outputs / "live.mp4")
    assert 0 < len(frames) < 200 and frames.shape[1:] == (64, 96, 3)


def test_limits_bound_the_edit_without_an_error(workdir):
    """--max_frames and --duration are upper bounds: a shorter source is edited whole, no error."""
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=60, fps=24, width=100, height=70)
    cases = {
        "a.mp4": ["--max_frames", "40"],
        "b.mp4": ["--duration", "1.4"],
        "c.mp4": ["--max_frames", "500"],
    }
    for name, extra in cases.items():
        args = tiny_args(src, *extra, "--output_name", name)
        args.remove("--num_frames"), args.remove("all")  # the mode's default 969 becomes a bound too
        assert main(args) == 0
    counts = [len(decoded_frames(workdir / "outputs" / n)) for n in cases]
    assert counts == [33, 33, 57]  # 40 and ceil(1.4 * 24) = 34 floored to 8k+1; the whole clip


def test_output_metadata_records_the_edit(workdir):
    import json

    from sana_streaming import __version__

    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    assert main(tiny_args(src, "--seed", "7", "--step", "2")) == 0
    with av.open(str(workdir / "outputs" / "clip_long_streaming.mp4")) as container:
        settings = json.loads(container.metadata["comment"])
    assert settings["tool"] == f"sana-streaming {__version__}"
    assert (settings["mode"], settings["prompt"], settings["seed"], settings["steps"]) == (
        "long_streaming", "make it blue", 7, 2,
    )  # fmt: skip
    assert settings["model_path"] == "random weights" and settings["source"] == str(src)
    assert settings["config"].endswith("tiny_random.yaml") and settings["sink_token"] is True


def test_two_runs_writing_one_path_never_replace_each_other(workdir):
    """Started together without --overwrite: one publishes, the other fails cleanly; the file is whole."""
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=33, fps=24, width=100, height=70)
    command = [sys.executable, "-m", "sana_streaming.cli", *tiny_args(src, "--no_audio")]
    runs = [subprocess.Popen([*command, "--seed", str(seed)], env=ENV, cwd=workdir, stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True) for seed in (1, 2)]  # fmt: skip
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (1, 2), results
    loser = next(err for code, err in results if code)
    assert "Traceback" not in loser and ("was kept" in loser or "exists" in loser)
    outputs = workdir / "outputs"
    assert leftovers(outputs) == ["clip_long_streaming.mp4"]
    assert decoded_frames(outputs / "clip_long_streaming.mp4").shape == (33, 64, 96, 3)
