"""Scoring a set of examples into metrics, per-example predictions and a 95% interval.

An evaluation of the eval set leaves ``predictions.jsonl`` (``zero_shot_predictions.jsonl`` for the
untuned model) in the run directory, one JSON object per example::

    {"id": "dev:17", "gold": 1, "prediction": 0, "scores": [-2.31, -2.54], "group": null}

``scores`` are the mean log-probs of the candidates (the prediction is their argmax); ``id`` is the
example's stable source id, the same whatever the sampling seed, so two runs scored on the same eval
examples can be compared example by example (paired bootstrap, McNemar: zobench.stats).
``group`` is the unit the interval resamples (a MultiRC paragraph: its questions and answers share a passage),
null for i.i.d. examples.

The interval of a test score is a percentile bootstrap over eval examples (clusters where a group is
set): zobench.stats.bootstrap_ci, 2,000 resamples, seed 0.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from zobench.record import write_atomic
from zobench.scoring import Scorer, metrics
from zobench.tasks.base import Example

PREDICTIONS = "predictions.jsonl"
ZERO_SHOT_PREDICTIONS = "zero_shot_predictions.jsonl"


@dataclasses.dataclass
class Evaluation:
    """Metrics of one scored set and what produced them."""

    metrics: dict[str, float]
    predictions: list[int]
    scores: list[list[float]]
    examples: Sequence[Example]

    def records(self) -> list[dict[str, Any]]:
        return [{"id": ex.id if getattr(ex, "id", None) is not None else str(i), "gold": ex.gold, "prediction": p,
                 "scores": [round(x, 6) for x in s], "group": ex.group}
                for i, (ex, p, s) in enumerate(zip(self.examples, self.predictions, self.scores))]

    def interval(self, metric: str) -> list[float] | None:
        """95% bootstrap interval of ``metric`` over the examples (clusters by ``group`` when every example has one)."""
        from zobench.stats import bootstrap_ci

        if not self.examples:
            return None
        groups = [ex.group for ex in self.examples]
        lo, hi = bootstrap_ci([ex.gold for ex in self.examples], self.predictions, metric,
                              groups=groups if all(g is not None for g in groups) else None)
        return [lo, hi]

    def write(self, path: Path) -> None:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in self.records()))


def evaluate(scorer: Scorer, examples: Sequence[Example], batch_size: int) -> Evaluation:
    """Score every candidate of every example; the prediction is the argmax of the mean log-prob."""
    scores = scorer.candidate_scores(examples, batch_size) if examples else []
    predictions = [max(range(len(s)), key=s.__getitem__) for s in scores]
    return Evaluation(metrics(predictions, examples) if examples else {}, predictions, scores, examples)


def summary_fields(prefix: str, result: Evaluation, metric: str) -> dict[str, Any]:
    """``<prefix>_accuracy``, ``_f1``, ``_score`` (the task metric) and their 95% intervals, for summary.json."""
    out: dict[str, Any] = {f"{prefix}_accuracy": result.metrics["accuracy"], f"{prefix}_f1": result.metrics["f1"],
                           f"{prefix}_score": result.metrics[metric]}
    out[f"{prefix}_score_ci95"] = result.interval(metric)
    out[f"{prefix}_accuracy_ci95"] = out[f"{prefix}_score_ci95"] if metric == "accuracy" else result.interval("accuracy")
    return out
