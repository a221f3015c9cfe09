"""`sana-streaming batch`: a manifest's items edited with models loaded once, failures isolated and
recorded, reruns resumed from the ledger, and the items sharded over torchrun's processes (gloo, CPU).
Tiny config, random weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_video import decoded_frames, make_clip

from sana_streaming import batch_command
from sana_streaming.cli import main

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--config", "tiny_random", "--random_weights", "--device", "cpu", "--height", "64", "--width", "96",
         "--num_frames", "all", "--no_audio", "--prompt", "make it blue"]  # fmt: skip


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def ledger(folder: Path) -> dict[int, dict]:
    lines = (folder / "batch_ledger.jsonl").read_text().splitlines()
    return {record["index"]: record for record in map(json.loads, lines)}


def four_items(workdir: Path) -> Path:
    """Three good clips and a text file posing as a video (item 1)."""
    for i, name in enumerate(("a", "c", "d")):
        make_clip(workdir / f"{name}.mp4", num_frames=25, fps=24, seed=i)
    (workdir / "b.mp4").write_text("not a video\n")
    rows = [{"video_path": "a.mp4"}, {"video_path": "b.mp4"}, {"video_path": "c.mp4", "seed": 5},
            {"video_path": "d.mp4", "prompt": "make it red", "output": "red.mp4"}]  # fmt: skip
    return write_jsonl(workdir / "edits.jsonl", rows)


CALLS: list[int] = []  # the items run, in order


class CountingRunner(batch_command.ItemRunner):
    def run(self, item):
        CALLS.append(item.index)
        return super().run(item)


def test_bad_item_fails_alone_then_a_rerun_resumes(workdir, capsys, monkeypatch):
    manifest = four_items(workdir)
    monkeypatch.setattr(batch_command, "ItemRunner", CountingRunner)
    CALLS.clear()
    assert main(["batch", str(manifest), *FLAGS]) == 1
    out = workdir / "outputs"
    assert sorted(p.name for p in out.glob("*.mp4")) == [
        "a_long_streaming.mp4",
        "c_long_streaming.mp4",
        "red.mp4",
    ]
    records = ledger(out)
    assert [records[i]["status"] for i in range(4)] == ["done", "failed", "done", "done"]
    assert "b.mp4" in records[1]["error"] and "\n" not in records[1]["error"]
    assert records[0]["frames"] == 25 and records[0]["seconds"] > 0
    table = capsys.readouterr().out
    assert "3 done, 1 failed of 4 items" in table
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["counts"] == {"done": 3, "failed": 1, "not run": 0}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left

    # A rerun skips the three done items and the failed one (no --retry_failed): nothing is edited.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    CALLS.clear()
    assert main(["batch", str(manifest), *FLAGS]) == 1
    assert CALLS == [] and stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert ledger(out) == records

    # The bad video replaced and retried: only item 1 runs, and the batch succeeds.
    make_clip(workdir / "b.mp4", num_frames=25, fps=24, seed=9)
    assert main(["batch", str(manifest), *FLAGS, "--retry_failed"]) == 0
    assert CALLS == [1]
    assert [r["status"] for r in ledger(out).values()] == ["done"] * 4


def fail_first_item_then_run(monkeypatch, error: BaseException, at_item: int) -> None:
    """Raise `error` in the denoiser during item `at_item`'s edit (items counted by their first chunk)."""
    from sana_streaming.sampling.streaming import StreamingSampler

    real = StreamingSampler.denoise_chunk
    runs = CALLS

    def denoise(self, *args, **kwargs):
        if runs and runs[-1] == at_item:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StreamingSampler, "denoise_chunk", denoise)
    monkeypatch.setattr(batch_command, "ItemRunner", CountingRunner)
    CALLS.clear()


