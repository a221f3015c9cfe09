"""Gemma-2 text encoder: prompts -> `(embeds [1, 1, L, C], mask [1, L])` for the DiT's cross-attention.

Reproduces the release's `encode_prompt` (inference_video_scripts/v2v/inference_sana_streaming.py in
meefs/Sana; docs/model.md): the positive prompt gets the complex-human-instruction ("chi") prefix, is
padded to `len(encode(chi)) + L - 2` tokens and then reduced *positionally* to BOS + the last `L - 1`
positions; the negative prompt is encoded without the prefix at length `L`. The model output used is
`last_hidden_state` (after the final RMSNorm).

Attention: the release ran Gemma-2 under transformers 4.57's default SDPA backend, which silently drops
Gemma-2's attention-logit softcap. transformers 5 refuses SDPA for Gemma-2 and would fall back to eager
*with* the softcap, changing the embeddings. We register an attention function that calls transformers'
own SDPA path with the softcap removed, and select it by name.
"""

from __future__ import annotations

import gc
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AttentionInterface, AutoModel, AutoTokenizer, Gemma2Config, PreTrainedTokenizerBase
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from sana_streaming.conditioning import TextConditioning
from sana_streaming.config import ConfigError, TextEncoderConfig
from sana_streaming.downloads import text_encoder_source
from sana_streaming.hub import resolve
from sana_streaming.models.random_init import redraw_

# The complex-human-instruction prefix, byte for byte.
# Source: meefs/Sana @ 5498e5b, configs/sana_streaming/sana_streaming_2b_720p.yaml and
# sana_streaming_bidirectional_2b_720p.yaml, `text_encoder.chi_prompt` (identical in both). Joined with
# "\n" and no trailing newline; the last line ends with a space.
CHI_PROMPT_LINES: tuple[str, ...] = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable '
    "for image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
)

# Name under which the no-softcap SDPA attention is registered. It must not contain "sdpa": transformers
# would then run its SDPA capability check, which Gemma-2 fails.
NO_SOFTCAP_ATTENTION = "sana_no_softcap"

# The small Gemma-style tokenizer shipped for tests and random-weight runs (see assets/README.md).
PACKAGED_TOKENIZER = "assets/gemma2_tokenizer"


class TextEncoderError(RuntimeError):
    """The text encoder cannot be built or used."""


