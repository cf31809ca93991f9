"""conf/claims/*.yaml evaluated against run directories into FINDINGS.md (zobench.aggregate.findings)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from zobench import CONF_DIR
from zobench.aggregate.findings import (evaluate_claim, load_claim, load_claims, main, verdict,
                                        write_findings)
from zobench.aggregate.load import load_runs
from zobench.errors import ConfigError
from zobench.stats import metric_value, paired_bootstrap, seed_interval

N = 120  # eval examples per fixture run


def make_run(root: Path, name: str, predictions=None, zero_shot=None, gold=None, **summary) -> Path:
    """A finished run directory: summary.json (+ predictions.jsonl / zero_shot_predictions.jsonl)."""
    run = root / name
    run.mkdir(parents=True)
    fields = {"status": "completed", "model": "tiny", "task": "sst2", "tuning": "lora", "seed": 0, "dtype": "fp32",
              "template": "mezo", "metric": "accuracy", "lr": 1e-4, "steps_budget": 10, "best_dev_score": 0.5}
    fields.update(summary)
    gold = np.zeros(N, dtype=int) if gold is None else gold
    for fname, preds, key in (("predictions.jsonl", predictions, "test_score"),
                              ("zero_shot_predictions.jsonl", zero_shot, "zero_shot_score")):
        if preds is None:
            continue
        (run / fname).write_text("".join(json.dumps({"id": f"ex{i}", "gold": int(g), "prediction": int(p),
                                                     "scores": [0.0, 0.0], "group": None}) + "\n"
                                         for i, (g, p) in enumerate(zip(gold, preds))))
        fields.setdefault(key, float(np.mean(np.asarray(preds) == gold)))
    (run / "summary.json").write_text(json.dumps(fields))
    return run


def right(share: float, seed: int) -> np.ndarray:
    """Predictions against all-zero gold: about ``share`` of them right (0), at random positions."""
    rng = np.random.default_rng(seed)
    return (rng.random(N) >= share).astype(int)


def write_claim(claims: Path, name: str, body: str) -> Path:
    claims.mkdir(exist_ok=True)
    path = claims / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


DIFF = """
claim: "{a} scores above {b}"
source: {{paper: "test"}}
cells:
  a: {{where: {{optimizer: {a}}}}}
  b: {{where: {{optimizer: {b}}}}}
