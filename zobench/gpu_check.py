"""``make gpu-check``: the bench on a CUDA GPU in fp32, fp16 and bf16, checked against the GPU targets.

For each dtype it runs ``zobench.bench`` (SmolLM2-135M when converted, the same shapes as ``make bench``)
into ``runs/bench/gpu-<dtype>.json`` (+ ``.md``) and prints, per ZO direction stream, whether

    ZO step time  <= 1.05 x two forward passes        (the RNG and update passes nearly free)
    ZO peak       <= 1.02 x the inference peak        (CUDA allocator peaks, torch.cuda.max_memory_allocated)

hold. No test needs a GPU; run this whenever one is at hand and commit the JSON files it writes.
``--device cpu --tiny`` runs the same path on a CPU (the check's own test), without the targets' meaning.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zobench import ROOT

STEP_TARGET, PEAK_TARGET = 1.05, 1.02
DTYPES = ("fp32", "fp16", "bf16")


def verdicts(res: dict) -> list[tuple[str, float, float, bool]]:
    """(ratio name, value, target, met) for each timed ZO direction stream of one bench result."""
    out = []
    for key, value in sorted(res["ratios"].items()):
        if key.startswith("zo_step_") and key.endswith("_over_two_forwards"):
            out.append((key, value, STEP_TARGET, value <= STEP_TARGET))
        elif key.startswith("zo_peak_") and key.endswith("_over_inference_peak"):
            out.append((key, value, PEAK_TARGET, value <= PEAK_TARGET))
    return out


def main(argv: list[str] | None = None) -> int:
    from zobench import bench

    parser = argparse.ArgumentParser(prog="python -m zobench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (the check's own test)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: no CUDA device here; run it on a machine with a GPU (no test needs one)", file=sys.stderr)
            return 2
    failed = 0
    for dtype in args.dtypes:
        out = args.out_dir / f"gpu-{dtype}.json" if args.device == "cuda" else args.out_dir / f"{args.device}-{dtype}.json"
        bench.main(["--device", args.device, "--dtype", dtype, "--out", str(out),
                    "--distributions", "gaussian", "rademacher", "philox:gaussian", *(["--tiny"] if args.tiny else [])])
        res = json.loads(out.read_text())
        print(f"\n{dtype} ({res.get('device')}, {res.get('model')}):")
        for key, value, target, met in verdicts(res):
            failed += not met
            print(f"  {'ok  ' if met else 'MISS'} {key:48s} {value:6.3f}  (target <= {target})")
    print(f"\ngpu-check: {failed} target(s) missed" if failed else "\ngpu-check: every target met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
