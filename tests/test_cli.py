"""The command line end to end on the tiny config with random weights, and its error handling."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_hub import fake_hub_cache, stub_model_folders, use_cache
from helpers_video import decoded_frames, make_clip, probe

from sana_streaming.bench import warmup_frames
from sana_streaming.cli import main
from sana_streaming.sampling.streaming import chunk_sizes

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


def test_x264_preset_reaches_the_output(workdir):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    assert (
        main(tiny_args(src, "--num_frames", "all", "--x264_preset", "ultrafast", "--output_name", "u.mp4"))
        == 0
    )
    assert b"cabac=0" in (workdir / "outputs" / "u.mp4").read_bytes()  # the default, superfast, codes CABAC


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--height", "16"], "at least 64"),
        (["--height", "50", "--width", "70"], "--height must be at least 64"),
        (["--width", "63"], "--width must be at least 64"),
        (["--model_path", "dit.pth"], "--model_path and --random_weights exclude each other"),
        (["--output_name", "../x.mp4"], "without folders"),
        (["--output_name", "sub/x.mp4"], "without folders"),
        (["--device", "foo"], "--device must be cpu, cuda or cuda:N"),
        (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
        (["--num_frames", "0"], "positive"),
        (["--num_frames", "-9"], "positive"),
        (["--step", "0"], "positive"),
        (["--step", "-1"], "positive"),
        (["--sink_token", "maybe"], "sink_token"),
        (["--cfg_scale", "0.5"], ">= 1"),
        (["--cfg_scale", "3"], "long_streaming"),
        (["--num_frames", "17"], "at least 25"),
        (["--x264_preset", "lightning"], "--x264_preset must be one of"),
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


def test_save_latent_and_input_files_round_trip(workdir):
    """--save_latent writes the release's (3, C, T, h, w) file; --input_latent_path and
    --input_text_embed_path reproduce the same result without reading the video or the text."""
    import torch

    from sana_streaming.config import load_config
    from sana_streaming.models.text_encoder import TextEncoder, positive_prompt_text

    src = workdir / "clip.mp4"
    make_clip(src, num_frames=33, fps=24, width=100, height=70)
    assert main(tiny_args(src, "--num_frames", "all", "--save_latent", "--output_name", "a.mp4")) == 0
    saved = torch.load(workdir / "outputs" / "a_latent.pt", weights_only=True)
    assert saved.shape == (3, 16, 5, 2, 3) and saved.dtype == torch.float32
    text = TextEncoder.from_config(load_config("tiny_random").text_encoder)
    pos = text.encode_prompt(positive_prompt_text("make it blue", 0))
    neg = text.encode_negative("")
    embeds = {"prompt_embeds": pos.embeds, "prompt_mask": pos.mask,
              "negative_embeds": neg.embeds, "negative_mask": neg.mask}  # fmt: skip
    torch.save(embeds, workdir / "text.pt")
    args = ["--input_latent_path", str(workdir / "outputs" / "a_latent.pt"), "--input_text_embed_path",
            str(workdir / "text.pt"), "--save_latent", "--output_name", "b.mp4"]  # fmt: skip
    assert main(tiny_args(workdir / "absent.mp4", *args)) == 0
    again = torch.load(workdir / "outputs" / "b_latent.pt", weights_only=True)
    assert torch.equal(again, saved)
    assert probe(workdir / "outputs" / "b.mp4")["frames"] == 33


def test_bad_debug_file_exits_1(workdir, capsys):
    import torch

    torch.save({"prompt_embeds": torch.ones(1)}, workdir / "text.pt")
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    assert main(tiny_args(src, "--input_text_embed_path", str(workdir / "text.pt"))) == 1
    assert "prompt_mask" in capsys.readouterr().err


def test_quick_start_dry_run_against_a_fake_hub_cache(workdir):
    """README's quick start (`sana-streaming`, no arguments) resolves every default offline."""
    cache = workdir / "hub"
    make_clip(workdir / "demo.mp4", num_frames=9, fps=16)
    fake_hub_cache(cache, "Efficient-Large-Model/SANA-Streaming", {
        "dit/sana_streaming_ar.pth": b"tiny stand-in",
        "source/09_style_transfer_source.mp4": (workdir / "demo.mp4").read_bytes(),
    })  # fmt: skip
    stub_model_folders(cache)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "sana_streaming.cli", "--dry_run"], env=env, cwd=workdir,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert plan["mode"] == "long_streaming" and plan["num_frames"] == "969"
    assert plan["model_path"].endswith(
        "snapshots/0123456789abcdef0123456789abcdef01234567/dit/sana_streaming_ar.pth"
    )
    assert plan["video_path"].endswith("source/09_style_transfer_source.mp4")
    assert plan["output"] == str(workdir / "outputs" / "09_style_transfer_source_long_streaming.mp4")
    assert plan["config"].endswith("sana_streaming_2b_720p.yaml")
    assert plan["prompt"].startswith("Transform the entire scene into a breathtaking Sci-Fi Art")
    # Not cached: one line naming the download command, exit 1.
    env["HF_HUB_CACHE"] = str(workdir / "empty")
    done = subprocess.run([sys.executable, "-m", "sana_streaming.cli", "--dry_run"], env=env, cwd=workdir,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1
    assert "hf download Efficient-Large-Model/SANA-Streaming dit/sana_streaming_ar.pth" in done.stderr


def test_bad_checkpoint_exits_1(workdir, capsys, monkeypatch):
    stub_model_folders(workdir / "hub")  # resolved (not loaded) before the checkpoint is read
    use_cache(monkeypatch, workdir / "hub", offline=True)
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    (workdir / "dit.pth").write_bytes(b"\x80\x02 truncated")
    args = [a for a in tiny_args(src, "--num_frames", "all") if a != "--random_weights"]
    assert main([*args, "--model_path", str(workdir / "dit.pth")]) == 1
    err = capsys.readouterr().err
    assert "dit.pth" in err and "Traceback" not in err
    assert not (workdir / "outputs").exists() or list((workdir / "outputs").iterdir()) == []


def test_out_of_memory_exits_1_without_output(workdir, capsys, monkeypatch):
    import torch

    from sana_streaming.sampling.streaming import StreamingSampler

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(StreamingSampler, "denoise_chunk", no_memory)
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    assert main(tiny_args(src, "--num_frames", "all")) == 1
    assert "out of memory" in capsys.readouterr().err
    assert not (workdir / "outputs").exists()  # the folder this edit made is gone with its file


def test_fps_override_drops_audio_with_a_notice(workdir, caplog):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=24, audio=True)
    with caplog.at_level("WARNING"):
        assert main(tiny_args(src, "--num_frames", "all", "--fps", "12")) == 0
    info = probe(workdir / "outputs" / "clip_long_streaming.mp4")
    assert info["fps"] == 12.0 and info["audio_seconds"] is None
    assert "dropping the audio" in caplog.text


