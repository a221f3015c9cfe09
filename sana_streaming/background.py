"""Run the CPU-bound ends of the stream (decoding the source, encoding the output) in threads, so
they overlap with GPU work instead of adding to it. PyAV and PyTorch release the GIL in their heavy
calls. Both helpers keep at most `depth` items in flight and re-raise a worker's exception in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


def interruptible(call: Callable[[], T], name: str = "sana-open") -> T:
    """`call()` on a daemon thread while this thread waits in short joins, so Ctrl-C and SIGTERM reach
    it even when `call` blocks inside C code that ignores signals (FFmpeg opening a live source that
    never sends data). On such an interrupt the call is left running; the process ends it on exit."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.05)
    if failure:
        raise failure[0]
    return result[0]


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """Iterate `items` produced by a daemon thread up to `depth` ahead.

    With `drop`, an item that finds `depth` items already waiting is handed to `drop` and skipped
    instead of waiting for room (a live source the consumer cannot keep up with). `close(timeout)`
    stops the producer at its next item and says whether it stopped in time: a producer blocked inside
    a read of a stalled live source cannot be interrupted, and the caller must then leave what it reads
    from alone (see `VideoReader.abandon`)."""

    def __init__(self, items: Iterator[T], depth: int = 2, drop: Callable[[T], None] | None = None) -> None:
        self._items = items
        self._drop = drop
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._worker = threading.Thread(target=self._produce, name="sana-prefetch", daemon=True)
        self._worker.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    return
                if self._drop is not None and self._slots.full():
                    self._drop(item)  # only this thread adds items: room stays short until it does
                    continue
                if not self._offer(item):
                    return
            self._offer(_DONE)
        except BaseException as exc:  # handed to the consumer
            self._offer(_Failure(exc))

    def _offer(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._slots.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the producer; True if it has ended within `timeout` seconds."""
        self._stop.set()
        self._finished = True
        self._worker.join(timeout)
        return not self._worker.is_alive()


class BackgroundSink(Generic[T]):
    """Feed items to `consume` on a worker thread, `depth` at most waiting."""

    def __init__(self, consume: Callable[[T], None], depth: int = 2) -> None:
        self._consume = consume
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._worker = threading.Thread(target=self._run, name="sana-sink", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            item = self._slots.get()
            if item is _DONE or self._cancelled.is_set():
                return
            try:
                self._consume(item)
            except BaseException as exc:
                self._error = exc
                self._cancelled.set()

    def put(self, item: T) -> None:
        """Queue an item (blocks while `depth` are waiting); raises the worker's error, if any."""
        self._raise()
        while not self._cancelled.is_set():
            try:
                self._slots.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        self._raise()

    def close(self) -> None:
        """Wait until every queued item was consumed; raises the worker's error, if any."""
        if not self._cancelled.is_set():
            self._slots.put(_DONE)
        self._worker.join()
        self._raise()

    def cancel(self) -> None:
        """Stop after the item being consumed; drop the rest."""
        self._cancelled.set()
        while self._worker.is_alive():
            try:
                self._slots.put(_DONE, timeout=0.05)
            except queue.Full:
                try:
                    self._slots.get_nowait()
                except queue.Empty:
                    pass
        self._worker.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
