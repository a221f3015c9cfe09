"""FP8 on CUDA: `_scaled_mm`'s row-wise kernel against the float64 reference, and a quantised tiny DiT
streamed through CUDA graphs with the fused kernels against its own eager forwards."""

import pytest
import torch

from sana_streaming import build_dit, load_config
from sana_streaming.models.dit import randomize_dit_
from sana_streaming.models.dit.quantize import PrecisionPlan, quantize_dit_
from sana_streaming.ops.quant import FP8Linear, fp8_linear_reference, quantize_rows

pytestmark = pytest.mark.gpu
requires_fp8 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9), reason="needs FP8 (sm_89+)"
)


@requires_fp8
def test_cuda_fp8_linear_equals_the_reference_and_the_compiled_quantiser_equals_the_eager_one():
    gen = torch.Generator("cuda").manual_seed(0)
    weight = torch.randn(8960, 2240, generator=gen, device="cuda", dtype=torch.bfloat16) / 2240**0.5
    bias = torch.randn(8960, generator=gen, device="cuda", dtype=torch.bfloat16)
    layer = FP8Linear.from_matrix(weight, bias)
    x = torch.randn(2640, 2240, generator=gen, device="cuda", dtype=torch.bfloat16)
    got = layer(x)
    want = fp8_linear_reference(x, layer)
    assert got.dtype == torch.bfloat16
    assert ((got.double() - want).norm() / want.norm()).item() < 5e-3  # bf16 output rounding only
    compiled = torch.compile(quantize_rows, dynamic=False)
    data, scale = compiled(x)
    ref_data, ref_scale = quantize_rows(x)
    torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=0)
    assert (data.float() != ref_data.float()).float().mean() < 1e-3  # fp32 division vs reciprocal


@requires_fp8
def test_quantised_tiny_dit_fused_forward_is_close_to_its_eager_forward():
    config = load_config("tiny_random").dit
    model = randomize_dit_(build_dit(config, device="cuda", dtype=torch.bfloat16), seed=3)
    quantize_dit_(model, PrecisionPlan.uniform(config.depth, "fp8"))
    gen = torch.Generator("cuda").manual_seed(1)
    x = torch.randn(1, 16, 3, 4, 6, generator=gen, device="cuda", dtype=torch.bfloat16)
    args = (x, torch.tensor([500.0], device="cuda"),
            torch.randn(1, 1, 16, 64, generator=gen, device="cuda", dtype=torch.bfloat16),
            torch.ones(1, 16, device="cuda"), x)  # fmt: skip
    with torch.no_grad():
        eager = model(*args)
        fused = model(*args, fused=True)
    rel = ((fused.float() - eager.float()).norm() / eager.float().norm()).item()
    # the fused kernels round in fp32 where eager rounds to bf16, which moves some values across an
    # e4m3 step (1/16 relative): 2.3e-2 measured on an H200
    assert torch.isfinite(fused).all() and rel < 4e-2