def _attention_without_softcap(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention with Gemma-2's `softcap` argument dropped, as SDPA did in the release."""
    kwargs.pop("softcap", None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(NO_SOFTCAP_ATTENTION, _attention_without_softcap)
AttentionMaskInterface.register(NO_SOFTCAP_ATTENTION, sdpa_mask)


def chi_prefix(lines: tuple[str, ...]) -> str:
    """The prefix string: lines joined with "\\n", no trailing newline."""
    return "\n".join(lines)


def positive_prompt_text(prompt: str, motion_score: int) -> str:
    """The positive prompt as the release forms it: stripped, then ` motion score: N.` if N > 0."""
    prompt = prompt.strip()
    if motion_score > 0:
        prompt = f"{prompt} motion score: {int(motion_score)}."
    return prompt


def chi_max_length(tokenizer: PreTrainedTokenizerBase, chi: str, model_max_length: int) -> int:
    """Padded length of `chi + prompt`: the prefix's token count (BOS included) + L - 2."""
    return len(tokenizer.encode(chi)) + model_max_length - 2


def chi_select_index(model_max_length: int) -> list[int]:
    """Positions kept after the chi prefix: BOS, then the last L - 1 positions (positional, not semantic)."""
    return [0, *range(-model_max_length + 1, 0)]


def packaged_tokenizer_dir() -> Path:
    """Folder of the committed small Gemma-style tokenizer."""
    return Path(str(resources.files("sana_streaming").joinpath(PACKAGED_TOKENIZER)))


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer` from a folder, set to right padding as the release does."""
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "right"
    return tokenizer


class TextEncoder:
    """Tokenizer + Gemma-2 decoder; encodes prompts once per run and caches the results.

    `encode_prompt` returns float32 computed under bf16 autocast when the model is bf16 (the release
    encodes the positive prompt after `accelerator.prepare`, which wraps `forward` in autocast with fp32
    outputs); `encode_negative` is a plain forward in the model dtype (the release encodes it before
    `prepare`). See docs/model.md, "Text encoder".
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module, config: TextEncoderConfig
    ) -> None:
        hidden = model.config.hidden_size
        if hidden != config.resolved_caption_channels:
            raise ConfigError(
                f"text encoder hidden size {hidden} != caption_channels {config.resolved_caption_channels}"
            )
        if len(tokenizer) > model.config.vocab_size:
            raise ConfigError(f"tokenizer has {len(tokenizer)} tokens, model only {model.config.vocab_size}")
        if tokenizer.pad_token_id is None:
            raise ConfigError("tokenizer has no pad token")
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        self.config = config
        self._model: torch.nn.Module | None = model.eval()
        self._cache: dict[tuple[bool, str], TextConditioning] = {}

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        config: TextEncoderConfig,
        source: str | Path | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
    ) -> TextEncoder:
        """Load tokenizer and `Gemma2Model` from a folder, an `hf://owner/repo[/sub]` URI or a repo id.

        `source=None` uses the repo of `config.text_encoder_name` (`Efficient-Large-Model/gemma-2-2b-it`).
        The release's dtype is bf16. A causal-LM checkpoint loads into the bare `Gemma2Model` (the release
        calls `.get_decoder()`; `lm_head` is tied and unused)."""
        folder = resolve(text_encoder_source(config, source))
        tokenizer = load_tokenizer(folder)
        model = AutoModel.from_pretrained(str(folder), dtype=dtype, attn_implementation=NO_SOFTCAP_ATTENTION)
        return cls(tokenizer, model.to(device), config)

    @classmethod
    def from_config(
        cls,
        config: TextEncoderConfig,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> TextEncoder:
        """Random weights: `Gemma2Config(**config.architecture)` (None: the 2B defaults) with the committed
        tokenizer; weights drawn from a private generator seeded with `seed` (`random_init.redraw_`)."""
        gemma_config = Gemma2Config(**(config.architecture or {}))
        device = torch.device(device)
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices), device:  # leaves the caller's RNGs untouched
            model = AutoModel.from_config(gemma_config, dtype=dtype, attn_implementation=NO_SOFTCAP_ATTENTION)
        redraw_(model, seed)
        return cls(load_tokenizer(packaged_tokenizer_dir()), model, config)

    # ---- encoding -----------------------------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise TextEncoderError("the text encoder was freed; only already-encoded prompts are available")
        return self._model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_prompt(self, prompt: str) -> TextConditioning:
        """Positive prompt: chi prefix, `len(encode(chi)) + L - 2` tokens, then BOS + last L - 1 positions.

        `prompt` is used as given; form it with `positive_prompt_text` (strip + motion-score suffix)."""
        key = (True, prompt)
        if key not in self._cache:
            self._cache[key] = self._encode_with_chi(prompt)
        return self._cache[key]

    def is_cached(self, prompt: str, negative: str) -> bool:
        """Whether both encodings are already cached (then the model is not needed)."""
        return (True, prompt) in self._cache and (False, negative) in self._cache

    def encode_negative(self, prompt: str) -> TextConditioning:
        """Negative prompt: no prefix, no stripping, padded/truncated to L tokens, no selection."""
        key = (False, prompt)
        if key not in self._cache:
            ids, mask = self._tokenize(prompt, self.config.model_max_length)
            with torch.no_grad():
                hidden = self.model(ids, mask, use_cache=False)[0]  # (1, L, C)
            self._cache[key] = TextConditioning(hidden[:, None], mask)
        return self._cache[key]

    def _encode_with_chi(self, prompt: str) -> TextConditioning:
        chi = chi_prefix(self.config.chi_prompt)
        length = self.config.model_max_length
        ids, mask = self._tokenize(chi + prompt, chi_max_length(self.tokenizer, chi, length))
        autocast = self.dtype == torch.bfloat16
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            hidden = self.model(ids, mask, use_cache=False)[0]  # (1, n_chi + L - 2, C)
        if autocast:
            hidden = hidden.float()
        index = chi_select_index(length)
        return TextConditioning(hidden[:, index][:, None], mask[:, index])  # (1, 1, L, C), (1, L)

    def _tokenize(self, text: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            text, max_length=max_length, padding="max_length", truncation=True, return_tensors="pt"
        )
        return tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)

    # ---- memory -------------------------------------------------------------------------------------

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the model off the accelerator; cached encodings stay where they are."""
        self.model.to(device)
        _empty_cuda_cache()

    def free(self) -> None:
        """Drop the model; cached encodings stay available."""
        self._model = None
        gc.collect()
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "CHI_PROMPT_LINES",
    "TextEncoder",
    "TextEncoderError",
    "chi_max_length",
    "chi_prefix",
    "chi_select_index",
    "packaged_tokenizer_dir",
    "positive_prompt_text",
]
