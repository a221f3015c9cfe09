"""FP8 W8A8 linears and the DiT's precision plans: the kernel against its float64 reference, the
quantisation error against theory, the rewritten DiT against the bf16 one, plans and saved weights."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sana_streaming import build_dit, load_config
from sana_streaming.models.dit import randomize_dit_
from sana_streaming.models.dit.quantize import (
    DEFAULT_PLAN,
    GROUPS,
    PrecisionPlan,
    quantize_dit_,
    resolve_precision,
)
from sana_streaming.ops.nvfp4 import E2M1_GRID, NVFP4EmulatedLinear, nvfp4_parts, round_e2m1
from sana_streaming.ops.quant import FP8, FP8Linear, QuantizedProjections, fp8_linear_reference, quantize_rows


def test_quantize_rows_maps_each_rows_amax_to_448_and_bounds_the_error():
    gen = torch.Generator().manual_seed(0)
    x = (
        torch.randn(37, 64, generator=gen) * torch.logspace(-3, 3, 37)[:, None]
    )  # rows of very different range
    data, scale = quantize_rows(x)
    assert data.dtype == FP8 and scale.shape == (37, 1)
    torch.testing.assert_close(data.float().abs().amax(dim=1), torch.full((37,), 448.0))
    # e4m3 keeps 3 mantissa bits: a relative error of at most 2^-4 per element above the subnormals
    back = data.float() * scale
    big = x.abs() > scale * 2**-6
    assert ((back - x).abs()[big] <= x.abs()[big] * 2**-4 + 1e-12).all()
    assert torch.equal(quantize_rows(torch.zeros(2, 16))[0].float(), torch.zeros(2, 16))  # no 0/0


def test_fp8_linear_equals_its_float64_reference_and_is_near_the_full_precision_product():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(48, 96, generator=gen) / 96**0.5
    bias = torch.randn(48, generator=gen)
    layer = FP8Linear.from_matrix(weight, bias)
    x = torch.randn(2, 7, 96, generator=gen)
    got = layer(x)
    want = fp8_linear_reference(x, layer)
    assert got.shape == (2, 7, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    exact = x.double() @ weight.double().T + bias.double()
    rel = (got.double() - exact).norm() / exact.norm()
    assert 1e-3 < rel < 4e-2  # quantised (not a bf16 copy), and within e4m3's rounding


def test_fp8_linear_without_bias_and_refusing_unaligned_sizes():
    layer = FP8Linear.from_matrix(torch.randn(32, 16))
    assert layer.bias is None and layer(torch.randn(3, 16)).shape == (3, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        FP8Linear.from_matrix(torch.randn(20, 16))


def tiny(seed: int = 3):
    config = load_config("tiny_random").dit
    return randomize_dit_(build_dit(config, dtype=torch.float32), seed=seed)


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 2, 3, generator=gen)
    return x, torch.tensor([500.0]), torch.randn(1, 1, 16, 64, generator=gen), torch.ones(1, 16), x


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_every_group_quantised_changes_the_velocity_a_little_and_each_group_is_used():
    """All seven groups of every block in FP8: the forward stays within 5e-2 of fp32; each group
    alone changes the output (so the rewritten layer is the one the forward calls)."""
    base = tiny()
    args = inputs()
    with torch.no_grad():
        want = base(*args)
        model = copy.deepcopy(base)
        plan = PrecisionPlan.uniform(len(model.blocks), "fp8")
        done = quantize_dit_(model, plan)
        assert sorted(done) == sorted(plan.layers)
        full = relative(model(*args), want)
        assert 1e-4 < full < 5e-2
        for group in GROUPS:
            one = copy.deepcopy(base)
            assert quantize_dit_(one, PrecisionPlan({f"blocks.1.{group}": "fp8"})) == [f"blocks.1.{group}"]
            assert 0 < relative(one(*args), want) < full * 2, group


def test_stacked_fp8_projections_drop_the_bf16_layers_and_their_views_match_the_layers():
    model = tiny()
    attn = model.blocks[0].attn
    layers = [copy.deepcopy(getattr(attn, n)) for n in ("q", "k", "v", "output_gate", "beta_proj")]
    quantize_dit_(model, PrecisionPlan({"blocks.0.attn.qkv": "fp8"}))
    assert isinstance(attn.stacked, QuantizedProjections) and attn.q is None and attn.beta_proj is None
    u = torch.randn(1, 6, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        exact = fp8_linear_reference(u, attn.stacked.linear)
        start = 0
        for got, layer in zip(attn.stacked(u), layers, strict=True):
            want = layer(u)
            width = want.shape[-1]
            torch.testing.assert_close(got.double(), exact[..., start : start + width], rtol=1e-5, atol=1e-5)
            assert got.shape == want.shape and relative(got, want) < 6e-2  # e4m3 rounding of 224-wide rows
            start += width


def test_fp8_halves_the_quantised_weights_and_the_state_dict_round_trips_through_safetensors(tmp_path):
    model = tiny()
    before = sum(p.numel() * p.element_size() for p in model.blocks.parameters())
    plan = PrecisionPlan.uniform(len(model.blocks), "fp8")
    quantize_dit_(model, plan)
    after = sum(p.numel() * p.element_size() for p in model.blocks.parameters())
    assert after < 0.35 * before  # fp32 → e4m3 in the tests (bf16 → e4m3 halves it on a GPU)
    save_file(model.state_dict(), tmp_path / "dit_fp8.safetensors")
    fresh = tiny(seed=9)  # other weights: loading must overwrite every one
    quantize_dit_(fresh, plan)
    fresh.load_state_dict(load_file(tmp_path / "dit_fp8.safetensors"), strict=True)
    args = inputs(2)
    with torch.no_grad():
        assert torch.equal(fresh(*args), model(*args))


def test_plans_read_back_and_bad_plans_get_one_line_errors(tmp_path):
    plan = PrecisionPlan({"blocks.0.attn.qkv": "fp8", "blocks.2.mlp.t_conv": "bf16"}, {"device": "test"})
    plan.write(tmp_path / "plan.json")
    assert PrecisionPlan.read(tmp_path / "plan.json") == plan
    bad = {
        "precision": {"version": 1, "layers": {"blocks.0.attn.qkv": "int4"}},
        "unknown GEMM group": {"version": 1, "layers": {"blocks.0.attn.qk": "fp8"}},
        "version-1": {"version": 2, "layers": {}},
    }
    for message, data in bad.items():
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            PrecisionPlan.read(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("[")
    with pytest.raises(ValueError, match="cannot read"):
        PrecisionPlan.read(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="has 4 blocks"):
        quantize_dit_(tiny(), PrecisionPlan({"blocks.7.attn.proj": "fp8"}))


def cli_edit(tmp_path, *extra):
    from helpers_video import make_clip

    from sana_streaming.cli import main

    src = tmp_path / "clip.mp4"
    if not src.exists():
        make_clip(src, num_frames=30, fps=24, width=96, height=64)
    return main(["--config", "tiny_random", "--random_weights", "--device", "cpu", "--video_path", str(src),
                 "--prompt", "make it blue", "--height", "64", "--width", "96", "--num_frames", "25",
                 "--output_dir", str(tmp_path), "--overwrite", *extra])  # fmt: skip


def test_cli_edits_with_fp8_and_with_a_measured_plan_and_refuses_a_bad_plan(tmp_path, capsys):
    """`sana-streaming quantize` writes a plan (every group FP8 when any speed-up and error pass) that
    `--precision mpq --precision_plan` edits with; a bad plan is one line and exit 1, no output."""
    from sana_streaming.cli import main

    plan = tmp_path / "plan.json"
    quantize = ["quantize", "--plan", str(plan), "--config", "tiny_random", "--device", "cpu"]
    assert main([*quantize, "--height", "64", "--width", "96", "--repeats", "2", "--min_speedup", "0",
                 "--max_error", "1"]) == 0  # fmt: skip
    read = PrecisionPlan.read(plan)
    assert len(read.groups("fp8")) == 28 and 0 < read.notes["whole_forward_error"] < 5e-2
    assert set(read.notes["gemm_ms"]) >= {"gdn.attn.qkv", "softmax.attn.qkv", "mlp.t_conv"}
    assert main(quantize) == 2  # the plan exists: not replaced without --overwrite
    assert cli_edit(tmp_path, "--precision", "mpq", "--precision_plan", str(plan)) == 0
    assert cli_edit(tmp_path, "--precision", "fp8", "--output_name", "fp8.mp4") == 0
    assert (tmp_path / "fp8.mp4").stat().st_size > 0
    (tmp_path / "bad.json").write_text('{"version": 1, "layers": {"blocks.0.attn.qkv": "int4"}}')
    capsys.readouterr()
    assert cli_edit(tmp_path, "--precision", "mpq", "--precision_plan", str(tmp_path / "bad.json"),
                    "--output_name", "bad.mp4") == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert "int4" in err[-1] and not (tmp_path / "bad.mp4").exists()


def test_e2m1_rounding_takes_the_nearest_value_and_ties_to_the_even_mantissa():
    x = torch.tensor([0.1, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0, 5.9, -0.3, 6.0, 0.0])
    want = torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -4.0, 6.0, -0.5, 6.0, 0.0])
    assert torch.equal(round_e2m1(x), want)


def test_nvfp4_parts_are_e2m1_codes_times_e4m3_block_scales_exact_in_bf16_and_near_x():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(9, 64, generator=gen) * torch.logspace(-2, 2, 9)[:, None]  # rows of different range
    parts, scale = nvfp4_parts(x)
    assert torch.equal(parts.bfloat16().float(), parts)  # the GEMM operand loses nothing in bf16
    blocks = parts.double().view(9, 4, 16)  # code · block scale; the tensor scale applies after the GEMM
    grid = torch.tensor(E2M1_GRID, dtype=torch.float64)
    block_max = (x / scale).view(9, 4, 16).abs().amax(-1, keepdim=True)
    e4m3 = (block_max / 6).clamp(max=448).to(FP8).double()  # the block scales NVFP4 stores
    codes = blocks / e4m3
    assert torch.isin(codes.abs(), grid).all()  # every value is an e2m1 code times its block's scale
    rel = ((parts * scale - x).norm() / x.norm()).item()
    assert 0.02 < rel < 0.15  # e2m1 keeps one mantissa bit: ~1e-1 (e4m3: ~2e-2)
    zeros, zero_scale = nvfp4_parts(torch.zeros(2, 16))
    assert torch.equal(zeros, torch.zeros(2, 16)) and zero_scale > 0


def test_nvfp4_emulated_linear_is_the_product_of_the_dequantised_operands():
    gen = torch.Generator().manual_seed(6)
    weight = torch.randn(48, 96, generator=gen) / 96**0.5
    bias = torch.randn(48, generator=gen)
    layer = NVFP4EmulatedLinear.from_matrix(weight, bias)
    x = torch.randn(2, 5, 96, generator=gen)
    parts, scale = nvfp4_parts(x)
    want = (parts.double() * scale.double()) @ layer.dequantized().double().T + bias.double()
    got = layer(x)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    fp8 = FP8Linear.from_matrix(weight, bias)(x)
    exact = x.double() @ weight.double().T + bias.double()
    assert relative(fp8, exact) < relative(got, exact) < 0.2  # coarser than FP8, still near


def test_a_plan_mixing_fp8_and_emulated_nvfp4_rewrites_both_and_warns(caplog):
    base = tiny()
    args = inputs()
    plan = PrecisionPlan(
        {"blocks.0.attn.qkv": "nvfp4", "blocks.1.mlp.t_conv": "nvfp4", "blocks.2.attn.proj": "fp8"}
    )
    model = copy.deepcopy(base)
    with caplog.at_level("WARNING"):
        done = quantize_dit_(model, plan)
    assert sorted(done) == sorted(plan.layers) and "NVFP4 emulated" in caplog.text
    assert isinstance(model.blocks[0].attn.stacked.linear, NVFP4EmulatedLinear)
    assert isinstance(model.blocks[1].mlp.t_conv, NVFP4EmulatedLinear)
    with torch.no_grad():
        assert 1e-4 < relative(model(*args), base(*args)) < 0.1


def test_mpq_defaults_to_the_shipped_h200_plan_and_says_when_it_does_not_fit(tmp_path):
    plan = resolve_precision("mpq", 20)
    assert plan == PrecisionPlan.read(DEFAULT_PLAN) and plan.groups("fp8")
    assert plan.notes["device"] == "NVIDIA H200" and plan.notes["whole_forward_error"] < 3e-2
    with pytest.raises(ValueError, match="shipped plan is for the 20-block DiT"):
        resolve_precision("mpq", 4)
    with pytest.raises(ValueError, match="shipped plan is for the 20-block DiT"):
        resolve_precision("mpq", 28)  # a deeper DiT would run its last blocks in bf16 unannounced
    with pytest.raises(ValueError, match="needs --precision mpq"):
        resolve_precision("fp8", 20, tmp_path / "plan.json")
