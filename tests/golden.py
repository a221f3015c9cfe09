"""Access to the release's golden fixtures in ../shared/golden (recorded inputs and outputs)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sana_streaming.config import DiTConfig

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"


@cache
def _load(name: str) -> dict[str, torch.Tensor]:
    path = GOLDEN / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"golden fixture {path} not found")
    return load_file(path)


def golden(name: str) -> dict[str, torch.Tensor]:
    """All tensors of one fixture file (cached; do not modify them)."""
    return _load(name)


def golden_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The fixture DiT's state dict in float32; streaming = bidirectional + its two q/k replacements."""
    sd = {k.removeprefix("state_dict."): v.float() for k, v in golden("dit_bidirectional").items()
          if k.startswith("state_dict.")}  # fmt: skip
    if variant == "streaming":
        for k, v in golden("dit_streaming").items():
            if k.startswith("state_dict."):
                sd[k.removeprefix("state_dict.")] = v.float()
    return sd


def golden_dit_config(variant: str) -> DiTConfig:
    """The reduced configuration of the fixtures: depth 4, hidden 224 (2 heads of 112), captions of
    64 channels and 16 tokens; everything else as the release YAMLs."""
    return DiTConfig(
        variant=variant,
        hidden_size=224,
        depth=4,
        num_heads=2,
        linear_head_dim=112,
        mlp_ratio=3.0,
        in_channels=128,
        additional_inchannels=128,
        out_channels=128,
        caption_channels=64,
        model_max_length=16,
        patch_size=(1, 1, 1),
        t_kernel_size=3,
        softmax_layer_indices=(3,),
        input_size=22,
    )


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius error ‖ours − ref‖ / ‖ref‖ in float64."""
    ours, ref = ours.double(), ref.double()
    return ((ours - ref).norm() / ref.norm()).item()
