"""`LatencyLog`: source-to-output latency from the progress events."""

from sana_streaming.stages import ProgressEvent
from sana_streaming.telemetry import LatencyLog


def test_latency_counts_from_when_each_chunk_came_off_the_source():
    """A read event's `read_at` (stamped on the reading thread) is the start of its frames' latency, not
    the time the event arrived; an event without it counts from its arrival."""
    clock = iter([3.0, 4.0, 5.0, 9.0])
    log = LatencyLog(clock=lambda: next(clock))
    log(ProgressEvent("read", 24, None, "frame", read_at=1.0))  # arrives at 3.0: waited 2 s in the queue
    log(ProgressEvent("read", 48, None, "frame"))  # arrives at 4.0, no stamp
    log(ProgressEvent("write", 24, None, "frame"))  # frames 0-23 written at 5.0
    log(ProgressEvent("write", 48, None, "frame"))  # frames 24-47 at 9.0
    first, second = log.batches
    assert (first.first, first.end, first.oldest_s, first.newest_s, first.written_s) == (0, 24, 4.0, 4.0, 4.0)
    assert (second.oldest_s, second.newest_s, second.written_s) == (5.0, 5.0, 8.0)
    summary = log.summary()
    assert summary["first_frame_s"] == 4.0 and summary["fps"] == 48 / 8.0
