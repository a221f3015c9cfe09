"""Command line: `sana-streaming <subcommand>`.

Errors found while running print one line on stderr and exit 1; usage errors exit 2 (argparse)."""

from __future__ import annotations

import argparse
import sys

from sana_streaming.checkpoint import CheckpointError, convert_checkpoint


def _convert(args: argparse.Namespace) -> int:
    count = convert_checkpoint(args.input, args.output, overwrite=args.overwrite)
    print(f"Wrote {count} tensors to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sana-streaming", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser(
        "convert",
        help="convert a .pth/.pt DiT checkpoint to .safetensors (weights-only load; stored dtypes kept)",
    )
    convert.add_argument("input", help="checkpoint to read (.pth, .pt or .safetensors)")
    convert.add_argument("output", help="file to write (.safetensors)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    convert.set_defaults(func=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CheckpointError as exc:
        print(f"sana-streaming: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
