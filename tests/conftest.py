"""Test-session setup: without CUDA, Triton kernels run in Triton's interpreter.

`TRITON_INTERPRET` is read when Triton is first imported, so it is set here, before any test module
imports it (a test module setting it itself would depend on the order the files are collected in)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
