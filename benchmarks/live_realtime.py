"""A live edit of a real-time source: a synthetic clip served over TCP (MPEG-TS) at its own frame rate,
edited by `sana-streaming edit` as it arrives. Prints and writes (JSON) the frames edited and dropped,
the source-to-output latency per written batch (`--stats_json`) and the rate the edit kept up with.

The sender waits for the editor to connect (the editor builds its models first), then sends each packet
at its time stamp, as a camera or a live encoder would; the editor reads a `tcp://` source as live, so
it drops whole chunks when it falls two chunks behind (`--live_frame_drop auto`).

    python benchmarks/live_realtime.py --seconds 30 --out live.json        # full size, random weights
    python benchmarks/live_realtime.py --tiny --seconds 3 --out live.json  # CPU smoke run (tiny_random)
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av

from sana_streaming.video.synthetic import write_synthetic_clip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_in_real_time(clip: Path, port: int, sent: list[float]) -> None:
    """Listen on `port`, and once the editor connects send `clip`'s packets at their time stamps
    (`sent`: the wall time of each packet sent). The first packet's mux opens the connection."""
    url = f"tcp://127.0.0.1:{port}?listen=1&listen_timeout=900000"  # ms: the editor loads its models
    with av.open(str(clip)) as src, av.open(url, mode="w", format="mpegts") as out:
        video = src.streams.video[0]
        stream = out.add_stream_from_template(video)
        start = None
        for packet in src.demux(video):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            due = float(packet.dts * video.time_base)
            if start is not None:
                time.sleep(max(0.0, start + due - time.monotonic()))
            packet.stream = stream
            out.mux(packet)  # the first one waits for the editor to connect
            if start is None:
                start = time.monotonic() - due
            sent.append(time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the live source")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--tiny", action="store_true", help="tiny_random on the CPU at 64x96 (script check)")
    parser.add_argument("--out", type=Path, required=True, help="write the results as JSON here")
    parser.add_argument("edit_args", nargs="*", help="more `sana-streaming edit` arguments (after --)")
    args = parser.parse_args()
    if args.tiny:
        args.height, args.width = 64, 96
        model = ["--config", "tiny_random", "--device", "cpu"]
    else:
        model = []
    frames = round(args.seconds * args.fps)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_synthetic_clip(Path(tmp) / "live.mp4", frames, args.height, args.width, fps=args.fps)
        sent: list[float] = []
        sender = threading.Thread(target=serve_in_real_time, args=(clip, port, sent), daemon=True)
        sender.start()
        stats = Path(tmp) / "stats.json"
        command = [
            sys.executable, "-m", "sana_streaming", "edit", *model, "--random_weights",
            "--video_path", f"tcp://127.0.0.1:{port}", "--num_frames", "all",
            "--height", str(args.height), "--width", str(args.width), "--prompt", "Make it a watercolour",
            "--output", str(Path(tmp) / "edited.mkv"), "--no_audio", "--stats_json", str(stats),
            *args.edit_args,
        ]  # fmt: skip
        edit = subprocess.run(command, capture_output=True, text=True)
        sender.join(10)
        if edit.returncode != 0:
            sys.exit(f"the edit failed (exit {edit.returncode}): {edit.stderr.strip().splitlines()[-1:]}")
        summary = json.loads(stats.read_text())
    batches = summary["batches"]
    newest = [b["newest_s"] for b in batches]
    steady = newest[len(newest) // 4 :]  # after the first quarter: graphs captured, kernels compiled
    result = {
        "source": {"frames": frames, "fps": args.fps, "size": [args.height, args.width]},
        "sent_frames": len(sent),
        "send_seconds": sent[-1] - sent[0] if len(sent) > 1 else 0.0,
        "edited_frames": summary["frames"],
        "dropped_frames": summary["dropped_frames"],
        "first_frame_s": summary["first_frame_s"],
        "newest_latency_s": {"median": statistics.median(newest), "max": max(newest)},
        "steady_newest_latency_s": {"median": statistics.median(steady), "max": max(steady)},
        "batches": batches,
        "command": command[1:],
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"live {args.fps} fps {args.height}x{args.width}, {frames} frames sent over "
        f"{result['send_seconds']:.1f} s: {result['edited_frames']} edited, {result['dropped_frames']} "
        f"dropped; first frame {result['first_frame_s']:.2f} s; newest-frame latency median "
        f"{result['newest_latency_s']['median']:.2f} s (after the first quarter "
        f"{result['steady_newest_latency_s']['median']:.2f} s, "
        f"max {result['steady_newest_latency_s']['max']:.2f} s)"
    )


if __name__ == "__main__":
    main()
