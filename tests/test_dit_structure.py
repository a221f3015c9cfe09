"""Configs, the model table and the full-size module tree against the release's key/shape lists."""

import os
from pathlib import Path

import pytest
import torch

from sana_streaming import build_dit, load_config
from sana_streaming.config import ConfigError, config_from_dict, softmax_layer_indices

DATA = Path(__file__).parent / "data"


def read_tsv(name: str) -> dict[str, list[int]]:
    shapes = {}
    for line in (DATA / f"state_dict_{name}.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype = line.split("\t")
        shapes[key] = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
    return shapes


@pytest.mark.parametrize(
    ("config_name", "tsv"),
    [("sana_streaming_2b_720p", "streaming"), ("sana_streaming_bidirectional_2b_720p", "bidirectional")],
)
def test_full_size_state_dict_equals_release_tsv(config_name, tsv):
    model = build_dit(load_config(config_name), device="meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = read_tsv(tsv)
    assert len(expected) == 588
    assert ours == expected


def test_full_size_parameter_counts():
    """The release counts: bidirectional 2,159,177,648 parameters; streaming as stored 2,259,529,648."""
    for name, count in [("sana_streaming_bidirectional_2b_720p", 2_159_177_648),
                        ("sana_streaming_2b_720p", 2_259_529_648)]:  # fmt: skip
        model = build_dit(load_config(name), device="meta")
        assert sum(p.numel() for p in model.parameters()) == count


def test_release_config_resolves_through_model_table():
    config = load_config("configs/sana_streaming/sana_streaming_2b_720p.yaml")
    dit = config.dit
    assert (dit.hidden_size, dit.depth, dit.num_heads, dit.linear_heads) == (2240, 20, 20, 20)
    assert dit.variant == "streaming" and dit.softmax_layer_indices == (3, 7, 11, 15, 19)
    assert (dit.in_channels, dit.additional_inchannels, dit.caption_channels) == (128, 128, 2304)
    assert (dit.model_max_length, dit.ffn_hidden, dit.input_size) == (300, 6720, 22)
    assert config.text_encoder.y_norm_scale_factor == 0.01  # kept as the release wrote it (unused)
    assert config.text_encoder.chi_prompt[-1] == "User Prompt: "
    assert config.scheduler.inference_flow_shift == 8.0
    assert load_config("sana_streaming_bidirectional_2b_720p").dit.variant == "bidirectional"


def test_packaged_configs_load_from_any_working_directory(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        config = load_config("configs/sana_streaming/sana_streaming_2b_720p.yaml")
        tiny = load_config("tiny_random")
    finally:
        os.chdir(cwd)
    assert config.model.model == "SanaMSVideoV2V_2000M_P1_D20"
    assert (tiny.dit.hidden_size, tiny.dit.depth, tiny.dit.linear_heads) == (224, 4, 2)
    assert tiny.dit.softmax_layer_indices == (3,)


def test_softmax_layer_indices():
    assert softmax_layer_indices(20, 0.25) == (3, 7, 11, 15, 19)  # not the docstring's [4, 9, 14, 19]
    assert softmax_layer_indices(4, 0.25) == (3,)
    assert softmax_layer_indices(2, 0.25) == (1,)  # at least one softmax layer


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"modle": "x"}}, "unknown key"),
        ({"modell": {}}, "unknown section"),
        ({"model": {"model": "NoSuchModel"}}, "unknown model"),
        ({"model": {"model": None}}, "explicit"),
        ({"model": {"model": "SanaMSVideoV2V_2000M_P1_D20", "ffn_type": "GLUMBConvTemp"}}, "needs ffn_type"),
        ({"model": {"model": "SanaMSVideoV2V_2000M_P1_D20", "cross_norm": False}}, "cross_norm"),
        ({"model": {"model": "SanaMSVideoV2V_2000M_P1_D20"}, "text_encoder": {"y_norm": False}}, "y_norm"),
    ],
)
def test_bad_configs_raise_clear_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        _ = config_from_dict(raw).dit


def test_missing_config_names_packaged_ones():
    with pytest.raises(ConfigError, match="tiny_random"):
        load_config("no_such_config")


def test_tiny_model_builds_and_runs_in_bf16():
    config = load_config("tiny_random").dit
    model = build_dit(config, dtype=torch.bfloat16)
    from sana_streaming.models.dit import randomize_dit_

    randomize_dit_(model, seed=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 2, 3, generator=gen)
    out = model(x, torch.tensor([500.0]), torch.randn(1, 1, 16, 64, generator=gen), torch.ones(1, 16), x)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape and torch.isfinite(out).all()


def test_gdn_backend_is_a_build_argument_reaching_every_gdn_block():
    config = load_config("sana_streaming_2b_720p")
    gdn_blocks = [b for b in build_dit(config, device="meta").blocks if not b.softmax]
    assert len(gdn_blocks) == 15 and {b.attn.backend for b in gdn_blocks} == {"auto"}
    gdn_blocks = [b for b in build_dit(config, device="meta", gdn_backend="torch").blocks if not b.softmax]
    assert {b.attn.backend for b in gdn_blocks} == {"torch"}


def test_triton_gdn_backend_from_build_dit_is_used_by_the_forward():
    """`gdn_backend="triton"` never falls back: on CPU the forward raises, so the argument reached
    `gdn_core`; "torch" and the default "auto" give the same bits on CPU."""
    from sana_streaming.models.dit import randomize_dit_
    from sana_streaming.ops import KernelUnavailableError

    config = load_config("tiny_random")
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 16, 2, 2, 3, generator=gen)
    args = (x, torch.tensor([500.0]), torch.randn(1, 1, 16, 64, generator=gen), torch.ones(1, 16), x)
    outs = {}
    for backend in ("auto", "torch", "triton"):
        model = randomize_dit_(build_dit(config, dtype=torch.float32, gdn_backend=backend), seed=3)
        if backend == "triton":
            with pytest.raises(KernelUnavailableError):
                model(*args)
        else:
            outs[backend] = model(*args)
    assert torch.equal(outs["auto"], outs["torch"])


def test_unknown_gdn_backend_fails_at_build_time():
    with pytest.raises(ValueError, match=r"unknown GDN backend 'cuda'; expected one of auto, triton, torch"):
        build_dit(load_config("tiny_random"), device="meta", gdn_backend="cuda")
