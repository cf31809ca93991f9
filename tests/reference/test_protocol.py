"""The protocol around the update, checked against the references' own code (issue 12, points 1, 2, 8).

Transcriptions, from the files named in each test:
- the training loss of each task (MeZO large_models/mezo.sh and finetune.sh ``case $TASK``; ZO-Bench
  zo-bench/sweeps/*; BSZO scripts/run_bszo_v4_opt13b.sh),
- MeZO's metric for MultiRC (large_models/tasks.py: only SQuAD and DROP set ``metric_name = "f1"``),
- MeZO's left truncation that keeps BOS (large_models/utils.py ``encode_prompt``) and its max_length 2048
  (large_models/run.py ``OurArguments.max_length``),
- the selection rules: MeZO keeps the lowest dev loss (HF Trainer ``load_best_model_at_end`` with the default
  ``metric_for_best_model="loss"``), BSZO the best dev accuracy with early stopping
  (scripts/run_bszo_v4_opt13b.sh: ``--metric_for_best_model=accuracy --early_stopping_patience=8``).
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import compose_cfg
from tests.tiny import load_tiny
from zobench.run import run_cell
from zobench.scoring import Scorer, metrics
from zobench.tasks.base import Example

# MeZO mezo.sh / finetune.sh: "For Copa, ReCoRD, SQuAD, DROP, we set --train_as_classification False; for
# others, set this flag to True". ZO-Bench's WinoGrande sweeps set --train_as_classification=False.
MEZO_LM_LOSS_TASKS = {"Copa", "ReCoRD", "SQuAD", "DROP"}
ZOBENCH_LM_LOSS_TASKS = {"WinoGrande", "Copa"}
OUR_NAMES = {"sst2": "SST2", "copa": "Copa", "multirc": "MultiRC", "winogrande": "WinoGrande"}


def reference_loss(task: str) -> str:
    name = OUR_NAMES[task]
    return "lm" if name in MEZO_LM_LOSS_TASKS | ZOBENCH_LM_LOSS_TASKS else "classification"


@pytest.mark.parametrize("task", sorted(OUR_NAMES))
def test_each_task_trains_with_its_references_loss(task):
    """MeZO mezo.sh/finetune.sh `case $TASK`, ZO-Bench sweeps/*: trainer.loss follows task.loss by default."""
    cfg = compose_cfg(f"task={task}")
    assert cfg.task.loss == reference_loss(task)
    assert cfg.trainer.loss == reference_loss(task)
    assert compose_cfg(f"task={task}", "trainer.loss=lm").trainer.loss == "lm"  # still a choice


def test_multirc_is_scored_by_accuracy_as_mezo_and_f1_is_recorded_too():
    """MeZO large_models/tasks.py: MultiRCDataset has no metric_name, so calculate_metric uses accuracy."""
    assert compose_cfg("task=multirc").task.metric == "accuracy"
    # a hand-built case: 4 answers, gold (1, 0, 0, 1), predicted (1, 1, 0, 0): accuracy 2/4, F1 = 2·1/(2·1+1+1)
    examples = [Example("q", (" No", " Yes"), g) for g in (1, 0, 0, 1)]
    got = metrics([1, 1, 0, 0], examples)
    assert got["accuracy"] == pytest.approx(0.5)
    assert got["f1"] == pytest.approx(0.5)
    got = metrics([1, 1, 1, 1], examples)  # all Yes: accuracy 0.5, F1 2·2/(2·2+2) = 0.667
    assert (got["accuracy"], got["f1"]) == (pytest.approx(0.5), pytest.approx(2 / 3))


def test_default_max_length_is_mezos_2048():
    """MeZO large_models/run.py OurArguments.max_length = 2048 (ZO-Bench and BSZO run.py: the same)."""
    assert compose_cfg().trainer.max_length == 2048


def mezo_truncate(encoding: list[int], max_length: int, add_bos: bool) -> list[int]:
    """MeZO large_models/utils.py encode_prompt: left truncation, BOS kept when the tokenizer adds one."""
    if add_bos:
        return encoding[0:1] + encoding[1:][-(max_length - 1):]
    return encoding[-max_length:]


def test_left_truncation_keeps_bos_as_mezo():
    model, tok = load_tiny("tiny-llama")
    scorer = Scorer(model, tok, "causal", max_length=12)
    context = " ".join(f"w{i}" for i in range(40))
    seq, n_cand = scorer._causal_sequence(context, " yes")
    full = tok(context, add_special_tokens=True)["input_ids"] + tok(" yes", add_special_tokens=False)["input_ids"]
    assert len(seq) == 12
    starts_with_bos = full[0] == tok.bos_token_id
    assert seq == mezo_truncate(full, 12, starts_with_bos)
    if tok.bos_token_id is not None and starts_with_bos:
        assert seq[0] == tok.bos_token_id


def _run(tmp_path, small_cfg, *overrides):
    cfg = small_cfg("model=tiny-opt", "task=sst2", "optimizer=zo_sgd", *overrides)
    summary = run_cell(cfg, tmp_path)
    assert summary["status"] == "completed", summary.get("error")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return summary, [r for r in rows if "dev_accuracy" in r]


def test_dev_loss_selection_keeps_the_lowest_dev_loss(tmp_path, small_cfg):
    """MeZO: HF Trainer load_best_model_at_end keeps the checkpoint of lowest eval_loss (its default metric)."""
    summary, dev = _run(tmp_path, small_cfg, "trainer.selection=dev_loss", "trainer.steps=6", "trainer.eval_every=1",
                        "optimizer.lr=1e-2", "optimizer.eps=1e-1")
    assert summary["selection"] == "dev_loss"
    assert all("dev_loss" in r for r in dev)
    best = min(dev, key=lambda r: (r["dev_loss"], r["step"]))
    assert summary["best_step"] == best["step"]
    assert summary["best_dev_loss"] == pytest.approx(best["dev_loss"])


def test_dev_metric_selection_is_the_default_and_logs_no_dev_loss(tmp_path, small_cfg):
    summary, dev = _run(tmp_path, small_cfg)
    assert summary["selection"] == "dev_metric"
    assert all("dev_loss" not in r for r in dev)
    best = max(dev, key=lambda r: (r["dev_accuracy"], -r["step"]))
    assert summary["best_step"] == best["step"]


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path, small_cfg):
    """BSZO scripts: --early_stopping_patience=8 on dev accuracy (HF EarlyStoppingCallback: evaluations)."""
    summary, dev = _run(tmp_path, small_cfg, "trainer.early_stopping_patience=1", "trainer.steps=12",
                        "trainer.eval_every=1", "optimizer.lr=1e-9")  # lr ~ 0: dev accuracy never improves
    assert summary["stopped_early_at"] == 2 and summary["steps"] == 2
    assert [r["step"] for r in dev] == [1, 2]


def test_bad_selection_is_refused_before_loading(tmp_path, small_cfg):
    summary = run_cell(small_cfg("trainer.selection=test"), tmp_path)
    assert summary["status"] == "failed"
    assert "trainer.selection" in summary["error"] and "dev_loss" in summary["error"]
