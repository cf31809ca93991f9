"""Every optimizer in conf/optimizer/ x every tuning scheme x the tiny model families, 2 steps each.

The optimizer list is globbed, so a new optimizer file joins the product by existing. The fast
subset (run by ``make test``) crosses every optimizer with every scheme on tiny-opt, and every
scheme on tiny-llama and tiny-roberta with one ZO and one FO optimizer; the whole product is
``-m slow``. Each cell checks the run completed and reported the closed-form trainable count.
"""
from __future__ import annotations

import pytest
from tests.conftest import compose_cfg
from tests.native_data import multirc_rows, sst2_rows, write_jsonl, write_sst2_tsv
from tests.test_tuning import closed_form
from zobench import CONF_DIR
from zobench.run import run_cell
from zobench.validate import SCHEMES_BY_FAMILY

OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))
SCHEMES = ["full", "lora", "prefix", "prompt"]
MODELS = ["tiny-opt", "tiny-llama", "tiny-roberta"]
TINY = ["device=cpu", "trainer.steps=2", "trainer.eval_every=2", "trainer.batch_size=2", "trainer.eval_batch_size=16",
        "trainer.zero_shot=false", "data.num_train=6", "data.num_dev=2", "data.num_eval=4"]


def _pick(family: str) -> str:
    return next((o for o in OPTIMIZERS if compose_cfg(f"optimizer={o}").optimizer.family == family), OPTIMIZERS[0])


FAST_OPTIMIZERS = sorted({_pick("zo"), _pick("fo")})
CELLS = [(m, s, o) for m in MODELS for s in SCHEMES for o in OPTIMIZERS]
FAST = {c for c in CELLS if c[0] == "tiny-opt" or c[2] in FAST_OPTIMIZERS}



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sst2_tsv(root / "sst2/train.tsv", sst2_rows(12, "train"))
    write_sst2_tsv(root / "sst2/dev.tsv", sst2_rows(6, "dev"))
    write_jsonl(root / "multirc/val.jsonl", multirc_rows(4, "val"))
    return root


def run(tmp_path, data_dir, model, scheme, optimizer, task="sst2"):
    cfg = compose_cfg(*TINY, f"data.dir={data_dir}", f"model={model}", f"tuning={scheme}", f"optimizer={optimizer}",
                      f"task={task}")
    return run_cell(cfg, tmp_path / "run")


def check_cell(summary, scheme):
    from tests.tiny import load_tiny
    from zobench.models import count_params

    assert summary["status"] == "completed", summary["error"]
    base, _ = load_tiny(summary["model"])
    assert summary["trainable_params"] == closed_form(scheme, base.config, count_params(base))
    assert summary["steps"] == 2 and summary["forward_passes"] >= 2
    assert summary["final_loss"] == summary["final_loss"]  # not NaN
    assert 0 <= summary["test_accuracy"] <= 1


@pytest.mark.parametrize(
    "model,scheme,optimizer",
    [pytest.param(*c, marks=() if c in FAST else pytest.mark.slow) for c in CELLS],
    ids=["-".join(c) for c in CELLS],
)
def test_every_optimizer_with_every_scheme(model, scheme, optimizer, tmp_path, data_dir):
    family = compose_cfg(f"optimizer={optimizer}").optimizer.family
    summary = run(tmp_path, data_dir, model, scheme, optimizer)
    if scheme not in SCHEMES_BY_FAMILY.get(family, SCHEMES):  # a pair that cannot work: refused, before loading
        assert summary["status"] == "failed" and "cannot work" in summary["error"]
        assert summary["trainable_params"] is None
        return
    check_cell(summary, scheme)


@pytest.mark.parametrize("scheme", SCHEMES + ["icl"])
@pytest.mark.parametrize("task", ["sst2", "multirc"])
def test_roberta_scores_verbalizers_at_the_mask_under_every_scheme(task, scheme, tmp_path, data_dir):
    summary = run(tmp_path, data_dir, "tiny-roberta", scheme, "zo_sgd", task)
    assert summary["status"] == "completed", summary["error"]
    assert summary["test_score"] is not None
    if scheme != "icl":
        check_cell(summary, scheme)


def test_the_product_covers_every_optimizer_file():
    assert {"zo_sgd", "fo_sgd", "fo_adam"} <= set(OPTIMIZERS)
    assert {c[2] for c in CELLS} == set(OPTIMIZERS) and {c[2] for c in FAST} == set(OPTIMIZERS)
