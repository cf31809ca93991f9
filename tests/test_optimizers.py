"""Conformance suite: every conf/optimizer/*.yaml on the same problems (optax style).

The optimizers are found by globbing conf/optimizer/, so adding a YAML adds a row to every test
here; EXPECTED must then get an entry for it (the tests say so, by name). Problems: a least-squares
quadratic (a torch module, so Forward-Grad can swap its parameters) and a tiny random OPT on a
four-example sentiment task.
"""
from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import torch
from omegaconf import OmegaConf

from tests.tiny import load_tiny, tiny_model_cfg
from zobench import CONF_DIR
from zobench.errors import ConfigError
from zobench.models import load_model
from zobench.optim import build_optimizer
from zobench.optim.closure import MicroBatchLoss
from zobench.scoring import Scorer
from zobench.tasks.base import Example
from zobench.validate import validate_optimizer

OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))


@dataclasses.dataclass(frozen=True)
class Row:
    state_copies: int       # persistent optimizer state, in copies of the trainable parameters (fp32 runs)
    forward_passes: int | tuple  # per step, at the YAML's defaults (a tuple: the first three steps, where they differ)
    quadratic_lr: float     # a step size at which 100 steps on the quadratic converge
    tiny_lr: float          # a step size at which 40 steps on the tiny model lower the loss
    quadratic_overrides: tuple = ()
    state_elements: object = None  # (named, cfg) -> elements of state, where it is not whole copies
    tiny_overrides: tuple = ()  # YAML overrides for the tiny-model test


EXPECTED = {
    "zo_sgd": Row(0, 2, 0.03, 5e-3),
    "zo_sgd_sign": Row(0, 2, 0.1, 1e-2),
    "zo_sgd_mmt": Row(1, 2, 3e-3, 1e-3),
    "zo_sgd_cons": Row(0, 5, 0.1, 5e-3),
    "zo_adam": Row(2, 2, 0.1, 1e-2),
    "forward_grad": Row(0, 1, 0.03, 5e-3),
    # auto σ = √(n/1e6) is sized for LLMs; the 15-parameter quadratic needs σ of its gradient's scale
    "bszo": Row(0, 3, 0.1, 0.3, (("estimator.sigma_prior", 1.0), ("estimator.sigma_noise", 1.0))),
    # block-wise ZO and its equal-cost baseline: the quadratic is one block (B = 1); tiny-opt has B = 4
    "zo_sgd_block": Row(0, 2, 0.03, 1e-2),
    "zo_sgd_block_baseline": Row(0, 2, 0.03, 1e-2),
    "zo_sgd_sparse": Row(0, 2, 0.1, 1e-2),  # density 0.25 (the quadratic starts at 0: ties share it evenly)
    # the quadratic has no layers: it is all head, so all backprop; lr is the FO part's
    "hybrid_zo_fo": Row(0, 1, 0.1, 0.1),
    "fo_sgd": Row(0, 1, 0.1, 3e-2),
    "fo_adam": Row(2, 1, 0.1, 3e-3),
    "hizoo": Row(1, 3, 0.03, 5e-3),  # H: one fp32 copy
    "lozo": Row(0, 2, 0.03, 2e-3),
    # LOZO-M's momentum lives in U's m×r space: Σ m·r over matrices + the 1-D parameters
    "lozo_m": Row(1, 2, 5e-3, 2e-3, (("estimator.period", 20),),
                  lambda named, cfg: sum(p.shape[0] * cfg.estimator.rank if p.dim() >= 2 else p.numel() for _, p in named)),
    "fzoo": Row(0, 9, 0.1, 1e-2),  # N = 8 one-sided probes + L(θ); no state
    # the quadratic starts at 0 (h = 0: every entry ties, then none is left at or below it) and a random-init model at
    # the lr that moves it in 40 steps throws its small entries past h in a few steps: fixed thresholds (the paper's)
    # empty the mask; threshold_every=1 re-thresholds from the current weights each step
    "sparse_mezo": Row(0, 2, 0.1, 3e-2, (("estimator.threshold_every", 1), ("estimator.sparsity", 0.5)),
                       tiny_overrides=(("estimator.threshold_every", 1),)),
    # anchor steps (t = 0, 2, ...) take the whole batch twice, minibatch steps 4 passes; θ̄ is one copy in θ's dtype;
    # η₁ = η₂ here (the YAML's η₁ = 1e-4 would leave the anchor steps still)
    "mezo_svrg": Row(1, (2, 4, 2), 0.01, 2e-3, (("estimator.anchor_lr", "${lr}"),),
                     lambda named, cfg: sum(p.numel() * p.element_size() for _, p in named) / 4,
                     tiny_overrides=(("estimator.anchor_lr", "${lr}"),)),
}


