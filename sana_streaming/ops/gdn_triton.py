"""Fused GDN core in Triton: from the q/k/v/gate projections to the gated output that `proj` reads.

Same function and signature as `gdn_reference.gdn_core_torch` (kernels.md §1.3, plan §7.1). Five launches:

1. `_inv_rms_kernel`, grid (B·N): the per-token inverse RMS of q and k over all C channels (the only
   quantity that needs every head of a token).
2. `_key_features_kernel`, grid (B·H·T, S-tiles): key feature maps (inv-RMS × weight, ReLU, κ, RoPE
   from the (N, D/2) tables) written once as k̃ and φ^k, bf16 for the bf16 path.
3. `_frame_gemm_kernel`, grid (B·H·T, D_pad / CB): one column block of P = K̃ᵀ(β ⊙ K̃), A = K̃ᵀ(β ⊙ V),
   Π = Kᵀ(β ⊙ K) and b = Kᵀβ over the frame's S tokens, fp32 accumulation. The wide operand streams
   from memory straight into the tensor cores (software-pipelined); each program owns its output
   block: no partial sums, no atomics, deterministic. (Computing the features inside this loop, the
   plan's first layout, measured 0.61 ms at the hot loop against 0.067 ms for kernels 2 + 3:
   kernels/NOTES.md.)
4. `_scan_kernel`, grid (B·H, D_pad / CB + 1): the zero-seeded backward scan, then the forward scan
   from the initial state, fp32 state with the identity applied in fp32 (`M ← g·(M − P M) + A`);
   programs split M by value columns, the last program runs the normaliser scan z. It writes the
   readout state M_t + R_t once (bf16 when the readout dots are bf16) and the final forward state
   when asked.
5. `_emit_kernel`, grid (B·H·T, S-splits): q features, num = q̃ (M_t + R_t), den = φ^q · (z_t + ζ_t),
   num / (den + ε) · SiLU(gate), written in the (B, N, C) layout `proj` reads.

Precision (`precision=`): "bf16" — bf16 operands with fp32 accumulation for the reductions and the
readout (features and M_t + R_t rounded to bf16 once, as operands), TF32 for the scan (fp32 state);
"tf32" — TF32 dots everywhere; "ieee" — fp32 FMA dots everywhere.
Features, state, normaliser, division and gate are fp32 in every mode. The Triton interpreter on CPU
cannot run bf16 dots (it stores bf16 as raw 16-bit integers), so CPU tests use "tf32"/"ieee".

Head dims up to 128 (even); D is padded to a power of two in registers and in the internal feature,
frame and state buffers only — inputs, output and the state keep their own layouts (any strides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl
from torch import Tensor

from sana_streaming.ops.gdn_reference import GDNState

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
    """Block shapes and warps of the five kernels (defaults from the H100 profile, kernels/NOTES.md)."""

    rms_block_c: int = 4096
    rms_warps: int = 8
    features_block_s: int = 32
    features_warps: int = 4
    gemm_block_s: int = 64  # halved for fp32 operands (shared memory)
    gemm_cols: int = 64
    gemm_warps: int = 8
    gemm_stages: int = 3
    scan_cols: int = 16
    scan_warps: int = 4
    scan_stages: int = 1
    emit_block_s: int = 64
    emit_warps: int = 8
    emit_stages: int = 3
    emit_programs: int = 1056  # target programs of the readout (8 per H100 SM)


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
def _features(
    x_ptr, row_off, row_mask, n, col0, D, sxc, inv_rms, weight_ptr, w_off, scale,
    cos_ptr, sin_ptr, scn, scd, ssn, ssd, NCOL: tl.constexpr,
):  # fmt: skip
    """(φ, ρ(φ)) on a (rows, NCOL) tile of one head, channels col0 … col0 + NCOL − 1 (col0 even).

    φ = scale · ReLU(x · inv_rms · w); ρ rotates each interleaved pair (φ_2i, φ_2i+1) by the token's
    angle i. row_off: (R,) element offsets of the tokens' head start; n: (R,) token index into the
    (N, D/2) tables; w_off: offset of the head in the norm weight. Channels ≥ D come out as 0."""
    R: tl.constexpr = row_off.shape[0]
    cols = col0 + tl.arange(0, NCOL)
    col_mask = cols < D
    mask = row_mask[:, None] & col_mask[None, :]
    x = tl.load(x_ptr + row_off[:, None] + cols[None, :] * sxc, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(weight_ptr + w_off + cols, mask=col_mask, other=0.0).to(tl.float32)
    phi = tl.maximum(x * inv_rms[:, None] * w[None, :], 0.0) * scale
    even, odd = tl.split(tl.reshape(phi, (R, NCOL // 2, 2)))  # (R, NCOL/2) each
    pairs = col0 // 2 + tl.arange(0, NCOL // 2)
    pair_mask = row_mask[:, None] & (pairs < D // 2)[None, :]
    c = tl.load(cos_ptr + n[:, None] * scn + pairs[None, :] * scd, mask=pair_mask, other=0.0)
    s = tl.load(sin_ptr + n[:, None] * ssn + pairs[None, :] * ssd, mask=pair_mask, other=0.0)
    c = c.to(tl.float32)
    s = s.to(tl.float32)
    rot = tl.reshape(tl.join(even * c - odd * s, even * s + odd * c), (R, NCOL))
    return phi, rot


@triton.jit
def _inv_rms_kernel(
    q_ptr, k_ptr, rq_ptr, rk_ptr, N, C, sqb, sqn, sqc, skb, skn, skc, norm_eps, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """rq, rk (B·N,) fp32: 1/sqrt(mean_c x² + eps) of one token's q and k over all C channels."""
    row = tl.program_id(0)
    b = (row // N).to(tl.int64)
    n = (row % N).to(tl.int64)
    acc_q = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_k = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = cols < C
        xq = tl.load(q_ptr + b * sqb + n * sqn + cols * sqc, mask=mask, other=0.0).to(tl.float32)
        xk = tl.load(k_ptr + b * skb + n * skn + cols * skc, mask=mask, other=0.0).to(tl.float32)
        acc_q += xq * xq
        acc_k += xk * xk
    tl.store(rq_ptr + row, 1.0 / tl.sqrt_rn(tl.sum(acc_q, axis=0) / C + norm_eps))
    tl.store(rk_ptr + row, 1.0 / tl.sqrt_rn(tl.sum(acc_k, axis=0) / C + norm_eps))


@triton.jit
def _key_features_kernel(
    k_ptr, rk_ptr, wk_ptr, cos_ptr, sin_ptr, kr_ptr, kz_ptr, T, S, H, D, N, key_scale,
    skb, skn, skc, scn, scd, ssn, ssd,
    DP: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """Key features of BLOCK_S tokens of one (batch, head, frame): k̃ (rotated) and φ^k, both κ-scaled,
    into (B·H·T, S, DP) buffers (zero beyond D) that the frame GEMM streams as tensor-core operands."""
    pid = tl.program_id(0)  # (b·H + h)·T + t
    s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = s < S
    t = pid % T
    h = (pid // T) % H
    b = (pid // (T * H)).to(tl.int64)
    n = (t * S + s).to(tl.int64)
    rk = tl.load(rk_ptr + b * N + n, mask=s_mask, other=0.0)
    phi, rot = _features(
        k_ptr, b * skb + n * skn + h * D * skc, s_mask, n, 0, D, skc, rk, wk_ptr, h * D, key_scale,
        cos_ptr, sin_ptr, scn, scd, ssn, ssd, NCOL=DP,
    )  # fmt: skip
    d = tl.arange(0, DP)
    out = (pid.to(tl.int64) * S + s)[:, None] * DP + d[None, :]
    tl.store(kr_ptr + out, rot.to(kr_ptr.dtype.element_ty), mask=s_mask[:, None])
    tl.store(kz_ptr + out, phi.to(kz_ptr.dtype.element_ty), mask=s_mask[:, None])


@triton.jit
def _frame_gemm_kernel(
    kr_ptr, kz_ptr, v_ptr, beta_ptr, frame_ptr, bz_ptr, T, S, H, D,
    svb, svn, svc, sbb, sbn, sbh,
    DP: tl.constexpr, CB: tl.constexpr, BLOCK_S: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Columns [cb·CB, cb·CB + CB) of P_t = K̃ᵀ(β ⊙ K̃), A_t = K̃ᵀ(β ⊙ V), Π_t = Kᵀ(β ⊙ K) and b_t = Kᵀβ
    for one (batch, head, frame), from the precomputed features (the wide operand goes straight to
    the tensor cores; β scales the narrow one)."""
    pid = tl.program_id(0)
    cb = tl.program_id(1)
    t = pid % T
    h = (pid // T) % H
    b = (pid // (T * H)).to(tl.int64)
    d = tl.arange(0, DP)
    e = cb * CB + tl.arange(0, CB)
    e_mask = e < D
    acc_p = tl.zeros((DP, CB), dtype=tl.float32)
    acc_a = tl.zeros((DP, CB), dtype=tl.float32)
    acc_z = tl.zeros((DP, CB), dtype=tl.float32)
    acc_b = tl.zeros((CB,), dtype=tl.float32)
    base = pid.to(tl.int64) * S * DP
    for s0 in range(0, S, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        s_mask = s < S
        n = (t * S + s).to(tl.int64)
        beta = tl.load(beta_ptr + b * sbb + n * sbn + h * sbh, mask=s_mask, other=0.0).to(tl.float32)
        rows = base + s[:, None] * DP
        kr = tl.load(kr_ptr + rows + d[None, :], mask=s_mask[:, None], other=0.0)  # (BLOCK_S, DP)
        kz = tl.load(kz_ptr + rows + d[None, :], mask=s_mask[:, None], other=0.0)
        kr_part = tl.load(kr_ptr + rows + e[None, :], mask=s_mask[:, None], other=0.0).to(tl.float32)
        kz_part = tl.load(kz_ptr + rows + e[None, :], mask=s_mask[:, None], other=0.0).to(tl.float32)
        v_mask = s_mask[:, None] & e_mask[None, :]
        v_off = b * svb + n[:, None] * svn + (h * D + e)[None, :] * svc
        v_part = tl.load(v_ptr + v_off, mask=v_mask, other=0.0).to(tl.float32)
        kz_part = kz_part * beta[:, None]
        acc_p = _mm(tl.trans(kr), (kr_part * beta[:, None]).to(kr.dtype), acc_p, DOT)
        acc_a = _mm(tl.trans(kr), (v_part * beta[:, None]).to(kr.dtype), acc_a, DOT)
        acc_z = _mm(tl.trans(kz), kz_part.to(kz.dtype), acc_z, DOT)
        acc_b += tl.sum(kz_part, axis=0)
    out = frame_ptr + pid.to(tl.int64) * 3 * DP * DP + d[:, None] * DP + e[None, :]
    tl.store(out, acc_p)
    tl.store(out + DP * DP, acc_a)
    tl.store(out + 2 * DP * DP, acc_z)
    tl.store(bz_ptr + pid.to(tl.int64) * DP + e, acc_b)


@triton.jit
def _scan_kernel(
    frame_ptr, bz_ptr, decay_ptr, kv0_ptr, z0_ptr, m_hist_ptr, m_bwd_ptr, z_hist_ptr, z_bwd_ptr,
    kv_out_ptr, z_out_ptr, T, H, D,
    sdb, sdt, sdh, s0b, s0h, s0k, s0v, sz0b, sz0h, sz0k,
    HAS_STATE: tl.constexpr, WRITE_STATE: tl.constexpr,
    DP: tl.constexpr, CB: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """Zero-seeded backward scan, then the forward scan from the initial state, per (batch, head).

    Programs 0 … DP/CB − 1 own CB value columns of M; the last program runs z. The backward states
    R_t go to the fp32 scratch m_bwd/z_bwd (B·H, T, DP[, DP]); after a barrier the forward scan adds
    them to M_t and writes the readout state M_t + R_t to m_hist (its dtype: bf16 for bf16 readout
    dots) and z_t + ζ_t to z_hist (fp32). kv_out (B, H, D, D) and z_out (B, H, D) contiguous fp32
    receive the final forward state when WRITE_STATE."""
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
        for i in range(T - 1):
            t = T - 2 - i  # absorb frame t + 1, read by frame t
            frame = frame_ptr + (bh64 * T + t + 1) * 3 * mat_size
            p = tl.load(frame + square)
            a = tl.load(frame + mat_size + tile)
            g = tl.load(decay_ptr + b * sdb + (t + 1) * sdt + h * sdh).to(tl.float32)
            m = g * (m - _mm(p, m, tl.zeros((DP, CB), dtype=tl.float32), DOT)) + a
            tl.store(m_bwd_ptr + (bh64 * T + t) * mat_size + tile, m)
        tl.debug_barrier()  # R_t written by other threads of this program is read below
        m = tl.zeros((DP, CB), dtype=tl.float32)
        if HAS_STATE:
            mask = r_mask[:, None] & c_mask[None, :]
            src = kv0_ptr + b.to(tl.int64) * s0b + h * s0h + r[:, None] * s0k + c[None, :] * s0v
            m = tl.load(src, mask=mask, other=0.0).to(tl.float32)
        for t in range(T):
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
            tl.store(kv_out_ptr + bh64 * D * D + r[:, None] * D + c[None, :], m, mask=mask)
    else:
        z = tl.zeros((DP,), dtype=tl.float32)
        tl.store(z_bwd_ptr + (bh64 * T + T - 1) * DP + r, z)
        for i in range(T - 1):
            t = T - 2 - i
            pz = tl.load(frame_ptr + ((bh64 * T + t + 1) * 3 + 2) * mat_size + square)
            bz = tl.load(bz_ptr + (bh64 * T + t + 1) * DP + r)
            g = tl.load(decay_ptr + b * sdb + (t + 1) * sdt + h * sdh).to(tl.float32)
            z = g * (z - tl.sum(pz * z[None, :], axis=1)) + bz
            tl.store(z_bwd_ptr + (bh64 * T + t) * DP + r, z)
        tl.debug_barrier()
        z = tl.zeros((DP,), dtype=tl.float32)
        if HAS_STATE:
            z = tl.load(z0_ptr + b.to(tl.int64) * sz0b + h * sz0h + r * sz0k, mask=r_mask, other=0.0)
            z = z.to(tl.float32)
        for t in range(T):
            pz = tl.load(frame_ptr + ((bh64 * T + t) * 3 + 2) * mat_size + square)
            bz = tl.load(bz_ptr + (bh64 * T + t) * DP + r)
            g = tl.load(decay_ptr + b * sdb + t * sdt + h * sdh).to(tl.float32)
            z = g * (z - tl.sum(pz * z[None, :], axis=1)) + bz
            back = tl.load(z_bwd_ptr + (bh64 * T + t) * DP + r)
            tl.store(z_hist_ptr + (bh64 * T + t) * DP + r, z + back)
        if WRITE_STATE:
            tl.store(z_out_ptr + bh64 * D + r, z, mask=r_mask)


@triton.jit
def _emit_kernel(
    q_ptr, gate_ptr, y_ptr, rq_ptr, wq_ptr, cos_ptr, sin_ptr, m_hist_ptr, z_hist_ptr,
    num_ptr, den_ptr, T, S, H, D, N, C, tiles_per_program, eps,
    sqb, sqn, sqc, sgb, sgn, sgc, scn, scd, ssn, ssd,
    DP: tl.constexpr, BLOCK_S: tl.constexpr, DOT: tl.constexpr, WRITE_NUM_DEN: tl.constexpr,
):  # fmt: skip
    """y = num / (den + ε) · SiLU(gate) for BLOCK_S-token tiles of one (batch, head, frame).

    y: (B, N, C) contiguous; num (B, N, C) and den (B, N, H) fp32 when WRITE_NUM_DEN."""
    pid = tl.program_id(0)  # (b·H + h)·T + t
    split = tl.program_id(1)
    t = pid % T
    h = (pid // T) % H
    b = (pid // (T * H)).to(tl.int64)
    d = tl.arange(0, DP)
    d_mask = d < D
    hist = pid.to(tl.int64) * DP * DP + d[:, None] * DP + d[None, :]
    m = tl.load(m_hist_ptr + hist)  # M_t + R_t (DP, DP), bf16 or fp32
    z = tl.load(z_hist_ptr + pid.to(tl.int64) * DP + d)  # z_t + ζ_t
    for i in range(tiles_per_program):
        s = (split * tiles_per_program + i) * BLOCK_S + tl.arange(0, BLOCK_S)
        s_mask = s < S
        n = (t * S + s).to(tl.int64)
        rq = tl.load(rq_ptr + b * N + n, mask=s_mask, other=0.0)
        q_row = b * sqb + n * sqn + h * D * sqc
        phi, q_rot = _features(
            q_ptr, q_row, s_mask, n, 0, D, sqc, rq, wq_ptr, h * D, 1.0,
            cos_ptr, sin_ptr, scn, scd, ssn, ssd, NCOL=DP,
        )  # fmt: skip
        num = _mm(q_rot, m, tl.zeros((BLOCK_S, DP), dtype=tl.float32), DOT)
        den = tl.sum(phi * z[None, :], axis=1)
        o = tl.math.div_rn(num, (den + eps)[:, None])
        mask = s_mask[:, None] & d_mask[None, :]
        g_row = b * sgb + n * sgn + h * D * sgc
        gate = tl.load(gate_ptr + g_row[:, None] + d[None, :] * sgc, mask=mask, other=0.0).to(tl.float32)
        y = o * gate * tl.sigmoid(gate)
        out = (b * N + n)[:, None] * C + (h * D + d)[None, :]
        tl.store(y_ptr + out, y.to(y_ptr.dtype.element_ty), mask=mask)
        if WRITE_NUM_DEN:
            tl.store(num_ptr + out, num, mask=mask)
            tl.store(den_ptr + (b * N + n) * H + h, den, mask=s_mask)


def _check_inputs(
    q: Tensor, k: Tensor, v: Tensor, gate: Tensor, beta: Tensor, decay: Tensor,
    q_norm_weight: Tensor, k_norm_weight: Tensor, cos: Tensor, sin: Tensor,
    frames: int, heads: int, state: GDNState | None,
) -> tuple[int, int, int, int, int]:  # fmt: skip
    """Validate shapes; returns (B, N, C, S, D)."""
    if q.dim() != 3:
        raise ValueError(f"q must be (B, N, C), got {tuple(q.shape)}")
    B, N, C = q.shape
    for name, x in (("k", k), ("v", v), ("gate", gate)):
        if tuple(x.shape) != (B, N, C):
            raise ValueError(f"{name} must have q's shape {(B, N, C)}, got {tuple(x.shape)}")
    if heads <= 0 or C % heads:
        raise ValueError(f"channels {C} are not divisible by heads {heads}")
    D = C // heads
    if D % 2 or D > _MAX_HEAD_DIM:
        raise ValueError(f"head dim must be even and <= {_MAX_HEAD_DIM}, got {D}")
    if frames <= 0 or N % frames:
        raise ValueError(f"tokens {N} are not divisible by frames {frames}")
    expected = {
        "beta": (beta, (B, N, heads)),
        "decay": (decay, (B, frames, heads)),
        "q_norm_weight": (q_norm_weight, (C,)),
        "k_norm_weight": (k_norm_weight, (C,)),
        "cos": (cos, (N, D // 2)),
        "sin": (sin, (N, D // 2)),
    }
    for name, (x, shape) in expected.items():
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(x.shape)}")
    tensors = [q, k, v, gate, beta, decay, q_norm_weight, k_norm_weight, cos, sin]
    if state is not None:
        if tuple(state.kv.shape) != (B, heads, D, D) or tuple(state.z.shape) != (B, heads, D):
            raise ValueError(
                f"state must be kv {(B, heads, D, D)} and z {(B, heads, D)}, got "
                f"{tuple(state.kv.shape)} and {tuple(state.z.shape)}"
            )
        tensors += [state.kv, state.z]
    if len({x.device for x in tensors}) != 1:
        raise ValueError("all GDN inputs must be on one device")
    return B, N, C, N // frames, D


def gdn_core_triton_parts(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gate: Tensor,
    beta: Tensor,
    decay: Tensor,
    q_norm_weight: Tensor,
    k_norm_weight: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    frames: int,
    heads: int,
    key_scale: float,
    state: GDNState | None = None,
    eps: float = 1e-8,
    norm_eps: float = 1e-5,
    precision: Precision | None = None,
    return_num_den: bool = False,
    return_state: bool = False,
    config: LaunchConfig | None = None,
) -> GDNTritonOutput:
    """Run the five kernels; optionally also return num/den and the final state (tests, checks).

    `state` is only read here. precision None picks "bf16" for 16-bit inputs, "tf32" for fp32 and
    "ieee" for fp64."""
    B, N, C, S, D = _check_inputs(
        q, k, v, gate, beta, decay, q_norm_weight, k_norm_weight, cos, sin, frames, heads, state
    )
    if precision is None:
        precision = {torch.float32: "tf32", torch.float64: "ieee"}.get(v.dtype, "bf16")
    if precision not in _DOT_MODES:
        raise ValueError(f"unknown GDN precision {precision!r}; expected one of {sorted(_DOT_MODES)}")
    dot, scan_dot = _DOT_MODES[precision]
    cfg = config or LaunchConfig()
    T, H = frames, heads
    DP = max(16, triton.next_power_of_2(D))
    dev = q.device
    f32 = torch.float32

    # 1. inverse RMS of q and k per token
    rq = _empty((B * N,), dev, f32)
    rk = _empty((B * N,), dev, f32)
    _inv_rms_kernel[(B * N,)](
        q, k, rq, rk, N, C, *q.stride(), *k.stride(), norm_eps,
        BLOCK_C=min(cfg.rms_block_c, triton.next_power_of_2(C)), num_warps=cfg.rms_warps,
    )  # fmt: skip

    # 2. key features, then the frame reductions P, A, Π (B·H·T, 3, DP, DP) and b (B·H·T, DP)
    frame_mats = _empty((B * H * T, 3, DP, DP), dev, f32)
    frame_b = _empty((B * H * T, DP), dev, f32)
    feat_dtype = torch.bfloat16 if dot == 0 else f32
    kr = _empty((B * H * T, S, DP), dev, feat_dtype)
    kz = _empty((B * H * T, S, DP), dev, feat_dtype)
    _key_features_kernel[(B * H * T, triton.cdiv(S, cfg.features_block_s))](
        k, rk, k_norm_weight, cos, sin, kr, kz, T, S, H, D, N, key_scale,
        *k.stride(), *cos.stride(), *sin.stride(),
        DP=DP, BLOCK_S=cfg.features_block_s, num_warps=cfg.features_warps,
    )  # fmt: skip
    cg = min(cfg.gemm_cols, DP)
    gemm_bs = cfg.gemm_block_s if dot == 0 else max(16, cfg.gemm_block_s // 2)
    _frame_gemm_kernel[(B * H * T, DP // cg)](
        kr, kz, v, beta, frame_mats, frame_b, T, S, H, D, *v.stride(), *beta.stride(),
        DP=DP, CB=cg, BLOCK_S=gemm_bs, DOT=dot, num_warps=cfg.gemm_warps, num_stages=cfg.gemm_stages,
    )  # fmt: skip

    # 3. forward and backward scans
    m_hist = _empty((B * H, T, DP, DP), dev, torch.bfloat16 if dot == 0 else f32)
    m_bwd = _empty((B * H, T, DP, DP), dev, f32)
    z_hist = _empty((B * H, T, DP), dev, f32)
    z_bwd = _empty((B * H, T, DP), dev, f32)
    final = (
        GDNState(kv=_empty((B, H, D, D), dev, f32), z=_empty((B, H, D), dev, f32)) if return_state else None
    )
    has_state = state is not None
    kv0 = state.kv if has_state else frame_b  # any valid pointer when there is no state
    z0 = state.z if has_state else frame_b
    kv0_strides = state.kv.stride() if has_state else (0, 0, 0, 0)
    z0_strides = state.z.stride() if has_state else (0, 0, 0)
    cs = min(cfg.scan_cols, DP)
    _scan_kernel[(B * H, DP // cs + 1)](
        frame_mats, frame_b, decay, kv0, z0, m_hist, m_bwd, z_hist, z_bwd,
        final.kv if final is not None else frame_b, final.z if final is not None else frame_b,
        T, H, D, *decay.stride(), *kv0_strides, *z0_strides,
        HAS_STATE=has_state, WRITE_STATE=final is not None, DP=DP, CB=cs, DOT=scan_dot,
        num_warps=cfg.scan_warps, num_stages=cfg.scan_stages,
    )  # fmt: skip

    # 4. readout, division and output gate
    y = _empty((B, N, C), dev, v.dtype)
    num = _empty((B, N, C), dev, f32) if return_num_den else y
    den = _empty((B, N, H), dev, f32) if return_num_den else y
    n_tiles = triton.cdiv(S, cfg.emit_block_s)
    splits = min(n_tiles, max(1, triton.cdiv(cfg.emit_programs, B * H * T)))
    per_program = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, per_program)
    _emit_kernel[(B * H * T, splits)](
        q, gate, y, rq, q_norm_weight, cos, sin, m_hist, z_hist, num, den,
        T, S, H, D, N, C, per_program, eps, *q.stride(), *gate.stride(), *cos.stride(), *sin.stride(),
        DP=DP, BLOCK_S=cfg.emit_block_s, DOT=dot, WRITE_NUM_DEN=return_num_den,
        num_warps=cfg.emit_warps, num_stages=cfg.emit_stages,
    )  # fmt: skip
    return GDNTritonOutput(
        y=y,
        num=num if return_num_den else None,
        den=den if return_num_den else None,
        final_state=final,
    )


def gdn_core_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gate: Tensor,
    beta: Tensor,
    decay: Tensor,
    q_norm_weight: Tensor,
    k_norm_weight: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    frames: int,
    heads: int,
    key_scale: float,
    state: GDNState | None = None,
    update_state: bool = False,
    eps: float = 1e-8,
    norm_eps: float = 1e-5,
    precision: Precision | None = None,
) -> Tensor:
    """Fused GDN core; same contract as `gdn_reference.gdn_core_torch`.

    q, k, v, gate: (B, N, C) raw projections (any strides, e.g. views of one (B, N, 4C) GEMM output);
    beta: (B, N, H) after the sigmoid; decay: (B, T, H); cos, sin: (N, D/2); state: initial forward
    state (zeros if None), overwritten with the final state when `update_state`. Returns (B, N, C) in
    the dtype of `v`."""
    if update_state and state is None:
        raise ValueError("update_state needs a state to write into")
    out = gdn_core_triton_parts(
        q, k, v, gate, beta, decay, q_norm_weight, k_norm_weight, cos, sin,
        frames=frames, heads=heads, key_scale=key_scale, state=state, eps=eps, norm_eps=norm_eps,
        precision=precision, return_state=update_state,
    )  # fmt: skip
    if update_state:
        state.kv.copy_(out.final_state.kv)
        state.z.copy_(out.final_state.z)
    return out.y
