"""Mixed precision for the DiT: which GEMMs run in FP8 (a `PrecisionPlan`) and the model rewrite
that makes them so (`quantize_dit_`).

A plan names GEMM groups, seven per block (`GROUPS`), each "bf16", "fp8" or "nvfp4" (emulated by
quantise-dequantise, `ops.nvfp4`: for error studies, slower than bf16). Quantised are only the
large token-wise GEMMs of ../shared/spec/kernels.md §4.4; the embedders, the timestep MLP, the final
layer, the caption K/V (computed once per prompt), the decay gate, the norms, the depthwise conv and
the GDN and attention cores stay in the checkpoint's dtype. `attn.qkv` is the projections of the
block's modulated input stacked as one FP8 GEMM (q, k, v, output gate, and in GDN blocks β), rows
padded to `STACK_ROWS`; the bf16 layers it replaces are dropped, so the FP8 weights halve the memory.
`--precision mpq` without a plan file takes `DEFAULT_PLAN`, measured on an H200.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from sana_streaming.files import publish_text
from sana_streaming.models.dit.kernels import projection_matrix, stacked_bias, stacked_weight, taps_outer
from sana_streaming.ops.nvfp4 import NVFP4EmulatedLinear, nvfp4_eligible
from sana_streaming.ops.quant import FP8Linear, QuantizedProjections, fp8_eligible

logger = logging.getLogger(__name__)

Precision = Literal["bf16", "fp8", "nvfp4"]
PRECISIONS = ("bf16", "fp8", "mpq")  # `--precision`: none, every group, or a measured plan
GROUPS = (
    "attn.qkv", "attn.proj", "cross_attn.q_linear", "cross_attn.proj",
    "mlp.inverted_conv", "mlp.point_conv", "mlp.t_conv",
)  # fmt: skip
PLAN_VERSION = 1
DEFAULT_PLAN = (
    Path(__file__).resolve().parents[2] / "configs" / "plans" / "mpq_h200.json"
)  # `quantize` on an H200


class PrecisionPlanError(ValueError):
    """A precision plan that cannot be read or applied (shown as one line)."""


@dataclass(frozen=True)
class PrecisionPlan:
    """Per GEMM group (`blocks.{i}.{group}`), its precision; groups not named run in bf16. `notes`
    records how the plan was made (device, timings, errors)."""

    layers: dict[str, Precision]
    notes: dict = field(default_factory=dict)

    @classmethod
    def uniform(cls, depth: int, precision: Precision) -> PrecisionPlan:
        """Every group of every block in `precision`."""
        return cls({f"blocks.{i}.{g}": precision for i in range(depth) for g in GROUPS})

    @classmethod
    def read(cls, path: str | Path) -> PrecisionPlan:
        """A plan written by `write` (`sana-streaming quantize --plan`); one-line errors for bad files."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise PrecisionPlanError(f"cannot read the precision plan {path}: {exc}") from None
        layers = data.get("layers") if isinstance(data, dict) else None
        if data.get("version") != PLAN_VERSION or not isinstance(layers, dict):
            raise PrecisionPlanError(
                f"{path} is not a version-{PLAN_VERSION} precision plan (keys: version, layers)"
            )
        for name, value in layers.items():
            if value not in get_args(Precision):
                known = ", ".join(get_args(Precision))
                raise PrecisionPlanError(f"{path}: {name} has precision {value!r}; expected one of {known}")
            parts = name.split(".", 2)
            if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] not in GROUPS:
                raise PrecisionPlanError(f"{path}: unknown GEMM group {name!r}")
        return cls(layers, data.get("notes", {}))

    def write(self, path: str | Path) -> None:
        """Write the plan whole or not at all (a temporary file renamed)."""
        data = {"version": PLAN_VERSION, "layers": self.layers, "notes": self.notes}
        publish_text(Path(path), json.dumps(data, indent=1) + "\n")

    def groups(self, precision: Precision) -> list[str]:
        """The groups the plan puts in `precision`."""
        return [name for name, p in self.layers.items() if p == precision]


def _projection_names(attn: nn.Module) -> tuple[str, ...]:
    """The projections of a self-attention's input that `attn.qkv` stacks."""
    return ("q", "k", "v", "output_gate") + (("beta_proj",) if hasattr(attn, "beta_proj") else ())


