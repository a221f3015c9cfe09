"""The text conditioning handed from the text encoder to the DiT: one encoded prompt
(`TextConditioning`) and the edit's positive/negative pair (`PromptPair`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TextConditioning:
    """One encoded prompt (or a batch of them), as the text encoder returns it."""

    embeds: Tensor  # (B, 1, L, C_txt) text-encoder hidden states
    mask: Tensor  # (B, L), 1 = valid token (BOS or prompt), 0 = padding

    def to(self, device: torch.device | str) -> TextConditioning:
        """The same conditioning on `device`."""
        return TextConditioning(self.embeds.to(device), self.mask.to(device))

    @staticmethod
    def batch(parts: list[TextConditioning]) -> TextConditioning:
        """`parts` stacked on the batch dimension, in order."""
        return TextConditioning(torch.cat([p.embeds for p in parts]), torch.cat([p.mask for p in parts]))


@dataclass(frozen=True)
class PromptPair:
    """An edit's encoded prompts: the instruction and the negative prompt (classifier-free guidance)."""

    positive: TextConditioning
    negative: TextConditioning

    def to(self, device: torch.device | str) -> PromptPair:
        """The same pair on `device`."""
        return PromptPair(self.positive.to(device), self.negative.to(device))

    def guidance_batch(self) -> TextConditioning:
        """The CFG batch in the release's order [uncond, cond]: (2, 1, L, C_txt), (2, L)."""
        return TextConditioning.batch([self.negative, self.positive])
