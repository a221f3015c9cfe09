"""The fused Triton GDN core against the float64 oracle (docs/kernels.md).

Without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py before
Triton is imported) at tiny shapes in the fp32 modes ("ieee", "tf32": the interpreter cannot run bf16 dots).
With CUDA the `gpu` tests run real shapes in every precision, through `gdn_core(backend="triton")`.
Everything skips where Triton is not installed (CI installs only the test extra).
"""

import importlib.util
import math
from dataclasses import replace

import pytest
import torch
from helpers_triton import interpreter_skip_reason

from sana_streaming.ops import GDNInputs, GDNState, KernelUnavailableError, gdn_core
from sana_streaming.ops.gdn_reference import (
    GDNFeatures,
    GDNScanOutput,
    gdn_features,
    gdn_scan,
    gdn_scan_oracle,
)

HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON:
    from sana_streaming.ops import gdn_triton


def _interpreter_ready() -> tuple[bool, str]:
    why = interpreter_skip_reason()
    if why is not None:
        return False, why
    if type(gdn_triton._emit_kernel).__name__ != "InterpretedFunction":
        return False, "kernels were compiled for a device, not interpreted"
    return True, ""


_ready, _why = _interpreter_ready()
interpreted = pytest.mark.skipif(not _ready, reason=_why)
requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_TRITON), reason="needs CUDA and triton"
)


