"""FO baselines as MeZO's FT and ZO-Bench's FO runs ran them: HF Trainer (transformers 4.28.1).

We follow transformers' ``Trainer._inner_training_loop`` as MeZO keeps it in large_models/trainer.py
(the non-ZO branch: ``training_step`` → ``nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)``
→ ``optimizer.step()`` → ``lr_scheduler.step()`` → ``model.zero_grad()``), ``Trainer.training_step``
(``model.train()`` first), ZO-Bench zo-bench/trainer.py ``gradient_update`` (the same clip and step)
and its optimizer override (``if args.optimizer == "adam" / "sgd"``, else HF's default AdamW), and
transformers 4.28.1 ``optimization.AdamW.step`` (``optim="adamw_hf"``).
"""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import SMALL, compose_cfg
from tests.tiny import load_tiny
from zobench import CONF_DIR
from zobench.errors import ConfigError
from zobench.optim import build_optimizer
from zobench.optim.fo import HFAdamW
from zobench.scoring import Scorer
from zobench.tasks.base import Example
from zobench.validate import validate_optimizer

EXAMPLES = [
    Example("good film. It was", (" bad", " good"), 1), Example("bad film. It was", (" bad", " good"), 0),
    Example("fine. It was", (" bad", " good"), 1), Example("awful. It was", (" bad", " good"), 0),
]
STEPS = 4


def optimizer_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF_DIR / "optimizer" / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def zobench_run(name: str, steps: int = STEPS, **overrides):
    """``steps`` zobench steps of optimizer ``name`` on tiny-opt (dropout 0.1, loaded in eval mode)."""
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    opt = build_optimizer(optimizer_cfg(name, **overrides), list(model.named_parameters()), steps, 0, model=model)
    losses = [opt.step(lambda: scorer.loss(EXAMPLES))["loss"] for _ in range(steps)]
    return model, losses


def hf_trainer_run(make_optimizer, max_grad_norm: float | None, schedule: str, steps: int = STEPS):
    """A transcription of HF Trainer's step (MeZO large_models/trainer.py ``_inner_training_loop``, non-ZO
    branch; transformers' ``get_linear_schedule_with_warmup`` with 0 warmup steps for ``linear``).
    The model stays in eval mode here (zobench's default, train_mode=false) so that both runs are deterministic."""
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    factor = (lambda t: max(0.0, (steps - t) / steps)) if schedule == "linear" else (lambda t: 1.0)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.zero_grad()
    norms = []
    for _ in range(steps):
        scorer.loss(EXAMPLES).backward()  # training_step
        if max_grad_norm is not None and max_grad_norm > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)))
        optimizer.step()
        lr_scheduler.step()
        model.zero_grad()
    return model, norms


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module, **tol) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=lambda m, name=name: f"{name}: {m}", **tol)


# -- clipping -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,make,lr", [
    ("fo_sgd", lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.0), 3e-2),
    ("fo_adam", lambda params, lr: torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), 1e-3),
])
@pytest.mark.parametrize("max_grad_norm", [1.0, 0.05])
def test_clip_and_step_follow_hf_trainer(name, make, lr, max_grad_norm):
    """MeZO large_models/trainer.py ``_inner_training_loop`` (non-ZO branch: clip_grad_norm_ over
    model.parameters() after backward, then optimizer.step, lr_scheduler.step); ZO-Bench zo-bench/trainer.py
    ``gradient_update``. At 0.05 every step is clipped; the default 1.0 is HF's TrainingArguments.max_grad_norm."""
    schedule = optimizer_cfg(name).schedule
    ours, _ = zobench_run(name, lr=lr, max_grad_norm=max_grad_norm)
    theirs, norms = hf_trainer_run(lambda params: make(params, lr), max_grad_norm, schedule)
    assert_same_params(ours, theirs, rtol=1e-6, atol=1e-7)
    if max_grad_norm < 1:
        assert all(n > max_grad_norm for n in norms), norms  # the clip was active at every step
        unclipped, _ = zobench_run(name, lr=lr, max_grad_norm=None)
        assert not torch.equal(unclipped.model.decoder.layers[0].fc1.weight, ours.model.decoder.layers[0].fc1.weight)


