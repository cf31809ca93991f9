"""``make demo``: SmolLM2-135M on SST-2 with LoRA: zero-shot vs ZO-SGD vs FO-Adam on a short CPU budget.

Runs two cells through the real CLI (one process each, so each run's memory is its own), then
reads their ``summary.json`` and prints a Markdown table:

  zero-shot       the untuned model (the ZO-SGD run's zero-shot evaluation; memory: its inference peak)
  ZO-SGD (LoRA)   MeZO: two forward passes per step, memory of inference
  FO-Adam (LoRA)  backprop: one forward and one backward per step, activations kept for the backward

Both runs use the same steps, batch, seed and eval sample. Extra arguments are Hydra overrides
passed to both runs (``data.dir=...`` for offline data, ``trainer.steps=50``, ...).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from zobench import ROOT

# A few minutes on two CPU cores: MeZO's classification loss for SST-2 (cross-entropy over the two
# label words, its --train_as_classification), MeZO's batch halved, no dev set (the final state is
# evaluated), 100 eval examples. ZO-SGD keeps its LoRA defaults (conf/tuning_optimizer/lora_zo_sgd.yaml);
# FO-Adam takes lr 1e-3, above MeZO's FT-LoRA grid, because 20 steps are ~1/30 of MeZO's FT budget.
COMMON = ["model=smollm2-135m", "task=sst2", "tuning=lora", "device=cpu", "seed=0", "trainer.batch_size=8",
          "trainer.loss=classification", "data.num_train=256", "data.num_dev=0", "data.num_eval=100"]
RUNS = {"zo_sgd": ["optimizer=zo_sgd", "trainer.zero_shot=true"],
        "fo_adam": ["optimizer=fo_adam", "optimizer.lr=1e-3", "trainer.zero_shot=false"]}


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


def table(zo: dict, fo: dict) -> str:
    rows = [
        ("zero-shot", zo.get("zero_shot_accuracy"), zo.get("inference_peak_memory_bytes"), None, 0),
        ("ZO-SGD (LoRA)", zo.get("test_accuracy"), zo.get("peak_memory_bytes"), zo.get("step_time_ms"),
         zo.get("forward_passes")),
        ("FO-Adam (LoRA)", fo.get("test_accuracy"), fo.get("peak_memory_bytes"), fo.get("step_time_ms"),
         fo.get("forward_passes")),
    ]
    n_eval = (zo.get("data") or fo.get("data") or {}).get("num_eval", "?")
    lines = [f"| run | accuracy (SST-2, n={n_eval}) | peak memory (MiB) | step time (ms) | forward passes |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {_acc(acc)} | {_mib(mem)} | {_ms(ms)} | {'–' if fp is None else fp} |"
              for name, acc, mem, ms, fp in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps of each run (default 20)")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default runs/demo/<time>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs, e.g. data.dir=../shared/data")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    common = COMMON + [f"trainer.steps={args.steps}", f"trainer.eval_every={args.steps}", *args.overrides]
    summaries = {name: run_cell_cli(common + extra, out / name) for name, extra in RUNS.items()}
    zo, fo = summaries["zo_sgd"], summaries["fo_adam"]
    text = table(zo, fo)
    notes = [f"{zo.get('model')} on {zo.get('task')}, LoRA ({zo.get('trainable_params') or fo.get('trainable_params')} trainable "
             f"parameters), {args.steps} steps of batch 8, classification loss, seed 0; ZO-SGD lr={zo.get('lr')} "
             f"eps={zo.get('eps')}, FO-Adam lr={fo.get('lr')}. MeZO runs ZO for 20k steps: {args.steps} steps show "
             f"the cost of a step, not where ZO ends.",
             "Peak memory: the process's resident-set peak over the training steps, weights included "
             "(zero-shot row: the inference peak on the same batch). Step time: median, evaluation excluded.",
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