def test_output_to_stdout_streams_the_same_frames_as_a_file(workdir):
    """`--output -` writes Matroska to standard output as it goes (read here from the pipe's bytes);
    its frames equal the file output's, and the closing line goes to stderr, not into the video."""
    import io

    import av

    src = workdir / "clip.mp4"
    make_clip(src, num_frames=33, fps=24)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "sana_streaming.cli",
        *tiny_args(src, "--num_frames", "all", "--no_audio"),
    ]
    done = subprocess.run([*command, "--output", "-"], env=env, cwd=workdir, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert "Streamed 33 frames to standard output" in done.stderr.decode()
    with av.open(io.BytesIO(done.stdout)) as container:
        assert container.format.name.startswith("matroska")
        piped = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    to_file = subprocess.run([*command, "--output", "file.mkv"], env=env, cwd=workdir, capture_output=True,
                             check=False)  # fmt: skip
    assert to_file.returncode == 0, to_file.stderr.decode()
    assert piped.shape == decoded_frames(workdir / "file.mkv").shape == (33, 64, 96, 3)
    assert np.abs(piped.astype(int) - 128).mean() > 5  # an edited picture, not a blank stream
    assert not (workdir / "outputs").exists()
    assert main(tiny_args(src, "--output", "-", "--save_latent")) == 2


def test_http_source_to_stdout(workdir):
    """A source served over http by a local server, edited to standard output and read back here."""
    import functools
    import http.server
    import io
    import threading

    import av

    make_clip(workdir / "clip.mp4", num_frames=33, fps=24)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(workdir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "sana_streaming.cli",
        *tiny_args(url, "--num_frames", "all", "--output", "-"),
    ]
    try:
        done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, timeout=300, check=False)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr.decode()
    with av.open(io.BytesIO(done.stdout)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 33 and frames[0].shape == (64, 96, 3)


def test_stats_report_latency_per_written_batch(workdir, capsys):
    import itertools
    import json

    make_clip(workdir / "clip.mp4", num_frames=57, fps=24)
    assert (
        main(tiny_args(workdir / "clip.mp4", "--num_frames", "all", "--stats", "--stats_json", "s.json")) == 0
    )
    err = capsys.readouterr().err
    assert "stats: 57 frames" in err and "source-to-output latency" in err and "stage seconds" in err
    summary = json.loads((workdir / "s.json").read_text())
    batches = summary["batches"]
    assert batches[0]["first"] == 0 and batches[-1]["end"] == 57 == summary["frames"]
    assert all(a["end"] == b["first"] for a, b in itertools.pairwise(batches))
    assert all(0 <= b["newest_s"] <= b["oldest_s"] <= b["written_s"] for b in batches)
    assert summary["first_frame_s"] == batches[0]["written_s"] > 0
    assert {"dit", "decode", "write"} <= set(summary["stage_seconds"])


def test_a_server_that_never_answers_times_out_in_one_line(workdir, capsys, monkeypatch):
    import socket
    import threading
    import time

    from sana_streaming.video import reader

    monkeypatch.setattr(reader, "NETWORK_TIMEOUTS", (1.0, 1.0))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/live.mkv"
    start = time.monotonic()
    try:
        assert main(tiny_args(url, "--num_frames", "all")) == 1
    finally:
        server.close()
    assert time.monotonic() - start < 30
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no data from the source for 1 s" in err[0], err


def test_output_to_a_tcp_url_streams_mpegts_to_a_listener(workdir, capsys):
    import socket
    import threading
    import time

    import av

    with socket.socket() as probe_socket:  # a free port for the listener
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    received: list = []

    def listen() -> None:
        with av.open(f"tcp://127.0.0.1:{port}?listen=1", format="mpegts", timeout=60) as container:
            received.extend(f.to_ndarray(format="rgb24") for f in container.decode(video=0))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)
    make_clip(workdir / "clip.mp4", num_frames=33, fps=24)
    url = f"tcp://127.0.0.1:{port}"
    assert main(tiny_args(workdir / "clip.mp4", "--num_frames", "all", "--output", url)) == 0
    listener.join(60)
    assert len(received) == 33 and received[0].shape == (64, 96, 3)
    assert f"Streamed 33 frames to {url}" in capsys.readouterr().err
    assert main(tiny_args(workdir / "clip.mp4", "--output", "ftp://example.com/x.ts")) == 2
    assert "cannot stream to ftp://" in capsys.readouterr().err
    no_listener = tiny_args(
        workdir / "clip.mp4", "--num_frames", "all", "--output", f"tcp://127.0.0.1:{port}"
    )
    assert main(no_listener) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot stream there" in err[0], err


