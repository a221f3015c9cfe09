"""Thread helpers: order, back-pressure, errors and early stops."""

import itertools
import threading
import time

import pytest

from sana_streaming.background import BackgroundSink, Prefetch


def test_prefetch_keeps_order_and_reraises():
    assert list(Prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    out = Prefetch(failing())
    assert next(out) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(out)


def test_prefetch_close_stops_the_producer():
    produced = []

    def slow():
        for i in range(1000):
            produced.append(i)
            yield i

    out = Prefetch(slow(), depth=2)
    assert next(out) == 0
    assert out.close()
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


def test_prefetch_close_gives_up_on_a_blocked_producer():
    """A producer stuck in a read (a stalled live source) cannot be stopped: close returns False
    after its timeout instead of hanging the caller (Ctrl-C must still end the program)."""
    release = threading.Event()

    def stalled():
        yield 0
        release.wait()  # blocked like a read on a silent pipe
        yield 1

    out = Prefetch(stalled())
    assert next(out) == 0
    start = time.monotonic()
    assert out.close(timeout=0.2) is False
    assert time.monotonic() - start < 1
    release.set()


def test_sink_cancel_drops_pending_items():
    seen = []
    started, gate = threading.Event(), threading.Event()

    def consume(item):
        started.set()
        gate.wait()
        seen.append(item)

    sink = BackgroundSink(consume, depth=2)
    sink.put(0)
    started.wait()  # the worker holds item 0; items 1 and 2 wait in the queue
    sink.put(1)
    sink.put(2)
    canceller = threading.Thread(target=sink.cancel)
    canceller.start()
    time.sleep(0.1)
    gate.set()
    canceller.join()
    assert seen == [0]


def test_prefetch_with_drop_skips_what_finds_the_queue_full_and_keeps_the_rest_in_order():
    """A producer faster than its consumer: items that arrive while `depth` wait go to `drop`; every
    item is either received, in order, or dropped, and the end and errors still arrive."""
    dropped = []
    received = []
    for item in Prefetch(iter(range(40)), depth=2, drop=dropped.append):
        received.append(item)
        time.sleep(0.01)  # the consumer is the slow side
    assert dropped and received == sorted(received)
    assert sorted(received + dropped) == list(range(40))
    assert received[:2] == [0, 1]  # the first items found room

    def failing():
        yield from range(5)
        raise OSError("source gone")

    endless = Prefetch(itertools.count(), depth=2, drop=lambda _: None)
    assert next(endless) == 0
    assert endless.close()  # a dropping producer still stops when asked

    out = Prefetch(failing(), depth=1, drop=lambda _: None)
    time.sleep(0.05)  # the producer fills the queue, drops, and then must still deliver its error
    assert next(out) == 0
    with pytest.raises(OSError, match="source gone"):
        list(out)
