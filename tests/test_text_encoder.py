"""Text encoder: chi prefix and 300-token selection arithmetic, masks, no-softcap attention (docs/model.md).

The model is a tiny random Gemma-2 with Gemma-2's attention softcap (50), saved to a folder by the test
and loaded back through `AutoTokenizer`/`AutoModel`, as the real checkpoint is. Its weights are drawn with
a large std so attention logits reach the softcap's range; otherwise softcap and no softcap would agree.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from helpers_hub import fake_hub_cache, use_cache
from transformers import AutoModel, Gemma2Config, Gemma2ForCausalLM, GemmaTokenizer

from sana_streaming.config import TextEncoderConfig, load_config
from sana_streaming.hub import HubError
from sana_streaming.models.text_encoder import (
    CHI_PROMPT_LINES,
    TextEncoder,
    TextEncoderError,
    chi_max_length,
    chi_prefix,
    chi_select_index,
    load_tokenizer,
    packaged_tokenizer_dir,
    positive_prompt_text,
)

L = 16  # tiny model_max_length (the release: 300)
SHORT = "Remove the earrings."
UNMERGED = "Zebra stripes"  # the tokenizer has no `▁Z` piece: the prefix's trailing `▁` stays separate
LONG = "Replace the background with a snowy mountain landscape at sunset and turn the car red in the rain."


@pytest.fixture(scope="module")
def te_config() -> TextEncoderConfig:
    return load_config("tiny_random").text_encoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, te_config: TextEncoderConfig) -> Path:
    """A causal-LM checkpoint folder with the committed tokenizer, like the hub repo."""
    folder = tmp_path_factory.mktemp("gemma2_tiny")
    assert te_config.architecture is not None and te_config.architecture["attn_logit_softcapping"] == 50.0
    torch.manual_seed(1234)
    Gemma2ForCausalLM(Gemma2Config(**te_config.architecture, initializer_range=1.0)).save_pretrained(folder)
    for file in packaged_tokenizer_dir().iterdir():
        shutil.copy(file, folder)
    return folder


@pytest.fixture(scope="module")
def encoder(model_dir: Path, te_config: TextEncoderConfig) -> TextEncoder:
    return TextEncoder.from_pretrained(te_config, model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def references(model_dir: Path) -> dict[str, torch.nn.Module]:
    """Eager attention (matmul + softmax) without and with the softcap."""
    return {
        "no_softcap": AutoModel.from_pretrained(
            model_dir, attn_implementation="eager", attn_logit_softcapping=None
        ),
        "softcap": AutoModel.from_pretrained(model_dir, attn_implementation="eager"),
    }


def _reference(model: torch.nn.Module, tokenizer: GemmaTokenizer, text: str, max_length: int) -> torch.Tensor:
    tokens = tokenizer(
        text, max_length=max_length, padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        return model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state


def test_weights_come_from_the_folder(encoder: TextEncoder, model_dir: Path) -> None:
    """The causal-LM checkpoint's `model.*` weights land in the bare decoder (no silent random init)."""
    saved = Gemma2ForCausalLM.from_pretrained(model_dir).model.state_dict()
    loaded = encoder.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)


def test_chi_lines_equal_release_configs() -> None:
    for name in ("sana_streaming_2b_720p", "sana_streaming_bidirectional_2b_720p", "tiny_random"):
        assert load_config(name).text_encoder.chi_prompt == CHI_PROMPT_LINES
    chi = chi_prefix(CHI_PROMPT_LINES)
    assert chi.count("\n") == 4 and chi.endswith("\nUser Prompt: ")
    assert chi.startswith('Given a user prompt, generate an "Enhanced prompt" that provides')


def test_motion_score_suffix() -> None:
    assert positive_prompt_text("  Remove the earrings. ", 10) == "Remove the earrings. motion score: 10."
    assert positive_prompt_text("  Remove the earrings. ", 0) == "Remove the earrings."


def test_select_index_arithmetic() -> None:
    index = chi_select_index(300)
    assert len(index) == 300 and index[:3] == [0, -299, -298] and index[-1] == -1
    assert index == [0, *list(range(-299, 0))]
    tokenizer = load_tokenizer(packaged_tokenizer_dir())
    chi = chi_prefix(CHI_PROMPT_LINES)
    assert chi_max_length(tokenizer, chi, 300) == len(tokenizer(chi).input_ids) + 298


