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


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield `items`, produced by a daemon thread up to `depth` ahead. Closing the generator stops
    the thread at its next item."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
            slots.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            slots.put(_Failure(exc))

    worker = threading.Thread(target=produce, name="sana-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass


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
