"""Fused GDN core in Triton: from the q/k/v/gate projections to the gated output that `proj` reads.

Same function and signature as `gdn_reference.gdn_core_torch`. Four launches:

1. `_features_kernel`, grid (B·H·T + extra rows, S-tiles): feature maps stored once, pair-major
   (below), without their per-token factors: k̃' and φ' of the keys (k̃ = rk·k̃', φ^k = rk·φ') and
   q̃/rq; each token's Σ q² per head. The programs past the B·H·T frames compute the keys' inverse
   RMS rk over all C channels (the only quantity that needs every head of a token), written as the
   per-(head, token) weights β·rk and β·rk² that the stored key features lack. The queries need no
   such pass: ReLU is positively homogeneous, so their factor rq comes out of φ^q and q̃ and the
   readout applies it from the per-head sums.
2. `_frame_gemm_kernel`, grid (B·H·T, 4, D_pad / CB): P_t = Σ β k̃ k̃ᵀ, A_t = Σ β k̃ vᵀ (from v itself),
   Π_t = Σ β φ^k φ^kᵀ, fp32 accumulation: the left operand streams from memory straight into the
   tensor cores (Triton's software pipelining applies), the right one is scaled per token by the
   keys' weights on its way through registers. Each program owns its output block: no atomics,
   deterministic. A fourth program per frame sums b_t = Σ β φ^k, so the scan's serial chain only
   loads it.
3. `_scan_kernel`, grid (B·H, D_pad / CB + 1): the zero-seeded backward scan, then the forward scan
   from the initial state, fp32 state with the identity applied in fp32 (`M ← g·(M − P M) + A`);
   programs split M by value columns, the last program runs the normaliser scan z. It writes the
   readout state M_t + R_t once (bf16 when the readout dots are bf16) and the final forward state
   when asked.
4. `_emit_kernel`, grid (B·H·T, S-splits): num = rq · (q̃/rq)(M_t + R_t), den = φ^q · (z_t + ζ_t) with
   φ^q rebuilt from q, num / (den + ε) · SiLU(gate), written in the (B, N, C) layout `proj` reads.

Leaving β, rk and v out of the stored features saves a third of the features kernel's bytes (it no
longer reads v nor writes a scaled copy of it); the GEMM applies them where it reads its operands.

On Hopper and later the four kernels use programmatic dependent launch (`LaunchConfig.pdl`): each
starts while its predecessor finishes and waits (`gdc_wait`) only before touching its output. Each
kernel waits before it signals its own dependents, so a kernel's pre-wait part may read anything two
launches back.

RoPE rotates interleaved pairs. The features kernel loads each head's tile as (rows, D) in 16-byte vectors and
reshapes it to (rows, D/2, 2), so splitting the pairs stays inside each thread's registers, and stores
the features pair-major: all even channels of the pairs, then all odd ones. P, A, Π, M and z live in
that key order inside the core (products are invariant to a consistent permutation); only the state's
load and store map rows back (`_key_row`). Splitting and re-joining an interleaved tile in registers
instead cost every kernel all 255 registers (kernels/NOTES.md).

Precision (`precision=`): "bf16" — bf16 operands with fp32 accumulation for the reductions and the
readout (features and M_t + R_t rounded to bf16 once, as operands), TF32 for the scan (fp32 state);
"tf32" — TF32 dots everywhere; "ieee" — fp32 FMA dots everywhere.
Features, state, normaliser, division and gate are fp32 in every mode. The Triton interpreter on CPU
cannot run bf16 dots (it stores bf16 as raw 16-bit integers), so CPU tests use "tf32"/"ieee".

Head dims up to 128 (even); D is padded to a power of two (at least 16) in registers and in the frame and
state buffers only — inputs, output, feature buffers and the state keep D. The frame GEMM reads v
where it lies; a v of another dtype than the features' or with strided channels is copied first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from sana_streaming.ops.gdn_reference import GDNInputs, GDNState

Precision = Literal["bf16", "tf32", "ieee"]

# Dot modes (constexpr): 0 bf16 operands, 1 tf32, 2 ieee fp32.
_DOT_MODES: dict[str, tuple[int, int]] = {  # precision -> (reduce/readout dots, scan dots)
    "bf16": (0, 1),
    "tf32": (1, 1),
    "ieee": (2, 2),
}
_MAX_HEAD_DIM = 128


def _empty(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Every buffer of the core comes from here (tests poison it to prove each element is written)."""
    return torch.empty(shape, device=device, dtype=dtype)


@dataclass
class LaunchConfig:
    """Block shapes and warps of the four kernels (defaults from the H100 profile, kernels/NOTES.md)."""

    rms_rows: int = 2  # tokens per key-weight program of the features kernel
    rms_block_c: int = 1024  # channels per step of their sum of squares
    features_block_s: int = 8
    features_warps: int = 1
    gemm_block_s: int = 64  # halved for fp32 operands (shared memory)
    gemm_cols: int = 128
    gemm_warps: int = 4
    gemm_stages: int = 3
    scan_cols: int = 32
    scan_warps: int = 8
    scan_stages: int = 1
    emit_block_s: int = 64
    emit_warps: int = 8
    emit_block_k: int = 32  # channels of q̃ (rows of M_t + R_t) per pipelined chunk, one-tile readouts
    emit_stages: int = 3  # one-tile readouts only: a looping readout would prefetch whole tiles
    emit_programs: int = 1056  # target programs of the readout (8 per H100 SM)
    pdl: bool = True  # programmatic dependent launch on sm_90+: each kernel's prologue overlaps the last

    @classmethod
    def for_frames(cls, frames: int) -> LaunchConfig:
        """Defaults for a call of `frames` frames: long clips (bidirectional mode) split the scan into
        wider column blocks, since its serial chain, not the parallelism, is then what limits."""
        return cls(scan_cols=64) if frames >= 8 else cls()


