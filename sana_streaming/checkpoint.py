"""Safe checkpoint reading and strict-with-a-readable-diff loading of the DiT (docs/model.md).

`.safetensors` files are read directly; `.pth`/`.pt` only through `torch.load(weights_only=True)`, so
a pickle that carries code is refused. Wrappers are unwrapped as the release's CLI does: descend into
`generator`; then use `state_dict` as is if present, else the whole mapping with a leading `model.`
and then a leading `module.` stripped from every key.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sana_streaming.files import make_temp_beside, publish

logger = logging.getLogger(__name__)

# Keys whose stored shape may be [C, C] (Linear) or [C, C, taps] (Conv1d) in either variant.
_TAP_KEYS = ("attn.q.weight", "attn.k.weight")
# Buffers a checkpoint may omit (zero and unused, docs/model.md).
OPTIONAL_KEYS = frozenset({"pos_embed"})
# The global torch's weights-only unpickler refused, in its error text ("... GLOBAL posix.system ...").
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What a load did: keys ignored, keys that kept the model's own value, q/k shapes adapted."""

    unexpected: list[str] = field(default_factory=list)
    kept_default: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)


def unwrap_state_dict(obj: object) -> dict[str, Tensor]:
    """Apply the release's unwrapping rule and check that the result maps names to tensors."""
    if isinstance(obj, Mapping) and "generator" in obj:
        obj = obj["generator"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a mapping of tensors, got {type(obj).__name__}")
    if "state_dict" in obj:
        state = dict(obj["state_dict"])
    else:
        state = {}
        for key, value in obj.items():
            key = key.removeprefix("model.").removeprefix("module.")
            state[key] = value
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"non-tensor entries in the state dict: {bad[:5]}")
    return state


def load_weights_only(path: str | os.PathLike) -> object:
    """`torch.load(path, weights_only=True)` on the CPU, without torch's "Detected pickle protocol"
    warning (a raw pickle, not a `torch.save` zip, triggers it; the refusal says enough). A file that
    needs more than tensors and plain containers raises `pickle.UnpicklingError`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def refusal_reason(exc: pickle.UnpicklingError) -> str:
    """Our one-line reason for a weights-only refusal: torch's own text is long and suggests
    `weights_only=False`, the unsafe load, so only the blocked global (if torch names one) is kept."""
    found = _BLOCKED_GLOBAL.search(str(exc))
    what = f"{found.group(1)}, code" if found else "Python objects, code"
    return (
        f"not a plain tensor checkpoint (it references {what} that would run when loaded); "
        "use a .safetensors copy from a trusted source"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read and unwrap a `.safetensors` or `.pth`/`.pt` checkpoint on the CPU."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, expected a checkpoint file" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint {path}: {what}")
    if path.suffix == ".safetensors":
        try:
            return unwrap_state_dict(load_file(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
    try:
        obj = load_weights_only(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing {path}: {refusal_reason(exc)}") from exc
    except Exception as exc:  # the unpickler fails on arbitrary bytes with many error types
        raise CheckpointError(f"cannot read {path} (truncated or not a checkpoint): {exc}") from exc
    return unwrap_state_dict(obj)


def _adapt_taps(key: str, stored: Tensor, target: Tensor) -> Tensor | None:
    """Fit a q/k weight stored as [C, C] or [C, C, taps] to the model's shape; None if impossible."""
    if not key.endswith(_TAP_KEYS) or stored.shape[:2] != target.shape[:2]:
        return None
    if stored.ndim == 3 and target.ndim == 2:
        return stored[:, :, stored.shape[2] // 2]  # the centre tap is the only one applied
    if stored.ndim == 2 and target.ndim == 3:
        adapted = torch.zeros(target.shape, dtype=stored.dtype)
        adapted[:, :, target.shape[2] // 2] = stored  # side taps are never applied
        return adapted
    return None


def load_dit_state_dict(model: nn.Module, state: Mapping[str, Tensor], strict: bool = False) -> LoadReport:
    """Load `state` into `model`: missing keys and shape mismatches raise one error listing the first
    few of each; unexpected keys warn once (error with `strict`), as the release ignores them."""
    report = LoadReport()
    target = model.state_dict()
    missing = [k for k in target if k not in state and k not in OPTIONAL_KEYS]
    report.kept_default = [k for k in target if k not in state and k in OPTIONAL_KEYS]
    report.unexpected = [k for k in state if k not in target]
    mismatched: list[str] = []
    fitted: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in target:
            continue
        if value.shape != target[key].shape:
            adapted = _adapt_taps(key, value, target[key])
            if adapted is None:
                mismatched.append(f"{key}: checkpoint {list(value.shape)} vs model {list(target[key].shape)}")
                continue
            report.adapted.append(key)
            value = adapted
        fitted[key] = value
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[:5]}")
    if strict and report.unexpected:
        problems.append(f"{len(report.unexpected)} unexpected key(s), e.g. {report.unexpected[:5]}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))
    if report.unexpected:
        warnings.warn(
            f"ignoring {len(report.unexpected)} unexpected checkpoint key(s), e.g. {report.unexpected[:5]}",
            stacklevel=2,
        )
    if report.adapted:
        logger.warning(
            "softmax q/k weights have the other release variant's shape (%d adapted, centre tap used); "
            "check that the checkpoint matches the mode",
            len(report.adapted),
        )
    model.load_state_dict(fitted, strict=False)
    return report


def load_dit_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = False) -> LoadReport:
    """Read a checkpoint file and load it into the DiT (see `load_dit_state_dict`)."""
    return load_dit_state_dict(model, read_state_dict(path), strict=strict)


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False) -> int:
    """Write the unwrapped state dict of `src` to `dst` as safetensors, keeping the stored dtypes.

    The file appears atomically (temporary name, then rename). Returns the number of tensors."""
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"output must end in .safetensors: {dst}")
    if dst.exists() and not overwrite:
        raise CheckpointError(f"{dst} exists (use --overwrite to replace it)")
    state = {k: v.contiguous().clone() for k, v in read_state_dict(src).items()}  # own, unshared storage
    tmp = make_temp_beside(dst)
    try:
        save_file(state, str(tmp))
        publish(tmp, dst, overwrite=overwrite)
    except FileExistsError:
        raise CheckpointError(f"{dst} appeared while converting and was kept (use --overwrite)") from None
    finally:
        tmp.unlink(missing_ok=True)
    return len(state)