def expected(name: str) -> Row:
    if name not in EXPECTED:
        pytest.fail(f"conf/optimizer/{name}.yaml has no row in EXPECTED (tests/test_optimizers.py): add "
                    f"{name!r}: Row(state_copies, forward_passes, quadratic_lr, tiny_lr)")
    return EXPECTED[name]


def optimizer_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF_DIR / "optimizer" / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg




class LeastSquares(torch.nn.Module):
    """L(W, b) = mean_i ½‖W x_i + b − y_i‖² over the rows i of a batch: a quadratic with a mean over examples."""

    def __init__(self, n: int = 32, d_in: int = 4, d_out: int = 3, seed: int = 0, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d_in, generator=g).to(dtype)
        self.y = (self.x @ torch.randn(d_in, d_out, generator=g).to(dtype) + 0.5
                  + 0.1 * torch.randn(n, d_out, generator=g).to(dtype))
        self.weight = torch.nn.Parameter(torch.zeros(d_out, d_in, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(d_out, dtype=dtype))  # "bias": never weight-decayed
        self.rows = list(range(n))

    def loss(self, rows=None) -> torch.Tensor:
        rows = self.rows if rows is None else rows
        r = self.x[rows] @ self.weight.T + self.bias - self.y[rows]
        return 0.5 * (r ** 2).sum(1).mean()


def build(name: str, module: torch.nn.Module, steps: int = 100, seed: int = 0, **overrides):
    cfg = optimizer_cfg(name, **overrides)
    return build_optimizer(cfg, list(module.named_parameters()), steps, seed, model=module)


def run_quadratic(name: str, steps: int, seed: int = 0, **overrides):
    row = expected(name)
    problem = LeastSquares()
    opt = build(name, problem, steps, seed, **{"lr": row.quadratic_lr, **dict(row.quadratic_overrides), **overrides})
    stats = [opt.step(problem.loss) for _ in range(steps)]
    return problem, opt, stats


TINY_EXAMPLES = [
    Example("good film. It was", (" bad", " good"), 1), Example("bad film. It was", (" bad", " good"), 0),
    Example("fine. It was", (" bad", " good"), 1), Example("awful. It was", (" bad", " good"), 0),
]


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_tiny("tiny-opt")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    yield model, Scorer(model, tok, "causal"), initial
    model.load_state_dict(initial)


# -- the registry ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_has_an_expectation_row(name):
    expected(name)


def test_no_expectation_row_without_a_yaml():
    assert not set(EXPECTED) - set(OPTIMIZERS), f"rows without a conf/optimizer file: {set(EXPECTED) - set(OPTIMIZERS)}"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_yaml_documents_rule_reference_and_every_default(name):
    """Header comment (update rule + reference); every value commented; the code's docstrings say the math."""
    text = (CONF_DIR / "optimizer" / f"{name}.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert len(header) >= 2 and "←" in " ".join(header), f"{name}.yaml: header must state the update rule"
    assert any(ch.isdigit() for ch in " ".join(header[:2])), f"{name}.yaml: header must cite a reference (authors, year)"
    for line in text.splitlines():
        body = line.split("#")[0].strip()
        identity = body.startswith(("name:", "family:", "_target_:", "- _target_:"))
        if body and not body.endswith(":") and not identity:
            assert "#" in line, f"{name}.yaml: default without a comment: {line.strip()!r}"
    cfg = optimizer_cfg(name)
    assert validate_optimizer(cfg) is None
    targets = [cfg.estimator] + list(cfg.get("transforms") or []) if cfg.family == "zo" else []
    for node in targets:
        module_name, _, cls_name = node._target_.rpartition(".")
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "") + (getattr(module, cls_name).__doc__ or "")
        assert len(doc) > 200 and any(str(y) in doc for y in range(1950, 2030)), f"{node._target_}: docstring needs math + reference"


# -- the same problems for everyone ------------------------------------------------------------

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_loss_falls_on_a_quadratic(name):
    _, _, stats = run_quadratic(name, 100)
    losses = [s["loss"] for s in stats]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, f"{name}: mean loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_loss_falls_on_a_tiny_model(name, tiny):
    model, scorer, initial = tiny
    model.load_state_dict(initial)
    row = expected(name)
    opt = build_optimizer(optimizer_cfg(name, lr=row.tiny_lr, **dict(row.tiny_overrides)), list(model.named_parameters()),
                          40, 0, model=model)
    losses = [opt.step(lambda: scorer.loss(TINY_EXAMPLES))["loss"] for _ in range(40)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert all(math.isfinite(v) for v in losses)
    assert last < first - 0.1, f"{name}: mean loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_same_seed_same_trajectory(name):
    a, _, sa = run_quadratic(name, 15, seed=3)
    b, _, sb = run_quadratic(name, 15, seed=3)
    assert [s["loss"] for s in sa] == [s["loss"] for s in sb]
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    if optimizer_cfg(name).family == "zo":  # the seed draws the directions; backprop does not use it
        c, _, sc = run_quadratic(name, 15, seed=4)
        assert not torch.equal(a.weight, c.weight)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_has_expected_size(name):
    problem, opt, _ = run_quadratic(name, 2)
    param_bytes = sum(p.numel() * p.element_size() for p in problem.parameters())
    want = expected(name).state_copies * param_bytes
    # torch.optim keeps a scalar step tensor per parameter: allow a few bytes per tensor, not a copy
    assert want <= opt.state_bytes() <= want + 16 * len(list(problem.parameters())), (name, opt.state_bytes(), want)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_forward_passes_are_counted(name):
    _, _, stats = run_quadratic(name, 3)
    want = expected(name).forward_passes
    assert [s["forward_passes"] for s in stats] == (list(want) if isinstance(want, tuple) else [want] * 3)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_and_schedule_are_one_rule(name):
    """On a flat loss, two steps with a linear schedule: θ ← θ·Π(1 − lr_t·λ) for weights, biases untouched."""
    problem = LeastSquares()
    with torch.no_grad():
        problem.weight.fill_(1.0), problem.bias.fill_(1.0)
    lr, wd, total = 0.1, 0.5, 4
    opt = build(name, problem, total, **{**dict(expected(name).quadratic_overrides), "lr": lr, "weight_decay": wd,
                                         "schedule": "linear"})
    flat = lambda: (problem.weight * 0).sum() + (problem.bias * 0).sum() + 1.0  # noqa: E731
    lrs = [opt.step(flat)["lr"] for _ in range(2)]
    assert lrs == pytest.approx([lr, lr * (1 - 1 / total)])
    conservative = optimizer_cfg(name).get("conservative", False)
    factor = 1.0 if conservative else (1 - lrs[0] * wd) * (1 - lrs[1] * wd)  # a flat loss: ties keep θ
    torch.testing.assert_close(problem.weight, torch.full_like(problem.weight, factor), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(problem.bias, torch.ones_like(problem.bias), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_accumulation_over_micro_batches_equals_the_full_batch(name):
    """Same seed, same batch: 4 micro-batches give the full-batch step (the loss is a mean over examples).

    In float64, so that the finite differences do not amplify the rounding of a sum taken in parts."""
    results = []
    for micro in (1, 4):
        problem = LeastSquares(dtype=torch.float64)
        row = expected(name)
        opt = build(name, problem, 10, **{"lr": row.quadratic_lr, "accumulation_steps": micro, **dict(row.quadratic_overrides)})
        stats = [opt.step(MicroBatchLoss(problem.loss, problem.rows, micro)) for _ in range(3)]
        results.append((problem, stats))
    (full, s1), (acc, s4) = results
    torch.testing.assert_close(acc.weight, full.weight, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(acc.bias, full.bias, rtol=1e-8, atol=1e-9)
    assert [s["forward_passes"] for s in s1] == [s["forward_passes"] for s in s4]
    assert [s["loss"] for s in s1] == pytest.approx([s["loss"] for s in s4], rel=1e-10)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_accumulation_needs_a_micro_batched_closure(name):
    problem = LeastSquares()
    opt = build(name, problem, accumulation_steps=2, lr=1e-3)
    with pytest.raises(ConfigError, match="accumulation_steps=2"):
        opt.step(problem.loss)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_half_precision_runs_or_is_refused(name, dtype):
    cfg = optimizer_cfg(name, lr=expected(name).tiny_lr)
    model, tok = load_model(tiny_model_cfg("tiny-opt"), dtype, "cpu", 0)
    named = list(model.named_parameters())
    if dtype not in cfg.dtypes:
        with pytest.raises(ConfigError, match=f"dtype='{dtype}'"):
            validate_optimizer(cfg, dtype)
        with pytest.raises(ConfigError, match=f"dtype='{dtype}'"):
            build_optimizer(cfg, named, 3, 0, model=model)
        return
    scorer = Scorer(model, tok, "causal")
    opt = build_optimizer(cfg, named, 3, 0, model=model)
    losses = [opt.step(lambda: scorer.loss(TINY_EXAMPLES))["loss"] for _ in range(3)]
    assert all(math.isfinite(v) for v in losses), (name, dtype, losses)
    assert all(p.dtype == model.dtype and torch.isfinite(p).all() for _, p in named)
    if cfg.family == "zo":  # transforms keep fp32 state in half-precision runs
        row = expected(name)
        if row.state_elements is not None:
            assert opt.state_bytes() == row.state_elements(named, cfg) * 4
        else:
            assert opt.state_bytes() == row.state_copies * sum(p.numel() for _, p in named) * 4



BAD_KEYS = [
    ("zo_sgd", "estimator.num_directions", 0, ["optimizer.estimator.num_directions=0", "integer >= 1"]),
    ("zo_sgd", "estimator.sign", "scalar", ["optimizer.estimator.sign='scalar'", "null, coordinate, projected"]),
    ("zo_sgd", "accumulation_steps", 0, ["optimizer.accumulation_steps=0", "integer >= 1"]),
    ("zo_sgd", "dtypes", ["fp64"], ["optimizer.dtypes='fp64'", "fp32, fp16, bf16"]),
    ("zo_sgd_sign", "sign", "both", ["optimizer.sign='both'", "coordinate, projected"]),
    ("zo_sgd_mmt", "transforms.0.beta", 1.0, ["optimizer.transforms[0].beta=1.0", "[0, 1)"]),
    ("zo_adam", "transforms.0.eps", 0, ["optimizer.transforms[0].eps=0", "> 0"]),
    ("zo_adam", "conservative", True, ["optimizer.transforms[0]", "conservative=true", "ScaleBySign"]),
    ("zo_sgd_cons", "conservative", "yes", ["optimizer.conservative='yes'", "true or false"]),
    ("forward_grad", "eps", 0, ["optimizer.eps=0", "null"]),
    ("bszo", "estimator.num_observations", 1, ["optimizer.estimator.num_observations=1", "subspace_dim (2)"]),
    ("bszo", "estimator.extra_observations", "maybe", ["extra_observations='maybe'", "reuse, probe"]),
    ("bszo", "estimator.sigma_prior", -1.0, ["optimizer.estimator.sigma_prior=-1.0", "auto or a number > 0"]),
    ("bszo", "estimator.noise_ema", 0.0, ["optimizer.estimator.noise_ema=0.0", "(0, 1]"]),
    ("fo_adam", "accumulation_steps", -2, ["optimizer.accumulation_steps=-2"]),
    ("fo_sgd", "max_grad_norm", 0, ["optimizer.max_grad_norm=0", "null (no clipping) or a number > 0"]),
    ("fo_adam", "train_mode", "yes", ["optimizer.train_mode='yes'", "true or false"]),
    ("fo_sgd", "variant", "hf", ["optimizer.variant='hf'", "paper, zobench_code"]),
    ("fo_adam", "variant", "zobench_code", ["optimizer.variant='zobench_code'", "optimizer.variant=paper"]),
    ("zo_sgd", "train_mode", True, ["optimizer.train_mode=True", "false with optimizer=zo_sgd", "both probes"]),
    # ZO-Bench's enhancements (block-wise, sparse, hybrid)
    ("zo_sgd_block", "estimator.level", "block", ["optimizer.estimator.level='block'", "layer, attn_mlp, linear"]),
    ("zo_sgd_block", "estimator.restrict", "yes", ["optimizer.estimator.restrict='yes'", "true or false"]),
    ("zo_sgd_sparse", "estimator.sparsity", 1.0, ["optimizer.estimator.sparsity=1.0", "[0, 1)"]),
    ("zo_sgd_sparse", "estimator.group", "local", ["optimizer.estimator.group='local'", "global, layer"]),
    ("zo_sgd_sparse", "estimator.resample_every", 0, ["optimizer.estimator.resample_every=0", "integer >= 1"]),
    ("hybrid_zo_fo", "zo_layers", -1, ["optimizer.zo_layers=-1", "integer >= 0"]),
    ("hybrid_zo_fo", "zo_layers", 1.5, ["optimizer.zo_layers=1.5", "fraction in [0, 1]"]),
    ("hybrid_zo_fo", "zo_lr", 0, ["optimizer.zo_lr=0", "> 0"]),
    ("hybrid_zo_fo", "conservative", True, ["optimizer.conservative=True", "false"]),
    ("hizoo", "estimator.hessian_smoothing", 2.0, ["optimizer.estimator.hessian_smoothing=2.0", "[0, 1]"]),
    ("lozo", "estimator.rank", 0, ["optimizer.estimator.rank=0", "integer >= 1"]),
    ("lozo", "estimator.period", 0, ["optimizer.estimator.period=0", "integer >= 1"]),
    ("lozo_m", "transforms.0.beta", 1.0, ["optimizer.transforms[0].beta=1.0", "[0, 1)"]),
    ("lozo_m", "conservative", True, ["optimizer.transforms[0]", "conservative=true"]),
    ("hybrid_zo_fo", "max_grad_norm", -1.0, ["optimizer.max_grad_norm=-1.0", "> 0"]),
    ("hybrid_zo_fo", "train_mode", True, ["optimizer.train_mode=True", "family hybrid"]),
    ("fzoo", "estimator.num_directions", 1, ["optimizer.estimator.num_directions=1", "integer >= 2"]),
    ("sparse_mezo", "estimator.sparsity", 1.0, ["optimizer.estimator.sparsity=1.0", "[0, 1)"]),
    ("sparse_mezo", "estimator.threshold_every", 0, ["optimizer.estimator.threshold_every=0", "null", "integer >= 1"]),
    ("mezo_svrg", "estimator.period", 0, ["optimizer.estimator.period=0", "integer >= 1"]),
    ("mezo_svrg", "estimator.anchor_lr", 0, ["optimizer.estimator.anchor_lr=0", "> 0"]),
    ("mezo_svrg", "estimator.anchor", "frozen", ["optimizer.estimator.anchor='frozen'", "copy, live"]),
    ("mezo_svrg", "estimator.shared_direction", "yes", ["optimizer.estimator.shared_direction='yes'", "true or false"]),
]


@pytest.mark.parametrize("name,key,value,needles", BAD_KEYS, ids=[f"{n}:{k}" for n, k, _, _ in BAD_KEYS])
def test_bad_optimizer_keys_are_named_with_what_is_allowed(name, key, value, needles):
    cfg = optimizer_cfg(name)
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ConfigError) as exc:
        validate_optimizer(cfg)
    for needle in needles:
        assert needle in str(exc.value), f"{needle!r} not in {exc.value}"