def test_max_grad_norm_defaults_to_hf_trainers_and_null_turns_it_off():
    """transformers TrainingArguments.max_grad_norm = 1.0, not overridden by MeZO large_models/finetune.sh
    nor by any zo-bench/sweeps file; ``null`` runs the loop without the clip."""
    assert optimizer_cfg("fo_sgd").max_grad_norm == 1.0 and optimizer_cfg("fo_adam").max_grad_norm == 1.0
    ours, _ = zobench_run("fo_sgd", lr=3e-2, max_grad_norm=None)
    theirs, _ = hf_trainer_run(lambda params: torch.optim.SGD(params, lr=3e-2), None, "constant")
    assert_same_params(ours, theirs, rtol=1e-6, atol=1e-7)


def test_hybrid_fo_part_clips_as_fo_alone():
    """The hybrid's FO part uses the same clip (FOOptimizer.apply_update); on a model with no layers it is all
    FO, so hybrid_zo_fo with max_grad_norm equals fo_sgd with it."""
    from tests.test_optimizers import LeastSquares

    results = []
    for name in ("hybrid_zo_fo", "fo_sgd"):
        problem = LeastSquares()
        opt = build_optimizer(optimizer_cfg(name, lr=0.1, max_grad_norm=0.2), list(problem.named_parameters()), 5, 0,
                              model=problem)
        for _ in range(5):
            opt.step(problem.loss)
        results.append(problem)
    assert_same_params(*results, rtol=0, atol=0)
    assert optimizer_cfg("hybrid_zo_fo").get("max_grad_norm") is None  # off unless asked: no reference for it


# -- train mode ---------------------------------------------------------------------------------

def test_dropout_fixture_differs_in_train_mode_only():
    """tiny-opt has dropout 0.1: two forward passes differ in train mode and agree in eval mode."""
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    assert model.config.dropout > 0 and not model.training
    with torch.no_grad():
        assert float(scorer.loss(EXAMPLES)) == float(scorer.loss(EXAMPLES))
        model.train()
        assert float(scorer.loss(EXAMPLES)) != float(scorer.loss(EXAMPLES))
        model.eval()


@pytest.mark.parametrize("train_mode", [False, True])
def test_train_mode_turns_dropout_on_for_the_fo_step_only(train_mode):
    """HF Trainer ``training_step`` calls model.train() (dropout on); evaluation runs model.eval(). With
    train_mode the FO forward/backward sees a training model, and the model is in eval mode again after the
    step: evaluation is deterministic. Without it the step's loss is the eval-mode loss exactly."""
    model, tok = load_tiny("tiny-opt")
    scorer = Scorer(model, tok, "causal")
    opt = build_optimizer(optimizer_cfg("fo_sgd", train_mode=train_mode, lr=1e-2), list(model.named_parameters()), 3, 0,
                          model=model)
    seen = []

    def loss():
        seen.append(model.training and all(m.training for m in model.modules()))
        return scorer.loss(EXAMPLES)

    for _ in range(2):
        with torch.no_grad():
            eval_loss = float(scorer.loss(EXAMPLES))
        stats = opt.step(loss)
        assert (stats["loss"] != eval_loss) if train_mode else (stats["loss"] == eval_loss)
        assert not model.training and not any(m.training for m in model.modules())
    assert seen == [train_mode, train_mode]
    with torch.no_grad():
        assert scorer.predict(EXAMPLES) == scorer.predict(EXAMPLES)
        assert float(scorer.loss(EXAMPLES)) == float(scorer.loss(EXAMPLES))


def test_train_mode_needs_the_model():
    from tests.test_optimizers import LeastSquares

    problem = LeastSquares()
    with pytest.raises(ConfigError, match="train_mode=true needs the model"):
        build_optimizer(optimizer_cfg("fo_sgd", train_mode=True), list(problem.named_parameters()), 5, 0)


@pytest.mark.parametrize("name", ["zo_sgd", "zo_adam", "forward_grad", "hybrid_zo_fo"])
def test_zo_refuses_train_mode_before_any_model_loads(name, native, tmp_path, monkeypatch):
    """ZO needs the same deterministic loss at both probes (MeZO large_models/trainer.py ``zo_forward``:
    model.eval(), "Dropout is turned off too"): train_mode is refused by validation, before loading."""
    import zobench.models
    from zobench.run import run_cell

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was refused")

    monkeypatch.setattr(zobench.models, "load_model", no_loading)
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "model=tiny-opt", "task=sst2", f"optimizer={name}",
                      "+optimizer.train_mode=true")
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "failed"
    assert "ConfigError" in summary["error"] and "optimizer.train_mode=True" in summary["error"]
    assert "deterministic loss at both probes" in summary["error"]


