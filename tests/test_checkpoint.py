"""Checkpoint reading, unwrapping, strict loading with readable errors, and conversion."""

import os
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

from sana_streaming import build_dit, load_config
from sana_streaming.checkpoint import (
    CheckpointError,
    convert_checkpoint,
    load_dit_checkpoint,
    read_state_dict,
)
from sana_streaming.cli import main as cli_main
from sana_streaming.models.dit import randomize_dit_

CONFIG = load_config("tiny_random").dit


def random_model(seed=0, variant=None):
    config = CONFIG if variant is None else type(CONFIG)(**{**CONFIG.__dict__, "variant": variant})
    return randomize_dit_(build_dit(config, dtype=torch.float32), seed=seed)


def run(model):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 16, 2, 2, 3, generator=gen)
    caption = torch.randn(1, 1, 16, 64, generator=gen)
    return model(x, torch.tensor([700.0]), caption, torch.ones(1, 16), x)


@pytest.fixture(scope="module")
def reference():
    model = random_model(seed=1)
    return model.state_dict(), run(model)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"generator": sd},
        lambda sd: {"generator": {"state_dict": sd}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"model.module.{k}": v for k, v in sd.items()},
    ],
)
@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_pth_round_trip_reproduces_outputs(tmp_path, reference, wrap, suffix):
    state, expected = reference
    path = tmp_path / f"ckpt{suffix}"
    torch.save(wrap(state), path)
    model = random_model(seed=2)
    load_dit_checkpoint(model, path)
    assert torch.equal(run(model), expected)


def test_safetensors_round_trip_and_optional_pos_embed(tmp_path, reference):
    state, expected = reference
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v for k, v in state.items() if k != "pos_embed"}, path)
    model = random_model(seed=3)
    report = load_dit_checkpoint(model, path)
    assert report.kept_default == ["pos_embed"]
    assert torch.equal(run(model), expected)


def test_softmax_qk_accepted_as_linear_or_three_taps(reference, caplog):
    """Streaming model ← [C, C] q/k (centre tap set); bidirectional model ← [C, C, 3] (centre used)."""
    from sana_streaming.checkpoint import load_dit_state_dict

    state, expected = reference  # streaming tiny model: softmax q/k are [224, 224, 3]
    bidirectional = random_model(seed=4, variant="bidirectional")
    report = load_dit_state_dict(bidirectional, state)
    assert sorted(report.adapted) == ["blocks.3.attn.k.weight", "blocks.3.attn.q.weight"]
    assert "other release variant" in caplog.text
    torch.testing.assert_close(run(bidirectional), expected)
    streaming = random_model(seed=5)
    load_dit_state_dict(streaming, bidirectional.state_dict())
    torch.testing.assert_close(run(streaming), expected)


def test_missing_and_mismatched_keys_listed_in_one_error(reference):
    from sana_streaming.checkpoint import load_dit_state_dict

    state = dict(reference[0])
    del state["blocks.0.attn.A_log"]
    del state["final_layer.linear.bias"]
    state["blocks.1.mlp.t_conv.weight"] = torch.zeros(224, 224, 2, 1)
    with pytest.raises(CheckpointError) as info:
        load_dit_state_dict(random_model(), state)
    message = str(info.value)
    assert "2 missing key(s)" in message and "blocks.0.attn.A_log" in message
    assert "1 shape mismatch(es)" in message and "[224, 224, 2, 1]" in message


def test_unexpected_key_only_warns_unless_strict(reference):
    from sana_streaming.checkpoint import load_dit_state_dict

    state = {**reference[0], "extra.weight": torch.ones(3)}
    with pytest.warns(UserWarning, match="extra.weight"):
        load_dit_state_dict(random_model(), state)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_dit_state_dict(random_model(), state, strict=True)


def test_truncated_files_fail_clearly(tmp_path, reference):
    for name, writer in [("a.pth", torch.save), ("a.safetensors", save_file)]:
        path = tmp_path / name
        writer(reference[0], path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="cannot read"):
            read_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_payload_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    with pytest.raises(CheckpointError, match="refusing"):
        read_state_dict(path)


@pytest.mark.parametrize("protocol", [2, 4])
def test_refusal_is_short_quiet_and_never_advises_weights_only_false(tmp_path, protocol):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=protocol))  # a raw pickle, no zip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="refusing") as info:
            read_state_dict(path)
    assert [str(w.message) for w in caught] == []  # torch's "Detected pickle protocol 4" included
    message = str(info.value)
    assert "\n" not in message and len(message) < 250, message
    assert "weights_only" not in message and "False" not in message and "will likely succeed" not in message


def test_refusal_names_the_blocked_global(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "f": Payload()}, path)  # a torch.save zip holding a code reference
    with pytest.raises(CheckpointError, match=r"refusing .*evil\.pth.*(posix|os)\.system"):
        read_state_dict(path)


def test_convert_cli_keeps_dtypes_and_refuses_overwrite(tmp_path, capsys):
    state = {"generator": {"model.a": torch.randn(3, dtype=torch.bfloat16), "model.b": torch.arange(4)}}
    src, dst = tmp_path / "in.pth", tmp_path / "out.safetensors"
    torch.save(state, src)
    assert cli_main(["convert", str(src), str(dst)]) == 0
    out = read_state_dict(dst)
    assert out["a"].dtype == torch.bfloat16 and torch.equal(out["a"], state["generator"]["model.a"])
    assert torch.equal(out["b"], torch.arange(4))
    assert cli_main(["convert", str(src), str(dst)]) == 2  # a usage error, like every existing output
    assert "exists" in capsys.readouterr().err
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"w": Payload()}, f)
    assert cli_main(["convert", str(evil), str(tmp_path / "evil.safetensors")]) == 1
    assert not (tmp_path / "evil.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_output_must_be_safetensors(tmp_path):
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        convert_checkpoint(tmp_path / "a.pth", tmp_path / "b.bin")
