"""Config files and mode presets: one home for each default, no key silently ignored."""

import dataclasses

import pytest

from sana_streaming.config import (
    MODE_PRESETS,
    UNREAD_KEYS,
    VAEConfig,
    config_from_dict,
    load_config,
    packaged_config_names,
)
from sana_streaming.errors import OptionError
from sana_streaming.options import EditOptions, validate_options


@pytest.mark.parametrize("name", packaged_config_names())
def test_packaged_configs_load_without_warnings(name, caplog):
    with caplog.at_level("WARNING"):
        load_config(name)
    assert caplog.text == ""


def test_unread_keys_with_other_values_warn(caplog):
    with caplog.at_level("WARNING"):
        config_from_dict({"model": {"mixed_precision": "fp16", "class_dropout_prob": 0.5},
                          "scheduler": {"pred_sigma": True}})  # fmt: skip
    assert "model.mixed_precision: 'fp16' is not used" in caplog.text
    assert "scheduler.pred_sigma: True is not used" in caplog.text
    assert "class_dropout_prob" not in caplog.text  # training only: any value


def test_every_unread_key_is_a_config_field():
    config = config_from_dict({})
    for section, key in UNREAD_KEYS:
        assert hasattr(getattr(config, section), key)


def test_presets_hold_the_release_defaults():
    streaming, bidirectional = MODE_PRESETS["long_streaming"], MODE_PRESETS["bidirectional_short"]
    assert (streaming.num_frames, streaming.steps, streaming.cfg_scale, streaming.motion_score) == (
        969,
        4,
        1.0,
        0,
    )
    assert (bidirectional.num_frames, bidirectional.steps, bidirectional.cfg_scale) == (81, 50, 6.0)
    assert bidirectional.motion_score == 10 and bidirectional.negative_prompt.startswith("A chaotic sequence")
    assert streaming.sampler().base_chunk_frames == 3  # 24 video frames at the 8x temporal stride
    assert streaming.sampler(VAEConfig(vae_stride=(4, 32, 32))).base_chunk_frames == 6
    assert (streaming.shortest_source(), bidirectional.shortest_source()) == (25, 1)


@pytest.mark.parametrize(
    ("mode", "change", "option"),
    [
        ("long_streaming", {"num_frames": 17}, "num_frames"),
        ("long_streaming", {"num_frames": 0}, "num_frames"),
        ("long_streaming", {"cfg_scale": 2.0}, "cfg_scale"),
        ("bidirectional_short", {"cfg_scale": 0.5}, "cfg_scale"),
        ("bidirectional_short", {"steps": 0}, "steps"),
        ("bidirectional_short", {"height": 63}, "height"),
        ("long_streaming", {"max_seconds": -1.0}, "max_seconds"),
    ],
)
def test_validate_names_the_option(mode, change, option):
    options = dataclasses.replace(EditOptions(prompt="x", height=64, width=96), **change)
    with pytest.raises(OptionError) as info:
        validate_options(options, mode)
    assert info.value.option == option


def test_validate_accepts_the_defaults_and_bidirectional_guidance():
    validate_options(EditOptions(prompt="x"), "long_streaming")
    validate_options(EditOptions(prompt="x", cfg_scale=6.0, num_frames=17), "bidirectional_short")