@dataclass
class GDNTritonOutput:
    """Everything the fused core produced; num/den only when asked (for tests)."""

    y: Tensor  # (B, N, C), dtype of v
    num: Tensor | None  # (B, N, C) fp32, forward + backward numerator before the division
    den: Tensor | None  # (B, N, H) fp32
    final_state: GDNState | None  # forward scan's state after the last frame


@triton.jit
def _mm(a, b, acc, DOT: tl.constexpr):
    """acc + a @ b with the requested operand precision (fp32 accumulation)."""
    if DOT == 0:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif DOT == 1:
        out = tl.dot(a, b, acc, input_precision="tf32")
    else:
        out = tl.dot(a, b, acc, input_precision="ieee")
    return out


@triton.jit
def _rope_rows(
    cos_ptr, sin_ptr, n, row_mask, D, scn, scd, ssn, ssd, HP: tl.constexpr, ROW_ALIGN: tl.constexpr,
):  # fmt: skip
    """cos and sin of the tokens' pair angles, (rows, HP) fp32, zero for pairs ≥ D/2; n: (R,) token
    index into the (N, D/2) tables. Loaded once per tile for both the keys and the queries.
    ROW_ALIGN: elements every row start is a multiple of (`_row_alignment`); the JIT only proves
    16-element strides, and D/2 = 56 rows would otherwise be loaded 4 bytes at a time."""
    i = tl.arange(0, HP)
    mask = row_mask[:, None] & (i < D // 2)[None, :]
    c_row = tl.multiple_of(n * scn, ROW_ALIGN)
    s_row = tl.multiple_of(n * ssn, ROW_ALIGN)
    c = tl.load(cos_ptr + c_row[:, None] + i[None, :] * scd, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + s_row[:, None] + i[None, :] * ssd, mask=mask, other=0.0).to(tl.float32)
    return c, s


@triton.jit
def _features(
    x_ptr, row_off, row_mask, D, sxc, inv_rms, weight_ptr, w_off, scale, c, s, HP: tl.constexpr,
):  # fmt: skip
    """φ and ρ(φ) of a tile of one head, pair-major: (φ_even, φ_odd, ρ_even, ρ_odd), (rows, HP) each,
    and each row's Σ x² over the head's channels.

    φ = scale · ReLU(x · inv_rms · w); ρ rotates each interleaved pair (φ_2i, φ_2i+1) by the token's
    angle i (c, s: `_rope_rows`). The tile is loaded as (rows, 2·HP) in 16-byte vectors (a 3-D load
    vectorises only the pair: 4 bytes) and reshaped to (rows, HP, 2), each thread's vector holding
    whole pairs, so splitting them stays inside its registers; pairs ≥ D/2 come out as 0. row_off:
    (R,) element offsets of the tokens' head start; w_off: offset of the head in the norm weight."""
    d = tl.arange(0, 2 * HP)
    mask = row_mask[:, None] & (d < D)[None, :]
    x = tl.load(x_ptr + row_off[:, None] + d[None, :] * sxc, mask=mask, other=0.0)  # (R, 2HP), vectorised
    w = tl.load(weight_ptr + w_off + d, mask=d < D, other=0.0).to(tl.float32)
    x = tl.reshape(x.to(tl.float32), (x.shape[0], HP, 2))  # (R, HP, 2): pairs last
    phi = tl.maximum(x * inv_rms[:, None, None] * tl.reshape(w, (HP, 2))[None, :, :], 0.0) * scale
    even, odd = tl.split(phi)  # (R, HP) each
    square_sum = tl.sum(tl.sum(x * x, axis=2), axis=1)  # Σ x² over the head's channels, (R,)
    return even, odd, even * c - odd * s, even * s + odd * c, square_sum


@triton.jit
def _key_row(r, D):
    """Interleaved channel of pair-major index r: 2r for the even half, 2(r − D/2) + 1 for the odd."""
    half = D // 2
    return tl.where(r < half, 2 * r, 2 * (r - half) + 1)


@triton.jit
def _key_weights(
    k_ptr, beta_ptr, weight_ptr, row, BN, N, C, T, S, H, weight_stride,
    skb, skn, skc, sbb, sbn, sbh, norm_eps, BLOCK_C: tl.constexpr, HP2: tl.constexpr,
):  # fmt: skip
    """The keys' per-token factors that the stored key features lack, for the frame GEMM: with
    rk = 1/sqrt(mean_c k² + eps) of tokens `row` (flat b·N + n) over all C channels (the only
    quantity that needs every head of a token), β·rk and β·rk² of every head into weight
    (2, B·H·T, S) fp32, so the GEMM reads them contiguously per frame (HP2 ≥ H). (The queries need no
    such pass: their inverse RMS is a per-token factor the readout applies after the fact, from the
    per-head Σ q² the features kernel records.)"""
    row_mask = row < BN
    b = (row // N).to(tl.int64)
    n = (row % N).to(tl.int64)
    acc = tl.zeros((row.shape[0], BLOCK_C), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = row_mask[:, None] & (cols < C)[None, :]
        x = tl.load(k_ptr + (b * skb + n * skn)[:, None] + cols[None, :] * skc, mask=mask, other=0.0)
        x = x.to(tl.float32)
        acc += x * x
    rk = (1.0 / tl.sqrt_rn(tl.sum(acc, axis=1) / C + norm_eps))[:, None]
    heads = tl.arange(0, HP2)[None, :]
    mask = row_mask[:, None] & (heads < H)
    beta = tl.load(beta_ptr + (b * sbb + n * sbn)[:, None] + heads * sbh, mask=mask, other=0.0).to(tl.float32)
    dst = weight_ptr + ((b[:, None] * H + heads) * T + (n // S)[:, None]) * S + (n % S)[:, None]
    tl.store(dst, beta * rk, mask=mask)
    tl.store(dst + weight_stride, beta * rk * rk, mask=mask)


@triton.jit
def _features_kernel(
    q_ptr, k_ptr, beta_ptr, q_sq_ptr, weight_ptr, wq_ptr, wk_ptr, cos_ptr, sin_ptr, feat_ptr,
    frames, T, S, H, D, N, C, key_scale, role_stride, weight_stride, norm_eps,
    sqb, sqn, sqc, skb, skn, skc, sbb, sbn, sbh, scn, scd, ssn, ssd,
    DP: tl.constexpr, BLOCK_S: tl.constexpr, ROPE_ALIGN: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_C: tl.constexpr, HP2: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Feature maps of BLOCK_S tokens of one (batch, head, frame) into the (3, B·H·T, S, D) feature
    buffer, each without its per-token factors (ReLU is positively homogeneous, so the inverse RMS
    factors out, and β is applied by the frame GEMM): k̃' and φ' of the keys (roles 0 and 1; k̃ =
    rk·k̃', φ^k = rk·φ') and q̃/rq of the queries (role 2); and each token's Σ q² over this head into
    q_sq (B·N, H). Programs past the B·H·T frames compute the keys' weights for ROWS tokens each
    instead (`_key_weights`), beside the feature maps.
    Features are stored pair-major (the even channels of each RoPE pair, then the odd ones);
    everything keyed by them — P, Π, A, M, z — keeps that order inside the core, and only the state's
    load and store map it back."""
    pid = tl.program_id(0)  # (b·H + h)·T + t, or a key-weight program past the frames
    tile = tl.program_id(1)
    if PDL:  # the inputs are the previous launch's output (the projection's)
        gdc_wait()
    if pid >= frames:
        row = ((pid - frames) * tl.num_programs(1) + tile) * ROWS + tl.arange(0, ROWS)
        _key_weights(
            k_ptr, beta_ptr, weight_ptr, row, frames // H * S, N, C, T, S, H, weight_stride,
            skb, skn, skc, sbb, sbn, sbh, norm_eps, BLOCK_C=BLOCK_C, HP2=HP2,
        )  # fmt: skip
    else:
        _feature_maps(
            q_ptr, k_ptr, q_sq_ptr, wq_ptr, wk_ptr, cos_ptr, sin_ptr, feat_ptr, pid, tile,
            T, S, H, D, N, key_scale, role_stride, sqb, sqn, sqc, skb, skn, skc, scn, scd, ssn, ssd,
            DP=DP, BLOCK_S=BLOCK_S, ROPE_ALIGN=ROPE_ALIGN,
        )  # fmt: skip
    if PDL:
        gdc_launch_dependents()


@triton.jit
def _feature_maps(
    q_ptr, k_ptr, q_sq_ptr, wq_ptr, wk_ptr, cos_ptr, sin_ptr, feat_ptr, pid, tile,
    T, S, H, D, N, key_scale, role_stride, sqb, sqn, sqc, skb, skn, skc, scn, scd, ssn, ssd,
    DP: tl.constexpr, BLOCK_S: tl.constexpr, ROPE_ALIGN: tl.constexpr,
):  # fmt: skip
    """The feature maps of tile `tile` of frame `pid` (see `_features_kernel`)."""
    s = tile * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = s < S
    t = pid % T
    h = (pid // T) % H
    b = (pid // (T * H)).to(tl.int64)
    n = (t * S + s).to(tl.int64)
    half = D // 2
    i = tl.arange(0, DP // 2)
    pair_mask = s_mask[:, None] & (i < half)[None, :]
    dtype = feat_ptr.dtype.element_ty
    role = role_stride.to(tl.int64)
    row = feat_ptr + (pid.to(tl.int64) * S + s)[:, None] * D + i[None, :]  # even half; odd at + half
    c, sn = _rope_rows(cos_ptr, sin_ptr, n, s_mask, D, scn, scd, ssn, ssd, HP=DP // 2, ROW_ALIGN=ROPE_ALIGN)
    ones = tl.full((BLOCK_S,), 1.0, tl.float32)

    phi_even, phi_odd, rot_even, rot_odd, _ = _features(
        k_ptr, b * skb + n * skn + h * D * skc, s_mask, D, skc, ones, wk_ptr, h * D, key_scale, c, sn,
        HP=DP // 2,
    )  # fmt: skip
    tl.store(row, rot_even.to(dtype), mask=pair_mask)  # k̃'
    tl.store(row + half, rot_odd.to(dtype), mask=pair_mask)
    tl.store(row + role, phi_even.to(dtype), mask=pair_mask)  # φ'
    tl.store(row + role + half, phi_odd.to(dtype), mask=pair_mask)

    _, _, rot_even, rot_odd, q_squares = _features(
        q_ptr, b * sqb + n * sqn + h * D * sqc, s_mask, D, sqc, ones, wq_ptr, h * D, 1.0, c, sn,
        HP=DP // 2,
    )  # fmt: skip
    tl.store(row + 2 * role, rot_even.to(dtype), mask=pair_mask)  # q̃ / rq
    tl.store(row + 2 * role + half, rot_odd.to(dtype), mask=pair_mask)
    tl.store(q_sq_ptr + (b * N + n) * H + h, q_squares, mask=s_mask)


@triton.jit
def _frame_gemm_kernel(
    feat_ptr, v_ptr, weight_ptr, frame_ptr, b_ptr, T, S, H, D, role_stride, weight_stride, svb, svn,
    DP: tl.constexpr, CB: tl.constexpr, BLOCK_S: tl.constexpr, ROW_ALIGN: tl.constexpr, DOT: tl.constexpr,
    PDL: tl.constexpr,
):  # fmt: skip
    """Columns [cb·CB, cb·CB + CB) of one frame matrix of one (batch, head, frame), fp32 accumulation,
    zero beyond D, into frame (B·H·T, 3, DP, DP): mat 0: P_t = Σ β k̃ k̃ᵀ, mat 1: A_t = Σ β k̃ vᵀ,
    mat 2: Π_t = Σ β φ^k φ^kᵀ, from the features without their per-token factors (k̃', φ') and
    v itself: one operand is scaled per token by β·rk² (β·rk for A; the key weights (2, B·H·T, S))
    in registers on its way to the tensor cores. Program mat 3 (column block 0) instead sums
    b_t = Σ β φ^k into b (B·H·T, DP), in token order (deterministic), beside the GEMMs.
    ROW_ALIGN: elements that the token strides of v and of the feature buffer (D) are multiples of
    (`_stride_alignment`); v's channels are contiguous."""
    pid = tl.program_id(0)  # (b·H + h)·T + t
    mat = tl.program_id(1)
    cb = tl.program_id(2)
    if PDL:  # the features and the key weights are the previous launch's output
        gdc_wait()
        gdc_launch_dependents()
    t = pid % T
    h = (pid // T) % H
    b = (pid // (T * H)).to(tl.int64)
    d = tl.arange(0, DP)
    frame = pid.to(tl.int64) * S * D
    role = role_stride.to(tl.int64)
    if mat == 3:
        if cb == 0:
            acc_b = tl.zeros((BLOCK_S, DP), dtype=tl.float32)
            for s0 in range(0, S, BLOCK_S):
                s = s0 + tl.arange(0, BLOCK_S)
                s_mask = s < S
                phi = tl.load(
                    feat_ptr + role + frame + s[:, None] * D + d[None, :],
                    mask=s_mask[:, None] & (d < D)[None, :], other=0.0,
                )  # fmt: skip
                beta_rk = tl.load(weight_ptr + pid.to(tl.int64) * S + s, mask=s_mask, other=0.0)
                acc_b += phi.to(tl.float32) * beta_rk[:, None]
            tl.store(b_ptr + pid.to(tl.int64) * DP + d, tl.sum(acc_b, axis=0))
    else:
        left = feat_ptr + (mat // 2).to(tl.int64) * role + frame  # k̃' for P and A, φ' for Π
        if mat == 1:
            right = v_ptr + b * svb + (t * S).to(tl.int64) * svn + h * D
            right_stride = svn
        else:
            right = feat_ptr + (mat // 2).to(tl.int64) * role + frame
            right_stride = D
        weights = weight_ptr + (mat != 1).to(tl.int64) * weight_stride + pid.to(tl.int64) * S  # β·rk for A
        e = cb * CB + tl.arange(0, CB)
        acc = tl.zeros((DP, CB), dtype=tl.float32)
        for s0 in range(0, S, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            s_mask = s < S
            lhs = tl.load(
                left + s[:, None] * D + d[None, :], mask=s_mask[:, None] & (d < D)[None, :], other=0.0
            )
            weight = tl.load(weights + s, mask=s_mask, other=0.0)
            rows = tl.multiple_of(s * right_stride, ROW_ALIGN)
            rhs = tl.load(
                right + rows[:, None] + e[None, :], mask=s_mask[:, None] & (e < D)[None, :], other=0.0
            )
            rhs = (rhs.to(tl.float32) * weight[:, None]).to(rhs.dtype)
            acc = _mm(tl.trans(lhs), rhs, acc, DOT)
        out = frame_ptr + (pid.to(tl.int64) * 3 + mat) * DP * DP + d[:, None] * DP + e[None, :]
        tl.store(out, acc)


@triton.jit
def _scan_kernel(
    frame_ptr, b_ptr, decay_ptr, kv0_ptr, z0_ptr, m_hist_ptr, m_bwd_ptr, z_hist_ptr, z_bwd_ptr,
    kv_out_ptr, z_out_ptr, T, H, D,
    sdb, sdt, sdh, s0b, s0h, s0k, s0v, sz0b, sz0h, sz0k,
    HAS_STATE: tl.constexpr, WRITE_STATE: tl.constexpr,
    DP: tl.constexpr, CB: tl.constexpr, DOT: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """Zero-seeded backward scan, then the forward scan from the initial state, per (batch, head).

    Programs 0 … DP/CB − 1 own CB value columns of M; the last program runs z (b_t from b,
    (B·H·T, DP)). The backward states R_t go to the fp32 scratch m_bwd/z_bwd (B·H, T, DP[, DP]);
    after a barrier the forward scan adds them to M_t and writes the readout
    state M_t + R_t to m_hist (its dtype: bf16 for bf16 readout dots) and z_t + ζ_t to z_hist (fp32).
    kv_out (B, H, D, D) and z_out (B, H, D) contiguous fp32 receive the final forward state when
    WRITE_STATE."""
    if PDL:  # the frame matrices and b are the previous launch's output
        gdc_wait()
        gdc_launch_dependents()
    bh = tl.program_id(0)
    j = tl.program_id(1)
    b = bh // H
    h = bh % H
    n_blocks: tl.constexpr = DP // CB
    r = tl.arange(0, DP)
    r_mask = r < D
    bh64 = bh.to(tl.int64)
    mat_size: tl.constexpr = DP * DP
    square = r[:, None] * DP + r[None, :]
    if j < n_blocks:
        c = j * CB + tl.arange(0, CB)
        c_mask = c < D
        tile = r[:, None] * DP + c[None, :]
        m = tl.zeros((DP, CB), dtype=tl.float32)
        tl.store(m_bwd_ptr + (bh64 * T + T - 1) * mat_size + tile, m)
        if T > 1:  # R_{T−2} = A_{T−1}: the first step absorbs into a zero state
            m = tl.load(frame_ptr + ((bh64 * T + T - 1) * 3 + 1) * mat_size + tile)
            tl.store(m_bwd_ptr + (bh64 * T + T - 2) * mat_size + tile, m)
        for i in range(T - 2):
            t = T - 3 - i  # absorb frame t + 1, read by frame t
            frame = frame_ptr + (bh64 * T + t + 1) * 3 * mat_size
            p = tl.load(frame + square)
            a = tl.load(frame + mat_size + tile)
            g = tl.load(decay_ptr + b * sdb + (t + 1) * sdt + h * sdh).to(tl.float32)
            m = g * (m - _mm(p, m, tl.zeros((DP, CB), dtype=tl.float32), DOT)) + a
            tl.store(m_bwd_ptr + (bh64 * T + t) * mat_size + tile, m)
        tl.debug_barrier()  # R_t written by other threads of this program is read below
        if HAS_STATE:
            mask = r_mask[:, None] & c_mask[None, :]
            rows = _key_row(r, D)
            kv_src = kv0_ptr + b.to(tl.int64) * s0b + h * s0h + rows[:, None] * s0k + c[None, :] * s0v
            m = tl.load(kv_src, mask=mask, other=0.0).to(tl.float32)
            first = 0
        else:  # M_0 = A_0
            m = tl.load(frame_ptr + (bh64 * T * 3 + 1) * mat_size + tile)
            back = tl.load(m_bwd_ptr + bh64 * T * mat_size + tile)
            tl.store(m_hist_ptr + bh64 * T * mat_size + tile, (m + back).to(m_hist_ptr.dtype.element_ty))
            first = 1
        for t in range(first, T):
            frame = frame_ptr + (bh64 * T + t) * 3 * mat_size
            p = tl.load(frame + square)
            a = tl.load(frame + mat_size + tile)
            g = tl.load(decay_ptr + b * sdb + t * sdt + h * sdh).to(tl.float32)
            m = g * (m - _mm(p, m, tl.zeros((DP, CB), dtype=tl.float32), DOT)) + a
            back = tl.load(m_bwd_ptr + (bh64 * T + t) * mat_size + tile)
            hist = m_hist_ptr + (bh64 * T + t) * mat_size + tile
            tl.store(hist, (m + back).to(m_hist_ptr.dtype.element_ty))
        if WRITE_STATE:
            mask = r_mask[:, None] & c_mask[None, :]
            dst = kv_out_ptr + bh64 * D * D + _key_row(r, D)[:, None] * D + c[None, :]
            tl.store(dst, m, mask=mask)
    else:
        z = tl.zeros((DP,), dtype=tl.float32)
        tl.store(z_bwd_ptr + (bh64 * T + T - 1) * DP + r, z)
        if T > 1:  # ζ_{T−2} = b_{T−1}
            z = tl.load(b_ptr + (bh64 * T + T - 1) * DP + r)
            tl.store(z_bwd_ptr + (bh64 * T + T - 2) * DP + r, z)
        for i in range(T - 2):
            t = T - 3 - i
            pz = tl.load(frame_ptr + ((bh64 * T + t + 1) * 3 + 2) * mat_size + square)
            bz = tl.load(b_ptr + (bh64 * T + t + 1) * DP + r)
            g = tl.load(decay_ptr + b * sdb + (t + 1) * sdt + h * sdh).to(tl.float32)
            z = g * (z - tl.sum(pz * z[None, :], axis=1)) + bz
            tl.store(z_bwd_ptr + (bh64 * T + t) * DP + r, z)
        tl.debug_barrier()
        if HAS_STATE:
            z_src = z0_ptr + b.to(tl.int64) * sz0b + h * sz0h + _key_row(r, D) * sz0k
            z = tl.load(z_src, mask=r_mask, other=0.0).to(tl.float32)
            first = 0
        else:  # z_0 = b_0
            z = tl.load(b_ptr + bh64 * T * DP + r)
            tl.store(z_hist_ptr + bh64 * T * DP + r, z + tl.load(z_bwd_ptr + bh64 * T * DP + r))
            first = 1
        for t in range(first, T):
            pz = tl.load(frame_ptr + ((bh64 * T + t) * 3 + 2) * mat_size + square)
            bz = tl.load(b_ptr + (bh64 * T + t) * DP + r)
            g = tl.load(decay_ptr + b * sdb + t * sdt + h * sdh).to(tl.float32)
            z = g * (z - tl.sum(pz * z[None, :], axis=1)) + bz
            back = tl.load(z_bwd_ptr + (bh64 * T + t) * DP + r)
            tl.store(z_hist_ptr + (bh64 * T + t) * DP + r, z + back)
        if WRITE_STATE:
            tl.store(z_out_ptr + bh64 * D + _key_row(r, D), z, mask=r_mask)


@triton.jit
def _head_rows(ptr, b, h, n, s_mask, d, D, sb, sn, sc):
    """Tokens n of head h of a (B, N, C) tensor, (rows, DP) as stored, zero beyond D."""
    rows = (b * sb + n * sn + h * D * sc)[:, None]
    return tl.load(ptr + rows + d[None, :] * sc, mask=s_mask[:, None] & (d < D)[None, :], other=0.0)


@triton.jit
def _query_scale(q_sq_ptr, b, n, s_mask, H, N, C, norm_eps, HP2: tl.constexpr):
    """rq (rows,): the queries' inverse RMS over all C channels, from the per-head Σ q² in q_sq
    (B·N, H); HP2 ≥ H."""
    heads = tl.arange(0, HP2)
    q_sq = q_sq_ptr + (b * N + n)[:, None] * H + heads[None, :]
    q_sq = tl.load(q_sq, mask=s_mask[:, None] & (heads < H)[None, :], other=0.0)
    return 1.0 / tl.sqrt_rn(tl.sum(q_sq, axis=1) / C + norm_eps)


@triton.jit
def _normalised(num, q, rq, z, w, eps):
    """(num / (den + ε), den) with den = φ^q · z and φ^q = ReLU(q · rq · w) rebuilt from q (no
    rotation: elementwise, cheaper than a stored copy); one IEEE division per token."""
    phi = tl.maximum(q.to(tl.float32) * rq[:, None] * w[None, :], 0.0)
    den = tl.sum(phi * z[None, :], axis=1)
    return num * tl.math.div_rn(1.0, den + eps)[:, None], den


@triton.jit
def _gated_store(
    o, gate, num, den, y_ptr, num_ptr, den_ptr, b, h, n, s_mask, d, D, H, N, C, WRITE_NUM_DEN: tl.constexpr,
):  # fmt: skip
    """y = o · SiLU(gate) into y (B, N, C) contiguous; num and den as well when WRITE_NUM_DEN."""
    mask = s_mask[:, None] & (d < D)[None, :]
    gate = gate.to(tl.float32)
    out = (b * N + n)[:, None] * C + (h * D + d)[None, :]
    tl.store(y_ptr + out, (o * gate * tl.sigmoid(gate)).to(y_ptr.dtype.element_ty), mask=mask)
    if WRITE_NUM_DEN:
        tl.store(num_ptr + out, num, mask=mask)
        tl.store(den_ptr + (b * N + n) * H + h, den, mask=s_mask)


@triton.jit
def _emit_kernel(
    feat_ptr, q_ptr, q_sq_ptr, wq_ptr, gate_ptr, y_ptr, m_hist_ptr, z_hist_ptr, num_ptr, den_ptr,
    T, S, H, D, N, C, tiles_per_program, eps, norm_eps, role_stride, sqb, sqn, sqc, sgb, sgn, sgc,
    DP: tl.constexpr, HP2: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, DOT: tl.constexpr,
    ONE_TILE: tl.constexpr, WRITE_NUM_DEN: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """The readout of BLOCK_S-token tiles of one (batch, head, frame): num = rq · (q̃/rq)(M_t + R_t) from
    the stored query features (role 2) and the scan's state, then y = num / (den + ε) · SiLU(gate)
    with den = φ^q · (z_t + ζ_t). y: (B, N, C) contiguous; num (B, N, C) and den (B, N, H) fp32 when
    WRITE_NUM_DEN.

    ONE_TILE (one tile per program, as in streaming chunks): the tile's q and gate loads are issued
    first and the product streams q̃ and M_t + R_t through shared memory BLOCK_K channels at a time (the
    software pipeliner's cp.async), so all of them are in flight together. Otherwise (long clips,
    several tiles per program) M_t + R_t is loaded once per program, each tile is one product and the
    gate is loaded last: re-streaming the state per tile, or holding more tiles at once, costs more
    than it hides there (kernels/NOTES.md)."""
    pid = tl.program_id(0)  # (b·H + h)·T + t
    split = tl.program_id(1)
    t = pid % T
    h = (pid // T) % H
    b = (pid // (T * H)).to(tl.int64)
    d = tl.arange(0, DP)
    d_mask = d < D
    if PDL:  # the scan's states are the previous launch's output
        gdc_wait()
    m_src = m_hist_ptr + pid.to(tl.int64) * DP * DP  # M_t + R_t, (DP, DP)
    pair_major = tl.where(d % 2 == 0, d // 2, D // 2 + d // 2)  # pair-major index of channel d
    z = tl.load(z_hist_ptr + pid.to(tl.int64) * DP + pair_major, mask=d_mask, other=0.0)  # z_t + ζ_t
    w = tl.load(wq_ptr + h * D + d, mask=d_mask, other=0.0).to(tl.float32)
    q_base = feat_ptr + 2 * role_stride.to(tl.int64) + pid.to(tl.int64) * S * D
    if ONE_TILE:
        s = split * BLOCK_S + tl.arange(0, BLOCK_S)
        s_mask = s < S
        n = (t * S + s).to(tl.int64)
        rq = _query_scale(q_sq_ptr, b, n, s_mask, H, N, C, norm_eps, HP2=HP2)
        q = _head_rows(q_ptr, b, h, n, s_mask, d, D, sqb, sqn, sqc)
        gate = _head_rows(gate_ptr, b, h, n, s_mask, d, D, sgb, sgn, sgc)
        acc = tl.zeros((BLOCK_S, DP), dtype=tl.float32)
        for k0 in range(0, DP, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            chunk = s_mask[:, None] & (k < D)[None, :]
            q_rot = tl.load(q_base + s[:, None] * D + k[None, :], mask=chunk, other=0.0)
            acc = _mm(q_rot, tl.load(m_src + k[:, None] * DP + d[None, :]), acc, DOT)
        num = acc * rq[:, None]
        o, den = _normalised(num, q, rq, z, w, eps)
        _gated_store(
            o, gate, num, den, y_ptr, num_ptr, den_ptr, b, h, n, s_mask, d, D, H, N, C, WRITE_NUM_DEN
        )
    else:
        m = tl.load(m_src + d[:, None] * DP + d[None, :])
        for j in range(tiles_per_program):
            s = (split * tiles_per_program + j) * BLOCK_S + tl.arange(0, BLOCK_S)
            s_mask = s < S
            n = (t * S + s).to(tl.int64)
            tile = s_mask[:, None] & d_mask[None, :]
            q_rot = tl.load(q_base + s[:, None] * D + d[None, :], mask=tile, other=0.0)
            rq = _query_scale(q_sq_ptr, b, n, s_mask, H, N, C, norm_eps, HP2=HP2)
            num = _mm(q_rot, m, tl.zeros((BLOCK_S, DP), dtype=tl.float32), DOT) * rq[:, None]
            o, den = _normalised(num, _head_rows(q_ptr, b, h, n, s_mask, d, D, sqb, sqn, sqc), rq, z, w, eps)
            gate = _head_rows(gate_ptr, b, h, n, s_mask, d, D, sgb, sgn, sgc)
            _gated_store(
                o, gate, num, den, y_ptr, num_ptr, den_ptr, b, h, n, s_mask, d, D, H, N, C, WRITE_NUM_DEN
            )


def _row_alignment(*tables: Tensor) -> int:
    """The most elements (up to one 16-byte vector) that every table's row stride is a multiple of;
    1 unless the rows are contiguous."""
    if any(t.stride(1) != 1 for t in tables):
        return 1
    return _stride_alignment(
        *(t.stride(0) for t in tables), element_size=max(t.element_size() for t in tables)
    )


def _stride_alignment(*strides: int, element_size: int) -> int:
    """The most elements (up to one 16-byte vector of `element_size`-byte elements) that every stride
    is a multiple of."""
    align = 16 // element_size
    while any(s % align for s in strides):
        align //= 2
    return align


def _supports_pdl(device: torch.device) -> bool:
    """Programmatic dependent launch (Hopper and later): kernel i + 1 starts while kernel i finishes
    and waits (`gdc_wait`) only where it reads kernel i's output."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def _check_inputs(x: GDNInputs, state: GDNState | None) -> tuple[int, int, int, int, int]:
    """Validate shapes; returns (B, N, C, S, D)."""
    if x.q.dim() != 3:
        raise ValueError(f"q must be (B, N, C), got {tuple(x.q.shape)}")
    B, N, C = x.q.shape
    T, H = x.frames, x.heads
    for name in ("k", "v", "gate"):
        if tuple(getattr(x, name).shape) != (B, N, C):
            raise ValueError(f"{name} must have q's shape {(B, N, C)}, got {tuple(getattr(x, name).shape)}")
    if H <= 0 or C % H:
        raise ValueError(f"channels {C} are not divisible by heads {H}")
    D = C // H
    if D % 2 or D > _MAX_HEAD_DIM:
        raise ValueError(f"head dim must be even and <= {_MAX_HEAD_DIM}, got {D}")
    if T <= 0 or N % T:
        raise ValueError(f"tokens {N} are not divisible by frames {T}")
    expected = {
        "beta": (B, N, H),
        "decay": (B, T, H),
        "q_norm_weight": (C,),
        "k_norm_weight": (C,),
        "cos": (N, D // 2),
        "sin": (N, D // 2),
    }
    for name, shape in expected.items():
        if tuple(getattr(x, name).shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(getattr(x, name).shape)}")
    devices = {t.device for t in (x.q, x.k, x.v, x.gate, *(getattr(x, name) for name in expected))}
    if state is not None:
        if tuple(state.kv.shape) != (B, H, D, D) or tuple(state.z.shape) != (B, H, D):
            raise ValueError(
                f"state must be kv {(B, H, D, D)} and z {(B, H, D)}, got "
                f"{tuple(state.kv.shape)} and {tuple(state.z.shape)}"
            )
        devices |= {state.kv.device, state.z.device}
    if len(devices) != 1:
        raise ValueError("all GDN inputs must be on one device")
    return B, N, C, N // T, D


def gdn_core_triton_parts(
    inputs: GDNInputs,
    *,
    state: GDNState | None = None,
    precision: Precision | None = None,
    return_num_den: bool = False,
    return_state: bool = False,
    config: LaunchConfig | None = None,
) -> GDNTritonOutput:
    """Run the four kernels; optionally also return num/den and the final state (tests, checks).

    `state` is only read here. precision None picks "bf16" for 16-bit inputs, "tf32" for fp32 and
    "ieee" for fp64."""
    B, N, C, S, D = _check_inputs(inputs, state)
    q, k, v, gate, beta, decay = inputs.q, inputs.k, inputs.v, inputs.gate, inputs.beta, inputs.decay
    q_norm_weight, k_norm_weight, cos, sin = (
        inputs.q_norm_weight,
        inputs.k_norm_weight,
        inputs.cos,
        inputs.sin,
    )
    key_scale, eps, norm_eps = inputs.key_scale, inputs.eps, inputs.norm_eps
    if precision is None:
        precision = {torch.float32: "tf32", torch.float64: "ieee"}.get(v.dtype, "bf16")
    if precision not in _DOT_MODES:
        raise ValueError(f"unknown GDN precision {precision!r}; expected one of {sorted(_DOT_MODES)}")
    dot, scan_dot = _DOT_MODES[precision]
    T, H = inputs.frames, inputs.heads
    cfg = config or LaunchConfig.for_frames(T)
    DP = max(16, triton.next_power_of_2(D))  # tl.dot's minimum K and N
    dev = q.device
    f32 = torch.float32
    pdl = cfg.pdl and _supports_pdl(dev)
    launch = {"launch_pdl": True} if pdl else {}

    # 1. feature maps k̃', φ', q̃/rq (3, B·H·T, S, D), the per-head Σ q², and the keys' weights β·rk and
    #    β·rk² per head (2, B·H·T, S) from programs past the frames; then the frame matrices P, A, Π
    #    (B·H·T, 3, DP, DP) and b (B·H·T, DP)
    feat_dtype = torch.bfloat16 if dot == 0 else f32
    v_rows = v  # the frame GEMM reads v beside the features: same dtype, contiguous channels
    if v.dtype != feat_dtype or v.stride(-1) != 1:
        v_rows = v.to(feat_dtype).contiguous()
    feats = _empty((3, B * H * T, S, D), dev, feat_dtype)
    role_stride = feats[0].numel()
    q_sq = _empty((B * N, H), dev, f32)
    weights = _empty((2, B * H * N), dev, f32)
    n_tiles = triton.cdiv(S, cfg.features_block_s)
    weight_frames = triton.cdiv(triton.cdiv(B * N, cfg.rms_rows), n_tiles)
    _features_kernel[(B * H * T + weight_frames, n_tiles)](
        q, k, beta, q_sq, weights, q_norm_weight, k_norm_weight, cos, sin, feats,
        B * H * T, T, S, H, D, N, C, key_scale, role_stride, B * H * N, norm_eps,
        *q.stride(), *k.stride(), *beta.stride(), *cos.stride(), *sin.stride(),
        DP=DP, BLOCK_S=cfg.features_block_s, ROPE_ALIGN=_row_alignment(cos, sin), ROWS=cfg.rms_rows,
        BLOCK_C=min(cfg.rms_block_c, triton.next_power_of_2(C)), HP2=triton.next_power_of_2(H), PDL=pdl,
        num_warps=cfg.features_warps, **launch,
    )  # fmt: skip
    frame_mats = _empty((B * H * T, 3, DP, DP), dev, f32)
    b_vec = _empty((B * H * T, DP), dev, f32)
    cg = min(cfg.gemm_cols, DP)
    gemm_bs = cfg.gemm_block_s if dot == 0 else max(16, cfg.gemm_block_s // 2)
    row_align = _stride_alignment(v_rows.stride(1), D, element_size=feats.element_size())
    _frame_gemm_kernel[(B * H * T, 4, DP // cg)](  # mat 3: b
        feats, v_rows, weights, frame_mats, b_vec, T, S, H, D, role_stride, B * H * N, *v_rows.stride()[:2],
        DP=DP, CB=cg, BLOCK_S=gemm_bs, ROW_ALIGN=row_align,
        DOT=dot, PDL=pdl,
        num_warps=cfg.gemm_warps, num_stages=cfg.gemm_stages, **launch,
    )  # fmt: skip

    # 2. forward and backward scans
    m_hist = _empty((B * H, T, DP, DP), dev, torch.bfloat16 if dot == 0 else f32)
    m_bwd = _empty((B * H, T, DP, DP), dev, f32)
    z_hist = _empty((B * H, T, DP), dev, f32)
    z_bwd = _empty((B * H, T, DP), dev, f32)
    final = (
        GDNState(kv=_empty((B, H, D, D), dev, f32), z=_empty((B, H, D), dev, f32)) if return_state else None
    )
    has_state = state is not None
    kv0 = state.kv if has_state else b_vec  # any valid pointer when there is no state
    z0 = state.z if has_state else b_vec
    kv0_strides = state.kv.stride() if has_state else (0, 0, 0, 0)
    z0_strides = state.z.stride() if has_state else (0, 0, 0)
    cs = min(cfg.scan_cols, DP)
    _scan_kernel[(B * H, DP // cs + 1)](
        frame_mats, b_vec, decay, kv0, z0, m_hist, m_bwd, z_hist, z_bwd,
        final.kv if final is not None else b_vec, final.z if final is not None else b_vec,
        T, H, D, *decay.stride(), *kv0_strides, *z0_strides,
        HAS_STATE=has_state, WRITE_STATE=final is not None, DP=DP, CB=cs, DOT=scan_dot, PDL=pdl,
        num_warps=cfg.scan_warps, num_stages=cfg.scan_stages, **launch,
    )  # fmt: skip

    # 3. readout, division and output gate
    y = _empty((B, N, C), dev, v.dtype)
    num = _empty((B, N, C), dev, f32) if return_num_den else y
    den = _empty((B, N, H), dev, f32) if return_num_den else y
    emit_tiles = triton.cdiv(S, cfg.emit_block_s)
    splits = min(emit_tiles, max(1, triton.cdiv(cfg.emit_programs, B * H * T)))
    per_program = triton.cdiv(emit_tiles, splits)
    splits = triton.cdiv(emit_tiles, per_program)
    one_tile = per_program == 1  # the streamed readout; only its K loop is worth pipelining
    _emit_kernel[(B * H * T, splits)](
        feats, q, q_sq, q_norm_weight, gate, y, m_hist, z_hist, num, den,
        T, S, H, D, N, C, per_program, eps, norm_eps, role_stride, *q.stride(), *gate.stride(),
        DP=DP, HP2=triton.next_power_of_2(H), BLOCK_S=cfg.emit_block_s, BLOCK_K=min(cfg.emit_block_k, DP),
        DOT=dot, ONE_TILE=one_tile, WRITE_NUM_DEN=return_num_den, PDL=pdl,
        num_warps=cfg.emit_warps, num_stages=cfg.emit_stages if one_tile else 1, **launch,
    )  # fmt: skip
    return GDNTritonOutput(
        y=y,
        num=num if return_num_den else None,
        den=den if return_num_den else None,
        final_state=final,
    )


def gdn_core_triton(
    inputs: GDNInputs,
    *,
    state: GDNState | None = None,
    update_state: bool = False,
    precision: Precision | None = None,
) -> Tensor:
    """Fused GDN core; same contract as `gdn_reference.gdn_core_torch`: returns (B, N, C) in the dtype
    of `v`; `state` is the initial forward state (zeros if None), overwritten with the final state
    when `update_state`."""
    if update_state and state is None:
        raise ValueError("update_state needs a state to write into")
    out = gdn_core_triton_parts(inputs, state=state, precision=precision, return_state=update_state)
    if update_state:
        state.kv.copy_(out.final_state.kv)
        state.z.copy_(out.final_state.z)
    return out.y
