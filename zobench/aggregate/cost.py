"""The cost model behind the plan of ``make reproduce-tables``: estimated wall-clock seconds of one cell.

* ``cpu_seconds``: SmolLM2-135M on 2 CPU cores, from constants timed on this project's machines (measured
  with one thread and scaled to two).
* ``gpu_seconds``: OPT-13B / OPT-1.3B training steps timed from MeZO's own per-step wall-clock (Malladi et
  al. 2023, Appendix F.6, Table 23, A100-80GB), scaled by batch size and by forward passes per step;
  evaluation is not counted.

A cell is the dict of its resolved settings (``zobench.aggregate.reproduce._job_settings``): model, task,
tuning, optimizer, family, batch, steps, max_length, eval_every, num_dev, num_eval, zero_shot, test,
demonstrations.
"""
from __future__ import annotations

import math

# -- CPU cost model: SmolLM2-135M, fp32, 2 idle cores. Constants timed with torch on 1 thread, then checked
# against idle 2-core runs of the study's settings (make demo, batch 16 on SST-2: ZO-SGD prefix step 1.45 s
# measured / 1.46 s modelled; FO-Adam LoRA step 1.84 s / 1.92 s; 200 eval examples ~14 s / 14 s). The plan
# sets each finished cell's wall time beside its estimate, and scales what is left by the pace measured.
FWD_OVERHEAD_S = 0.08          # one forward call, whatever its size
FWD_S_PER_TOKEN = 0.0031       # per token of a padded batch (8 x 16 tokens: 0.50 s; 8 x 384: 9.7 s)
ZO_SWEEP_FULL_S = 1.47         # one seeded pass of N(0, 1) over all 135M parameters (3 per ZO-SGD step): the
                               # study's ZO-SGD full cell logs 2,765 ms of update for 3 passes on 2 threads (was 1.03,
                               # timed on one thread: torch's generator gains little from the second)
FO_UPDATE_FULL_S = 4.0         # backward bookkeeping + AdamW/SGD update of 135M parameters
THREAD_SPEEDUP = 1.6           # 2 threads against 1
JOB_OVERHEAD_S = 4.0           # per cell in a multirun: load weights, sample data
PROCESS_START_S = 15.0         # per block: python, torch, transformers, hydra
TOKENS = {"sst2": 17, "copa": 14, "winogrande": 23, "multirc": 387}  # mean tokens of a gold sequence
# eval rows per example, calibrated: short SST-2 rows cost about two of the model's rows; MultiRC's Yes/No share one
# long row holding the passage
PAIRS = {"sst2": 2, "copa": 2, "winogrande": 2, "multirc": 1}
LAYERS = {"smollm2-135m": 30}  # decoder layers: block-wise ZO probes 2B times a step (B: a block per trained layer)
VIRTUAL_TOKENS = {"prefix": 5, "prompt": 10}  # positions prefix / prompt tuning add to every training sequence
# COPA and WinoGrande score their two multi-token candidates in one packed row after one copy of the context
# (trainer.shared_context, the default): a row holds the context and both candidates, ~1.5 rows of a gold sequence
# (a candidate is ~half of one), and with k in-context demonstrations the context outweighs them: 1 + 0.5/(k+1).
# Measured: zero-shot WinoGrande 92 s (modelled 121 with 2 rows, 91 with this), ICL on COPA 99 s (183 / 94).
SHARED_CONTEXT = {"copa": 0.5, "winogrande": 0.5}  # a candidate's share of a gold sequence's tokens
EVAL_PAIRS_PER_BATCH = 32
# a forward's cost in the weights' dtype against fp32: SmolLM2-135M, 16 x 64 tokens, one thread, on this project's
# CPUs (AVX-512 BF16 and AMX: torch's bf16 matmuls run there ~3x faster than fp32; fp16 has no such kernels). A CPU
# without AMX runs bf16 no faster than fp32: the plan's measured-against-estimate line shows it.
FWD_DTYPE = {"fp32": 1.0, "bf16": 0.35, "fp16": 0.9}
# forward-pass equivalents and parameter sweeps per step, per optimizer (zo_sgd: 2 forwards, perturb
# +eps, -2eps, then restore-and-update: 3 sweeps); FO: forward + backward ~ 3 forwards
STEP_COST = {"zo_sgd": (2, 3), "zo_sgd_sign": (2, 3), "zo_sgd_mmt": (2, 4), "zo_adam": (2, 5),
             "zo_sgd_cons": (5, 7), "forward_grad": (3, 2), "bszo": (3, 6), "fo_sgd": (3, 0), "fo_adam": (3, 0),
             "hizoo": (3, 5), "lozo": (2, 0.4), "lozo_m": (2, 0.4),
             # bszo: one-sided, k = 2: the base loss and 2 probes (m = 3 observations, the third reused), each
             # direction drawn to perturb and to restore, then 2 for the update (its runs log 3 forwards a step)
             # fzoo: N + 1 = 9 forwards, 3N − 1 = 23 Rademacher draws (~1/3 of a Gaussian pass each); sparse_mezo: zo_sgd's
             # + one mask pass; mezo_svrg: a minibatch step (2 probes at θ, 2 at θ̄, 9 draws); its anchor steps, every
             # q-th, cost 2·num_train/batch forwards, which this per-step table cannot hold
             "fzoo": (9, 8), "sparse_mezo": (2, 4), "mezo_svrg": (4, 9),
             # zo_sgd_sparse: zo_sgd's + its magnitude mask (the study's full cell: 5,095 ms of update against 2,765)
             "zo_sgd_sparse": (2, 5.5),
             # zo_sgd_cons: the 2 probes, L(θ) and the two candidates θ ∓ lr·δ (its runs log 5 forwards a step);
             # hybrid_zo_fo: 2 ZO probes of the shallow half + a forward and a backward (~2 forwards) for the deep
             # half: 5, as its FP-equivalents (zobench/compute.py); without an entry it was priced as ZO-SGD and
             # its cells ran at x1.62-1.66 of the plan
             "hybrid_zo_fo": (5, 3)}

