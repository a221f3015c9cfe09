"""Random-weights models do not depend on torch's global generator: the same weights while other
threads draw from it (the cause of in-process edits that differed between runs)."""

import threading

import torch

from sana_streaming.config import load_config
from sana_streaming.models.random_init import redraw_
from sana_streaming.models.text_encoder import TextEncoder
from sana_streaming.models.vae.autoencoder import load_vae

CONFIG = load_config("tiny_random")


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def build_both() -> tuple[dict, dict]:
    vae = load_vae(CONFIG.vae, random_weights=True).model
    text = TextEncoder.from_config(CONFIG.text_encoder).model
    return weights(vae), weights(text)


def test_random_weights_ignore_other_threads_drawing_from_the_global_generator():
    quiet = build_both()
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            torch.randn(64)

    drawers = [threading.Thread(target=draw, daemon=True) for _ in range(2)]
    for thread in drawers:
        thread.start()
    try:
        busy = [build_both() for _ in range(3)]
    finally:
        stop.set()
        for thread in drawers:
            thread.join()
    for built in busy:
        for got, want in zip(built, quiet, strict=True):
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want)


def test_redraw_keeps_default_scales_and_constants():
    layer = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.LayerNorm(8), torch.nn.Conv2d(4, 6, 3))
    redraw_(layer, seed=1)
    linear, norm, conv = layer
    assert linear.weight.abs().max() <= 1 / 8 and linear.weight.std() > 0.5 / 8 / 3**0.5
    assert conv.weight.abs().max() <= 1 / 6 and conv.bias.abs().max() <= 1 / 6  # fan_in 4·3·3
    assert torch.equal(norm.weight, torch.ones(8)) and torch.equal(norm.bias, torch.zeros(8))
    again = redraw_(torch.nn.Linear(64, 8), seed=1)
    assert torch.equal(again.weight, linear.weight) and torch.equal(again.bias, linear.bias)
