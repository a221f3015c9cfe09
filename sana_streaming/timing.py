"""Per-stage accounting for benchmarks: `with timer("dit"): ...` adds to `timer.seconds["dit"]`.

`StageTimer` synchronises a CUDA device at both ends of each section, so the time is the stage's own;
that removes the overlap between stages. `EventStageTimer` leaves them overlapping and measures with
CUDA events instead. The pipeline runs without a timer by default."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1


class EventStageTimer(StageTimer):
    """Stage accounting that leaves the stages overlapping: nothing is synchronised during the run.

    Per stage it adds the host's seconds inside the stage (launching work, or waiting, e.g. for the
    writer) to `seconds`, and on CUDA records an event pair on the current stream; `gpu_seconds()`
    (call after the run, it synchronises once) sums the stream time between each pair: the stage's
    span on the GPU, including any idle gaps inside it."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self._events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = defaultdict(list)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start
            self.calls[stage] += 1
            if cuda:
                end.record()
                self._events[stage].append((begin, end))

    def gpu_seconds(self) -> dict[str, float]:
        """Per stage, the summed stream time between its events (empty off CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return {
            stage: sum(b.elapsed_time(e) for b, e in pairs) / 1e3 for stage, pairs in self._events.items()
        }
