"""A/B timings of GDN core versions: CUDA-graph replay medians in interleaved rounds, so that clock and
thermal drift hit every variant alike. A version is any copy of `gdn_triton.py` (e.g. an older commit's,
from `git show REV:sana_streaming/ops/gdn_triton.py > old.py`); a variant is a version plus
`LaunchConfig` changes. Prints a table and writes JSON.

    PYTHONPATH=. python kernels/gdn_ab.py --module old=old.py --module new=sana_streaming/ops/gdn_triton.py \\
        --variant old=old --variant new=new --variant "new no pdl=new:pdl=0" --shapes "hot loop" --out ab.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
from types import ModuleType

import torch
from gdn_bench import graph_ms
from gdn_common import SHAPES, make_inputs


def load_module(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gdn_ab_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def parse_variant(text: str) -> tuple[str, str, dict]:
    """'NAME=MODULE[:key=value,...]' -> (name, module, LaunchConfig changes); values are integers,
    'none' for None."""
    name, _, rest = text.partition("=")
    module, _, changes = rest.partition(":")
    change = {}
    for item in filter(None, changes.split(",")):
        key, value = item.split("=")
        change[key] = None if value == "none" else int(value)
    return name, module, change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", required=True, help="NAME=PATH of a gdn_triton.py copy")
    parser.add_argument("--variant", action="append", required=True, help="NAME=MODULE[:key=value,...]")
    parser.add_argument("--shapes", default="hot loop", help="comma-separated names from gdn_common.SHAPES")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="gdn_ab.json")
    args = parser.parse_args()
    modules = {name: load_module(name, path) for name, path in (m.split("=", 1) for m in args.module)}
    variants = [parse_variant(v) for v in args.variant]
    results = {"gpu": torch.cuda.get_device_name(), "modules": args.module, "rows": []}
    with torch.no_grad():
        for shape_name in args.shapes.split(","):
            shape = SHAPES[shape_name]
            sets = [make_inputs(shape, seed=100 + i) for i in range(4)]
            times: dict[str, list[float]] = {}
            calls = {}
            for name, module_name, change in variants:
                module = modules[module_name]
                cfg = dataclasses.replace(module.LaunchConfig.for_frames(shape[1]), **change)
                calls[name] = [
                    lambda i=i, s=s, m=module, c=cfg: m.gdn_core_triton_parts(i, state=s, config=c)
                    for i, s in sets
                ]
                times[name] = []
            for _ in range(args.rounds):
                for name, fns in calls.items():
                    times[name].append(graph_ms(fns, args.repeats) * 1000)
            for name, module_name, change in variants:
                row = {"shape": shape_name, "variant": name, "module": module_name, "change": change}
                row |= {"median_us": statistics.median(times[name]), "rounds_us": times[name]}
                results["rows"].append(row)
                print(f"{shape_name:<13} {name:<28} {row['median_us']:8.1f} us", flush=True)
            torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
