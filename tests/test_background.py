"""Thread helpers: order, back-pressure, errors and early stops."""

import threading
import time

import pytest

from sana_streaming.background import BackgroundSink, prefetch


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    out = prefetch(failing())
    assert next(out) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(out)


def test_prefetch_close_stops_the_producer():
    produced = []

    def slow():
        for i in range(1000):
            produced.append(i)
            yield i

    out = prefetch(slow(), depth=2)
    assert next(out) == 0
    out.close()
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) == count < 10
    assert not any(t.name == "sana-prefetch" for t in threading.enumerate())


def test_sink_consumes_all_in_order_and_reports_errors():
    seen = []
    sink = BackgroundSink(seen.append, depth=2)
    for i in range(20):
        sink.put(i)
    sink.close()
    assert seen == list(range(20))

    def consume(item):
        if item == 3:
            raise ValueError("bad frame")

    sink = BackgroundSink(consume, depth=1)
    with pytest.raises(ValueError, match="bad frame"):
        for i in range(100):
            sink.put(i)
        sink.close()


def test_sink_cancel_drops_pending_items():
    seen = []
    gate = threading.Event()

    def consume(item):
        gate.wait()
        seen.append(item)

    sink = BackgroundSink(consume, depth=2)
    sink.put(0)
    sink.put(1)
    gate.set()
    sink.cancel()
    assert len(seen) <= 2
