"""The DiT on CUDA: golden fixtures in float32 (TF32 off) with both GDN backends, and bf16 vs float64."""

import pytest
import torch
from golden import golden, golden_dit_config, golden_state_dict, rel_err

from sana_streaming import build_dit, load_config
from sana_streaming.models.dit import randomize_dit_
from sana_streaming.ops import triton_gdn_available

pytestmark = pytest.mark.gpu
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(not triton_gdn_available(),
                                                                     reason="needs Triton"))]  # fmt: skip


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@requires_cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_bidirectional_on_cuda(backend):
    g = {k: v.cuda() for k, v in golden("dit_bidirectional").items() if k.startswith(("input", "output"))}
    model = build_dit(
        golden_dit_config("bidirectional"), device="cuda", dtype=torch.float32, gdn_backend=backend
    )
    model.load_state_dict(golden_state_dict("bidirectional"))
    out = model(g["input.x"], g["input.timestep"], g["input.y"], g["input.mask"], g["input.source"])
    # the Triton path rounds its tensor-core operands to bf16: the README's right-hand column
    assert rel_err(out, g["output.velocity"]) <= (1e-4 if backend == "torch" else 1e-3)


@requires_cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_full_width_block_close_to_float64(backend):
    """A depth-4 model at the released width (2240 = 20 heads of 112), random weights, one chunk of 3
    frames at 22×40: bf16 vs float64, both on CUDA."""
    base = load_config("sana_streaming_2b_720p").dit
    config = type(base)(**{**base.__dict__, "depth": 4, "softmax_layer_indices": (3,)})
    ref = randomize_dit_(build_dit(config, device="cuda", dtype=torch.float64, gdn_backend="torch"), seed=0)
    model = build_dit(config, device="cuda", dtype=torch.bfloat16, gdn_backend=backend)
    model.load_state_dict(ref.state_dict())
    gen = torch.Generator("cuda").manual_seed(0)
    x, source = (
        torch.randn(1, 128, 3, 22, 40, generator=gen, device="cuda", dtype=torch.float64) for _ in "ab"
    )
    caption = torch.randn(1, 1, 300, 2304, generator=gen, device="cuda", dtype=torch.float64)
    mask = torch.zeros(1, 300, device="cuda")
    mask[:, :37] = 1
    t = torch.tensor([893.0], device="cuda")
    expected = ref(x, t, caption, mask, source)
    out = model(x, t, caption, mask, source)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, expected) <= 2e-2
