"""``make demo``: SmolLM2-135M learning SST-2 on two CPU cores: zero-shot vs ZO-SGD vs FO-Adam.

Runs two cells through the real CLI (one process each, so each run's memory is its own), then
reads their ``summary.json`` and prints a Markdown table with each score's 95% interval:

  zero-shot       the untuned model (the ZO-SGD run's zero-shot evaluation; memory: its inference peak)
  ZO-SGD (prefix) MeZO's prefix tuning (5 tokens, real-activation init, lr 1e-2, ε 1e-1): two forward passes
                  per step, the memory of inference; ZO needs hundreds of steps to move
  FO-Adam (LoRA)  backprop, one forward and one backward per step: learns SST-2 in ~20 steps

Both use SST-2's reference loss (cross-entropy over the two label words, MeZO's --train_as_classification),
batch 16, seed 0 and the same 200 eval examples. Extra arguments are Hydra overrides passed to both runs
(``data.dir=...`` for offline data, ...).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from zobench import ROOT

COMMON = ["model=smollm2-135m", "task=sst2", "device=cpu", "seed=0", "trainer.batch_size=16",
          "data.num_train=512", "data.num_dev=0", "data.num_eval=200", "trainer.log_every=25"]
RUNS = {"zo_sgd": ["tuning=prefix", "optimizer=zo_sgd", "optimizer.lr=1e-2", "optimizer.eps=1e-1", "trainer.zero_shot=true"],
        "fo_adam": ["tuning=lora", "optimizer=fo_adam", "optimizer.lr=1e-3", "trainer.zero_shot=false"]}
LABELS = {"zo_sgd": "ZO-SGD (prefix)", "fo_adam": "FO-Adam (LoRA)"}


def run_cell_cli(overrides: list[str], run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "zobench", *overrides, f"hydra.run.dir={run_dir}"]
    print("$ python " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=False)
    summary = run_dir / "summary.json"
    if not summary.exists():
        return {"status": "failed", "error": "no summary.json (the command line was rejected: see above)"}
    return json.loads(summary.read_text())


def _mib(n) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f}"


def _ms(n) -> str:
    return "–" if n is None else f"{n:,.0f}"


def _acc(n) -> str:
    return "–" if n is None else f"{n:.3f}"


def _score(summary: dict, prefix: str) -> str:
    value, ci = summary.get(f"{prefix}_accuracy"), summary.get(f"{prefix}_accuracy_ci95")
    if value is None:
        return "–"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def table(zo: dict, fo: dict) -> str:
    rows = [("zero-shot", _score(zo, "zero_shot"), zo.get("inference_peak_memory_bytes"), None, 0, 0, None)]
    for name, s in (("zo_sgd", zo), ("fo_adam", fo)):
        rows.append((LABELS[name], _score(s, "test"), s.get("peak_memory_bytes"), s.get("step_time_ms"),
                     s.get("steps"), s.get("forward_passes"), s.get("wall_time_s")))
    n_eval = zo.get("num_eval") or fo.get("num_eval") or "?"
    lines = [f"| run | SST-2 accuracy [95% CI], n={n_eval} | steps | forward passes | step time (ms) | peak memory (MiB) | wall time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {acc} | {steps} | {'–' if fp is None else fp} | {_ms(ms)} | {_mib(mem)} | {_ms(wall)} |"
              for name, acc, mem, ms, steps, fp, wall in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zo-steps", type=int, default=200, help="ZO-SGD training steps (default 200)")
    parser.add_argument("--fo-steps", type=int, default=20, help="FO-Adam training steps (default 20)")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default runs/demo/<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs, e.g. data.dir=../shared/data")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    steps = {"zo_sgd": args.zo_steps, "fo_adam": args.fo_steps}
    summaries = {name: run_cell_cli(COMMON + extra + [f"trainer.steps={steps[name]}", f"trainer.eval_every={steps[name]}",
                                                       *args.overrides], out / name)
                 for name, extra in RUNS.items()}
    zo, fo = summaries["zo_sgd"], summaries["fo_adam"]
    text = table(zo, fo)
    notes = [f"{zo.get('model')} on {zo.get('task')}, batch 16, cross-entropy over the label words (SST-2's reference "
             f"loss), seed 0, the final state evaluated (no dev set). ZO-SGD: prefix tuning, lr={zo.get('lr')} "
             f"eps={zo.get('eps')}; FO-Adam: LoRA, lr={fo.get('lr')}. MeZO runs ZO for 20k steps: "
             f"{args.zo_steps} steps show ZO starting to learn, not where it ends (runs/reproduce-cpu has 400-step runs).",
             "Intervals: 95% bootstrap over the eval examples. Peak memory: the process's resident-set peak over the "
             "training steps, weights included (zero-shot row: the inference peak on the same batch). Step time: "
             "median, evaluation excluded. Wall time: the whole run, loading and evaluation included.",
             f"Runs: {out}"]
    report = text + "\n\n" + "\n".join(notes) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(report)
    print("\n" + report)
    failed = {n: s["error"] for n, s in summaries.items() if s.get("status") != "completed"}
    for name, error in failed.items():
        print(f"{name} run did not complete: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