def test_packaged_tokenizer_is_gemma_like() -> None:
    tokenizer = load_tokenizer(packaged_tokenizer_dir())
    assert isinstance(tokenizer, GemmaTokenizer) and len(tokenizer) == 640
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id) == (0, 1, 2)
    ids = tokenizer("a cat", max_length=8, padding="max_length").input_ids
    assert ids[0] == 2 and ids[-1] == 0 and 1 not in ids  # <bos> first, right padding, no <eos>
    chi = chi_prefix(CHI_PROMPT_LINES)
    alone = tokenizer.convert_ids_to_tokens(tokenizer(chi).input_ids)
    assert alone[-1] == "▁"  # the trailing space of 'User Prompt: ' is its own token ...
    n_chi = len(alone)
    merged = tokenizer.convert_ids_to_tokens(tokenizer(chi + SHORT).input_ids)
    assert merged[: n_chi - 1] == alone[:-1] and merged[n_chi - 1].startswith("▁")  # ... merged with a word
    unmerged = tokenizer.convert_ids_to_tokens(tokenizer(chi + UNMERGED).input_ids)
    assert unmerged[:n_chi] == alone  # ... or not
    assert tokenizer.decode(tokenizer("héllo 🙂").input_ids, skip_special_tokens=True) == "héllo 🙂"


@pytest.mark.parametrize("prompt", [SHORT, UNMERGED, LONG])
def test_positive_prompt(
    prompt: str, encoder: TextEncoder, references: dict[str, torch.nn.Module], te_config: TextEncoderConfig
) -> None:
    tokenizer = encoder.tokenizer
    chi = chi_prefix(CHI_PROMPT_LINES)
    n_chi = len(tokenizer(chi).input_ids)
    max_length = n_chi + L - 2
    n_tokens = len(tokenizer(chi + prompt).input_ids)  # unpadded, untruncated
    out = encoder.encode_prompt(prompt)
    assert out.embeds.shape == (1, 1, L, 64) and out.embeds.dtype == torch.float32
    assert out.mask.shape == (1, L) and out.mask.dtype == torch.int64

    # Mask: BOS, then positions n_chi-1 ... of the padded sequence (real tokens, then pads).
    kept_real = min(n_tokens, max_length) - (n_chi - 1)
    assert out.mask[0].tolist() == [1] + [1] * kept_real + [0] * (L - 1 - kept_real)
    if prompt == LONG:
        assert n_tokens > max_length and out.mask.all()  # truncated at the tail

    # Embeddings: BOS row + the last L-1 rows of a direct eager no-softcap forward.
    hidden = _reference(references["no_softcap"], tokenizer, chi + prompt, max_length)
    expected = torch.cat([hidden[:, :1], hidden[:, max_length - (L - 1) :]], dim=1)
    torch.testing.assert_close(out.embeds[:, 0], expected, rtol=1e-4, atol=1e-4)
    capped = _reference(references["softcap"], tokenizer, chi + prompt, max_length)
    capped = torch.cat([capped[:, :1], capped[:, max_length - (L - 1) :]], dim=1)
    assert (out.embeds[:, 0] - capped).abs().max() > 0.1  # the softcap would change the embeddings


def test_empty_negative_prompt(encoder: TextEncoder, references: dict[str, torch.nn.Module]) -> None:
    out = encoder.encode_negative("")
    assert out.embeds.shape == (1, 1, L, 64) and out.mask.shape == (1, L)
    assert out.mask[0].tolist() == [1] + [0] * (L - 1)
    expected = _reference(references["no_softcap"], encoder.tokenizer, "", L)
    torch.testing.assert_close(out.embeds[:, 0], expected, rtol=1e-4, atol=1e-4)


def test_negative_prompt_is_not_stripped_or_prefixed(
    encoder: TextEncoder, references: dict[str, torch.nn.Module]
) -> None:
    text = " jitter, ghosting "
    out = encoder.encode_negative(text)
    n_tokens = len(encoder.tokenizer(text).input_ids)
    assert int(out.mask.sum()) == n_tokens
    expected = _reference(references["no_softcap"], encoder.tokenizer, text, L)
    torch.testing.assert_close(out.embeds[:, 0], expected, rtol=1e-4, atol=1e-4)


