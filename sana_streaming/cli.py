"""Command line: `sana-streaming [edit] [flags]` (no subcommand means `edit`), `batch`, `convert`, `bench`.

Exit codes: 0 done; 2 usage errors (bad values or combinations, an existing output without
`--overwrite`); 1 problems found while running (missing or corrupt video, bad checkpoint, offline hub,
out of memory); 130 on Ctrl-C, 143 on SIGTERM. Each error is one line on stderr (`--traceback` shows
where an unexpected one came from), and no output file is left behind.

Heavy modules (torch, diffusers, PyAV) are imported inside `main`, so Ctrl-C during start-up is
handled like Ctrl-C later.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sana_streaming.conditioning import PromptPair
    from sana_streaming.config import VAEConfig
    from sana_streaming.debug_files import SourceLatents
    from sana_streaming.downloads import Need
    from sana_streaming.options import EditOptions, EditResult
    from sana_streaming.pipeline import SanaStreamingPipeline
    from sana_streaming.stages import ProgressEvent, ProgressFn
    from sana_streaming.timing import StageTimer
    from sana_streaming.video.reader import FormattedSource

SUBCOMMANDS = ("edit", "batch", "convert", "bench", "quantize")
STDOUT = "-"  # --output - streams the edit to standard output (`video.writer.STDOUT`)


def is_streamed(output: str | Path) -> bool:
    """`-` or a URL: written as it goes, not a file (`video.writer.streamed_format`)."""
    return isinstance(output, str) and (output == STDOUT or "://" in output)


AddArgument = Callable[..., argparse.Action]  # `add_argument` of a parser or argument group


class UsageError(ValueError):
    """Bad flag values or combinations (exit 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: every clean-up path that handles Ctrl-C runs for it too (exit 143)."""


EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
_TRUE, _FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")


class HelpFormatter(argparse.HelpFormatter):
    """Shows `(default: X)` after every flag whose default is a value (mode-dependent ones say so)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _sink_token(text: str) -> bool:
    """`--sink_token`: 1/true/yes/y or 0/false/no/n, any case (the release reads anything else as false;
    we refuse it)."""
    value = text.strip().lower()
    if value not in (*_TRUE, *_FALSE):
        raise UsageError(f"--sink_token must be true/false (1/0, yes/no, y/n), got {text!r}")
    return value in _TRUE


def _check_x264_preset(preset: str) -> None:
    """A known x264 preset (checked after parsing: the list lives beside PyAV, loaded only for a run)."""
    from sana_streaming.video.writer import X264_PRESETS

    if preset not in X264_PRESETS:
        raise UsageError(f"--x264_preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")


def _check_device(text: str | None) -> None:
    """`--device`: a device type torch knows, and a CUDA device only where one exists."""
    if text is None:
        return
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {text!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise UsageError(f"--device {text}: this machine has {have} (use --device cpu)")
    elif device.type != "cpu":
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {text!r}")


def _num_frames(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    """The release script's flags plus ours, in groups; mode-dependent defaults are filled later."""
    for title, add_group in (
        ("model", _add_model_arguments),
        ("source", _add_source_arguments),
        ("prompt", _add_prompt_arguments),
        ("sampling", _add_sampling_arguments),
        ("output", _add_output_arguments),
    ):
        add_group(parser.add_argument_group(title).add_argument)


def _add_model_arguments(add: AddArgument) -> None:
    """Flags of the model."""
    from sana_streaming.config import MODE_PRESETS, VAE_DECODES

    add(
        "--mode",
        choices=sorted(MODE_PRESETS),
        default="long_streaming",
        help="long_streaming: the chunked streaming editor, any length; bidirectional_short: the "
        "81-frame, 50-step editor with guidance",
    )
    add(
        "--config",
        help="YAML config: a path, hf:// URI or packaged name (default: the mode's release config)",
    )
    add(
        "--model_path",
        help="DiT checkpoint (.pth or .safetensors), local or hf:// (default: the mode's released weights)",
    )
    add("--random_weights", action="store_true", help="random weights, for smoke runs and benchmarks")
    add("--strict", action="store_true", help="unexpected checkpoint keys are an error")
    add(
        "--decode",
        choices=VAE_DECODES,
        default="release_tiles",
        help="streaming VAE decode: release_tiles (the release's temporal tiles, 3 latent frames of lag, "
        "about 4 decoder passes a frame), exact (the untiled decode, 173 frames held back) or causal "
        "(the decoder of the release's causal-decoder VAE ltx2_causal_vae_0516, one pass a frame and no "
        "look-ahead; the V2V release does not use it)",
    )
    add(
        "--precision",
        choices=["bf16", "fp8", "mpq"],
        default="bf16",
        help="the DiT's large GEMMs: bf16 (the release), fp8 (every one W8A8 e4m3) or mpq (FP8 where "
        "the precision plan puts it; fp8 and mpq need a GPU with FP8, sm_89+)",
    )
    add(
        "--precision_plan",
        metavar="FILE",
        help="the plan of --precision mpq, from `sana-streaming quantize` (default: the shipped H200 one)",
    )
    add("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    add(
        "--dry_run", action="store_true", help="print the plan and every missing download, load nothing large"
    )


def _add_source_arguments(add: AddArgument) -> None:
    """Flags of the source video."""
    add("--video_path", help="source video: a file, hf://, a URL, pipe:N or - for stdin (default: the demo)")
    add(
        "--video_format", metavar="FORMAT",
        help="FFmpeg's input format of --video_path, for devices and filter graphs (v4l2 /dev/video0 where "
        "PyAV's FFmpeg has it, x11grab :0.0, lavfi testsrc) or unprobed streams (default: probed)",
    )  # fmt: skip
    add(
        "--num_frames",
        type=_num_frames,
        help="frames to edit, floored to 8k+1, or 'all' (default: 969 / 81 by mode)",
    )
    add(
        "--max_frames",
        type=int,
        help="stop after this many source frames (a live source's end); no error if the source ends sooner",
    )
    add("--duration", type=float, help="stop after this many seconds of the source, at its average rate")
    add(
        "--live_frame_drop",
        choices=["auto", "on", "off"],
        default="auto",
        help="while the edit runs behind a live source, drop its newest 24-frame chunks (counted and "
        "reported) instead of letting a queue grow: auto for network streams and capture devices, on "
        "also for pipes, off never (default: auto)",
    )
    add(
        "--input_latent_path",
        help="debug: a --save_latent file whose noise and source latents replace the video",
    )


def _add_prompt_arguments(add: AddArgument) -> None:
    """Flags of the instruction."""
    add("--prompt", help="edit instruction (default: the release demo's prompt)")
    add("--negative_prompt", help="negative prompt for guidance (default: the mode's: empty / the release's)")
    add("--motion_score", type=int, help="motion score appended to the prompt (default: 0 / 10 by mode)")
    add(
        "--prompt_schedule", metavar="FILE",
        help="long_streaming: a JSON/YAML list of {frame, prompt}; each prompt takes over at the first chunk "
        "starting at or after its video frame",
    )  # fmt: skip
    add(
        "--input_text_embed_path", help="debug: a dict of prompt/negative embeds and masks replacing the text"
    )


def _add_sampling_arguments(add: AddArgument) -> None:
    """Flags of the sampler."""
    from sana_streaming.config import COMPILE_MODES

    add("--step", type=int, help="sampling steps (default: 4 / 50 by mode)")
    add("--cfg_scale", type=float, help="classifier-free guidance, 1 is off (default: 1 / 6 by mode)")
    add("--flow_shift", type=float, help="sampler flow shift (default: the config's inference_flow_shift)")
    add("--seed", type=int, default=0, help="seed of the starting noise")
    add(
        "--compile",
        choices=COMPILE_MODES,
        help="DiT forwards: none (eager), graph (CUDA graphs), max (graphs + fused kernels; compiles for "
        "a few seconds per new chunk shape: it pays off on long and live runs); default: graph on CUDA, "
        "none elsewhere",
    )
    add(
        "--num_cached_blocks",
        type=int,
        default=2,
        help="earlier chunks the softmax window keeps, counting the sink; <= 0 keeps all",
    )
    add(
        "--sink_token",
        default="true",
        help="keep chunk 0 in the softmax window: 1/true/yes/y or 0/false/no/n",
    )


def _add_output_arguments(add: AddArgument) -> None:
    """Flags of the output video."""
    from sana_streaming.config import DEFAULT_X264_PRESET, ENCODERS, RELEASE_HEIGHT, RELEASE_WIDTH

    add("--output_dir", default="outputs", help="folder of the output, created when the output is published")
    add("--output_name", help="file name in --output_dir, .mp4/.mov/.mkv (default: <video stem>_<mode>.mp4)")
    add("--stats", action="store_true", help="print source-to-output latency and stage times at the end")
    add("--stats_json", metavar="FILE", help="also write those statistics, per written batch, as JSON")
    add(
        "--output", metavar="PATH",
        help="the output file itself (instead of --output_dir/--output_name), or where to stream it as it is "
        "edited: - (Matroska on standard output, e.g. `| ffplay -`) or a udp://, srt://, tcp:// (MPEG-TS) "
        "or rtmp:// (FLV) URL",
    )  # fmt: skip
    add(
        "--height",
        type=int,
        default=RELEASE_HEIGHT,
        help="output height in pixels, floored to a multiple of 32, at least 64",
    )
    add(
        "--width",
        type=int,
        default=RELEASE_WIDTH,
        help="output width in pixels, floored to a multiple of 32, at least 64",
    )
    add("--fps", type=float, help="output frame rate (default: the source's timing; the release fixes 16)")
    add("--no_audio", action="store_true", help="do not copy the source audio")
    add(
        "--x264_preset",
        default=DEFAULT_X264_PRESET,
        help=f"x264 speed against file size at the release's crf 25 (default {DEFAULT_X264_PRESET}, "
        "measured to keep the writer ahead of the edit; medium, the release's, writes about 10%% "
        "smaller files at a third of the speed; ultrafast is the fastest)",
    )
    add(
        "--encoder",
        choices=ENCODERS,
        default="auto",
        help="H.264 encoder: nvenc (the GPU's encoder engine, e.g. on RTX cards; the H100/H200 have none) "
        "falls back to x264 with a notice where it does not open; auto takes it where it opens",
    )
    add("--overwrite", action="store_true", help="replace an existing output file")
    add(
        "--fragmented",
        action="store_true",
        help="write the .mp4/.mov output in place as fragmented MP4, playable while it grows (a failed "
        "edit still removes it)",
    )
    add(
        "--save_latent",
        action="store_true",
        help="also save [noise, source, result] latents as <name>_latent.pt",
    )


def _common_flags() -> argparse.ArgumentParser:
    """Flags every subcommand takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--traceback", action="store_true", help="show the traceback of an unexpected error")
    return common


def build_parser() -> argparse.ArgumentParser:
    """`sana-streaming` with its subcommands; `sana-streaming --help` shows the edit flags (the default)."""
    from sana_streaming import __version__
    from sana_streaming.bench import add_bench_arguments

    common = _common_flags()
    parser = argparse.ArgumentParser(prog="sana-streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sana-streaming {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    edit = sub.add_parser(
        "edit", parents=[common], formatter_class=HelpFormatter, prog="sana-streaming [edit]",
        help="edit a video from a text instruction (the default subcommand)",
        description="Edit a video from a text instruction. `edit` is the default subcommand; the others "
        "are `convert` (checkpoint to safetensors) and `bench` (time an edit): see "
        "`sana-streaming convert --help` and `sana-streaming bench --help`.",
    )  # fmt: skip
    add_edit_arguments(edit)
    edit.set_defaults(func=_edit)
    batch = sub.add_parser(
        "batch", parents=[common], formatter_class=HelpFormatter,
        help="edit every row of a manifest (or every video of a folder), models loaded once; resumable",
        description="Edit every row of a .jsonl/.csv manifest (columns: video_path, prompt, output, mode, "
        "num_frames, seed, negative_prompt, height, width, steps, cfg_scale) or every video of --inputs. "
        "The edit flags below apply to every item, a row's values over them. A ledger beside the outputs "
        "records each item; a rerun skips what is done. Runs sharded under torchrun.",
    )  # fmt: skip
    from sana_streaming.batch_command import add_batch_arguments

    add_batch_arguments(batch)
    batch.set_defaults(func=_batch)
    convert = sub.add_parser(
        "convert", parents=[common], formatter_class=HelpFormatter,
        help="convert a .pth/.pt DiT checkpoint to .safetensors (weights-only load; stored dtypes kept)",
    )  # fmt: skip
    convert.add_argument("input", help="checkpoint to read (.pth, .pt or .safetensors)")
    convert.add_argument("output", help="file to write (.safetensors)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    convert.set_defaults(func=_convert)
    bench = sub.add_parser(
        "bench", parents=[common], formatter_class=HelpFormatter,
        help="time a whole edit of a synthetic clip (random weights by default)",
    )  # fmt: skip
    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)
    from sana_streaming import quantize_command

    quantize = sub.add_parser(
        "quantize", parents=[common], formatter_class=HelpFormatter,
        help="measure an MPQ precision plan on this device: per GEMM group, bf16 vs FP8 time and error",
        description=(quantize_command.__doc__ or "").split("\n\n")[0],
    )  # fmt: skip
    quantize_command.add_quantize_arguments(quantize)
    quantize.set_defaults(func=_quantize)
    return parser


def _quantize(args: argparse.Namespace) -> int:
    from sana_streaming.quantize_command import run_quantize

    return run_quantize(args)


def _batch(args: argparse.Namespace) -> int:
    from sana_streaming.batch_command import run_batch

    return run_batch(args)


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
    from sana_streaming.checkpoint import convert_checkpoint

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
    video_format: str | None  # FFmpeg's input format (devices, lavfi); None: probed
    prompt: str
    height: int
    width: int
    num_frames: int | None  # None: the whole source
    output: Path | str  # a str: streamed (- or a URL)
    latent_output: Path | None
    input_latent_path: str | None
    input_text_embed_path: str | None
    steps: int | None
    cfg_scale: float
    seed: int
    decode: str
    sink_token: bool

    def describe(self) -> list[str]:
        """`key: value` lines for `--dry_run`."""
        return [f"{k}: {'all' if k == 'num_frames' and v is None else v}" for k, v in vars(self).items()]


def resolve_edit_plan(args: argparse.Namespace) -> EditPlan:
    """Fill the mode's defaults and validate values; raises `UsageError`."""
    from sana_streaming.config import MODE_PRESETS, ConfigError, load_config, resolve_config_path

    preset = MODE_PRESETS[args.mode]
    if args.random_weights and args.model_path:
        raise UsageError("--model_path and --random_weights exclude each other: pick one")
    try:
        config = resolve_config_path(args.config or preset.config)
        vae = load_config(config).vae
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    stride = vae.vae_downsample_rate
    _check_device(args.device)
    video_path = args.video_path or preset.demo_video
    output, latent_output = _output_paths(args, video_path)
    plan = EditPlan(
        mode=args.mode,
        config=str(config),
        model_path=None if args.random_weights else (args.model_path or preset.model_path),
        video_path=video_path,
        video_format=args.video_format,
        prompt=args.prompt if args.prompt is not None else preset.demo_prompt,
        height=args.height // stride * stride,
        width=args.width // stride * stride,
        num_frames=_frame_count(args, preset.num_frames),
        output=output,
        latent_output=latent_output,
        input_latent_path=args.input_latent_path,
        input_text_embed_path=args.input_text_embed_path,
        steps=args.step,
        cfg_scale=preset.cfg_scale if args.cfg_scale is None else args.cfg_scale,
        seed=args.seed,
        decode=args.decode,
        sink_token=_sink_token(args.sink_token),
    )
    _validate(plan, args, vae)
    return plan


def _frame_count(args: argparse.Namespace, default: int) -> int | None:
    """`--num_frames` (None: the whole source)."""
    num_frames = default if args.num_frames is None else args.num_frames
    return None if num_frames == "all" else num_frames


# EditOptions fields whose flag has another name (the release's spelling).
_FLAGS = {"steps": "--step", "max_seconds": "--duration"}


def _validate(plan: EditPlan, args: argparse.Namespace, vae: VAEConfig) -> None:
    """The API's own check of the edit's options, as usage errors naming the flags."""
    from sana_streaming.config import MODE_PRESETS
    from sana_streaming.errors import OptionError
    from sana_streaming.options import validate_options

    if args.fps is not None and args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    if plan.decode == "causal" and not MODE_PRESETS[plan.mode].chunked:
        raise UsageError(
            f"--decode causal needs long_streaming; {plan.mode} decodes the clip whole, as the release does"
        )
    if args.video_format is not None:
        import av

        if args.video_format not in av.formats_available:
            raise UsageError(
                f"--video_format {args.video_format}: this FFmpeg (PyAV's) has no such input format"
            )
    if args.prompt_schedule and args.input_text_embed_path:
        raise UsageError(
            "--prompt_schedule encodes its prompts, so it cannot go with --input_text_embed_path"
        )
    _check_x264_preset(args.x264_preset)
    asked = dataclasses.replace(_edit_options(plan, args), height=args.height, width=args.width)
    try:
        validate_options(asked, plan.mode, vae)
    except OptionError as exc:
        raise UsageError(f"{_FLAGS.get(exc.option, '--' + exc.option)} {exc.problem}") from None
    floored = {"height": plan.height, "width": plan.width, "num_frames": plan.num_frames}
    if plan.num_frames is not None:
        floored["num_frames"] = (plan.num_frames - 1) // 8 * 8 + 1
    for name, value in floored.items():
        if value != getattr(asked, name):
            rule = "8k+1" if name == "num_frames" else f"a multiple of {vae.vae_downsample_rate}"
            print(f"note: --{name} {getattr(asked, name)} floored to {value} ({rule})", file=sys.stderr)


def _output_paths(args: argparse.Namespace, video_path: str) -> tuple[Path | str, Path | None]:
    """The output video (an absolute path inside `--output_dir`, or a streamed `--output`) and the
    `--save_latent` file."""
    output = output_path(args, video_path)
    if args.fragmented and (isinstance(output, str) or output.suffix.lower() not in (".mp4", ".mov")):
        raise UsageError(f"--fragmented needs an .mp4 or .mov output file, not {output}")
    if isinstance(output, str):
        if args.save_latent:
            raise UsageError(f"--save_latent needs an output file, not --output {output}")
        return output, None
    latent_output = output.with_name(f"{output.stem}_latent.pt") if args.save_latent else None
    for path in (output, latent_output):
        if path is not None and path.exists() and not args.overwrite:
            raise UsageError(f"{path} exists (use --overwrite to replace it)")
    return output, latent_output


def output_path(args: argparse.Namespace, video_path: str) -> Path | str:
    """Where the edit of `video_path` goes: `--output` (a file, or - or a URL to stream to, kept as
    the string), else `--output_name` (or `<stem>_<mode>.mp4`) in `--output_dir`."""
    if args.output is not None:
        if args.output_name is not None:
            raise UsageError("--output names the output itself: drop --output_name")
        if is_streamed(args.output):
            from sana_streaming.video.writer import VideoWriteError, streamed_format

            try:
                streamed_format(args.output)
            except VideoWriteError as exc:
                raise UsageError(str(exc)) from None
            return args.output
        return Path(args.output).expanduser().resolve()
    name = args.output_name or f"{'stdin' if video_path == '-' else Path(video_path).stem}_{args.mode}.mp4"
    if Path(name).name != name or name in (".", ".."):
        raise UsageError(
            f"--output_name must be a file name without folders (use --output_dir), got {name!r}"
        )
    folder = Path(args.output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output_dir {folder} is a file, not a folder")
    return (folder / name).resolve()


def _edit(args: argparse.Namespace) -> int:
    plan = resolve_edit_plan(args)
    needs = _plan_needs(plan)
    if args.dry_run:
        return _dry_run(plan, needs)
    import torch

    from sana_streaming.telemetry import LatencyLog
    from sana_streaming.timing import StageTimer

    inputs = load_plan_inputs(plan, needs)
    pipe = load_pipeline(plan, args, text_encoder=inputs.prompts is None)
    stats = args.stats or args.stats_json is not None
    timer = StageTimer(pipe.device) if stats else None
    with _progress_bar(plan.mode) as bar, torch.inference_mode():
        log = LatencyLog(then=bar) if stats else None
        result = run_plan(pipe, plan, args, inputs, log or bar, timer=timer)
    if log is not None and timer is not None:
        _report_stats(log.summary(timer.seconds) | {"dropped_frames": result.dropped_frames}, args.stats_json)
    if is_streamed(result.path):
        where = "standard output" if result.path == STDOUT else result.path
        print(f"Streamed {result.frames} frames to {where}", file=sys.stderr)
    else:
        print(f"Saved video to {result.path}")
    return 0


@dataclass(frozen=True)
class PlanInputs:
    """An edit's source (a local path, URL or pipe, or debug latents) and any given prompt embeddings."""

    source: str | FormattedSource | SourceLatents
    prompts: PromptPair | None  # from --input_text_embed_path


def _plan_needs(plan: EditPlan) -> list[Need]:
    from sana_streaming.config import load_config
    from sana_streaming.downloads import edit_needs

    return edit_needs(
        load_config(plan.config).with_decode(plan.decode), model_path=plan.model_path,
        video_path=plan.video_path, input_latent_path=plan.input_latent_path,
        input_text_embed_path=plan.input_text_embed_path,
    )  # fmt: skip


def load_plan_inputs(plan: EditPlan, needs: list[Need] | None = None) -> PlanInputs:
    """Fetch what the plan needs (one error names everything missing) and read its debug files."""
    from sana_streaming.debug_files import load_latent_file, load_text_embed_file
    from sana_streaming.downloads import resolve_needs
    from sana_streaming.video.reader import FormattedSource

    local = resolve_needs(_plan_needs(plan) if needs is None else needs)
    if plan.input_latent_path:  # the release then reads no video
        source: str | FormattedSource | SourceLatents = load_latent_file(
            local.get("input_latent_path", plan.input_latent_path)
        )
    elif plan.video_format is not None:  # a device, a filter graph or an unprobed stream
        source = FormattedSource(plan.video_path, plan.video_format)
    else:  # local files, URLs, `pipe:` and `-` (stdin) go to the reader as they are
        source = local.get("video_path", plan.video_path)
    prompts = None
    if plan.input_text_embed_path:
        prompts = load_text_embed_file(local.get("input_text_embed_path", plan.input_text_embed_path))
    return PlanInputs(source, prompts)


def load_pipeline(
    plan: EditPlan, args: argparse.Namespace, text_encoder: bool = True
) -> SanaStreamingPipeline:
    """The plan's pipeline (models loaded once; a batch reuses it for every item of its kind)."""
    from sana_streaming.pipeline import SanaStreamingPipeline

    return SanaStreamingPipeline.from_config(
        plan.config, plan.mode, model_path=plan.model_path, random_weights=plan.model_path is None,
        device=args.device, decode=plan.decode, strict=args.strict, load_text_encoder=text_encoder,
        precision=args.precision, precision_plan=args.precision_plan,
    )  # fmt: skip


def run_plan(
    pipe: SanaStreamingPipeline,
    plan: EditPlan,
    args: argparse.Namespace,
    inputs: PlanInputs,
    progress: ProgressFn | None = None,
    timer: StageTimer | None = None,
) -> EditResult:
    """Run one resolved edit with a loaded pipeline; returns its `EditResult`."""
    return pipe.edit(
        inputs.source, plan.output, _edit_options(plan, args), fps=args.fps, audio=not args.no_audio,
        overwrite=args.overwrite, preset=args.x264_preset, encoder=args.encoder, prompts=inputs.prompts,
        latent_path=plan.latent_output, progress=progress, timer=timer, metadata=_provenance(plan),
        fragmented=args.fragmented,
    )  # fmt: skip


def _report_stats(summary: dict, json_path: str | None) -> None:
    """`--stats`: the run's latency and stage lines on stderr, and the whole summary as JSON if asked."""
    import json

    from sana_streaming.files import publish_text
    from sana_streaming.telemetry import format_summary

    for line in format_summary(summary):
        print(line, file=sys.stderr)
    if json_path is not None:
        publish_text(Path(json_path).expanduser(), json.dumps(summary, indent=1) + "\n")


def _dry_run(plan: EditPlan, needs: list[Need]) -> int:
    """Print the whole plan, then one `hf download` line per missing item (and exit 1 if any)."""
    from sana_streaming.downloads import check_needs, report_missing

    statuses = check_needs(needs)  # the local cache only, nothing downloaded
    extra = [f"{s.need.key}: {s.shown}" for s in statuses if not hasattr(plan, s.need.key)]
    for status in statuses:
        if hasattr(plan, status.need.key):
            setattr(plan, status.need.key, status.shown)
    print("\n".join([*plan.describe(), *extra]), flush=True)
    report_missing(statuses)
    return 0


def _edit_options(plan: EditPlan, args: argparse.Namespace) -> EditOptions:
    from sana_streaming.options import EditOptions
    from sana_streaming.prompt_schedule import read_prompt_schedule

    return EditOptions(
        prompt=plan.prompt, negative_prompt=args.negative_prompt, num_frames=plan.num_frames,
        height=plan.height, width=plan.width, steps=plan.steps, cfg_scale=plan.cfg_scale,
        flow_shift=args.flow_shift, seed=plan.seed, motion_score=args.motion_score,
        num_cached_blocks=args.num_cached_blocks, sink_token=plan.sink_token,
        max_frames=args.max_frames, max_seconds=args.duration, compile=args.compile,
        prompt_schedule=read_prompt_schedule(args.prompt_schedule) if args.prompt_schedule else (),
        live_frame_drop=args.live_frame_drop,
    )  # fmt: skip


def _provenance(plan: EditPlan) -> dict[str, object]:
    """What the output's metadata records beside the edit options: where the weights and source came from."""
    return {"model_path": plan.model_path or "random weights", "config": plan.config,
            "source": plan.input_latent_path or plan.video_path}  # fmt: skip


@contextmanager
def _progress_bar(mode: str) -> Iterator[ProgressFn]:
    """One tqdm bar on stderr (off when it is not a terminal): frames handed to the writer, with their
    rate (the edit's FPS), and the latest step of every other stage beside it."""
    from tqdm import tqdm

    bar = tqdm(desc=mode, unit="frame", file=sys.stderr, disable=None, dynamic_ncols=True)
    latest: dict[str, str] = {}

    def progress(event: ProgressEvent) -> None:
        if event.total is not None and bar.total != event.total and event.unit == "frame":
            bar.total = event.total
        if event.stage == "write":
            bar.update(event.done - bar.n)
        else:
            of = "" if event.total is None else f"/{event.total}"
            latest[event.stage] = f"{event.stage} {event.done}{of}"
            bar.set_postfix_str(", ".join(latest.values()), refresh=False)
            bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever `sys.stderr` is when a record comes (a test harness or a
    host program may replace it between two runs of `main`)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _show_notices() -> None:
    """Our INFO/WARNING log records (decode look-ahead, dropped audio, ...) as `note:` lines on stderr."""
    logger = logging.getLogger("sana_streaming")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("note: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code. SIGTERM is handled like Ctrl-C while it runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "--version"):
        argv.insert(0, "edit")  # no subcommand means `edit`; `--help` shows the edit flags
    with _sigterm_as_interrupt():
        try:
            _show_notices()
            with _signals_held():  # the parser imports torch, diffusers, transformers and PyAV
                parser = build_parser()
            args = parser.parse_args(argv)
            return args.func(args)
        except UsageError as exc:
            print(f"sana-streaming: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Terminated:
            print("sana-streaming: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print("sana-streaming: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except ModuleNotFoundError as exc:  # before runtime_errors(), which needs torch itself
            if "--traceback" in argv:
                raise
            print(f"sana-streaming: error: {missing_package_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as exc:  # one line per failure found while running, no traceback
            return _report_failure(exc, show_traceback="--traceback" in argv)


def _report_failure(exc: Exception, show_traceback: bool) -> int:
    """One line on stderr for a failure found while running (`failure_line`; the traceback of an
    unexpected one with `--traceback`)."""
    known = isinstance(exc, runtime_errors())
    if show_traceback and not known:
        raise exc
    hint = "" if known else " (rerun with --traceback for details)"
    print(f"sana-streaming: error: {failure_line(exc)}{hint}", file=sys.stderr)
    return EXIT_FAILED


def missing_package_line(exc: ModuleNotFoundError) -> str:
    """A package missing from the environment as one line, with how to install the project's."""
    name = f"'{exc.name.partition('.')[0]}'" if exc.name else "a Python package"
    return f"{name} is not installed; install sana-streaming's dependencies with `pip install -e .`"


def failure_line(exc: BaseException) -> str:
    """A failure as one line: the message of a known error (usage or runtime), else the type and the
    first line of an unexpected one."""
    text = str(exc).strip()
    if isinstance(exc, (UsageError, argparse.ArgumentError, *runtime_errors())):
        return text
    first = text.splitlines()[0] if text else ""
    return f"unexpected {type(exc).__name__}: {first}"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # where signal handlers can be set


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise `Terminated` on SIGTERM, so it cleans up as Ctrl-C does."""
    if not _in_main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then raise the first one: some libraries swallow
    KeyboardInterrupt while they import (a bare `except:` around an optional import), which would
    let an interrupted start-up carry on."""
    if not _in_main_thread():
        yield
        return
    received: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in watched}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Terminated if received[0] == signal.SIGTERM else KeyboardInterrupt


def runtime_errors() -> tuple[type[BaseException], ...]:
    """Failures found while running that get one line and exit 1 (imported lazily: torch is heavy)."""
    import torch

    from sana_streaming.checkpoint import CheckpointError
    from sana_streaming.config import ConfigError
    from sana_streaming.errors import EditError
    from sana_streaming.hub import HubError
    from sana_streaming.models.dit.quantize import PrecisionPlanError
    from sana_streaming.models.text_encoder import TextEncoderError
    from sana_streaming.models.vae import VAELoadError
    from sana_streaming.video.reader import VideoReadError
    from sana_streaming.video.writer import VideoWriteError

    return (CheckpointError, ConfigError, EditError, HubError, PrecisionPlanError, TextEncoderError,
            VAELoadError, VideoReadError, VideoWriteError, torch.OutOfMemoryError)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