# -- GPU: seconds per training step from MeZO Table 23 (MultiRC, A100-80GB), batch in brackets,
# and the GPUs it took. conf/published/mezo2023_memory_time.csv holds the same numbers with sources.
GPU_STEP_S = {("opt-13b", "zo"): (2.702, 16, 1), ("opt-13b", "fo"): (13.638, 8, 4),
              ("opt-1.3b", "zo"): (0.815, 16, 1), ("opt-1.3b", "fo"): (0.784, 8, 1)}


def _fwd_s(tokens: float, dtype: str = "fp32") -> float:
    return FWD_OVERHEAD_S + FWD_S_PER_TOKEN * tokens * FWD_DTYPE.get(dtype, 1.0)


def cpu_seconds(s: dict) -> float:
    """Wall-clock seconds of one SmolLM2-135M cell on 2 cores (the cost model above)."""
    tokens = min(TOKENS.get(s["task"], 64) * (1 + s.get("demonstrations", 0)), s["max_length"])
    dtype = s.get("dtype", "fp32")
    fwd, full = _fwd_s(s["batch"] * (tokens + VIRTUAL_TOKENS.get(s["tuning"], 0)), dtype), s["tuning"] == "full"
    fwds, sweeps = STEP_COST.get(s["optimizer"], (2, 3))
    if s["optimizer"] in ("zo_sgd_block", "zo_sgd_block_baseline"):  # level=layer: a block per layer (+2 in full)
        blocks = LAYERS.get(s["model"], 30) + (2 if full else 0)
        fwds, sweeps = 2 * blocks, 3
    if s["family"] == "fo":
        step = fwds * fwd + (FO_UPDATE_FULL_S if full else 0.3)
    else:
        step = fwds * fwd + sweeps * (ZO_SWEEP_FULL_S if full else 0.02)
    pair = _fwd_s(EVAL_PAIRS_PER_BATCH * tokens, dtype) / EVAL_PAIRS_PER_BATCH
    pairs = PAIRS.get(s["task"], 2)
    if s["task"] in SHARED_CONTEXT and s.get("shared_context", True):
        pairs = 1 + (pairs - 1) * SHARED_CONTEXT[s["task"]] / (1 + s.get("demonstrations", 0))
    steps = s["steps"] if s["tuning"] != "icl" else 0
    dev_evals = math.ceil(steps / s["eval_every"]) if steps else 0
    evals = s["num_eval"] * ((s["zero_shot"] and steps > 0) + s.get("test", True))
    cpu = steps * step + (dev_evals * s["num_dev"] + evals) * pairs * pair
    return cpu / THREAD_SPEEDUP + JOB_OVERHEAD_S


def gpu_seconds(s: dict) -> tuple[float, float] | None:
    """(wall seconds, GPU-hours) of the training steps of one cell, from MeZO Table 23; None if unknown."""
    family = "fo" if s["family"] == "fo" else "zo"
    known = GPU_STEP_S.get((s["model"], family))
    if known is None or s["tuning"] == "icl":
        return None if known is None else (0.0, 0.0)
    per_step, batch, gpus = known
    fwds = STEP_COST.get(s["optimizer"], (2, 3))[0]
    scale = (s["batch"] / batch) * (fwds / (3 if family == "fo" else 2))
    wall = s["steps"] * per_step * scale
    return wall, wall * gpus / 3600