def test_video_format_opens_a_filter_graph_as_a_live_source(workdir, capsys):
    """`--video_format lavfi`: FFmpeg's test pattern stands in for a camera (a source of unknown length);
    an input format this FFmpeg lacks is a usage error."""
    graph = "testsrc=size=100x70:rate=24:duration=1.5"  # 36 frames: the last group of 8 is incomplete
    args = tiny_args(graph, "--video_format", "lavfi", "--num_frames", "all", "--output_name", "cam.mp4")
    assert main(args) == 0
    assert probe(workdir / "outputs" / "cam.mp4")["frames"] == 33
    assert main(tiny_args("/dev/video0", "--video_format", "no_such_device", "--num_frames", "all")) == 2
    assert "has no such input format" in capsys.readouterr().err


def test_video_from_stdin_pipe(workdir):
    """`--video_path -` reads a pipe of unknown length, chunk by chunk."""
    from fractions import Fraction

    import av

    from sana_streaming.video.synthetic import gradient_frame

    src = workdir / "clip.mkv"  # Matroska streams through a pipe (an MP4's index sits at its end)
    with av.open(str(src), mode="w") as out:
        stream = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(41):
            frame = av.VideoFrame.from_ndarray(gradient_frame(i, 64, 96), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "sana_streaming.cli", *tiny_args("-", "--num_frames", "all")]
    with open(src, "rb") as stdin:
        done = subprocess.run(command, env=env, cwd=workdir, stdin=stdin, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert probe(workdir / "outputs" / "stdin_long_streaming.mp4")["frames"] == 41


def test_mistyped_config_path_is_not_replaced_by_a_packaged_one(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    args = tiny_args(src)
    args[args.index("tiny_random")] = "/no/such/dir/tiny_random.yaml"
    assert main(args) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [["--repeats", "0"], ["--num_frames", "17"], ["--warmup_frames", "9"], ["--x264_preset", "lightning"]],
)
def test_bench_usage_errors_exit_2(workdir, capsys, extra):
    assert main(["bench", "--config", "tiny_random", *extra]) == 2
    assert "must be" in capsys.readouterr().err


def test_bench_reports_serialised_stages_and_an_overlapped_edit_with_first_frame_and_latency(workdir, capsys):
    out = workdir / "bench.json"
    assert main(["bench", "--config", "tiny_random", "--device", "cpu", "--height", "64", "--width", "96",
                 "--num_frames", "49", "--warmup_frames", "25", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["frames"] == 49 and (report["warmup_frames"], report["decode"]) == (25, "release_tiles")
    median = report["median"]
    stages = sum(median[k] for k in ("text_s", "encode_s", "dit_s", "decode_s", "write_s", "other_s"))
    assert stages == pytest.approx(median["wall_s"]) and median["dit_s"] > 0
    overlapped = report["overlapped"]
    run = overlapped["runs"][0]
    assert 0 < overlapped["first_frame_s"] < overlapped["wall_s"]
    assert overlapped["fps_end_to_end"] == pytest.approx(49 / overlapped["wall_s"])
    latency = overlapped["chunk_latency_s"]
    assert 0 < latency["median"] <= latency["p95"] <= latency["max"] < overlapped["wall_s"]
    assert run["host_stage_s"]["dit"] > 0 and run["gpu_stage_s"] == {}  # no CUDA events on a CPU
    assert "first frame after" in capsys.readouterr().out


def test_bench_warms_up_every_chunk_shape_of_the_timed_edit():
    """The default warm-up has the timed clip's first chunk and two steady chunks, the second of which
    sees a full window and makes the first steady clean pass (a 969-frame edit starts with 5 latent
    frames; the former default of 49 frames started with 4)."""
    for frames in (25, 49, 57, 65, 969, 3873):
        timed = chunk_sizes((frames - 1) // 8 + 1)
        warm = chunk_sizes((warmup_frames(frames, chunked=True) - 1) // 8 + 1)
        assert warm == [timed[0], 3, 3]
    assert warmup_frames(969, chunked=True) == 81 and warmup_frames(81, chunked=False) == 81


def test_fragmented_output_is_a_finished_playable_mp4_and_is_refused_for_streams(workdir, capsys):
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=24)
    out = workdir / "live.mp4"
    assert main(tiny_args(src, "--num_frames", "25", "--output", str(out), "--fragmented")) == 0
    assert probe(out)["frames"] == 25 and sorted(p.name for p in workdir.iterdir()) == [
        "clip.mp4",
        "live.mp4",
    ]
    capsys.readouterr()
    for target in ("-", str(workdir / "live.mkv")):
        assert main(tiny_args(src, "--output", target, "--fragmented")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--fragmented needs an .mp4 or .mov" in err[0]


def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{p.relative_to(folder)}": p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_released_loading_path_offline_from_a_fake_hub_cache(workdir):
    """The real loading code, not random weights: DiT checkpoint, Gemma-2 and the LTX-2 VAE come from
    the hub cache at the release's repo paths (tiny models saved there by the test), with
    HF_HUB_OFFLINE=1, and the default demo source is edited end to end."""
    import shutil

    import torch
    from diffusers import AutoencoderKLLTX2Video
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from sana_streaming import build_dit, load_config
    from sana_streaming.models.dit import randomize_dit_
    from sana_streaming.models.text_encoder import packaged_tokenizer_dir

    config = load_config("tiny_random")
    cache = workdir / "hub"
    torch.save(randomize_dit_(build_dit(config), seed=5).state_dict(), workdir / "dit.pth")
    make_clip(workdir / "demo.mp4", num_frames=40, fps=24, width=100, height=70)
    fake_hub_cache(cache, "Efficient-Large-Model/SANA-Streaming", {
        "dit/sana_streaming_ar.pth": (workdir / "dit.pth").read_bytes(),
        "source/09_style_transfer_source.mp4": (workdir / "demo.mp4").read_bytes(),
    })  # fmt: skip
    gemma = workdir / "gemma"
    Gemma2ForCausalLM(Gemma2Config(**config.text_encoder.architecture)).save_pretrained(gemma)
    for file in packaged_tokenizer_dir().iterdir():
        shutil.copy(file, gemma)
    fake_hub_cache(cache, "Efficient-Large-Model/gemma-2-2b-it", folder_files(gemma))
    vae = workdir / "vae"
    AutoencoderKLLTX2Video(**config.vae.architecture).save_pretrained(vae)
    fake_hub_cache(cache, "Lightricks/LTX-2", folder_files(vae, prefix="vae/"))

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    command = [sys.executable, "-m", "sana_streaming.cli", "--config", "tiny_random", "--device", "cpu",
               "--height", "64", "--width", "96", "--num_frames", "33", "--no_audio"]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = probe(workdir / "outputs" / "09_style_transfer_source_long_streaming.mp4")
    assert (info["frames"], info["width"], info["height"]) == (33, 96, 64)


def test_compile_modes_off_cuda_fall_back_to_the_same_eager_output(workdir):
    """--compile graph/max on the CPU: one notice each, and the very edit of the eager default (each run
    a fresh process, as a user runs them)."""
    src = workdir / "clip.mp4"
    make_clip(src, num_frames=30, fps=16)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for mode in ("none", "graph", "max"):
        args = tiny_args(
            src, "--num_frames", "all", "--no_audio", "--output_name", f"{mode}.mp4", "--compile", mode
        )
        done = subprocess.run([sys.executable, "-m", "sana_streaming.cli", *args], env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        notices = [line for line in done.stderr.splitlines() if "needs a CUDA device" in line]
        notice = f"note: --compile {mode} needs a CUDA device; running the DiT eagerly on cpu"
        assert notices == ([] if mode == "none" else [notice])
    eager = decoded_frames(workdir / "outputs" / "none.mp4")
    for mode in ("graph", "max"):
        assert np.array_equal(decoded_frames(workdir / "outputs" / f"{mode}.mp4"), eager)
