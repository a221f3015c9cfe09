"""Prompt changes in a running stream: `--prompt_schedule FILE` (a JSON or YAML list of
`{frame, prompt}`) and the chunk at which each change takes effect.

A change asked for at video frame f applies from the first chunk that starts at or after f: the
chunk being denoised keeps its prompt, so a change never splits a chunk. A chunk whose first latent
frame is s starts at video frame 0 when s is 0, else 8(s - 1) + 1 (the VAE's causal 8x time stride).
The previous chunk's clean pass (which writes it into the streaming state) runs with the prompt it
was denoised with, before the switch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from sana_streaming.errors import EditError


class PromptScheduleError(EditError):
    """A prompt schedule file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class PromptChange:
    """From video frame `frame` on (at the next chunk boundary), edit with `prompt`."""

    frame: int
    prompt: str


def read_prompt_schedule(path: str | Path) -> tuple[PromptChange, ...]:
    """The changes of a `.json`, `.yaml` or `.yml` file holding a list of `{frame, prompt}`, by frame."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptScheduleError(
            f"{path}: cannot read the prompt schedule ({exc.strerror or exc})"
        ) from None
    try:
        entries = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise PromptScheduleError(f"{path}: not a JSON or YAML list ({first})") from None
    if not isinstance(entries, list) or not entries:
        raise PromptScheduleError(f"{path}: expected a non-empty list of {{frame, prompt}} entries")
    changes = [_change(path, n, entry) for n, entry in enumerate(entries, start=1)]
    try:
        return check_schedule(changes)
    except PromptScheduleError as exc:
        raise PromptScheduleError(f"{path}: {exc}") from None


def check_schedule(changes: list[PromptChange] | tuple[PromptChange, ...]) -> tuple[PromptChange, ...]:
    """The changes sorted by frame; two at one frame, a negative frame or an empty prompt are refused."""
    ordered = tuple(sorted(changes, key=lambda c: c.frame))
    for change in ordered:
        if change.frame < 0 or not change.prompt.strip():
            raise PromptScheduleError(f"frame {change.frame}: needs a frame >= 0 and a non-empty prompt")
    frames = [c.frame for c in ordered]
    if len(set(frames)) != len(frames):
        raise PromptScheduleError("two prompts for one frame")
    return ordered


def _change(path: Path, number: int, entry: object) -> PromptChange:
    if not isinstance(entry, dict) or set(entry) != {"frame", "prompt"}:
        raise PromptScheduleError(f"{path}: entry {number}: expected exactly the keys frame and prompt")
    frame, prompt = entry["frame"], entry["prompt"]
    if not isinstance(frame, int) or isinstance(frame, bool) or not isinstance(prompt, str):
        raise PromptScheduleError(f"{path}: entry {number}: frame must be an integer and prompt a string")
    return PromptChange(frame, prompt)


def chunk_first_frame(start: int) -> int:
    """The first video frame of a chunk whose first latent frame is `start`."""
    return 0 if start == 0 else 8 * (start - 1) + 1