def make_inputs(B, T, S, H, D, *, seed=0, dtype=torch.float32, device="cpu", with_state=True):
    """Random inputs shaped like reality: q/k/v/gate views of one (B, N, 4C) GEMM output."""
    gen = torch.Generator(device).manual_seed(seed)
    N, C = T * S, H * D

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    qkvg = (rnd(B, N, 4 * C) + 0.3).to(dtype)
    q, k, v, gate = qkvg.split(C, dim=-1)  # non-contiguous views
    angles = torch.rand(N, D // 2, generator=gen, device=device, dtype=torch.float64) * 2 * math.pi
    inputs = GDNInputs(
        q=q, k=k, v=v, gate=gate,
        beta=torch.sigmoid(rnd(B, N, H)).to(dtype),
        decay=(0.5 + 0.5 * torch.rand(B, T, H, generator=gen, device=device)).to(dtype),
        q_norm_weight=1 + 0.2 * rnd(C),
        k_norm_weight=1 + 0.2 * rnd(C),
        cos=angles.cos().float(),
        sin=angles.sin().float(),
        frames=T, heads=H, key_scale=(D * S) ** -0.5,
    )  # fmt: skip
    state = None
    if with_state:
        state = GDNState(kv=0.05 * rnd(B, H, D, D), z=0.05 * rnd(B, H, D))
    return inputs, state


def frame_range(inputs: GDNInputs, first: int, count: int) -> GDNInputs:
    """Frames first … first + count − 1 of a call, as a call of their own (same key scale)."""
    S = inputs.q.shape[1] // inputs.frames
    tokens = slice(first * S, (first + count) * S)
    per_token = {n: getattr(inputs, n)[:, tokens] for n in ("q", "k", "v", "gate", "beta")}
    return replace(
        inputs, **per_token, decay=inputs.decay[:, first : first + count],
        cos=inputs.cos[tokens], sin=inputs.sin[tokens], frames=count,
    )  # fmt: skip


def reference(inputs, state, *, token_level: bool) -> tuple[GDNScanOutput, torch.Tensor]:
    """float64 num/den/final state and gated output. `token_level` uses the loop oracle; otherwise the
    einsum form (itself checked against the oracle in test_gdn_reference.py) for large shapes."""
    f = gdn_features(inputs.map_tensors(torch.Tensor.double))
    f = GDNFeatures(**{n: getattr(f, n).double() for n in f.__dataclass_fields__})
    state64 = None if state is None else GDNState(kv=state.kv.double(), z=state.z.double())
    if token_level:
        f = GDNFeatures(**{n: getattr(f, n).cpu() for n in f.__dataclass_fields__})
        state64 = None if state64 is None else GDNState(kv=state64.kv.cpu(), z=state64.z.cpu())
        ref = gdn_scan_oracle(f, state64)
    else:
        ref = gdn_scan(f, state64)
    B, T, S, H, D = f.v.shape
    o = ref.num / (ref.den[..., None] + 1e-8)
    gate = inputs.gate.double().to(o.device)
    y = o.reshape(B, T * S, H * D) * torch.nn.functional.silu(gate)
    return ref, y


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative Frobenius, relative max) error of a against the reference b."""
    a, b = a.double().to(b.device), b.reshape(a.shape)
    diff = a - b
    return (diff.norm() / b.norm()).item(), (diff.abs().max() / b.abs().max()).item()


def check_parts(out, ref, y_ref, B, T, S, H, D, tol: tuple[float, float], y_tol=None):
    N, C = T * S, H * D
    pairs = {
        "num": (out.num, ref.num.reshape(B, N, C)),
        "den": (out.den, ref.den.reshape(B, N, H)),
        "kv": (out.final_state.kv, ref.final_state.kv),
        "z": (out.final_state.z, ref.final_state.z),
        "y": (out.y, y_ref),
    }
    for name, (a, b) in pairs.items():
        assert torch.isfinite(a).all(), name
        fro, mx = errors(a, b)
        limit = y_tol if (name == "y" and y_tol is not None) else tol
        assert fro <= limit[0] and mx <= limit[1], (name, fro, mx)
    assert ref.num.abs().max() > 1e-3 and ref.den.abs().min() > 1e-3  # non-degenerate draw


def run_parts(inputs, state, precision, **extra):
    return gdn_triton.gdn_core_triton_parts(
        inputs, state=state, precision=precision, return_num_den=True, return_state=True, **extra
    )


# ---------------------------------------------------------------- CPU, Triton interpreter


@interpreted
@pytest.mark.parametrize(
    ("shape", "precision", "with_state"),
    [
        ((1, 3, 6, 2, 16), "ieee", True),
        ((2, 2, 5, 3, 8), "tf32", False),
        ((1, 1, 7, 2, 16), "ieee", True),
        ((1, 1, 7, 2, 16), "ieee", False),  # one frame, no state: the forward scan's first step alone
        ((1, 2, 5, 1, 112), "ieee", True),  # D padded to 128 in registers, S not a tile multiple
        ((1, 4, 3, 1, 16), "ieee", False),  # longer chains: two backward steps, stateless
        ((1, 5, 3, 1, 16), "ieee", True),
    ],
)
def test_interpreter_matches_token_oracle(shape, precision, with_state):
    B, T, S, H, D = shape
    inputs, state = make_inputs(*shape, seed=sum(shape), with_state=with_state)
    ref, y_ref = reference(inputs, state, token_level=True)
    out = run_parts(inputs, state, precision)
    check_parts(out, ref, y_ref, B, T, S, H, D, tol=(1e-5, 1e-4))


@pytest.fixture
def poisoned(monkeypatch):
    """Every buffer of the core starts as NaN inside a NaN guard band; returns the guards to check."""
    guards = []

    def nan_empty(shape, device, dtype):
        numel, pad = math.prod(shape), 64
        flat = torch.full((numel + 2 * pad,), float("nan"), device=device, dtype=dtype)
        guards.append((flat[:pad], flat[pad + numel :]))
        return flat[pad : pad + numel].view(shape)

    monkeypatch.setattr(gdn_triton, "_empty", nan_empty)
    return guards


@interpreted
@pytest.mark.parametrize("with_state", [True, False])
def test_interpreter_poisoned_buffers_and_guards(poisoned, with_state):
    shape = (2, 2, 5, 2, 16)
    inputs, state = make_inputs(*shape, seed=11, with_state=with_state)
    ref, y_ref = reference(inputs, state, token_level=True)
    out = run_parts(inputs, state, "ieee")
    check_parts(out, ref, y_ref, *shape, tol=(1e-5, 1e-4))  # asserts no NaN is left anywhere
    assert len(poisoned) >= 8
    for before, after in poisoned:
        assert torch.isnan(before).all() and torch.isnan(after).all()


@interpreted
def test_interpreter_readout_looping_over_tiles():
    """Several readout tiles per program (the long-clip path) give what one tile per program gives."""
    shape = (1, 2, 40, 2, 16)
    inputs, state = make_inputs(*shape, seed=8)
    ref, y_ref = reference(inputs, state, token_level=True)
    looping = gdn_triton.LaunchConfig(emit_block_s=16, emit_programs=1)  # 3 tiles in each program
    out = run_parts(inputs, state, "ieee", config=looping)
    check_parts(out, ref, y_ref, *shape, tol=(1e-5, 1e-4))
    one_tile = run_parts(inputs, state, "ieee", config=replace(looping, emit_programs=64))
    assert torch.equal(out.y, one_tile.y)


@interpreted
def test_interpreter_key_weight_programs_with_a_ragged_last_row():
    """The features kernel's key-weight programs cover every token when their rows do not divide the
    token count (15 tokens, 4 per program: the last program's last row masked)."""
    shape = (1, 3, 5, 2, 16)
    inputs, state = make_inputs(*shape, seed=13)
    ref, y_ref = reference(inputs, state, token_level=True)
    config = gdn_triton.LaunchConfig(rms_rows=4, features_block_s=4)
    check_parts(run_parts(inputs, state, "ieee", config=config), ref, y_ref, *shape, tol=(1e-5, 1e-4))


@interpreted
def test_interpreter_strided_values_are_read_correctly():
    """The frame GEMM reads v where it lies; a v with strided channels or another dtype than the
    features' is copied first, and y keeps v's dtype."""
    shape = (1, 2, 6, 2, 16)
    inputs, state = make_inputs(*shape, seed=12)
    strided = torch.randn(
        *inputs.v.shape[:2], 2 * inputs.v.shape[2], generator=torch.Generator().manual_seed(4)
    )
    inputs = replace(inputs, v=strided[..., ::2])  # channel stride 2
    ref, y_ref = reference(inputs, state, token_level=True)
    check_parts(run_parts(inputs, state, "ieee"), ref, y_ref, *shape, tol=(1e-5, 1e-4))
    # float64 inputs: fp32 features, so v is copied to fp32 for the GEMM; y keeps v's dtype
    inputs64 = inputs.map_tensors(torch.Tensor.double)
    state64 = GDNState(kv=state.kv.double(), z=state.z.double())
    out = run_parts(inputs64, state64, None)
    assert out.y.dtype == torch.float64
    check_parts(out, ref, y_ref, *shape, tol=(1e-5, 1e-4))


@interpreted
def test_interpreter_two_chunks_with_state_equal_one_long_call():
    """Chunks of 3 + 3 frames with the state carried = one 6-frame call: same final state, and the
    last frame (no backward contribution in either) reads the same state."""
    B, T, S, H, D = 1, 6, 4, 2, 16
    inputs, _ = make_inputs(B, T, S, H, D, seed=5, with_state=False)
    whole = run_parts(inputs, None, "ieee")
    state = GDNState.zeros(B, H, D)
    for first in (0, 3):
        chunk = frame_range(inputs, first, 3)
        y = gdn_triton.gdn_core_triton(chunk, state=state, update_state=True, precision="ieee")
    for a, b in ((state.kv, whole.final_state.kv), (state.z, whole.final_state.z)):
        assert errors(a, b)[0] <= 1e-6
    assert errors(y[:, -S:], whole.y[:, -S:])[0] <= 1e-6


@interpreted
def test_interpreter_state_in_place_and_determinism():
    shape = (1, 2, 5, 2, 16)
    inputs, state = make_inputs(*shape, seed=3)
    before = GDNState(kv=state.kv.clone(), z=state.z.clone())
    y1 = gdn_triton.gdn_core_triton(inputs, state=state, precision="ieee")
    assert torch.equal(state.kv, before.kv) and torch.equal(state.z, before.z)  # read only
    y2 = gdn_triton.gdn_core_triton(inputs, state=state, update_state=True, precision="ieee")
    assert torch.equal(y1, y2)
    ref, _ = reference(inputs, before, token_level=True)
    assert errors(state.kv, ref.final_state.kv)[0] <= 1e-5
    assert errors(state.z, ref.final_state.z)[0] <= 1e-5


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_bad_inputs_raise_clear_errors():
    inputs, _ = make_inputs(1, 2, 4, 2, 16)
    with pytest.raises(ValueError, match="divisible by frames"):
        gdn_triton.gdn_core_triton(replace(inputs, frames=3))
    with pytest.raises(ValueError, match="head dim"):
        gdn_triton.gdn_core_triton(replace(inputs, heads=32))  # D = 1 is odd
    with pytest.raises(ValueError, match="update_state"):
        gdn_triton.gdn_core_triton(inputs, update_state=True)
    with pytest.raises(ValueError, match="precision"):
        gdn_triton.gdn_core_triton(inputs, precision="fp8")
    with pytest.raises(ValueError, match="beta"):
        gdn_triton.gdn_core_triton(replace(inputs, beta=inputs.beta[..., :1]))


def test_triton_backend_raises_instead_of_falling_back_on_cpu():
    inputs, _ = make_inputs(1, 2, 4, 2, 16)
    with pytest.raises(KernelUnavailableError):
        gdn_core(inputs, backend="triton")


# ---------------------------------------------------------------- GPU

GPU_CASES = [  # (shape, precision, input dtype, (fro, max) tolerance)
    ((1, 3, 880, 20, 112), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((1, 5, 880, 20, 112), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((1, 1, 880, 20, 112), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((2, 3, 37, 3, 112), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((1, 3, 880, 4, 64), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((1, 3, 880, 4, 128), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((1, 11, 880, 20, 112), "bf16", torch.bfloat16, (1e-2, 2e-2)),
    ((1, 3, 880, 20, 112), "tf32", torch.float32, (5e-3, 1e-2)),
    ((2, 3, 37, 3, 112), "tf32", torch.float32, (5e-3, 1e-2)),
    ((1, 3, 880, 20, 112), "ieee", torch.float32, (1e-5, 1e-4)),
    ((2, 3, 37, 3, 112), "ieee", torch.float32, (1e-5, 1e-4)),
]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize(("shape", "precision", "dtype", "tol"), GPU_CASES)
@pytest.mark.parametrize("with_state", [True, False])
def test_gpu_matches_float64_oracle(shape, precision, dtype, tol, with_state):
    B, T, S, H, D = shape
    inputs, state = make_inputs(*shape, seed=T + D, dtype=dtype, device="cuda", with_state=with_state)
    ref, y_ref = reference(inputs, state, token_level=S * H * T * B <= 1000)
    out = run_parts(inputs, state, precision)
    y_tol = tol if dtype == torch.float32 else (1e-2, 2e-2)  # bf16 output rounding ≈ 2e-3
    check_parts(out, ref, y_ref, B, T, S, H, D, tol=tol, y_tol=y_tol)


@pytest.mark.gpu
@requires_cuda
def test_gpu_dispatch_runs_the_kernel_and_updates_state():
    inputs, state = make_inputs(1, 3, 880, 20, 112, seed=2, dtype=torch.bfloat16, device="cuda")
    expected = GDNState(kv=state.kv.clone(), z=state.z.clone())
    y_expected = gdn_triton.gdn_core_triton(inputs, state=expected, update_state=True)
    assert not torch.equal(expected.kv, state.kv)
    for backend in ("triton", "auto"):
        carried = GDNState(kv=state.kv.clone(), z=state.z.clone())
        y = gdn_core(inputs, state=carried, update_state=True, backend=backend)
        assert torch.equal(y, y_expected)
        assert torch.equal(carried.kv, expected.kv) and torch.equal(carried.z, expected.z)


@pytest.mark.gpu
@requires_cuda
def test_gpu_poisoned_buffers_and_guards(poisoned):
    shape = (2, 3, 37, 3, 112)
    inputs, state = make_inputs(*shape, seed=4, dtype=torch.bfloat16, device="cuda")
    ref, y_ref = reference(inputs, state, token_level=True)
    out = run_parts(inputs, state, "bf16")
    check_parts(out, ref, y_ref, *shape, tol=(1e-2, 2e-2))
    for before, after in poisoned:
        assert torch.isnan(before).all() and torch.isnan(after).all()


@pytest.mark.gpu
@requires_cuda
def test_gpu_two_chunks_with_state_equal_one_long_call():
    B, T, S, H, D = 1, 6, 880, 20, 112
    inputs, _ = make_inputs(B, T, S, H, D, seed=6, dtype=torch.bfloat16, device="cuda", with_state=False)
    ref, _ = reference(inputs, None, token_level=False)
    state = GDNState.zeros(B, H, D, device="cuda")
    outs = []
    for first in (0, 3):
        chunk = frame_range(inputs, first, 3)
        outs.append(gdn_core(chunk, state=state, update_state=True, backend="triton"))
    assert errors(state.kv, ref.final_state.kv)[0] <= 1e-2
    assert errors(state.z, ref.final_state.z)[0] <= 1e-2
    last = ref.num[:, -1] / (ref.den[:, -1][..., None] + 1e-8)  # (B, S, H, D): no backward part
    y_last = last.reshape(B, S, H * D) * torch.nn.functional.silu(inputs.gate[:, -S:].double())
    assert errors(outs[1][:, -S:], y_last)[0] <= 1e-2


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision", ["bf16", "tf32", "ieee"])
def test_gpu_reruns_are_bit_identical(precision):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    inputs, state = make_inputs(1, 3, 880, 20, 112, seed=9, dtype=dtype, device="cuda")
    a = run_parts(inputs, state, precision)
    b = run_parts(inputs, state, precision)
    for x, y in ((a.y, b.y), (a.num, b.num), (a.den, b.den), (a.final_state.kv, b.final_state.kv)):
        assert torch.equal(x, y)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shape", [(1, 3, 880, 20, 112), (1, 11, 880, 20, 112)])
def test_gpu_dependent_launch_changes_nothing(shape):
    """Programmatic dependent launch only overlaps the kernels: bit-identical to plain launches."""
    inputs, state = make_inputs(*shape, seed=12, dtype=torch.bfloat16, device="cuda")
    cfg = gdn_triton.LaunchConfig.for_frames(shape[1])
    a = run_parts(inputs, state, "bf16", config=cfg)
    b = run_parts(inputs, state, "bf16", config=replace(cfg, pdl=False))
    for x, y in ((a.y, b.y), (a.num, b.num), (a.den, b.den), (a.final_state.kv, b.final_state.kv)):
        assert torch.equal(x, y)


@pytest.mark.gpu
@requires_cuda
def test_gpu_graph_replay_of_chained_calls_matches_eager():
    """Two layers' calls back to back in one CUDA graph (overlapping launches, buffers reused across
    calls by the graph's pool), replayed repeatedly, give the eager results bit for bit."""
    sets = [
        make_inputs(1, 3, 880, 20, 112, seed=20 + i, dtype=torch.bfloat16, device="cuda") for i in range(2)
    ]
    eager = [gdn_triton.gdn_core_triton(i, state=s) for i, s in sets]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i, s in sets:
            gdn_triton.gdn_core_triton(i, state=s)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        replayed = [gdn_triton.gdn_core_triton(i, state=s) for i, s in sets]
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(replayed, eager, strict=True):
            assert torch.equal(got, want)
