"""The SANA-Streaming hybrid DiT: 20 blocks, GDN at most depths and gated softmax
attention at `softmax_layer_indices`; the source latent is concatenated to the noisy latent on channels.

One class serves both released variants; `DiTConfig.variant` only changes the stored shape of the
softmax q/k weights. Streaming is a matter of the `StreamingState` passed to `forward`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sana_streaming.conditioning import TextConditioning
from sana_streaming.config import DiTConfig
from sana_streaming.models.dit.block import BlockContext, SanaBlock
from sana_streaming.models.dit.cache import StreamingState
from sana_streaming.models.dit.cross_attention import TextCache, text_mask_bias
from sana_streaming.models.dit.kernels import EAGER, fused_kernels
from sana_streaming.models.dit.layers import (
    CaptionEmbedder,
    FinalLayer,
    PatchEmbed,
    RMSNorm,
    TimestepEmbedder,
)
from sana_streaming.models.dit.rope import rope_tables
from sana_streaming.numerics import compute_dtype
from sana_streaming.ops import Backend


class SanaStreamingDiT(nn.Module):
    def __init__(self, config: DiTConfig, gdn_backend: Backend = "auto") -> None:
        super().__init__()
        self.config = config
        C = config.hidden_size
        self.x_embedder = PatchEmbed(config.in_channels + config.additional_inchannels, C)
        self.t_embedder = TimestepEmbedder(C)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.y_embedder = CaptionEmbedder(config.caption_channels, C, config.model_max_length)
        self.attention_y_norm = RMSNorm(C, eps=1e-5)
        self.blocks = nn.ModuleList(
            SanaBlock(config, softmax=i in config.softmax_layer_indices, gdn_backend=gdn_backend)
            for i in range(config.depth)
        )
        self.final_layer = FinalLayer(C, config.out_channels)
        # Zero, unused; kept so checkpoints that carry it load strictly.
        self.register_buffer("pos_embed", torch.zeros(1, config.input_size**2, C), persistent=True)

    def prepare_text(self, conditioning: TextConditioning, batch: int | None = None) -> TextCache:
        """The text side of every forward with `conditioning`: the caption projected and normalised,
        its mask bias and each block's cross-attention K/V. A stream (or a sample) computes it once and
        passes it to each `forward`; `batch` (default: the conditioning's) is the forwards' batch size,
        a conditioning of batch 1 being broadcast to it."""
        dtype = self.x_embedder.proj.weight.dtype
        B = conditioning.embeds.shape[0] if batch is None else batch
        embeds = conditioning.embeds.to(dtype).expand(B, -1, -1, -1)  # (B, 1, L, C_txt)
        y = self.attention_y_norm(self.y_embedder(embeds))[:, 0]  # (B, L, C)
        return TextCache(
            mask_bias=text_mask_bias(conditioning.mask, B, dtype),
            blocks=tuple(block.cross_attn.text_kv(y) for block in self.blocks),
        )

    def forward(
        self,
        x: Tensor,
        timestep: Tensor,
        caption: Tensor | TextCache,
        mask: Tensor | None,
        source: Tensor,
        *,
        state: StreamingState | None = None,
        frame_offset: int | Tensor = 0,
        save: bool = False,
        fused: bool = False,
    ) -> Tensor:
        """Predict the flow velocity.

        x, source: (B, C_lat, T, H, W) noisy and clean source latents; timestep: (B,) on the 0–1000
        scale (truncated to an integer inside); caption: (B, 1, L, C_txt) text-encoder states and
        mask: (B or 1, L), 1 = valid token — or caption a `TextCache` from `prepare_text` (of batch B)
        and mask None, which skips the text side's projections. With `state`, the call is one streaming
        chunk whose first latent frame has absolute index `frame_offset` (its RoPE position: an int, or
        a 0-dim integer tensor on the device for CUDA-graph capture); `save` writes the chunk's GDN
        state and FFN tails into `state` (the sampler then commits its K/V to the window). `fused`
        runs the elementwise work as fused kernels (`kernels.fused_kernels`, CUDA; equal to the
        op-by-op forward within bf16 rounding). Returns (B, C_lat, T, H, W) in the model dtype."""
        dtype = self.x_embedder.proj.weight.dtype
        B, _, T, H, W = x.shape
        text = self._text(caption, mask, B)
        tokens = self.x_embedder(torch.cat([x, source.expand(B, -1, -1, -1, -1)], dim=1).to(dtype))
        t_emb = self.t_embedder(timestep.expand(B))
        t0 = self.t_block(t_emb)  # (B, 6·C)
        rope = rope_tables(
            frame_offset, T, H, W, self.config.linear_head_dim, device=x.device, dtype=compute_dtype(dtype)
        )  # one table per forward, shared by every layer
        cached = 0
        if state is not None:
            cached = state.cached_tokens
            state.check_fits(T * H * W)
        ctx = BlockContext(
            frames=T, height=H, width=W, rope=rope, mask_bias=text.mask_bias, cached_tokens=cached, save=save,
            kernels=fused_kernels() if fused else EAGER,
        )  # fmt: skip
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, t0, ctx, state.blocks[i] if state is not None else None, text.blocks[i])
        out = self.final_layer(tokens, t_emb)  # (B, N, C_lat)
        return out.transpose(1, 2).reshape(B, -1, T, H, W)

    def _text(self, caption: Tensor | TextCache, mask: Tensor | None, batch: int) -> TextCache:
        """The forward's text side: the given cache (checked), or one prepared on the fly."""
        if isinstance(caption, TextCache):
            if mask is not None:
                raise ValueError("a prepared TextCache carries its mask; pass mask=None")
            if caption.batch != batch:
                raise ValueError(f"TextCache of batch {caption.batch} for a forward of batch {batch}")
            return caption
        if mask is None:
            raise ValueError("a raw caption needs its mask")
        return self.prepare_text(TextConditioning(caption, mask), batch)


def build_dit(
    config,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    gdn_backend: Backend = "auto",
) -> SanaStreamingDiT:
    """Build the DiT for a `SanaStreamingConfig` or `DiTConfig` (weights uninitialised; load a
    checkpoint or call `randomize_dit_`). `device="meta"` builds without memory. `gdn_backend` is the
    GDN blocks' `gdn_core` backend: "auto" (Triton on CUDA when installed), "triton" or "torch"."""
    dit_config = config if isinstance(config, DiTConfig) else config.dit
    with torch.device(device or "cpu"):
        model = SanaStreamingDiT(dit_config, gdn_backend=gdn_backend)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)
