"""Correctness sweep of the fused Triton GDN core against the float64 reference, every shape of the
benchmark and every precision; prints a table and writes JSON.

    PYTHONPATH=. python kernels/gdn_check.py --out gdn_check.json
"""

from __future__ import annotations

import argparse
import json

import torch
from gdn_common import SHAPES, errors, make_inputs, reference

from sana_streaming.ops.gdn_triton import gdn_core_triton_parts

TOLERANCE = {"bf16": (1e-2, 2e-2), "tf32": (5e-3, 1e-2), "ieee": (1e-5, 1e-4)}  # kernels.md §7.3
INPUT_DTYPE = {"bf16": torch.bfloat16, "tf32": torch.float32, "ieee": torch.float32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gdn_check.json")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "tf32", "ieee"])
    args = parser.parse_args()
    rows = []
    for precision in args.precisions:
        for name, shape in SHAPES.items():
            inputs, state = make_inputs(shape, seed=len(rows), dtype=INPUT_DTYPE[precision])
            ref = reference(inputs, state)
            out = gdn_core_triton_parts(
                inputs,
                state=state,
                precision=precision,
                return_num_den=True,
                return_state=True,
            )
            got = dict(num=out.num, den=out.den, kv=out.final_state.kv, z=out.final_state.z, y=out.y)
            errs = {k: errors(got[k], ref[k]) for k in got}
            tol = TOLERANCE[precision]
            y_tol = tol if INPUT_DTYPE[precision] == torch.float32 else TOLERANCE["bf16"]
            ok = all(
                e[0] <= (y_tol if k == "y" else tol)[0] and e[1] <= (y_tol if k == "y" else tol)[1]
                for k, e in errs.items()
            )
            rows.append(dict(name=name, shape=shape, precision=precision, errors=errs, ok=ok))
            del ref, out, got
            torch.cuda.empty_cache()
    print(
        f"{'precision':<9} {'shape':<11} {'(B,T,S,H,D)':<22} "
        + " ".join(f"{k:>17}" for k in rows[0]["errors"])
    )
    for r in rows:
        cells = " ".join(f"{e[0]:8.1e}/{e[1]:8.1e}" for e in r["errors"].values())
        print(f"{r['precision']:<9} {r['name']:<11} {r['shape']!s:<22} {cells} {'ok' if r['ok'] else 'FAIL'}")
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    print("all within tolerance" if all(r["ok"] for r in rows) else "SOME CASES OUT OF TOLERANCE")


if __name__ == "__main__":
    main()
