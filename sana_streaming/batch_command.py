"""`sana-streaming batch`: many edits in one process, the models loaded once per kind of edit.

Items come from a manifest (`batch.read_manifest`) or a folder (`--inputs`); every edit flag given to
`batch` applies to every item, a row's own values over it. Each item's outcome goes into the ledger
as soon as it ends; a bad video, a too-short clip or an out-of-memory error fails that item only (its
one-line reason recorded) and the batch goes on. The exit code is 0 when every item is done, else 1,
after a summary table (also written as `batch_summary.json`).

Under `torchrun --nproc_per_node N sana-streaming batch ...` rank r takes the items whose index is
r mod N, on GPU `LOCAL_RANK` (gloo on CPUs, NCCL on GPUs); each rank keeps its own ledger file, and
rank 0 merges them once every rank has finished.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from sana_streaming import cli
from sana_streaming.batch import (
    SUMMARY_NAME,
    BatchItem,
    Ledger,
    LedgerRecord,
    ManifestError,
    folder_items,
    merge_ledgers,
    read_manifest,
)
from sana_streaming.files import publish_text

if TYPE_CHECKING:
    from sana_streaming.pipeline import SanaStreamingPipeline

# edit flags that name one video and so belong in the rows, not on the batch's command line
_PER_ITEM_FLAGS = ("video_path", "output_name", "output", "input_latent_path", "save_latent", "dry_run")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", nargs="?", help="a .jsonl or .csv manifest, one edit per row")
    parser.add_argument(
        "--inputs", help="instead of a manifest: a folder of videos, each edited with --prompt"
    )
    parser.add_argument(
        "--retry_failed", action="store_true", help="run again the items the ledger records as failed"
    )
    cli.add_edit_arguments(parser)


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_torchrun(cls) -> Ranks:
        """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (its contract with the processes)."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def device(self, asked: str | None) -> str | None:
        """The rank's device: its own GPU when there are several ranks and CUDA is asked for or default."""
        import torch

        if self.world_size == 1 or not torch.cuda.is_available() or (asked and asked.startswith("cpu")):
            return asked
        return f"cuda:{self.local_rank}"

    @contextmanager
    def group(self, device: str | None) -> Iterator[None]:
        """The process group of a torchrun (NCCL between GPUs, else gloo) while the batch runs."""
        if self.world_size == 1:
            yield
            return
        import torch
        import torch.distributed as dist

        on_gpu = device is not None and device.startswith("cuda")
        if on_gpu:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if on_gpu else "gloo")
        try:
            yield
        finally:
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def run_batch(args: argparse.Namespace) -> int:
    """Run the batch's items of this rank; 0 when every item of the batch is done, else 1."""
    items = _items(args)
    ranks = Ranks.from_torchrun()
    args.device = ranks.device(args.device)
    outputs = _planned_outputs(args, items)
    folder = Path(args.output_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with ranks.group(args.device):
        ledger = Ledger(folder, ranks.rank, ranks.world_size)
        mine = items[ranks.rank :: ranks.world_size]
        runner = ItemRunner(args, ranks.rank)
        with _items_bar(len(mine)) as bar:
            for item in mine:
                previous = ledger.previous.get(item.index)
                if _skip(previous, outputs[item.index], args.retry_failed):
                    if ledger.records.get(item.index) != previous:  # recorded by another rank's file
                        ledger.record(previous)  # type: ignore[arg-type]
                else:
                    record = runner.run(item)
                    ledger.record(record)
                    if record.frames:
                        bar.set_postfix_str(f"{record.frames / record.seconds:.1f} FPS", refresh=False)
                bar.update()
        ranks.barrier()  # every rank's ledger is complete
        records = ledger.records
        if ranks.rank == 0 and ranks.world_size > 1:
            records = merge_ledgers(folder, ranks.world_size)
    judged = mine
    if ranks.rank == 0:
        _report(items, records, folder)
        judged = items  # rank 0 holds every rank's records: its exit code speaks for the batch
    done = all(records.get(i.index) is not None and records[i.index].status == "done" for i in judged)
    return 0 if done else 1


def _items(args: argparse.Namespace) -> list[BatchItem]:
    given = [flag for flag in _PER_ITEM_FLAGS if getattr(args, flag) not in (None, False)]
    if given:
        raise cli.UsageError(f"--{given[0]} is set per item in batch (a manifest column), not for the batch")
    if (args.manifest is None) == (args.inputs is None):
        raise cli.UsageError("give either a MANIFEST (.jsonl or .csv) or --inputs FOLDER")
    try:
        if args.inputs is not None:
            return folder_items(Path(args.inputs).expanduser(), args.prompt)
        return read_manifest(Path(args.manifest).expanduser())
    except ManifestError as exc:
        raise cli.UsageError(str(exc)) from None


def _planned_outputs(args: argparse.Namespace, items: list[BatchItem]) -> dict[int, Path | None]:
    """Each item's output path (None for a row with a bad value: it fails when it is run); two items
    writing one file is a usage error."""
    parser = item_parser()
    outputs: dict[int, Path | None] = {}
    owners: dict[Path, int] = {}
    for item in items:
        try:
            item_args = parse_item(parser, args, item)
        except argparse.ArgumentError:
            outputs[item.index] = None
            continue
        path = cli.output_path(item_args, item.video_path)
        if path in owners:
            raise cli.UsageError(
                f"items {owners[path]} and {item.index} both write {path}; give one an `output` name"
            )
        owners[path] = item.index
        outputs[item.index] = path
    return outputs


def item_parser() -> argparse.ArgumentParser:
    """The edit flags, raising on a bad value instead of exiting (a bad row fails its item only)."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    cli.add_edit_arguments(parser)
    return parser


def parse_item(
    parser: argparse.ArgumentParser, base: argparse.Namespace, item: BatchItem
) -> argparse.Namespace:
    """The batch's flags with the row's values over them (argparse keeps what the namespace holds)."""
    return parser.parse_args(item.argv(), namespace=copy.copy(base))


def _skip(previous: LedgerRecord | None, output: Path | None, retry_failed: bool) -> bool:
    """Done before with its output still there, or failed before and not to be retried."""
    if previous is None or output is None or previous.output != str(output):
        return False
    if previous.status == "done":
        return output.exists()
    return not retry_failed


class ItemRunner:
    """Runs items one by one, keeping the loaded pipeline while items need the same models."""

    def __init__(self, args: argparse.Namespace, rank: int = 0) -> None:
        self.args = args
        self.rank = rank
        self.parser = item_parser()
        self._key: tuple | None = None
        self._pipe: SanaStreamingPipeline | None = None

    def run(self, item: BatchItem) -> LedgerRecord:
        """Edit one item; any failure but an interrupt becomes a failed record with one line."""
        import torch

        start = time.perf_counter()
        output = ""
        try:
            item_args = parse_item(self.parser, self.args, item)
            plan = cli.resolve_edit_plan(item_args)
            output = str(plan.output)
            inputs = cli.load_plan_inputs(plan)
            pipe = self._pipeline(plan, item_args, text_encoder=inputs.prompts is None)
            with torch.inference_mode():
                result = cli.run_plan(pipe, plan, item_args, inputs)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded; the batch goes on
            if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            return LedgerRecord(
                item.index,
                item.video_path,
                output,
                "failed",
                _since(start),
                error=cli.failure_line(exc),
                rank=self.rank,
            )
        return LedgerRecord(
            item.index, item.video_path, output, "done", _since(start), frames=result.frames, rank=self.rank
        )

    def _pipeline(
        self, plan: cli.EditPlan, args: argparse.Namespace, text_encoder: bool
    ) -> SanaStreamingPipeline:
        key = (plan.mode, plan.config, plan.model_path, plan.decode, text_encoder, args.device)
        if self._pipe is None or key != self._key:
            self._pipe = None  # one set of models in memory at a time
            self._pipe = cli.load_pipeline(plan, args, text_encoder=text_encoder)
            self._key = key
        return self._pipe


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


@contextmanager
def _items_bar(total: int) -> Iterator[tqdm]:
    bar = tqdm(total=total, desc="batch", unit="edit", file=sys.stderr, disable=None, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _report(items: list[BatchItem], records: dict[int, LedgerRecord], folder: Path) -> None:
    """A table of every item on stdout and the same as JSON in `batch_summary.json`."""
    rows = []
    for item in items:
        record = records.get(item.index)
        status = "not run" if record is None else record.status
        detail = "" if record is None else (record.error or record.output)
        seconds = None if record is None else record.seconds
        rows.append({"index": item.index, "video_path": item.video_path, "status": status,
                     "seconds": seconds, "detail": detail})  # fmt: skip
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "not run")}
    print(f"{'#':>4}  {'status':<8} {'seconds':>8}  output or reason")
    for r in rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"{r['index']:>4}  {r['status']:<8} {seconds:>8}  {r['detail']}")
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(rows)} items")
    publish_text(folder / SUMMARY_NAME, json.dumps({"counts": counts, "items": rows}, indent=1) + "\n")
