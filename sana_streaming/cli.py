"""Command line: `sana-streaming [edit] [flags]` (no subcommand means `edit`), `convert`, `bench`.

Exit codes: 0 done; 2 usage errors (bad values or combinations, an existing output without
`--overwrite`); 1 problems found while running (missing or corrupt video, bad checkpoint, offline hub,
out of memory); 130 on Ctrl-C. Each error is one line on stderr, and no output file is left behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from sana_streaming.checkpoint import CheckpointError, convert_checkpoint
from sana_streaming.config import MODE_SAMPLERS, ConfigError, resolve_config_path

# Source: NVlabs/Sana, docs/sana_streaming.md (the release's demo edits).
DEMO_SOURCE = "hf://Efficient-Large-Model/SANA-Streaming/source"
DEMOS: dict[str, tuple[str, str]] = {
    "long_streaming": (
        f"{DEMO_SOURCE}/09_style_transfer_source.mp4",
        "Transform the entire scene into a breathtaking Sci-Fi Art digital painting. Re-render the "
        "background as an out-of-focus futuristic cityscape with glowing holographic bokeh and sleek "
        "technological structures. Re-imagine the subject in a highly detailed, futuristic illustration "
        "style, giving her skin a flawless, subtly luminescent quality. Keep her exact features, pose, "
        "and emotional expression intact, while rendering her hair, clothing, and phone with advanced, "
        "sleek synthetic textures. Bathe the composition in atmospheric neon blues, cool cyans, and deep"
        " purples to reflect a highly advanced civilization.",
    ),
    "bidirectional_short": (
        f"{DEMO_SOURCE}/00_local_editing_source.mp4",
        "Remove the thick, textured gold hoop earrings from the woman's ears. Carefully reconstruct the "
        "exposed earlobes to match her natural skin tone and texture. Ensure the lighting and soft shadows "
        "on the newly bare ears blend seamlessly with the rest of her face, leaving no trace or reflection "
        "of the metallic jewelry behind.",
    ),
}
SUBCOMMANDS = ("edit", "convert", "bench")


class UsageError(ValueError):
    """Bad flag values or combinations (exit 2)."""


def _truthy(text: str) -> bool:
    """The release's `--sink_token` parsing: 1/true/yes/y (any case) are True, anything else False."""
    return text.strip().lower() in ("1", "true", "yes", "y")


def _check_x264_preset(preset: str) -> None:
    """A known x264 preset (checked after parsing: the list lives beside PyAV, loaded only for a run)."""
    from sana_streaming.video.writer import X264_PRESETS

    if preset not in X264_PRESETS:
        raise UsageError(f"--x264_preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")


