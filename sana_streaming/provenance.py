"""What an edit writes into its output's metadata: the settings that made it, so a file says how to
reproduce it (`ffprobe -show_format out.mp4` shows the `comment` tag; MP4, MOV and Matroska keep it)."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sana_streaming.config import SamplerConfig
    from sana_streaming.options import EditOptions


def edit_settings(
    mode: str, options: EditOptions, sampler: SamplerConfig, extra: dict[str, object] | None = None
) -> dict[str, str]:
    """Container tags of one edit: `comment` holds a JSON object with the tool's version, the mode,
    every edit option, the resolved sampler settings and `extra` (e.g. the model path)."""
    from sana_streaming import __version__

    settings = {
        "tool": f"sana-streaming {__version__}",
        "mode": mode,
        **dataclasses.asdict(options),
        "steps": sampler.steps,
        "cfg_scale": sampler.cfg_scale,
        "flow_shift": sampler.flow_shift,
        **(extra or {}),
    }
    return {"comment": json.dumps(settings, ensure_ascii=False, default=str)}