def test_out_of_memory_fails_one_item_and_the_batch_goes_on(workdir, monkeypatch):
    manifest = four_items(workdir)
    make_clip(workdir / "b.mp4", num_frames=25, fps=24, seed=9)
    fail_first_item_then_run(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried 9 GiB"), 2)
    assert main(["batch", str(manifest), *FLAGS]) == 1
    records = ledger(workdir / "outputs")
    assert [records[i]["status"] for i in range(4)] == ["done", "done", "failed", "done"]
    assert records[2]["error"] == "CUDA out of memory. Tried 9 GiB"
    assert not (workdir / "outputs" / "c_long_streaming.mp4").exists()


def test_ctrl_c_stops_cleanly_with_a_consistent_ledger(workdir, monkeypatch):
    manifest = four_items(workdir)
    make_clip(workdir / "b.mp4", num_frames=25, fps=24, seed=9)
    fail_first_item_then_run(monkeypatch, KeyboardInterrupt(), 1)
    assert main(["batch", str(manifest), *FLAGS]) == 130
    out = workdir / "outputs"
    assert sorted(p.name for p in out.iterdir()) == ["a_long_streaming.mp4", "batch_ledger.jsonl"]
    assert list(ledger(out)) == [0]
    CALLS.clear()
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(batch_command, "ItemRunner", CountingRunner)
    assert main(["batch", str(manifest), *FLAGS]) == 0  # resumed: the interrupted item and the rest
    assert CALLS == [1, 2, 3]


def test_a_deleted_output_is_edited_again(workdir, monkeypatch):
    make_clip(workdir / "a.mp4", num_frames=25, fps=24)
    manifest = write_jsonl(workdir / "m.jsonl", [{"video_path": "a.mp4"}])
    monkeypatch.setattr(batch_command, "ItemRunner", CountingRunner)
    CALLS.clear()
    assert main(["batch", str(manifest), *FLAGS]) == 0
    (workdir / "outputs" / "a_long_streaming.mp4").unlink()
    assert main(["batch", str(manifest), *FLAGS]) == 0
    assert CALLS == [0, 0]  # run again, although the ledger records it as done
    assert decoded_frames(workdir / "outputs" / "a_long_streaming.mp4").shape[0] == 25


def test_folder_of_videos(workdir):
    folder = workdir / "clips"
    folder.mkdir()
    for name in ("x", "y"):
        make_clip(folder / f"{name}.mov", num_frames=25, fps=24, container="mov")
    (folder / "notes.txt").write_text("not a video")
    assert main(["batch", "--inputs", str(folder), *FLAGS]) == 0
    assert sorted(p.name for p in (workdir / "outputs").glob("*.mp4")) == [
        "x_long_streaming.mp4", "y_long_streaming.mp4"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown_column", "unknown column colour"),
        ("no_video", "no video_path"),
        ("not_json", "not JSON"),
        ("same_output", "both write"),
        ("video_flag", "--video_path is set per item"),
        ("both_sources", "either a MANIFEST"),
        ("wrong_suffix", "must end in .jsonl or .csv"),
    ],
)
def test_manifest_problems_exit_2_with_one_line(workdir, capsys, case, expected):
    extra = []
    manifest = workdir / "m.jsonl"
    if case == "unknown_column":
        write_jsonl(manifest, [{"video_path": "a.mp4", "colour": "blue"}])
    elif case == "no_video":
        write_jsonl(manifest, [{"prompt": "make it blue"}])
    elif case == "not_json":
        manifest.write_text('{"video_path": "a.mp4"}\n{oops\n')
    elif case == "same_output":
        write_jsonl(manifest, [{"video_path": "a.mp4"}, {"video_path": "sub/a.mp4"}])
    elif case == "video_flag":
        write_jsonl(manifest, [{"video_path": "a.mp4"}])
        extra = ["--video_path", "a.mp4"]
    elif case == "both_sources":
        write_jsonl(manifest, [{"video_path": "a.mp4"}])
        extra = ["--inputs", str(workdir)]
    else:
        manifest = workdir / "m.txt"
        manifest.write_text("video_path\na.mp4\n")
    assert main(["batch", str(manifest), *FLAGS, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sana-streaming: error:") and expected in err[0], err
    assert not (workdir / "outputs").exists()


def test_csv_manifest_with_typed_columns(workdir):
    make_clip(workdir / "a.mp4", num_frames=33, fps=24)
    (workdir / "m.csv").write_text("video_path,num_frames,seed,output\na.mp4,25,7,short.mp4\n")
    assert main(["batch", "m.csv", *FLAGS]) == 0
    assert decoded_frames(workdir / "outputs" / "short.mp4").shape[0] == 25


@pytest.mark.slow
def test_torchrun_two_processes_split_the_items_and_write_the_same_files(workdir):
    manifest = four_items(workdir)
    make_clip(workdir / "b.mp4", num_frames=25, fps=24, seed=9)  # four good items
    # torchrun gives each process one CPU thread unless told; CPU reductions split over another number
    # of threads round differently, so the ranks get this process's count
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sana_streaming.cli", "batch", str(manifest), *FLAGS, "--output_dir", "two"]  # fmt: skip
    done = subprocess.run(run, env=env, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    single = [
        sys.executable,
        "-m",
        "sana_streaming.cli",
        "batch",
        str(manifest),
        *FLAGS,
        "--output_dir",
        "one",
    ]
    done = subprocess.run(
        single, env=env, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]  # one fresh process against two
    names = sorted(p.name for p in (workdir / "one").glob("*.mp4"))
    assert len(names) == 4 and names == sorted(p.name for p in (workdir / "two").glob("*.mp4"))
    for name in names:  # frame for frame equality is not asserted: CPU edits in concurrent processes
        # have differed (an open determinism problem, see the same-seed test)
        assert decoded_frames(workdir / "two" / name).shape == decoded_frames(workdir / "one" / name).shape
    assert sorted(p.name for p in (workdir / "two").glob("batch_ledger*")) == ["batch_ledger.jsonl"]
    records = ledger(workdir / "two").values()
    assert [(r["status"], r["rank"]) for r in records] == [("done", 0), ("done", 1), ("done", 0), ("done", 1)]


def test_a_row_with_a_bad_value_fails_that_item_only(workdir):
    make_clip(workdir / "a.mp4", num_frames=25, fps=24)
    rows = [
        {"video_path": "a.mp4", "seed": "abc", "output": "bad.mp4"},
        {"video_path": "a.mp4", "mode": "sideways", "output": "worse.mp4"},
        {"video_path": "a.mp4", "num_frames": 9},
        {"video_path": "a.mp4", "output": "ok.mp4"},
    ]
    assert main(["batch", str(write_jsonl(workdir / "m.jsonl", rows)), *FLAGS]) == 1
    records = ledger(workdir / "outputs")
    assert [records[i]["status"] for i in range(4)] == ["failed", "failed", "failed", "done"]
    assert "invalid int value: 'abc'" in records[0]["error"]
    assert "invalid choice: 'sideways'" in records[1]["error"]
    assert "--num_frames" in records[2]["error"]  # too short for long_streaming
