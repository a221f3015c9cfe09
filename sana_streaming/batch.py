"""Batch editing: the items of a manifest (or of a folder of videos), a resumable ledger of what was
done, and each rank's share of the items under torchrun.

A manifest is JSONL (one object per line) or CSV (a header row); each row is one edit, named by the
edit's own flags (`video_path`, `prompt`, `output`, `mode`, `num_frames`, `seed`, `negative_prompt`,
`height`, `width`, `steps`, `cfg_scale`). A row's values override the flags given to `batch`, which
override the mode's defaults, so a row needs only `video_path` (and `prompt`, unless `--prompt` gives
one to every row).

The ledger (`batch_ledger.jsonl` beside the outputs) holds one record per finished item, success or
failure, rewritten atomically after each item; a rerun skips the items it records as done whose
output is still there, and the failed ones unless `--retry_failed`.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from sana_streaming.files import publish_text

# Manifest column → edit flag (the release's spellings where they differ).
MANIFEST_FLAGS = {
    "video_path": "--video_path",
    "prompt": "--prompt",
    "output": "--output_name",
    "mode": "--mode",
    "num_frames": "--num_frames",
    "seed": "--seed",
    "negative_prompt": "--negative_prompt",
    "height": "--height",
    "width": "--width",
    "steps": "--step",
    "cfg_scale": "--cfg_scale",
}
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts")
LEDGER_NAME = "batch_ledger.jsonl"
SUMMARY_NAME = "batch_summary.json"


class ManifestError(ValueError):
    """A manifest that cannot be read: the message names the file, the row and the problem."""


@dataclass(frozen=True)
class BatchItem:
    """One edit of the batch: its row index and the edit flags its row sets."""

    index: int
    values: dict[str, str]  # manifest column → value

    def argv(self) -> list[str]:
        """The row as edit flags, appended after the batch's own."""
        return [arg for column, value in self.values.items() for arg in (MANIFEST_FLAGS[column], value)]

    @property
    def video_path(self) -> str:
        return self.values["video_path"]


def read_manifest(path: Path) -> list[BatchItem]:
    """The rows of a `.jsonl` or `.csv` manifest; empty values are left to the flags and defaults."""
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    if path.suffix.lower() == ".jsonl":
        rows = _jsonl_rows(path)
    elif path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(f), start=2)]
    else:
        raise ManifestError(f"{path}: a manifest must end in .jsonl or .csv")
    items = [_item(path, line, row, index) for index, (line, row) in enumerate(rows)]
    if not items:
        raise ManifestError(f"{path}: the manifest has no rows")
    return items


def folder_items(folder: Path, prompt: str | None) -> list[BatchItem]:
    """One item per video file of `folder` (by suffix, sorted by name), all with `prompt`."""
    if not folder.is_dir():
        raise ManifestError(f"--inputs {folder}: not a folder")
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ManifestError(f"--inputs {folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    extra = {} if prompt is None else {"prompt": prompt}
    return [BatchItem(i, {"video_path": str(p), **extra}) for i, p in enumerate(videos)]


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{line_number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
        rows.append((line_number, row))
    return rows


def _item(path: Path, line: int, row: dict, index: int) -> BatchItem:
    unknown = sorted(str(key) for key in row if key not in MANIFEST_FLAGS)
    if unknown:
        raise ManifestError(
            f"{path}:{line}: unknown column {', '.join(unknown)} (known: {', '.join(MANIFEST_FLAGS)})"
        )
    values = {key: str(value) for key, value in row.items() if value is not None and str(value) != ""}
    if "video_path" not in values:
        raise ManifestError(f"{path}:{line}: no video_path")
    return BatchItem(index, values)


@dataclass(frozen=True)
class LedgerRecord:
    """What became of one item."""

    index: int
    video_path: str
    output: str
    status: str  # "done" or "failed"
    seconds: float
    frames: int | None = None  # frames written (done items)
    error: str | None = None  # the one-line reason (failed items)
    rank: int = 0  # the torchrun process that ran it


class Ledger:
    """The records of one rank's items, rewritten atomically after each (`record`). `previous` holds
    what earlier runs recorded, read from every ledger file in the folder (a rerun may use another
    number of ranks); the rank's own file keeps its earlier records."""

    def __init__(self, folder: Path, rank: int, world_size: int) -> None:
        name = LEDGER_NAME if world_size == 1 else f"batch_ledger.rank{rank}.jsonl"
        self.path = folder / name
        self.previous = read_ledgers(folder)
        self.records = {r.index: r for r in _read_ledger(self.path)} if self.path.exists() else {}

    def record(self, record: LedgerRecord) -> None:
        self.records[record.index] = record
        write_ledger(self.path, self.records.values())


def read_ledgers(folder: Path) -> dict[int, LedgerRecord]:
    """Every record of the folder's ledger files (the merged one and any rank's), later ranks' files
    overriding the merged one."""
    records: dict[int, LedgerRecord] = {}
    paths = [folder / LEDGER_NAME, *sorted(folder.glob("batch_ledger.rank*.jsonl"))]
    for path in paths:
        if path.exists():
            records.update({r.index: r for r in _read_ledger(path)})
    return records


def write_ledger(path: Path, records) -> None:
    """The records as JSONL, by index, written to a temporary name and renamed over `path`."""
    lines = [json.dumps(asdict(r)) for r in sorted(records, key=lambda r: r.index)]
    publish_text(path, "".join(line + "\n" for line in lines))


def merge_ledgers(folder: Path, world_size: int) -> dict[int, LedgerRecord]:
    """Fold the ranks' ledger files into the merged one (rank 0, after every rank finished)."""
    records = read_ledgers(folder)
    write_ledger(folder / LEDGER_NAME, records.values())
    for rank in range(world_size):
        rank_path = folder / f"batch_ledger.rank{rank}.jsonl"
        if rank_path.exists():
            os.unlink(rank_path)
    return records


def _read_ledger(path: Path) -> list[LedgerRecord]:
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(LedgerRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ManifestError(f"{path}:{line_number}: not a ledger record ({exc})") from None
    return records
