"""Source-to-output latency of a run (`--stats`): when each source frame was read and when its edited
frame was handed to the writer, from the run's progress events.

Output frame i is the edit of source frame i, so frame i's latency is the time its batch was handed
to the writer (x264 encodes it beside, on a thread) minus the time the source chunk holding it came off
the source (the read event's `read_at`, stamped on the reading thread, so the wait in the decode-ahead
queue counts). Per written batch, the oldest frame (its first) has waited longest and the newest (its
last) least; a live viewer sees the newest frame's latency plus the encoder's and the player's own
delay.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sana_streaming.stages import ProgressEvent


@dataclass(frozen=True)
class BatchLatency:
    """One batch of written frames and how long its frames took from the source."""

    first: int  # output frames [first, end)
    end: int
    written_s: float  # seconds since the first source frame was read
    oldest_s: float  # latency of frame `first`
    newest_s: float  # latency of frame `end - 1`


class LatencyLog:
    """A progress callback recording reads and writes (chain it with another: `LatencyLog(then=bar)`)."""

    def __init__(
        self,
        then: Callable[[ProgressEvent], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.then = then
        self.clock = clock
        self._read_counts: list[int] = []  # cumulative source frames read, one entry per read event
        self._read_times: list[float] = []
        self._written = 0
        self.batches: list[BatchLatency] = []

    def __call__(self, event: ProgressEvent) -> None:
        now = self.clock()
        if event.stage == "read":
            self._read_counts.append(event.done)
            self._read_times.append(now if event.read_at is None else event.read_at)
        elif event.stage == "write" and event.done > self._written:
            first, end = self._written, event.done
            self.batches.append(
                BatchLatency(
                    first,
                    end,
                    now - self._read_times[0],
                    now - self._read_time(first),
                    now - self._read_time(end - 1),
                )
            )
            self._written = end
        if self.then is not None:
            self.then(event)

    def _read_time(self, frame: int) -> float:
        """When the chunk holding source frame `frame` was read."""
        return self._read_times[bisect.bisect_right(self._read_counts, frame)]

    def summary(self, stage_seconds: dict[str, float] | None = None) -> dict:
        """Frames, rate, newest/oldest latency (median, p95, max), time to the first written frame, the
        batches, and the stages' seconds when given."""
        if not self.batches:
            return {"frames": 0, "batches": []}
        newest = [b.newest_s for b in self.batches]
        oldest = [b.oldest_s for b in self.batches]
        seconds = self.batches[-1].written_s
        return {
            "frames": self._written,
            "seconds": seconds,
            "fps": self._written / seconds if seconds > 0 else None,
            "first_frame_s": self.batches[0].written_s,
            "newest_latency_s": _spread(newest),
            "oldest_latency_s": _spread(oldest),
            "stage_seconds": dict(stage_seconds or {}),
            "batches": [asdict(b) for b in self.batches],
        }


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def format_summary(summary: dict) -> list[str]:
    """The summary as a few lines for stderr."""
    if not summary["frames"]:
        return ["stats: no frames were written"]
    lat_new, lat_old = summary["newest_latency_s"], summary["oldest_latency_s"]
    lines = [
        f"stats: {summary['frames']} frames in {summary['seconds']:.2f} s ({summary['fps']:.1f} FPS); "
        f"first frame after {summary['first_frame_s']:.2f} s",
        f"stats: source-to-output latency, newest frame of each batch: median {lat_new['median']:.2f} s, "
        f"p95 {lat_new['p95']:.2f} s, max {lat_new['max']:.2f} s; oldest: median {lat_old['median']:.2f} s, "
        f"max {lat_old['max']:.2f} s",
    ]
    if summary.get("dropped_frames"):
        lines.append(
            f"stats: {summary['dropped_frames']} source frames dropped (the edit ran behind the source)"
        )
    if summary["stage_seconds"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(summary["stage_seconds"].items()))
        lines.append(f"stats: stage seconds (the GPU synchronised at each): {stages}")
    return lines