def test_cache_offload_and_free(model_dir: Path, te_config: TextEncoderConfig) -> None:
    encoder = TextEncoder.from_pretrained(te_config, model_dir, dtype=torch.float32)
    first = encoder.encode_prompt(SHORT)
    assert encoder.encode_prompt(SHORT) is first
    encoder.offload("cpu")
    assert not encoder.is_cached(SHORT, "")
    negative = encoder.encode_negative("")
    assert encoder.is_cached(SHORT, "") and not encoder.is_cached(SHORT, "blurry")
    encoder.free()
    assert encoder.encode_prompt(SHORT) is first and encoder.encode_negative("") is negative
    with pytest.raises(TextEncoderError, match="freed"):
        encoder.encode_prompt("something new")


def test_bf16_release_dtypes(te_config: TextEncoderConfig) -> None:
    """bf16 model: positive prompt under autocast with a float32 result, negative in plain bf16."""
    encoder = TextEncoder.from_config(te_config, dtype=torch.bfloat16)
    positive, negative = encoder.encode_prompt(SHORT), encoder.encode_negative("")
    assert positive.embeds.dtype == torch.float32 and negative.embeds.dtype == torch.bfloat16
    # the same computations written out: autocast for the positive prompt, plain bf16 for the negative
    chi = chi_prefix(te_config.chi_prompt)
    tok = encoder.tokenizer
    ids = tok(chi + SHORT, max_length=chi_max_length(tok, chi, L), padding="max_length", truncation=True,
              return_tensors="pt")  # fmt: skip
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = encoder.model(ids.input_ids, ids.attention_mask)[0].float()
    assert torch.equal(positive.embeds, hidden[:, chi_select_index(L)][:, None])
    neg = tok("", max_length=L, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        plain = encoder.model(neg.input_ids, neg.attention_mask)[0]
    assert torch.equal(negative.embeds, plain[:, None])


def test_random_weights_are_seeded(te_config: TextEncoderConfig) -> None:
    state = torch.random.get_rng_state()
    a = TextEncoder.from_config(te_config, seed=3).encode_prompt(SHORT).embeds
    b = TextEncoder.from_config(te_config, seed=3).encode_prompt(SHORT).embeds
    c = TextEncoder.from_config(te_config, seed=4).encode_prompt(SHORT).embeds
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched


def test_full_size_random_architecture() -> None:
    """No `architecture`: transformers' Gemma2Config defaults (the 2B model), built on the meta device."""
    encoder = TextEncoder.from_config(TextEncoderConfig(), device="meta")
    config = encoder.model.config
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (2304, 26, 256000)
    assert config.attn_logit_softcapping == 50.0
    assert config._attn_implementation == "sana_no_softcap"


def test_hidden_size_must_match_caption_channels(te_config: TextEncoderConfig) -> None:
    with pytest.raises(ValueError, match="caption_channels"):
        TextEncoder.from_config(dataclasses.replace(te_config, caption_channels=32))


@pytest.mark.parametrize("source", ["hf://owner/gemma", "owner/gemma", "hf://owner/gemma@v1"])
def test_hub_source(
    source: str,
    model_dir: Path,
    te_config: TextEncoderConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The folder comes out of a fake hub cache (HF_HUB_OFFLINE=1), at the default branch or a tag."""
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    fake_hub_cache(tmp_path / "hub", "owner/gemma", files, refs=("main", "v1"))
    use_cache(monkeypatch, tmp_path / "hub", offline=True)
    encoder = TextEncoder.from_pretrained(te_config, source, dtype=torch.float32)
    assert encoder.model.config.hidden_size == 64
    with pytest.raises(HubError) as err:
        TextEncoder.from_pretrained(te_config, "hf://owner/gemma@v2", dtype=torch.float32)
    assert "hf download owner/gemma --include '*.json'" in str(err.value) and "--revision v2" in str(
        err.value
    )
    assert "HF_HUB_OFFLINE=1" in str(err.value)
