"""The paper grids (``+experiment=full/...``) compose to the protocol their reference ran (issue 12).

Each block of ``conf/experiment/full`` is composed once per task it runs and checked against what the
reference's run scripts set, read from:
- MeZO (princeton-nlp/MeZO): large_models/mezo.sh and finetune.sh (``--train_as_classification`` except Copa,
  ReCoRD, SQuAD, DROP), finetune.sh (HF Trainer: ``optim`` adamw_hf, linear decay, dropout on), icl.sh and
  run.py ``sample_train_sets`` (each query's 32 demonstrations from the whole train split), HF Trainer's
  ``load_best_model_at_end`` (lowest dev loss), run.py ``OurArguments.max_length`` = 2048;
- ZO-Bench (ZO-Bench/ZO-LLM): zo-bench/trainer.py (``assert args.lr_scheduler_type == 'constant'`` for every
  trainer), zo-bench/sweeps/SST2_opt-1.3b/*/*.yml (``--train_as_classification``; ``--eval_steps=1000`` then
  ``--eval_steps=500``: the last wins), zo-bench/sweeps/{Copa,WinoGrande}_opt-13b/*/*.yml
  (``--train_as_classification=False``);
- BSZO (AeonianQuill/BSZO@e13b14c): scripts/run_opt13b_all.sh, run_bszo_v4_opt13b.sh (``--train_as_classification``
  for every task, Copa included; ``--early_stopping_patience=8``, best dev accuracy).
"""
from __future__ import annotations

import pytest

from zobench.aggregate.reproduce import _compose, block_names, plan_block

MEZO_LM = {"copa"}                      # mezo.sh / finetune.sh: Copa (of our four tasks) trains with the LM loss
ZOBENCH_LM = {"copa", "winogrande"}     # ZO-Bench's Copa and WinoGrande sweeps: --train_as_classification=False


def _cells():
    """(block, job) for each block and task of the full grids: the first cell of each."""
    for name in block_names("full"):
        seen = set()
        for job in plan_block(name).jobs:
            key = job.get("task")
            if key not in seen:
                seen.add(key)
                yield name, job


@pytest.mark.slow  # one Hydra composition per block and task: ~100 of them (planned here, not at collection)
def test_each_paper_grid_runs_its_references_protocol():
    cells = [(n, j) for n, j in _cells() if "/memory_time/" not in n]  # memory_time: a padded-length study
    assert len(cells) > 80
    for name, job in cells:
        try:
            _check(name, job)
        except AssertionError as e:
            raise AssertionError(f"{name} ({job}): {e}") from e


def _check(name: str, job: dict) -> None:
    cfg = _compose([f"+experiment={name}", *(f"{k}={v}" for k, v in job.items())])
    layout, task, family = name.split("/")[1], cfg.task.name, cfg.optimizer.get("family", "zo")
    assert cfg.trainer.max_length == 2048  # MeZO run.py OurArguments.max_length (ZO-Bench's and BSZO's run.py copy it)
    trains = cfg.trainer.steps > 0 and cfg.tuning.name != "icl"
    if layout == "mezo_opt13b":
        if trains:
            assert cfg.trainer.loss == ("lm" if task in MEZO_LM else "classification")
            assert cfg.trainer.selection == "dev_loss"  # load_best_model_at_end, metric_for_best_model="loss"
        if name.endswith("/ft"):
            assert cfg.optimizer.schedule == "linear" and cfg.optimizer.train_mode
            assert cfg.optimizer.torch_optimizer._target_ == "zobench.optim.fo.HFAdamW"
            assert cfg.optimizer.max_grad_norm == 1.0
        if cfg.tuning.name == "icl":
            assert cfg.tuning.demonstrations == "per_example" and cfg.tuning.num_demonstrations == 32
            assert cfg.tuning.demonstration_pool == "train_split"
    elif layout in ("zobench_sst2", "copa_winogrande_opt13b"):
        assert cfg.trainer.loss == ("lm" if task in ZOBENCH_LM else "classification")
        assert cfg.optimizer.schedule == "constant"
        if family != "fo":
            assert cfg.trainer.eval_every == 500
    elif layout == "bszo":
        assert cfg.trainer.loss == "classification"
        assert cfg.trainer.early_stopping_patience == 8 and cfg.trainer.selection == "dev_metric"
    if layout != "memory_time" and trains:  # the sample is what a seed varies, as in the references
        assert cfg.data.eval_seed is None