def group_matrix(block: nn.Module, group: str) -> tuple[Tensor, Tensor | None]:
    """The (out, in) matrix and bias a bf16 GEMM group of a `SanaBlock` applies (for `attn.qkv` the
    stacked projections, rows padded to STACK_ROWS; for `mlp.t_conv` the taps-outer matrix)."""
    owner_name, layer_name = group.split(".")
    owner = getattr(block, owner_name)
    if group == "attn.qkv":
        layers = tuple(getattr(owner, n) for n in _projection_names(owner))
        weight = stacked_weight(layers)  # (ΣO padded to STACK_ROWS, C)
        return weight, stacked_bias(layers, weight.shape[0])
    layer = getattr(owner, layer_name)
    if owner_name == "mlp" and layer_name != "t_conv":
        layer = layer.conv  # ConvLayer: keeps the `<name>.conv` key layout
    matrix = taps_outer(layer.weight) if layer_name == "t_conv" else layer.weight.flatten(1)
    return matrix, getattr(layer, "bias", None)


def is_quantized(block: nn.Module, group: str) -> bool:
    """Whether the GEMM group of a `SanaBlock` is quantised already."""
    owner_name, layer_name = group.split(".")
    owner = getattr(block, owner_name)
    if group == "attn.qkv":
        return owner.stacked is not None
    layer = getattr(owner, layer_name)
    layer = layer.conv if owner_name == "mlp" and layer_name != "t_conv" else layer
    return isinstance(layer, (FP8Linear, NVFP4EmulatedLinear))


@torch.no_grad()
def quantize_group_(block: nn.Module, group: str, precision: Precision = "fp8") -> bool:
    """Rewrite one GEMM group of a `SanaBlock` to `precision` (fp8 or nvfp4) in place; False if its
    sizes do not allow it (left in bf16) or it is quantised already."""
    if is_quantized(block, group) or precision == "bf16":
        return False
    matrix, bias = group_matrix(block, group)
    if precision == "fp8" and fp8_eligible(matrix.shape[1], matrix.shape[0]):
        linear: nn.Module = FP8Linear.from_matrix(matrix, bias)
    elif precision == "nvfp4" and nvfp4_eligible(matrix.shape[1]):
        linear = NVFP4EmulatedLinear.from_matrix(matrix, bias)
    else:
        return False
    owner_name, layer_name = group.split(".")
    owner = getattr(block, owner_name)
    if group == "attn.qkv":
        names = _projection_names(owner)
        sizes = tuple(projection_matrix(getattr(owner, n)).shape[0] for n in names)
        for n in names:
            setattr(owner, n, None)  # the stacked weight replaces them
        owner.stacked = QuantizedProjections(linear, sizes)
    elif owner_name == "mlp" and layer_name != "t_conv":
        getattr(owner, layer_name).conv = linear
    else:
        setattr(owner, layer_name, linear)
    return True


def quantize_dit_(model: nn.Module, plan: PrecisionPlan) -> list[str]:
    """Apply `plan` to a `SanaStreamingDiT` in place; returns the groups now quantised. Unknown block
    indices are refused, so a plan for another depth does not half-apply."""
    depth = len(model.blocks)
    for name in plan.layers:
        _, index, _ = name.split(".", 2)
        if not index.isdigit() or int(index) >= depth:
            raise PrecisionPlanError(f"the plan names {name}, but the DiT has {depth} blocks")
    done = []
    for name, precision in plan.layers.items():
        _, index, group = name.split(".", 2)
        if quantize_group_(model.blocks[int(index)], group, precision):
            done.append(name)
    emulated = [name for name in done if plan.layers[name] == "nvfp4"]
    if emulated:
        logger.warning(
            "%d GEMM groups run NVFP4 emulated (quantise-dequantise): for error studies, slower than bf16",
            len(emulated),
        )
    return done


def resolve_precision(
    precision: str, depth: int, plan_path: str | Path | None = None
) -> PrecisionPlan | None:
    """The plan of `--precision`: None for bf16, every group for fp8, for mpq the plan at `plan_path`
    (made by `sana-streaming quantize --plan`), by default `DEFAULT_PLAN`."""
    if precision not in PRECISIONS:
        raise PrecisionPlanError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if plan_path is not None and precision != "mpq":
        raise PrecisionPlanError("--precision_plan needs --precision mpq")
    if precision == "bf16":
        return None
    if precision == "fp8":
        return PrecisionPlan.uniform(depth, "fp8")
    plan = PrecisionPlan.read(DEFAULT_PLAN if plan_path is None else plan_path)
    if plan_path is None and 1 + max(int(name.split(".")[1]) for name in plan.layers) != depth:
        raise PrecisionPlanError(
            f"the shipped plan is for the 20-block DiT, this one has {depth} blocks; make one with "
            "`sana-streaming quantize --plan FILE` and pass --precision_plan FILE"
        )
    return plan