def _num_frames(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    """The release's flags (pipeline.md §1.1) plus ours; mode-dependent defaults are filled later."""
    add = parser.add_argument
    add("--mode", choices=sorted(MODE_SAMPLERS), default="long_streaming")
    add("--config", help="YAML config (default: the mode's release config)")
    add("--model_path", help="DiT checkpoint, local or hf:// (default: the mode's released weights)")
    add("--prompt", help="edit instruction (default: the release demo's prompt)")
    add("--video_path", help="source video: a file, hf://, a URL, pipe:N or - for stdin (default: the demo)")
    add("--output_dir", default="outputs")
    add("--output_name", help="default: <video stem>_<mode>.mp4")
    add("--num_frames", type=_num_frames, help="frames to edit, floored to 8k+1, or 'all' (mode default)")
    add("--height", type=int, default=704)
    add("--width", type=int, default=1280)
    add("--fps", type=float, help="output frame rate (default: the source's; the release fixes 16)")
    add("--step", type=int, help="sampling steps (mode default: 50 / 4)")
    add("--cfg_scale", type=float, help="classifier-free guidance (mode default: 6.0 / 1.0)")
    add("--flow_shift", type=float)
    add("--seed", type=int, default=0)
    add("--negative_prompt")
    add("--motion_score", type=int)
    add("--num_cached_blocks", type=int, default=2)
    add("--sink_token", default="true", help="1/true/yes/y keep the sink chunk; anything else drops it")
    add(
        "--save_latent",
        action="store_true",
        help="also save [noise, source, result] latents as <name>_latent.pt",
    )
    add(
        "--input_latent_path",
        help="debug: a --save_latent file whose noise and source latents replace the video",
    )
    add(
        "--input_text_embed_path", help="debug: a dict of prompt/negative embeds and masks replacing the text"
    )
    add("--random_weights", action="store_true", help="random weights, for smoke runs and benchmarks")
    add("--overwrite", action="store_true", help="replace an existing output file")
    add("--no_audio", action="store_true", help="do not copy the source audio")
    add(
        "--x264_preset",
        default="medium",
        help="x264 speed against file size at the release's crf 25: medium (the release's), or faster ones "
        "for live use (veryfast, superfast, ultrafast) and slower ones for smaller files",
    )
    add("--decode", choices=["release_tiles", "exact"], help="streaming VAE decode (default: release_tiles)")
    add("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    add("--strict", action="store_true", help="unexpected checkpoint keys are an error")
    add("--dry_run", action="store_true", help="resolve every path and default, load nothing large")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-streaming", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    edit = sub.add_parser("edit", help="edit a video from a text instruction (the default subcommand)")
    add_edit_arguments(edit)
    edit.set_defaults(func=_edit)
    convert = sub.add_parser(
        "convert",
        help="convert a .pth/.pt DiT checkpoint to .safetensors (weights-only load; stored dtypes kept)",
    )
    convert.add_argument("input", help="checkpoint to read (.pth, .pt or .safetensors)")
    convert.add_argument("output", help="file to write (.safetensors)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    convert.set_defaults(func=_convert)
    bench = sub.add_parser("bench", help="time a whole edit of a synthetic clip (random weights by default)")
    from sana_streaming.bench import add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)
    return parser


def _bench(args: argparse.Namespace) -> int:
    from sana_streaming.bench import run_bench

    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    _check_x264_preset(args.x264_preset)
    shortest = 25 if args.mode == "long_streaming" else 1
    for flag, value in (("--num_frames", args.num_frames), ("--warmup_frames", args.warmup_frames)):
        if value is not None and value < shortest:
            raise UsageError(f"{flag} must be at least {shortest} in {args.mode}, got {value}")
    return run_bench(args)


def _convert(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise UsageError(f"the output must end in .safetensors: {output}")
    if output.exists() and not args.overwrite:
        raise UsageError(f"{output} exists (use --overwrite to replace it)")
    count = convert_checkpoint(args.input, output, overwrite=args.overwrite)
    print(f"Wrote {count} tensors to {args.output}")
    return 0


@dataclass
class EditPlan:
    """Every path and setting of one edit, resolved from the flags and the mode's defaults."""

    mode: str
    config: str
    model_path: str | None  # None: random weights
    video_path: str
    prompt: str
    height: int
    width: int
    num_frames: int | None  # None: the whole source
    output: Path
    latent_output: Path | None
    input_latent_path: str | None
    input_text_embed_path: str | None
    steps: int | None
    cfg_scale: float
    seed: int
    decode: str

    def describe(self) -> list[str]:
        """`key: value` lines for `--dry_run`."""
        return [f"{k}: {'all' if k == 'num_frames' and v is None else v}" for k, v in vars(self).items()]


def resolve_edit_plan(args: argparse.Namespace) -> EditPlan:
    """Fill the mode's defaults and validate values; raises `UsageError`."""
    from sana_streaming.pipeline import MODE_DEFAULTS

    defaults = MODE_DEFAULTS[args.mode]
    demo_video, demo_prompt = DEMOS[args.mode]
    size = {}
    for name in ("height", "width"):
        value = getattr(args, name)
        if value < 32:
            raise UsageError(f"--{name} must be at least 32, got {value}")
        if value % 32:
            print(f"note: --{name} {value} floored to {value // 32 * 32} (a multiple of 32)", file=sys.stderr)
        size[name] = value // 32 * 32
    num_frames = defaults["num_frames"] if args.num_frames is None else args.num_frames
    if num_frames == "all":
        num_frames = None
    if num_frames is not None:
        if num_frames <= 0:
            raise UsageError(f"--num_frames must be positive, got {num_frames}")
        floored = (num_frames - 1) // 8 * 8 + 1
        if floored != num_frames:
            print(f"note: --num_frames {num_frames} floored to {floored} (8k+1)", file=sys.stderr)
        num_frames = floored
        if args.mode == "long_streaming" and num_frames < 25:
            raise UsageError(f"long_streaming needs at least 25 frames, got {num_frames}")
    if args.step is not None and args.step <= 0:
        raise UsageError(f"--step must be positive, got {args.step}")
    cfg = MODE_SAMPLERS[args.mode].cfg_scale if args.cfg_scale is None else args.cfg_scale
    if cfg < 1:
        raise UsageError(f"--cfg_scale must be >= 1, got {cfg}")
    if args.mode == "long_streaming" and cfg != 1:
        raise UsageError(
            "--cfg_scale must be 1 in long_streaming (the release's streaming sampler has no CFG)"
        )
    if args.fps is not None and args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    _check_x264_preset(args.x264_preset)
    if args.sink_token.strip().lower() not in ("1", "true", "yes", "y", "0", "false", "no", "n"):
        raise UsageError(f"--sink_token must be true/false (1/0, yes/no, y/n), got {args.sink_token!r}")
    video_path = args.video_path or demo_video
    stem = "stdin" if video_path == "-" else Path(video_path).stem
    output = Path(args.output_dir) / (args.output_name or f"{stem}_{args.mode}.mp4")
    latent_output = output.with_name(f"{output.stem}_latent.pt") if args.save_latent else None
    for path in (output, latent_output):
        if path is not None and path.exists() and not args.overwrite:
            raise UsageError(f"{path} exists (use --overwrite to replace it)")
    try:
        config = str(resolve_config_path(args.config or str(defaults["config"])))
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    return EditPlan(
        mode=args.mode,
        config=config,
        model_path=None if args.random_weights else (args.model_path or str(defaults["model_path"])),
        video_path=video_path,
        prompt=args.prompt if args.prompt is not None else demo_prompt,
        height=size["height"],
        width=size["width"],
        num_frames=num_frames,
        output=output.resolve(),
        latent_output=latent_output.resolve() if latent_output else None,
        input_latent_path=args.input_latent_path,
        input_text_embed_path=args.input_text_embed_path,
        steps=args.step,
        cfg_scale=cfg,
        seed=args.seed,
        decode=args.decode or "release_tiles",
    )


def _edit(args: argparse.Namespace) -> int:
    plan = resolve_edit_plan(args)
    from sana_streaming.hub import is_hub_uri, resolve_path

    if args.dry_run:  # the whole plan, then one `hf download` line per missing item and exit 1
        from sana_streaming.config import load_config
        from sana_streaming.downloads import check_needs, edit_needs, report_missing

        needs = edit_needs(
            load_config(plan.config), model_path=plan.model_path, video_path=plan.video_path,
            input_latent_path=plan.input_latent_path, input_text_embed_path=plan.input_text_embed_path,
        )  # fmt: skip
        statuses = check_needs(needs)  # the local cache only, nothing downloaded
        extra = [f"{s.need.key}: {s.shown}" for s in statuses if not hasattr(plan, s.need.key)]
        for status in statuses:
            if hasattr(plan, status.need.key):
                setattr(plan, status.need.key, status.shown)
        print("\n".join([*plan.describe(), *extra]), flush=True)
        report_missing(statuses)
        return 0
    import torch
    from tqdm import tqdm

    from sana_streaming.pipeline import (
        EditOptions,
        SanaStreamingPipeline,
        load_latent_file,
        load_text_embed_file,
    )

    if plan.input_latent_path:  # the release then reads no video
        source = load_latent_file(resolve_path(plan.input_latent_path))
    elif plan.video_path == "-":
        source = sys.stdin.buffer  # a pipe: length unknown, chunked as it arrives
    else:  # local files, URLs and `pipe:` go to the reader as they are; hf:// is fetched first
        source = resolve_path(plan.video_path) if is_hub_uri(plan.video_path) else plan.video_path
    prompts = None
    if plan.input_text_embed_path:
        prompts = load_text_embed_file(resolve_path(plan.input_text_embed_path))
    pipe = SanaStreamingPipeline.from_config(
        plan.config, plan.mode, model_path=plan.model_path, random_weights=plan.model_path is None,
        device=args.device, decode=plan.decode, strict=args.strict, load_text_encoder=prompts is None,
    )  # fmt: skip
    options = EditOptions(
        prompt=plan.prompt, negative_prompt=args.negative_prompt, num_frames=plan.num_frames,
        height=plan.height, width=plan.width, steps=plan.steps, cfg_scale=plan.cfg_scale,
        flow_shift=args.flow_shift, seed=plan.seed, motion_score=args.motion_score,
        num_cached_blocks=args.num_cached_blocks, sink_token=_truthy(args.sink_token),
    )  # fmt: skip
    bar = tqdm(desc=plan.mode, unit="chunk", file=sys.stderr, disable=None)

    def progress(stage: str, done: int, total: int | None) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(stage)
        bar.refresh()

    try:
        with torch.inference_mode():
            result = pipe.edit(
                source, plan.output, options, fps=args.fps, audio=not args.no_audio, overwrite=args.overwrite,
                preset=args.x264_preset, prompts=prompts, latent_path=plan.latent_output, progress=progress,
            )  # fmt: skip
    finally:
        bar.close()
    print(f"Saved video to {result.path}")
    return 0


def _show_notices() -> None:
    """Our INFO/WARNING log records (decode look-ahead, dropped audio, ...) as `note:` lines on stderr."""
    logger = logging.getLogger("sana_streaming")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("note: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    _show_notices()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv.insert(0, "edit")  # no subcommand means `edit`
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"sana-streaming: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sana-streaming: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line per failure found while running, no traceback
        if isinstance(exc, _runtime_errors()):
            print(f"sana-streaming: error: {exc}", file=sys.stderr)
            return 1
        raise


def _runtime_errors() -> tuple[type[BaseException], ...]:
    """Failures found while running that get one line and exit 1 (imported lazily: torch is heavy)."""
    import torch

    from sana_streaming.hub import HubError
    from sana_streaming.models.text_encoder import TextEncoderError
    from sana_streaming.models.vae import VAELoadError
    from sana_streaming.pipeline import EditError
    from sana_streaming.video.reader import VideoReadError
    from sana_streaming.video.writer import VideoWriteError

    return (CheckpointError, ConfigError, EditError, HubError, TextEncoderError, VAELoadError,
            VideoReadError, VideoWriteError, torch.OutOfMemoryError)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