effect: {{kind: difference, a: a, b: b}}
expect: {{op: ">", value: 0}}
"""


@pytest.fixture
def runs(tmp_path) -> Path:
    """3 seeds of a strong (90%), a weak (50%) and a twin-of-weak (50%) optimizer, with predictions."""
    root = tmp_path / "runs"
    for seed in range(3):
        make_run(root, f"strong/s{seed}", right(0.9, seed), right(0.5, 100 + seed), optimizer="strong", seed=seed,
                 step_time_ms=100.0 + seed)
        make_run(root, f"weak/s{seed}", right(0.5, 10 + seed), optimizer="weak", seed=seed, step_time_ms=200.0)
        make_run(root, f"twin/s{seed}", right(0.5, 20 + seed), optimizer="twin", seed=seed, step_time_ms=200.0)
    return root


def evaluate(path: Path, root: Path):
    return evaluate_claim(load_claim(path), load_runs(root), root)


def test_supported_claim_is_a_paired_bootstrap_over_examples_and_seeds(tmp_path, runs):
    # a decoy grid point of "strong": better test score, worse dev score: dev selection must drop it
    for seed in range(3):
        make_run(runs, f"strong_lr2/s{seed}", np.zeros(N, dtype=int), optimizer="strong", seed=seed, lr=1e-3,
                 best_dev_score=0.1)
    f = evaluate(write_claim(tmp_path / "claims", "up", DIFF.format(a="strong", b="weak")), runs)
    assert f.verdict == "supported" and not f.reason
    assert f.n_units == 3 and f.n_examples == N and "paired bootstrap" in f.method
    gold = np.zeros(N, dtype=int)
    a = np.stack([right(0.9, s) for s in range(3)])
    b = np.stack([right(0.5, 10 + s) for s in range(3)])
    ref = paired_bootstrap(gold, a, b)
    assert f.effect == pytest.approx(100 * ref["delta"]) and (f.lo, f.hi) == pytest.approx(
        (100 * ref["ci95"][0], 100 * ref["ci95"][1]))
    assert f.lo > 0 and f.seeds is not None and f.seeds["n"] == 3  # the seed interval is reported beside


def test_contradicted_claim(tmp_path, runs):
    f = evaluate(write_claim(tmp_path / "claims", "down", DIFF.format(a="weak", b="strong")), runs)
    assert f.verdict == "contradicted" and f.hi < 0


def test_inconclusive_when_the_interval_straddles_the_bound(tmp_path, runs):
    f = evaluate(write_claim(tmp_path / "claims", "same", DIFF.format(a="weak", b="twin")), runs)
    assert f.verdict == "inconclusive" and f.lo < 0 < f.hi and not f.reason


def test_missing_cells_are_named_and_never_crash(tmp_path, runs):
    f = evaluate(write_claim(tmp_path / "claims", "gone", DIFF.format(a="strong", b="zo_adam")), runs)
    assert f.verdict == "inconclusive" and "missing cells" in f.reason and "zo_adam" in f.reason
    assert "strong" not in f.reason  # only the missing cell is named
    # no unit shared: the same optimizer on another task
    make_run(runs, "other/s0", right(0.5, 0), optimizer="other", task="copa")
    f = evaluate(write_claim(tmp_path / "claims", "apart", DIFF.format(a="strong", b="other")), runs)
    assert f.verdict == "inconclusive" and "shared by every cell" in f.reason


def test_zero_shot_side_is_the_same_runs_untuned_model(tmp_path, runs):
    path = write_claim(tmp_path / "claims", "zs", """
        claim: "training helps"
        source: {paper: test}
        cells:
          tuned: {where: {optimizer: strong}}
          untuned: {where: {optimizer: strong}, value: zero_shot_score}
        effect: {kind: difference, a: tuned, b: untuned, value: test_score}
        expect: {op: ">", value: 5}
    """)
    f = evaluate(path, runs)
    a = np.stack([right(0.9, s) for s in range(3)])
    b = np.stack([right(0.5, 100 + s) for s in range(3)])
    assert f.verdict == "supported"
    assert f.effect == pytest.approx(100 * (metric_value(np.zeros(N), a) - metric_value(np.zeros(N), b)))


def test_replicate_seeds_in_one_unit_are_averaged_not_the_first(tmp_path):
    """match: [model, task]: 3 ZO seeds (one strong, two weak) beside one zero-shot run are one unit; the
    effect is the seed-averaged difference, paired with the 3 seeds stacked (seeds × examples), n = 3 / 1."""
    root = tmp_path / "runs"
    zo = {0: right(0.9, 1), 1: right(0.55, 2), 2: right(0.55, 3)}
    for seed, pred in zo.items():
        make_run(root, f"zo/s{seed}", pred, optimizer="zo_sgd", seed=seed)
    zs = right(0.5, 4)
    make_run(root, "zero_shot/s0", zs, optimizer="zo_sgd", tuning="full", steps_budget=0, seed=0)
    path = write_claim(tmp_path / "claims", "zs", """
        claim: "ZO beats the untuned model"
        source: {paper: test}
        match: [model, task]
        cells:
          zo: {label: ZO, where: {optimizer: zo_sgd, steps_budget: {gt: 0}}}
          zs: {label: zero-shot, where: {steps_budget: 0}}
        effect: {kind: difference, a: zo, b: zs, value: test_score}
        expect: {op: ">", value: 0}
    """)
    f = evaluate(path, root)
    gold = np.zeros(N, dtype=int)
    averaged = np.mean([metric_value(gold, p) for p in zo.values()]) - metric_value(gold, zs)
    ref = paired_bootstrap(gold, np.stack(list(zo.values())), zs)
    assert f.n_units == 1 and f.replicates == {"ZO": "3", "zero-shot": "1"}
    assert f.effect == pytest.approx(100 * averaged) and f.effect == pytest.approx(100 * ref["delta"])
    assert f.effect < 100 * (metric_value(gold, zo[0]) - metric_value(gold, zs)) - 10  # not seed 0's alone
    assert (f.lo, f.hi) == pytest.approx((100 * ref["ci95"][0], 100 * ref["ci95"][1]))
    assert not any("first is used" in n for n in f.notes)
    text = (tmp_path / "F.md")
    write_findings(root, text, tmp_path / "claims")
    md = text.read_text()
    assert "n = 3 replicate run(s) per unit" in md and "| 1 (3 / 1 runs per unit) |" in md
    # without predictions: the value is the seed-averaged test score all the same
    for d in root.glob("*/s*/predictions.jsonl"):
        d.unlink()
    f = evaluate(path, root)
    assert f.n_units == 1 and f.effect == pytest.approx(100 * averaged) and "one unit" in f.reason


def test_data_seed_is_a_seed_axis(tmp_path):
    """The full-scale grids fix seed and vary data.seed: the default match pairs by (seed, data_seed)."""
    root = tmp_path / "runs"
    for ds in (1, 2, 3):
        make_run(root, f"strong/d{ds}", right(0.9, ds), optimizer="strong", seed=42, data_seed=ds)
        make_run(root, f"weak/d{ds}", right(0.5, 10 + ds), optimizer="weak", seed=42, data_seed=ds)
    f = evaluate(write_claim(tmp_path / "claims", "up", DIFF.format(a="strong", b="weak")), root)
    assert f.n_units == 3 and f.verdict == "supported" and not f.notes
    assert f.replicates == {"a": "1", "b": "1"}


def test_ratio_over_seeds_without_predictions_is_a_student_t_interval(tmp_path, runs):
    path = write_claim(tmp_path / "claims", "time", """
        claim: "strong steps are faster"
        source: {paper: test}
        select: all
        cells:
          a: {where: {optimizer: strong}}
          b: {where: {optimizer: weak}}
        effect: {kind: ratio, a: a, b: b, value: step_time_ms}
        expect: {op: "<=", value: 0.58}
    """)
    f = evaluate(path, runs)
    ref = seed_interval([100 / 200, 101 / 200, 102 / 200])
    assert f.verdict == "supported" and "Student-t" in f.method and f.n_examples == 0
    assert (f.effect, f.lo, f.hi) == pytest.approx((ref["mean"], ref["lo"], ref["hi"]))


def test_one_unit_has_no_interval(tmp_path, runs):
    body = DIFF.format(a="strong", b="weak").replace("effect:", "filters: {seed: 0}\neffect:")
    body = body.replace("b: b}", "b: b, value: step_time_ms}")  # no predictions: over units
    f = evaluate(write_claim(tmp_path / "claims", "one", body), runs)
    assert f.verdict == "inconclusive" and "one unit" in f.reason


def test_contrast_and_margin_bootstrap_the_examples_jointly(tmp_path, runs):
    contrast = write_claim(tmp_path / "claims", "dd", """
        claim: "difference of differences"
        source: {paper: test}
        cells: {s: {where: {optimizer: strong}}, w: {where: {optimizer: weak}}, t: {where: {optimizer: twin}}}
        effect: {kind: contrast, weights: {s: 1, w: -1, t: -1}}
        expect: {op: "<", value: 0}
    """)
    gold = np.zeros(N)
    acc = {k: metric_value(gold, np.stack([right(p, o + s) for s in range(3)]))
           for k, p, o in (("s", 0.9, 0), ("w", 0.5, 10), ("t", 0.5, 20))}
    f = evaluate(contrast, runs)
    assert f.effect == pytest.approx(100 * (acc["s"] - acc["w"] - acc["t"]))
    assert f.verdict == "supported" and f.lo <= f.effect <= f.hi and "jointly" in f.method
    margin = write_claim(tmp_path / "claims", "best", """
        claim: "strong is the best"
        source: {paper: test}
        cells: {s: {where: {optimizer: strong}}, w: {where: {optimizer: weak}}, t: {where: {optimizer: twin}}}
        effect: {kind: margin, a: s, others: [w, t], side: above}
        expect: {op: ">", value: 0}
    """)
    f = evaluate(margin, runs)
    assert f.effect == pytest.approx(100 * (acc["s"] - max(acc["w"], acc["t"]))) and f.verdict == "supported"


def test_a_margin_over_competitors_not_run_is_taken_over_those_measured_and_says_so(tmp_path, runs):
    """ZO-Adam 'the strongest' with ZO-SGD-Cons cut from the study: the margin over the others that ran."""
    body = """
        claim: "strong is the best"
        source: {paper: test}
        cells: {s: {where: {optimizer: strong}}, w: {where: {optimizer: weak}}, x: {label: Cut, where: {optimizer: cut}}}
        effect: {kind: margin, a: s, others: [w, x], side: above}
        expect: {op: ">", value: 0}
    """
    f = evaluate(write_claim(tmp_path / "claims", "best", body), runs)
    gold = np.zeros(N)
    acc = {k: metric_value(gold, np.stack([right(p, o + s) for s in range(3)])) for k, p, o in (("s", 0.9, 0), ("w", 0.5, 10))}
    assert f.effect == pytest.approx(100 * (acc["s"] - acc["w"])) and f.verdict == "supported"
    assert f.scope == "over 1 of the 2 others; not run: Cut"
    write_findings(runs, tmp_path / "F.md", claims_dir=tmp_path / "claims")
    assert "supported (over 1 of the 2 others; not run: Cut)" in (tmp_path / "F.md").read_text()
    # every competitor missing, or the subject itself: nothing to compare
    for others, a in (("[x]", "s"), ("[w]", "x")):
        body2 = body.replace("others: [w, x]", f"others: {others}").replace("a: s,", f"a: {a},")
        f = evaluate(write_claim(tmp_path / "claims", "none", body2), runs)
        assert f.verdict == "inconclusive" and "missing cells" in f.reason and not f.scope


def test_dev_selection_compares_each_schemes_runs_at_its_full_budget(tmp_path, runs):
    """A one-seed short run (a precision probe) with a higher dev score does not replace the 3-seed main config."""
    make_run(runs, "strong_short/s0", right(0.2, 99), optimizer="strong", seed=0, steps_budget=5, best_dev_score=0.99)
    f = evaluate(write_claim(tmp_path / "claims", "d", DIFF.format(a="strong", b="weak")), runs)
    gold = np.zeros(N)
    strong = metric_value(gold, np.stack([right(0.9, s) for s in range(3)]))
    weak = metric_value(gold, np.stack([right(0.5, 10 + s) for s in range(3)]))
    assert f.effect == pytest.approx(100 * (strong - weak)) and f.n_units == 3  # the 10-step runs, as before
    short = DIFF.format(a="strong", b="weak").replace("effect:", "filters: {steps_budget: 5}\neffect:")
    f = evaluate(write_claim(tmp_path / "claims", "s", short), runs)  # asked for: the short run alone
    assert "missing cells" in f.reason and "b (" in f.reason  # weak has no 5-step run


def test_equal_forward_passes_leaves_out_unequal_pairs(tmp_path, runs):
    for d in runs.glob("*/s*/summary.json"):
        s = json.loads(d.read_text())
        s["forward_passes"] = 40 if (s["optimizer"] == "weak" and s["seed"] == 2) else 20
        d.write_text(json.dumps(s))
    body = DIFF.format(a="strong", b="weak").replace("effect:", "equal: [forward_passes]\neffect:")
    f = evaluate(write_claim(tmp_path / "claims", "eq", body), runs)
    assert f.n_units == 2 and any("forward_passes differs" in n for n in f.notes)


def test_diverged_runs_count_as_their_zero_shot_when_asked(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        make_run(root, f"ok/s{seed}", right(0.9, seed), optimizer="ok", seed=seed)
        make_run(root, f"bad/s{seed}", None, right(0.5, seed), optimizer="bad", seed=seed, status="diverged")
    body = DIFF.format(a="ok", b="bad").replace("{optimizer: bad}}", "{optimizer: bad}, diverged_as_zero_shot: true}")
    f = evaluate(write_claim(tmp_path / "claims", "div", body), root)
    assert f.verdict == "supported" and f.n_units == 3 and f.n_examples == N
    f = evaluate(write_claim(tmp_path / "claims", "nodiv", DIFF.format(a="ok", b="bad")), root)
    assert "missing cells" in f.reason  # without the flag a diverged run is not a result


def test_slope_ratio_reads_a_csv_source(tmp_path):
    lengths = [64, 128, 256, 512, 1024]
    rows = ["optimizer,model,task,tuning,dtype,status,seq_len,pad_to_length,peak_memory_bytes"]
    rows += [f"zo,m,sst2,full,fp32,completed,{L},{L},{1000 + L * 0.2 + (L % 3)}" for L in lengths]
    rows += [f"fo,m,sst2,full,fp32,completed,{L},{L},{2000 + L * 6.0}" for L in lengths]
    (tmp_path / "mvl.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "runs").mkdir()
    path = write_claim(tmp_path / "claims", "flat", f"""
        claim: "zo flat"
        source: {{paper: test}}
        csv: [{tmp_path / 'mvl.csv'}]
        match: [model, task, tuning, dtype]
        select: all
        cells: {{zo: {{where: {{optimizer: zo}}}}, fo: {{where: {{optimizer: fo}}}}}}
        effect: {{kind: slope_ratio, a: zo, b: fo, x: seq_len, value: peak_memory_bytes}}
        expect: {{op: "<=", value: 0.1}}
    """)
    f = evaluate(path, tmp_path / "runs")
    slope = np.polyfit(lengths, [1000 + L * 0.2 + (L % 3) for L in lengths], 1)[0] / 6.0
    assert f.effect == pytest.approx(slope, rel=1e-6) and f.n_units == 5 and f.verdict == "supported"


@pytest.mark.parametrize("lo,hi,expect,want", [
    (1, 2, {"op": ">", "value": 0}, "supported"), (-2, -1, {"op": ">", "value": 0}, "contradicted"),
    (-1, 1, {"op": ">", "value": 0}, "inconclusive"), (-1, 1, {"op": "within", "value": 2}, "supported"),
    (3, 4, {"op": "within", "value": 2}, "contradicted"), (1.0, 1.05, {"op": "between", "low": 1, "high": 1.08},
                                                           "supported"),
    (0.5, 0.6, {"op": "<=", "value": 0.58}, "inconclusive"), (0.6, 0.7, {"op": "<=", "value": 0.58}, "contradicted"),
])
def test_verdict_reads_the_interval_against_the_claimed_side(lo, hi, expect, want):
    assert verdict(lo, hi, expect) == want


@pytest.mark.parametrize("body,key", [
    ("effect: {kind: median, a: a, b: b}", "effect.kind"),
    ("effect: {kind: difference, a: a, b: nope}", "effect (cell 'nope')"),
    ("effect: {kind: difference, a: a}", "effect.b"),
    ("expect: {op: '=>', value: 0}", "expect.op"),
    ("expect: {op: '>', value: high}", "expect.value"),
    ("cells: {a: {where: {lr: {gte: 1}}}, b: {}}", "cells.a.where.lr"),
    ("colour: red", "colour"),
    ("effect: {kind: difference, a: a, b: b, resample: seeds}", "effect.resample"),
    ("effect: {kind: margin, a: a, others: [b], resample: steps}", "effect.resample"),
])
def test_malformed_claim_names_the_file_and_key(tmp_path, body, key):
    good = {"claim": "x", "source": "{paper: p}", "cells": "{a: {where: {optimizer: a}}, b: {where: {optimizer: b}}}",
            "effect": "{kind: difference, a: a, b: b}", "expect": "{op: '>', value: 0}"}
    head = body.split(":")[0]
    lines = [f"{k}: {v}" for k, v in good.items() if k != head] + [body]
    path = write_claim(tmp_path / "claims", "broken", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load_claim(path)
    assert "broken.yaml" in str(err.value) and key in str(err.value)


def test_every_shipped_claim_parses_and_evaluates_on_an_empty_runs_dir(tmp_path):
    claims = load_claims(CONF_DIR / "claims")
    assert len(claims) >= 10
    (tmp_path / "runs").mkdir()
    out = tmp_path / "FINDINGS.md"
    findings = write_findings(tmp_path / "runs", out)
    assert [f.claim.id for f in findings] == [c.id for c in claims]
    text = out.read_text()
    for f in findings:
        assert f.verdict in ("supported", "contradicted", "inconclusive")
        assert f"## {f.claim.title}" in text
        if not f.claim.csv:  # a claim reading a shipped CSV may have its cells already
            assert f.verdict == "inconclusive" and "missing cells" in f.reason


def test_cli_writes_findings(tmp_path, runs, capsys):
    write_claim(tmp_path / "claims", "up", DIFF.format(a="strong", b="weak"))
    out = tmp_path / "F.md"
    assert main(["--runs-dir", str(runs), "--claims", str(tmp_path / "claims"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "supported" in capsys.readouterr().out
    assert "**Verdict.** supported" in text and "paired bootstrap over 120 eval examples" in text
    assert "**Protocol.**" in text and "metric accuracy" in text


def test_no_arm_moved_is_inconclusive_whatever_the_interval(tmp_path):
    # both arms predict exactly what their untuned models predicted: the effect (here 40 points, "supported"
    # by its interval) is the untuned models' difference, not the optimizers'; one changed prediction in one
    # run lets the verdict stand (the block-wise cells of the CPU study, 12 steps, were the first case)
    root = tmp_path / "runs"
    for seed in range(3):
        make_run(root, f"blk/s{seed}", right(0.9, seed), right(0.9, seed), optimizer="blk", seed=seed)
        make_run(root, f"base/s{seed}", right(0.5, 10 + seed), right(0.5, 10 + seed), optimizer="base", seed=seed)
    path = write_claim(tmp_path / "claims", "blk", DIFF.format(a="blk", b="base"))
    f = evaluate(path, root)
    assert f.verdict == "inconclusive" and f.unmoved and "no arm moved" in f.reason and f"all {N}" in f.reason
    assert f.lo > 0  # the interval alone would have said "supported"
    from zobench.aggregate.findings_render import render

    assert "| inconclusive (no arm moved) |" in render([f], root, 6)
    moved = right(0.9, 0)
    moved[0] = 1 - moved[0]
    (root / "blk/s0/predictions.jsonl").write_text("".join(
        json.dumps({"id": f"ex{i}", "gold": 0, "prediction": int(p), "scores": [0.0, 0.0], "group": None}) + "\n"
        for i, p in enumerate(moved)))
    f = evaluate(path, root)
    assert f.verdict == "supported" and not f.unmoved and not f.reason
    # a trained cell against the untuned model itself: "did not move" is then the finding, not a budget artifact
    zs = write_claim(tmp_path / "claims", "zs", """
        claim: "training helps"
        source: {paper: test}
        cells:
          tuned: {where: {optimizer: base}}
          untuned: {where: {optimizer: base}, value: zero_shot_score}
        effect: {kind: difference, a: tuned, b: untuned, value: test_score}
        expect: {op: ">", value: 0}
    """)
    f = evaluate(zs, root)
    assert not f.unmoved and f.verdict == "contradicted" and f.effect == 0


def test_no_arm_moved_reads_the_untuned_model_cell_when_runs_skip_their_zero_shot(tmp_path):
    # the CPU study evaluates the untuned model once (tuning=full, 0 steps) and not in every run; it stands for
    # step 0 of a LoRA run (B = 0 at init) but not of a prefix run, whose initial prefix changes the model
    root = tmp_path / "runs"
    make_run(root, "untuned", right(0.6, 0), optimizer="zo_sgd", tuning="full", steps_budget=0)
    for tuning in ("lora", "prefix"):
        make_run(root, f"blk_{tuning}", right(0.6, 0), optimizer="blk", tuning=tuning)
        make_run(root, f"base_{tuning}", right(0.6, 0), optimizer="base", tuning=tuning)
    path = write_claim(tmp_path / "claims", "blk", DIFF.format(a="blk", b="base").replace(
        "effect:", "filters: {steps_budget: {gt: 0}}\neffect:"))
    f = evaluate(path, root)
    assert f.unmoved is False  # the prefix unit has no untuned model to compare with
    for d in root.glob("*prefix"):
        for p in d.iterdir():
            p.unlink()
        d.rmdir()
    f = evaluate(path, root)
    assert f.unmoved and f.verdict == "inconclusive" and "no arm moved" in f.reason


def test_a_per_step_measurement_resamples_each_runs_steps(tmp_path, runs):
    # step_time_ms of every step in metrics.jsonl; the first (warm-up) step is dropped, as the summary drops it
    rng = np.random.default_rng(0)
    times = {}
    for opt, centre in (("strong", 60.0), ("weak", 100.0)):
        for seed in range(3):
            t = centre + rng.normal(0, 5, 40)
            t[0] = 10_000.0  # warm-up: must not count
            times[(opt, seed)] = t[1:]
            (runs / f"{opt}/s{seed}/metrics.jsonl").write_text("".join(
                json.dumps({"step": i + 1, "loss": 1.0, "step_time_ms": float(v)}) + "\n" for i, v in enumerate(t)))
    body = """
        claim: "strong steps are faster"
        source: {paper: test}
        select: all
        filters: {seed: 0}
        cells:
          a: {where: {optimizer: strong}}
          b: {where: {optimizer: weak}}
        effect: {kind: ratio, a: a, b: b, value: step_time_ms, resample: steps}
        expect: {op: "<=", value: 0.8}
    """
    f = evaluate(write_claim(tmp_path / "claims", "steps", body), runs)
    want = np.median(times[("strong", 0)]) / np.median(times[("weak", 0)])
    assert f.effect == pytest.approx(want) and f.lo < want < f.hi and f.hi - f.lo < 0.2
    assert f.verdict == "supported" and not f.reason and f.n_units == 1 and "training steps" in f.method
    # without per-step values the interval falls back to the units: one unit, none
    (runs / "weak/s0/metrics.jsonl").unlink()
    f = evaluate(write_claim(tmp_path / "claims", "steps", body), runs)
    assert f.verdict == "inconclusive" and "one unit" in f.reason and any("per-step" in n for n in f.notes)
