"""Whether Triton kernels can run in Triton's interpreter here: the CPU tests of the kernels
(conftest.py sets TRITON_INTERPRET before Triton is imported)."""

import importlib.util

import pytest
import torch


def interpreter_skip_reason() -> str | None:
    """None where the interpreter runs kernels here, else why it does not."""
    if torch.cuda.is_available():
        return "the interpreter runs only without CUDA"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    import numpy
    import triton

    old_triton = tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 7)
    if old_triton and tuple(int(x) for x in numpy.__version__.split(".")[:2]) >= (2, 4):
        return "Triton < 3.7's interpreter breaks with numpy >= 2.4 (triton-lang/triton#9171)"
    return None


interpreted = pytest.mark.skipif(interpreter_skip_reason() is not None, reason=str(interpreter_skip_reason()))
