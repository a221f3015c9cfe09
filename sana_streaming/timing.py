"""Per-stage wall-clock accounting for benchmarks: `with timer("dit"): ...` adds to `timer.seconds["dit"]`.

On CUDA each section synchronises the device at both ends so the time is the stage's own; that removes
overlap between stages, so use it for measurements, not for production runs (the pipeline runs without a
timer by default)."""

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