# -- ZO-Bench's "SGD" that was AdamW ------------------------------------------------------------

def hf_adamw_428(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8):
    """transformers 4.28.1 ``optimization.AdamW.step`` (correct_bias=True, weight_decay=0), one step, functional."""
    beta1, beta2 = betas
    state["t"] = state.get("t", 0) + 1
    t = state["t"]
    for i, (p, g) in enumerate(zip(params, grads)):
        m, v = state.setdefault(("m", i), torch.zeros_like(p)), state.setdefault(("v", i), torch.zeros_like(p))
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p.addcdiv_(m, v.sqrt() + eps, value=-step_size)


def test_zobench_code_variant_is_hf_trainers_default_adamw():
    """ZO-Bench zo-bench/sweeps/SST2_opt-1.3b/sgd/sgd_cls_ft.yml and sgd_cls_prompt.yml set --trainer=sgd and no
    --optimizer; zo-bench/run.py's default optimizer="adamw" matches neither branch of zo-bench/trainer.py's
    override (lines ~325-330), so HF Trainer's create_optimizer AdamW ran (adamw_hf in transformers 4.28.1,
    TrainingArguments' β = (0.9, 0.999), ε = 1e-8), clipped at 1.0, constant lr."""
    lr = 1e-3
    ours, _ = zobench_run("fo_sgd", lr=lr, variant="zobench_code")
    model, tok = load_tiny("tiny-opt")
    scorer, params, state = Scorer(model, tok, "causal"), list(model.parameters()), {}
    for _ in range(STEPS):
        model.zero_grad()
        scorer.loss(EXAMPLES).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        with torch.no_grad():
            hf_adamw_428(params, [p.grad for p in params], state, lr)
    assert_same_params(ours, model, rtol=1e-6, atol=1e-7)
    # it is torch's AdamW with HF's defaults but for where ε sits: one step equals torch's at ε/√(1−β₂)
    # (over several steps they part on the coordinates whose gradients are near ε: unused embedding rows)
    one_step, _ = zobench_run("fo_sgd", steps=1, lr=lr, variant="zobench_code")
    torch_adamw, _ = hf_trainer_run(lambda p: torch.optim.AdamW(p, lr=lr, betas=(0.9, 0.999), eps=1e-8 / math.sqrt(1 - 0.999),
                                                                 weight_decay=0.0), 1.0, "constant", steps=1)
    assert_same_params(one_step, torch_adamw, rtol=1e-6, atol=1e-7)
    sgd, _ = zobench_run("fo_sgd", lr=lr)
    assert not torch.allclose(sgd.lm_head.weight, ours.lm_head.weight, rtol=1e-4, atol=1e-6)


def test_hf_adamw_is_torch_adamw_with_eps_before_bias_correction():
    """One step of transformers' AdamW at ε equals torch's AdamW at ε/√(1−β₂) (HF adds ε to √v, then corrects)."""
    g = torch.Generator().manual_seed(0)
    x0, grad = torch.randn(50, generator=g), torch.randn(50, generator=g) * 1e-6  # small g: ε matters
    a, b = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    a.grad, b.grad = grad.clone(), grad.clone()
    HFAdamW([a], lr=1e-3, eps=1e-8).step()
    torch.optim.AdamW([b], lr=1e-3, eps=1e-8 / math.sqrt(1 - 0.999), weight_decay=0.0).step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    c = x0.clone().requires_grad_()
    c.grad = grad.clone()
    torch.optim.AdamW([c], lr=1e-3, eps=1e-8, weight_decay=0.0).step()
    assert not torch.allclose(a, c, rtol=1e-6, atol=1e-9)


def test_zobench_code_is_fo_sgds_only():
    validate_optimizer(optimizer_cfg("fo_sgd", variant="zobench_code"))
    with pytest.raises(ConfigError, match="optimizer.variant='zobench_code' is not allowed with optimizer=fo_adam"):
        validate_optimizer(optimizer_cfg("fo_adam", variant="zobench_code"))
