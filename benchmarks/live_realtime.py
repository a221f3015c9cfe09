"""A live edit of a real-time source: a synthetic clip served over TCP (MPEG-TS) at its own frame rate,
edited by `sana-streaming edit` as it arrives. Prints and writes (JSON) the frames sent, edited and
dropped, and the source-to-output latency of each written batch (`--stats_json`: from when the editor's
reading thread decoded a chunk to when its edit went to the writer).

The sender accepts the editor's connection (the editor builds its models first), then sends each packet
at its time stamp, as a camera or a live encoder would; the editor reads a `tcp://` source as live, so
it drops whole chunks when it falls two chunks behind (`--live_frame_drop auto`). The clip has 8k+1
frames, so every frame not dropped is edited.

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
from dataclasses import dataclass, field
from pathlib import Path

import av

from sana_streaming.video.synthetic import write_synthetic_clip

CONNECT_TIMEOUT_S = 900  # the editor builds full-size models before it connects


@dataclass
class Sender:
    """A thread sending a clip's packets at their time stamps to the one client of `listener`."""

    clip: Path
    listener: socket.socket
    sent: list[float] = field(default_factory=list)  # wall time of each packet sent
    error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, _ = self.listener.accept()  # Python's accept releases the GIL while it waits
            with conn, conn.makefile("wb") as stream:
                self._send(stream)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _send(self, stream: object) -> None:
        with av.open(str(self.clip)) as src, av.open(stream, mode="w", format="mpegts") as out:
            video = src.streams.video[0]
            muxed = out.add_stream_from_template(video)
            start = time.monotonic()
            for packet in src.demux(video):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                time.sleep(max(0.0, start + float(packet.dts * video.time_base) - time.monotonic()))
                packet.stream = muxed
                out.mux(packet)
                self.sent.append(time.monotonic())


def edit_command(url: str, output: Path, stats: Path, args: argparse.Namespace) -> list[str]:
    """The `sana-streaming edit` command line of the live edit."""
    model = ["--config", "tiny_random", "--device", "cpu"] if args.tiny else []
    return [
        sys.executable, "-m", "sana_streaming", "edit", *model, "--random_weights", "--video_path", url,
        "--num_frames", "all", "--height", str(args.height), "--width", str(args.width),
        "--prompt", "Make it a watercolour", "--output", str(output), "--no_audio",
        "--stats_json", str(stats), *args.edit_args,
    ]  # fmt: skip


def live_edit(frames: int, args: argparse.Namespace) -> tuple[dict, Sender, list[str]]:
    """Serve a synthetic clip of `frames` frames and edit it live; the editor's `--stats_json`."""
    with tempfile.TemporaryDirectory() as tmp, socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(CONNECT_TIMEOUT_S)
        clip = write_synthetic_clip(Path(tmp) / "live.mp4", frames, args.height, args.width, fps=args.fps)
        sender = Sender(clip, listener)
        thread = threading.Thread(target=sender.run, daemon=True)
        thread.start()
        url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        stats = Path(tmp) / "stats.json"
        command = edit_command(url, Path(tmp) / "edited.mkv", stats, args)
        edit = subprocess.run(command, capture_output=True, text=True)
        if edit.returncode != 0:  # the sender's thread (a daemon) may still wait for the editor
            last = (edit.stderr.strip().splitlines() or ["no message"])[-1]
            sys.exit(f"the edit failed (exit {edit.returncode}): {last}")
        thread.join(10)
        if sender.error is not None or thread.is_alive():
            sys.exit(f"the sender failed: {sender.error or 'still sending after the edit ended'}")
        return json.loads(stats.read_text()), sender, command


def summarise(frames: int, args: argparse.Namespace, summary: dict, sender: Sender) -> dict:
    """The run's results: frames sent, edited and dropped, latencies (all and after the first quarter)."""
    batches = summary["batches"]
    if not batches:
        sys.exit("the edit wrote no frames")
    newest = [b["newest_s"] for b in batches]
    steady = newest[len(newest) // 4 :]  # after the first quarter: graphs captured, kernels compiled
    sent = sender.sent
    return {
        "source": {"frames": frames, "fps": args.fps, "size": [args.height, args.width]},
        "sent_frames": len(sent),
        "send_seconds": sent[-1] - sent[0] if len(sent) > 1 else 0.0,
        "edited_frames": summary["frames"],
        "dropped_frames": summary["dropped_frames"],
        "first_frame_s": summary["first_frame_s"],
        "newest_latency_s": {"median": statistics.median(newest), "max": max(newest)},
        "steady_newest_latency_s": {"median": statistics.median(steady), "max": max(steady)},
        "batches": batches,
    }


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
    frames = round(args.seconds * args.fps) // 8 * 8 + 1  # 8k+1: the edit keeps every frame not dropped
    summary, sender, command = live_edit(frames, args)
    result = summarise(frames, args, summary, sender) | {"command": command[1:]}
    args.out.write_text(json.dumps(result, indent=1))
    steady = result["steady_newest_latency_s"]
    print(
        f"live {args.fps} fps {args.height}x{args.width}: {result['sent_frames']} frames sent over "
        f"{result['send_seconds']:.1f} s, {result['edited_frames']} edited, {result['dropped_frames']} "
        f"dropped; first frame {result['first_frame_s']:.2f} s; newest-frame latency median "
        f"{result['newest_latency_s']['median']:.2f} s (after the first quarter {steady['median']:.2f} s, "
        f"max {steady['max']:.2f} s)"
    )


if __name__ == "__main__":
    main()
