"""Typed configuration: one dataclass per component, loaded from the release's YAML files.

The YAML sections (`model`, `vae`, `text_encoder`, `scheduler`) keep the release's key names so the
release's config files load unchanged. `DiTConfig` is the *resolved* model description (explicit
dimensions), built from the `model` section through `MODEL_TABLE`, the way the release's registry
functions fix the dimensions of a named model.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from sana_streaming.hub import HubError, is_hub_uri, resolve_path

logger = logging.getLogger(__name__)

Variant = Literal["bidirectional", "streaming"]

# Registry of named models -> explicit dimensions.
# Source: NVlabs/Sana (fork meefs/Sana @ 5498e5b), diffusion/model/nets/sana_multi_scale_video_v2v.py,
# registry function SanaMSVideoV2V_2000M_P1_D20.
MODEL_TABLE: dict[str, dict[str, Any]] = {
    "SanaMSVideoV2V_2000M_P1_D20": {
        "depth": 20,
        "hidden_size": 2240,
        "patch_size": (1, 1, 1),
        "num_heads": 20,
    },
}

# Text encoder name -> hidden size (DiT `caption_channels`) and hub repository.
# Source: NVlabs/Sana, diffusion/model/builder.py (get_tokenizer_and_text_encoder) and
# diffusion/utils/config.py (TextEncoderConfig default caption_channels=2304).
TEXT_ENCODER_TABLE: dict[str, dict[str, Any]] = {
    "gemma-2-2b-it": {"caption_channels": 2304, "repo": "Efficient-Large-Model/gemma-2-2b-it"},
}

# Attention class names of the release -> our variant.
_VARIANT_BY_ATTN_TYPE: dict[str, Variant] = {
    "V2VBiGDNAttention": "bidirectional",
    "V2VStateCachedBiGDNAttention": "streaming",
}
_EXPECTED_TYPES: dict[Variant, dict[str, str]] = {
    "bidirectional": {
        "softmax_attn_type": "V2VGatedSoftmaxAttention",
        "ffn_type": "GLUMBConvTemp",
        "pos_embed_type": "wan_rope",
    },
    "streaming": {
        "softmax_attn_type": "V2VAfterRoPEGatedSoftmaxAttention",
        "ffn_type": "CachedGLUMBConvTemp",
        "pos_embed_type": "casual_wan_rope",  # sic: the release's spelling
    },
}

PACKAGED_CONFIG_DIR = "configs/sana_streaming"


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


@dataclass(frozen=True)
class ModelConfig:
    """The YAML `model:` section (release keys). Either `model` names an entry of `MODEL_TABLE`,
    or `hidden_size`, `depth`, `num_heads` and `patch_size` are given explicitly."""

    model: str | None = None
    image_size: int = 720
    aspect_ratio_type: str = "ASPECT_RATIO_VIDEO_720_MS_DIV32"
    mixed_precision: str = "bf16"
    fp32_attention: bool = True
    multi_scale: bool = True
    attn_type: str = "V2VStateCachedBiGDNAttention"
    additional_inchannels: int = 128
    softmax_ratio: float = 0.25
    softmax_layer_indices: tuple[int, ...] | None = None
    softmax_attn_type: str = "V2VAfterRoPEGatedSoftmaxAttention"
    linear_head_dim: int = 112
    ffn_type: str = "CachedGLUMBConvTemp"
    t_kernel_size: int = 3
    mlp_acts: tuple[str | None, ...] = ("silu", "silu", None)
    mlp_ratio: float = 3.0
    use_pe: bool = True
    pos_embed_type: str = "casual_wan_rope"
    qk_norm: bool = True
    cross_norm: bool = True
    class_dropout_prob: float = 0.1
    # Explicit dimensions (our tiny configs); the release gets them from MODEL_TABLE.
    hidden_size: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    patch_size: tuple[int, int, int] | None = None


VAEDecode = Literal["release_tiles", "exact", "causal"]
VAE_DECODES: tuple[str, ...] = get_args(VAEDecode)


@dataclass(frozen=True)
class VAEConfig:
    """The YAML `vae:` section (release keys), plus `architecture` for random-weight test VAEs."""

    vae_type: str = "LTX2VAE_chunk_tile"
    vae_pretrained: str = "Lightricks/LTX-2"
    weight_dtype: str = "bfloat16"
    vae_latent_dim: int = 128
    vae_downsample_rate: int = 32
    vae_stride: tuple[int, int, int] = (8, 32, 32)
    use_framewise_encoding: bool = True
    use_framewise_decoding: bool = True
    tile_sample_stride_num_frames: int = 64
    tile_sample_min_num_frames: int = 96
    # diffusers `AutoencoderKLLTX2Video` constructor kwargs for a random-weight VAE (tiny configs).
    architecture: dict[str, Any] | None = None
    # Streaming decode (ours, not a release key; docs/vae.md): "release_tiles" reproduces the release's
    # temporal-tile decode (default, ~3 latent frames of lag); "exact" equals the untiled whole-clip decode
    # with a look-ahead of 22 latent frames at the released depth, about a third of the tile mode's decoder
    # time; "causal" streams the decoder of `causal_vae_pretrained`, one pass per frame and no look-ahead.
    decode: VAEDecode = "release_tiles"
    # The causal-decoder VAE of `decode: causal` (ours, not a release key): the folder ltx2_causal_vae_0516/
    # of the SANA-Streaming hub repo, which the release's V2V script never loads. Such a folder holds
    # config.json and diffusion_pytorch_model.safetensors with no `vae` subfolder (the release's
    # `LTX2VAE_diffusers_causal` branch of `get_vae`, meefs/Sana @ 5498e5b, diffusion/model/builder.py).
    causal_vae_pretrained: str = "hf://Efficient-Large-Model/SANA-Streaming/ltx2_causal_vae_0516"

    def __post_init__(self) -> None:
        if self.decode not in VAE_DECODES:
            raise ConfigError(f"vae.decode must be one of {', '.join(VAE_DECODES)}, got {self.decode!r}")


@dataclass(frozen=True)
class TextEncoderConfig:
    """The YAML `text_encoder:` section (release keys), plus `architecture` for random-weight tests."""

    text_encoder_name: str = "gemma-2-2b-it"
    y_norm: bool = True
    y_norm_scale_factor: float = 0.01
    model_max_length: int = 300
    chi_prompt: tuple[str, ...] = ()
    # Hidden size of the encoder = DiT `caption_channels`; None means "from TEXT_ENCODER_TABLE".
    caption_channels: int | None = None
    # transformers `Gemma2Config` kwargs for a random-weight encoder (tiny configs); None builds
    # `Gemma2Config()`'s defaults, the 2B model. Random encoders use the packaged tokenizer.
    architecture: dict[str, Any] | None = None

    @property
    def resolved_caption_channels(self) -> int:
        if self.caption_channels is not None:
            return self.caption_channels
        if self.text_encoder_name not in TEXT_ENCODER_TABLE:
            raise ConfigError(
                f"unknown text encoder {self.text_encoder_name!r}: set text_encoder.caption_channels"
            )
        return TEXT_ENCODER_TABLE[self.text_encoder_name]["caption_channels"]


@dataclass(frozen=True)
class SchedulerConfig:
    """The YAML `scheduler:` section (release keys)."""

    predict_flow_v: bool = True
    noise_schedule: str = "linear_flow"
    pred_sigma: bool = False
    flow_shift: float = 3.0
    inference_flow_shift: float | None = 8.0
    vis_sampler: str = "sana_streaming_sampler"

    @property
    def sampling_shift(self) -> float:
        """The flow shift the samplers use: `inference_flow_shift`, else `flow_shift`."""
        return self.flow_shift if self.inference_flow_shift is None else self.inference_flow_shift


Mode = Literal["bidirectional_short", "long_streaming"]


# How the DiT's forwards run: eager, replayed from CUDA graphs, or graphs with fused kernels
# (`models.dit.graphs.resolve_compile` picks the default per device).
CompileMode = Literal["none", "graph", "max"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)


@dataclass(frozen=True)
class SamplerConfig:
    """Run-time sampling settings of one mode (`ModePreset.sampler`, with an edit's overrides)."""

    mode: Mode
    steps: int
    cfg_scale: float
    flow_shift: float | None = None  # None: scheduler.inference_flow_shift, else scheduler.flow_shift
    base_chunk_frames: int = 3  # 24 // vae_stride[0]: latent frames per streaming chunk
    num_cached_blocks: int = 2
    sink_token: bool = True
    compile: CompileMode | None = None  # the DiT's forwards; None: the fastest on the device


# Source: NVlabs/Sana, docs/sana_streaming.md (the release's demo edits).
DEMO_SOURCE = "hf://Efficient-Large-Model/SANA-Streaming/source"
RELEASE_HEIGHT, RELEASE_WIDTH = 704, 1280  # the release CLI's default frame size (pixels)
RELEASE_FPS = Fraction(16)  # the release writes every output at 16 fps
# Our default preset, chosen by measurement (benchmarks/RESULTS.md, `x264_presets.py` on the H200's
# 16-core host, 1280x704): superfast writes 258 FPS against medium's 84, so the writer stays at least
# twice as fast as the fastest edit even beside the pipeline's threads, for about 10 % larger files at
# the same crf; `preset="medium"` (`--x264_preset medium`) writes release-like files.
DEFAULT_X264_PRESET = "superfast"
ENCODERS = ("auto", "x264", "nvenc")  # `--encoder`: auto takes NVENC where it opens, else x264
CHUNK_VIDEO_FRAMES = 24  # a streaming chunk: 24 video frames = 24 // vae_stride[0] latent frames


@dataclass(frozen=True)
class ModePreset:
    """Everything that differs between the two modes, in one place: the release's per-mode CLI
    defaults (config, weights, frames, steps, guidance, motion score, negative prompt), its demo edit,
    the frame size and whether the clip is streamed in chunks."""

    mode: Mode
    config: str
    model_path: str
    num_frames: int
    steps: int
    cfg_scale: float
    motion_score: int
    negative_prompt: str
    demo_video: str
    demo_prompt: str
    chunked: bool  # True: chunks of CHUNK_VIDEO_FRAMES; False: the whole clip is one chunk
    height: int = RELEASE_HEIGHT
    width: int = RELEASE_WIDTH

    def sampler(self, vae: VAEConfig | None = None) -> SamplerConfig:
        """The mode's sampler defaults; the chunk's latent frames from the VAE's temporal stride."""
        stride = (vae or VAEConfig()).vae_stride[0]
        return SamplerConfig(
            self.mode, self.steps, self.cfg_scale, base_chunk_frames=CHUNK_VIDEO_FRAMES // stride
        )

    def shortest_source(self, vae: VAEConfig | None = None) -> int:
        """The fewest video frames the mode edits: streaming needs more than one chunk of latents
        (25 frames at the released strides), bidirectional one latent frame."""
        stride = (vae or VAEConfig()).vae_stride[0]
        return (CHUNK_VIDEO_FRAMES // stride) * stride + 1 if self.chunked else 1


# Source: NVlabs/Sana, inference_video_scripts/v2v/inference_sana_streaming.py (per-mode defaults) and
# docs/sana_streaming.md (the demos and their prompts).
MODE_PRESETS: dict[str, ModePreset] = {
    "bidirectional_short": ModePreset(
        mode="bidirectional_short",
        config="configs/sana_streaming/sana_streaming_bidirectional_2b_720p.yaml",
        model_path="hf://Efficient-Large-Model/SANA-Streaming_bidirectional/dit/sana_bidirectional_short.pth",
        num_frames=81,
        steps=50,
        cfg_scale=6.0,
        motion_score=10,
        negative_prompt=(
            "A chaotic sequence with misshapen, deformed limbs in heavy motion blur, sudden disappearance, "
            "jump cuts, jerky movements, rapid shot changes, frames out of sync, inconsistent character "
            "shapes, temporal artifacts, jitter, and ghosting effects, creating a disorienting visual "
            "experience."
        ),
        demo_video=f"{DEMO_SOURCE}/00_local_editing_source.mp4",
        demo_prompt=(
            "Remove the thick, textured gold hoop earrings from the woman's ears. Carefully reconstruct the "
            "exposed earlobes to match her natural skin tone and texture. Ensure the lighting and soft "
            "shadows on the newly bare ears blend seamlessly with the rest of her face, leaving no trace or "
            "reflection of the metallic jewelry behind."
        ),
        chunked=False,
    ),
    "long_streaming": ModePreset(
        mode="long_streaming",
        config="configs/sana_streaming/sana_streaming_2b_720p.yaml",
        model_path="hf://Efficient-Large-Model/SANA-Streaming/dit/sana_streaming_ar.pth",
        num_frames=969,
        steps=4,
        cfg_scale=1.0,
        motion_score=0,
        negative_prompt="",
        demo_video=f"{DEMO_SOURCE}/09_style_transfer_source.mp4",
        demo_prompt=(
            "Transform the entire scene into a breathtaking Sci-Fi Art digital painting. Re-render the "
            "background as an out-of-focus futuristic cityscape with glowing holographic bokeh and sleek "
            "technological structures. Re-imagine the subject in a highly detailed, futuristic illustration "
            "style, giving her skin a flawless, subtly luminescent quality. Keep her exact features, pose, "
            "and emotional expression intact, while rendering her hair, clothing, and phone with advanced, "
            "sleek synthetic textures. Bathe the composition in atmospheric neon blues, cool cyans, and deep"
            " purples to reflect a highly advanced civilization."
        ),
        chunked=True,
    ),
}


@dataclass(frozen=True)
class DiTConfig:
    """Resolved DiT description: every dimension explicit. Build it with `SanaStreamingConfig.dit`."""

    variant: Variant
    hidden_size: int
    depth: int
    num_heads: int
    linear_head_dim: int
    mlp_ratio: float
    in_channels: int
    additional_inchannels: int
    out_channels: int
    caption_channels: int
    model_max_length: int
    patch_size: tuple[int, int, int]
    t_kernel_size: int
    softmax_layer_indices: tuple[int, ...]
    input_size: int

    @property
    def linear_heads(self) -> int:
        return self.hidden_size // self.linear_head_dim

    @property
    def ffn_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def __post_init__(self) -> None:
        if self.hidden_size % self.linear_head_dim:
            raise ConfigError(f"hidden_size {self.hidden_size} not divisible by {self.linear_head_dim}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.patch_size != (1, 1, 1):
            raise ConfigError(f"only patch_size (1, 1, 1) is supported, got {self.patch_size}")
        bad = [i for i in self.softmax_layer_indices if not 0 <= i < self.depth]
        if bad:
            raise ConfigError(f"softmax layer indices {bad} outside depth {self.depth}")


def softmax_layer_indices(depth: int, softmax_ratio: float) -> tuple[int, ...]:
    """Blocks that use softmax attention; the rest use GDN.

    Same rule as the release's `get_softmax_layer_indices` (its docstring's [4, 9, 14, 19] is wrong;
    depth 20, ratio 0.25 gives [3, 7, 11, 15, 19])."""
    count = max(1, int(depth * softmax_ratio))
    step = depth / count
    return tuple(int((k + 1) * step) - 1 for k in range(count))


@dataclass(frozen=True)
class SanaStreamingConfig:
    """A whole config file: the release's four sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    source: str | None = None

    @property
    def dit(self) -> DiTConfig:
        return resolve_dit_config(self)

    def with_decode(self, decode: str | None) -> SanaStreamingConfig:
        """This config with the streaming VAE decode `decode` (None: unchanged)."""
        if decode is None:
            return self
        return dataclasses.replace(self, vae=dataclasses.replace(self.vae, decode=decode))


def _model_dims(m: ModelConfig) -> dict[str, Any]:
    """hidden_size, depth, num_heads and patch_size: the named model's, each overridden where given."""
    dims: dict[str, Any] = {}
    if m.model is not None:
        if m.model not in MODEL_TABLE:
            raise ConfigError(f"unknown model {m.model!r}; known: {sorted(MODEL_TABLE)}")
        dims.update(MODEL_TABLE[m.model])
    for key in ("hidden_size", "depth", "num_heads", "patch_size"):
        if getattr(m, key) is not None:
            dims[key] = getattr(m, key)
    missing = [k for k in ("hidden_size", "depth", "num_heads", "patch_size") if k not in dims]
    if missing:
        raise ConfigError(f"model section needs `model: <name>` or explicit {missing}")
    return dims


def _model_variant(config: SanaStreamingConfig) -> Variant:
    """The DiT variant of the `model` section's attention types; the settings this DiT cannot vary
    (activations, positional encoding, the norms) are checked to have the one value it runs with."""
    m = config.model
    if m.attn_type not in _VARIANT_BY_ATTN_TYPE:
        raise ConfigError(f"unknown attn_type {m.attn_type!r}; known: {sorted(_VARIANT_BY_ATTN_TYPE)}")
    variant = _VARIANT_BY_ATTN_TYPE[m.attn_type]
    for key, expected in _EXPECTED_TYPES[variant].items():
        if getattr(m, key) != expected:
            raise ConfigError(f"{m.attn_type} needs {key}={expected!r}, got {getattr(m, key)!r}")
    if tuple(m.mlp_acts) != ("silu", "silu", None):
        raise ConfigError(f"only mlp_acts (silu, silu, None) is supported, got {m.mlp_acts}")
    fixed = {
        "use_pe": m.use_pe,
        "qk_norm": m.qk_norm,
        "cross_norm": m.cross_norm,
        "y_norm": config.text_encoder.y_norm,
    }
    off = [name for name, value in fixed.items() if not value]
    if off:  # the model always applies them, as both release configs do
        raise ConfigError(f"the SANA-Streaming DiT needs {off} set to true")
    return variant


def resolve_dit_config(config: SanaStreamingConfig) -> DiTConfig:
    """Map the `model` section (name or explicit dims) to a `DiTConfig`."""
    m = config.model
    dims = _model_dims(m)
    variant = _model_variant(config)
    depth = int(dims["depth"])
    indices = m.softmax_layer_indices
    if indices is None:
        indices = softmax_layer_indices(depth, m.softmax_ratio)
    return DiTConfig(
        variant=variant,
        hidden_size=int(dims["hidden_size"]),
        depth=depth,
        num_heads=int(dims["num_heads"]),
        linear_head_dim=m.linear_head_dim,
        mlp_ratio=m.mlp_ratio,
        in_channels=config.vae.vae_latent_dim,
        additional_inchannels=m.additional_inchannels,
        out_channels=config.vae.vae_latent_dim,  # pred_sigma is False in both release configs
        caption_channels=config.text_encoder.resolved_caption_channels,
        model_max_length=config.text_encoder.model_max_length,
        patch_size=tuple(int(p) for p in dims["patch_size"]),  # type: ignore[arg-type]
        t_kernel_size=m.t_kernel_size,
        softmax_layer_indices=tuple(indices),
        input_size=m.image_size // config.vae.vae_downsample_rate,
    )


def _section(cls: type, raw: Any, name: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"section {name!r} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in section {name!r}: {unknown}")
    values = {}
    for key, value in raw.items():
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


# Release config keys nothing here reads, with the value this implementation always behaves as (the
# release configs' own values; None: any value, the key only matters for training). A config that sets
# another value loads with a warning rather than silently. Source: configs/sana_streaming/*.yaml of the
# release and its inference code (the keys it does not forward at inference).
UNREAD_KEYS: dict[tuple[str, str], object] = {
    ("model", "aspect_ratio_type"): None,  # training buckets
    ("model", "multi_scale"): None,  # training buckets
    ("model", "class_dropout_prob"): None,  # caption dropout in training
    ("model", "mixed_precision"): "bf16",  # bf16 on CUDA (float32 on a CPU)
    ("model", "fp32_attention"): True,  # softmax attention accumulates in float32
    ("vae", "use_framewise_encoding"): True,  # set True by the release's bidirectional tiling anyway
    ("vae", "use_framewise_decoding"): True,
    ("text_encoder", "y_norm_scale_factor"): None,  # only the initial value of a loaded weight
    ("scheduler", "predict_flow_v"): True,
    ("scheduler", "noise_schedule"): "linear_flow",
    ("scheduler", "pred_sigma"): False,
    ("scheduler", "vis_sampler"): None,  # the mode picks the sampler
}


def _warn_unread(config: SanaStreamingConfig) -> None:
    """Warn about every unread key whose value differs from what this implementation does."""
    for (section, key), assumed in UNREAD_KEYS.items():
        value = getattr(getattr(config, section), key)
        if assumed is not None and value != assumed:
            where = f" in {config.source}" if config.source else ""
            logger.warning("%s.%s: %r%s is not used; this implementation always runs as %r",
                           section, key, value, where, assumed)  # fmt: skip


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> SanaStreamingConfig:
    """Build a config from the parsed YAML mapping, rejecting unknown sections and keys."""
    sections = {
        "model": ModelConfig,
        "vae": VAEConfig,
        "text_encoder": TextEncoderConfig,
        "scheduler": SchedulerConfig,
    }
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; expected {sorted(sections)}")
    parts = {name: _section(cls, raw.get(name), name) for name, cls in sections.items()}
    config = SanaStreamingConfig(**parts, source=source)
    _warn_unread(config)
    return config


def packaged_config_names() -> list[str]:
    """Names of the YAML configs shipped inside the package (without `.yaml`)."""
    folder = resources.files("sana_streaming").joinpath(PACKAGED_CONFIG_DIR)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _packaged_path(name: str) -> Path | None:
    stem = Path(name).name.removesuffix(".yaml")
    candidate = resources.files("sana_streaming").joinpath(PACKAGED_CONFIG_DIR, f"{stem}.yaml")
    return Path(str(candidate)) if candidate.is_file() else None


def resolve_config_path(path_or_name: str | Path) -> Path:
    """An existing file or `hf://` URI as given; else, for a bare name or the release's relative form
    `configs/sana_streaming/<name>.yaml`, the packaged config (so the release's defaults work from any
    working directory). Any other missing path is an error, never silently replaced."""
    text = str(path_or_name)
    if is_hub_uri(text):
        try:
            return resolve_path(text, kind="file")
        except HubError as exc:
            raise ConfigError(str(exc)) from exc
    path = Path(text).expanduser()
    if path.is_file():
        return path
    is_name = path.parent in (Path("."), Path(PACKAGED_CONFIG_DIR))
    packaged = _packaged_path(text) if is_name else None
    if packaged is not None:
        return packaged
    raise ConfigError(f"config {text!r} not found; packaged configs: {packaged_config_names()}")


def load_config(path_or_name: str | Path) -> SanaStreamingConfig:
    """Load a YAML config by path or by packaged name (e.g. `sana_streaming_2b_720p`, `tiny_random`)."""
    path = resolve_config_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return config_from_dict(raw, source=str(path))
