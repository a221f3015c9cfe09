"""The models of a config, built and loaded in one place: released weights (every file fetched or
named missing before the DiT is built) or random weights for smoke runs and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sana_streaming.checkpoint import load_dit_checkpoint
from sana_streaming.config import SanaStreamingConfig
from sana_streaming.downloads import model_needs, resolve_needs
from sana_streaming.models.dit import build_dit, randomize_dit_
from sana_streaming.models.dit.quantize import PrecisionPlan, quantize_dit_
from sana_streaming.models.text_encoder import TextEncoder
from sana_streaming.models.vae import LTX2VAE, load_vae


@dataclass
class Models:
    """What a pipeline runs: the DiT, the VAE and (unless embeddings are given) the text encoder, on
    `device` in `dtype`."""

    dit: torch.nn.Module
    vae: LTX2VAE
    text_encoder: TextEncoder | None
    device: torch.device
    dtype: torch.dtype


def default_device(device: torch.device | str | None) -> torch.device:
    """`device`, else CUDA when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_models(
    config: SanaStreamingConfig,
    *,
    model_path: str | None = None,
    random_weights: bool = False,
    device: torch.device | str | None = None,
    strict: bool = False,
    load_text_encoder: bool = True,
    precision: PrecisionPlan | None = None,
) -> Models:
    """Build every component of `config`: released weights from `model_path` and the config's
    VAE/text-encoder sources, or random weights (`random_weights`). bf16 on CUDA, fp32 on a CPU.
    `precision` puts the DiT GEMM groups it names in FP8 (`models.dit.quantize`)."""
    device = default_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # bf16 is slow on CPUs
    text = None
    vae_config = config.vae
    if random_weights:
        dit = randomize_dit_(build_dit(config, device=device, dtype=dtype), seed=0)
        if load_text_encoder:
            text = TextEncoder.from_config(config.text_encoder, device=device, dtype=dtype)
    else:
        if model_path is None:
            raise ValueError("model_path is required unless random_weights is set")
        # every file and folder first (fetched, or one error naming all that are missing), before the
        # fp32 DiT is built
        local = resolve_needs(model_needs(config, model_path, text_encoder=load_text_encoder))
        vae_config = replace(config.vae, vae_pretrained=str(local["vae"]))
        if "causal_vae" in local:
            vae_config = replace(vae_config, causal_vae_pretrained=str(local["causal_vae"]))
        dit = build_dit(config, device="cpu", dtype=torch.float32)
        load_dit_checkpoint(dit, local["model_path"], strict)
        dit = dit.to(device=device, dtype=dtype)  # the release loads in fp32, then casts to bf16
        if load_text_encoder:
            text = TextEncoder.from_pretrained(
                config.text_encoder, local["text_encoder"], device=device, dtype=dtype
            )
    if precision is not None:
        quantize_dit_(dit, precision)
    vae_dtype = dtype if random_weights or device.type == "cpu" else None
    vae = load_vae(vae_config, device=device, dtype=vae_dtype, random_weights=random_weights)
    return Models(dit, vae, text, device, dtype)
