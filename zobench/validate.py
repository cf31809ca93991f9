"""Check a composed config before anything heavy happens: no model or dataset is loaded here.

Every message names the key and what is allowed, e.g.
``trainer.steps=-1 is not allowed: expected an integer >= 0.``
"""
from __future__ import annotations

import math
from typing import Any

from zobench.errors import ConfigError, bad_choice, bad_value
from zobench.models import DEVICES, DTYPES, KINDS, check_weights_available, weights_source
from zobench.optim import FAMILIES
from zobench.optim.blockwise import check_block_layout
from zobench.optim.directions import DISTRIBUTIONS
from zobench.optim.schedule import SCHEDULES
from zobench.scoring import LOSSES, NON_DIFFERENTIABLE
from zobench.tasks import available_tasks, validate_task
from zobench.tuning import validate_tuning
from zobench.train import SELECTIONS

# A masked LM scores one verbalizer token at the mask (LM-BFF / MeZO), so only tasks whose
# candidates are single-token label words; a causal LM scores any continuation.
MASKED_LM_TASKS = ("multirc", "sst2")


def _int_at_least(cfg: Any, key: str, low: int) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad_value(key, value, f"an integer >= {low}")


def _positive(cfg: Any, key: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise bad_value(key, value, "a finite number > 0")


def check_finite(cfg: Any) -> None:
    """No float of the config may be inf or nan (``optimizer.lr=inf``, ``optimizer.weight_decay=nan``):
    every float of zobench's config is a hyperparameter or a size, and null already means "off"."""
    from omegaconf import OmegaConf

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise bad_value(key, node, "a finite number")

    for name in cfg:
        if name == "hydra":
            continue
        try:
            node = cfg[name]
            node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception:  # noqa: BLE001 - an interpolation that does not resolve is reported where it is read
            continue
        walk(node, str(name))


def _get(cfg: Any, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_config(cfg: Any) -> None:
    from zobench.models import model_for_checks

    cfg = model_for_checks(cfg)  # model.family/kind: auto (model=hf): a local config.json or stand-ins, never the hub
    if cfg.dtype not in DTYPES:
        raise bad_choice("dtype", cfg.dtype, DTYPES)
    if cfg.device not in DEVICES:
        raise bad_choice("device", cfg.device, DEVICES)
    _int_at_least(cfg, "seed", 0)
    check_finite(cfg)
    for key, low in [("trainer.steps", 0), ("trainer.batch_size", 1), ("trainer.eval_every", 1),
                     ("trainer.eval_batch_size", 1), ("trainer.max_length", 8), ("trainer.warmup_steps", 0),
                     ("trainer.log_every", 1), ("data.num_train", 0), ("data.num_dev", 0),
                     ("data.num_eval", 1), ("data.seed", 0)]:
        _int_at_least(cfg, key, low)
    if cfg.trainer.steps > 0 and cfg.data.num_train == 0:
        raise bad_value("data.num_train", 0, "at least 1 training example when trainer.steps > 0")
    if cfg.trainer.loss not in LOSSES:
        raise bad_choice("trainer.loss", cfg.trainer.loss, LOSSES)
    if cfg.trainer.get("selection", "dev_metric") not in SELECTIONS:
        raise bad_choice("trainer.selection", cfg.trainer.selection, SELECTIONS)
    if cfg.trainer.get("early_stopping_patience") is not None:
        _int_at_least(cfg, "trainer.early_stopping_patience", 1)
    validate_objective(cfg.trainer, cfg.optimizer)
    if cfg.trainer.get("pad_to_length") is not None:  # memory vs length (zobench/tasks/_lengthen.py)
        _int_at_least(cfg, "trainer.pad_to_length", 8)
    if not isinstance(cfg.trainer.get("shared_context", True), bool):
        raise bad_value("trainer.shared_context", cfg.trainer.get("shared_context"), "true or false")
    if cfg.model.kind not in KINDS:
        raise bad_choice("model.kind", cfg.model.kind, KINDS)
    weights_source(cfg.model)
    check_weights_available(cfg.model, local_copy=False)  # an empty model.path folder; the local copy: precheck, load
    validate_tuning(cfg.tuning, cfg.data)
    validate_model_task(cfg.model, cfg.task)
    validate_optimizer(cfg.optimizer, cfg.dtype)
    validate_optimizer_tuning(cfg.optimizer, cfg.tuning)
    check_block_layout(cfg.optimizer, cfg.model, cfg.tuning)  # ZO-Bench's block levels: OPT, full/LoRA only
    validate_task(cfg.task, cfg.data, batch_size=training_batch_size(cfg))


def training_batch_size(cfg: Any) -> int | None:
    """``trainer.batch_size`` when the run trains (steps > 0 and a scheme that trains), else None: the
    train set must then hold at least one batch (checked against the real train size by the task loader)."""
    from zobench.tuning import trains

    if cfg.trainer.steps <= 0 or not trains(cfg.tuning):
        return None
    return cfg.trainer.batch_size


# Optimizer families that need something of the scheme: the hybrid splits the trainable tensors by
# layer (ZO for the first zo_layers, backprop for the rest); prefix and prompt tuning train no
# per-layer tensor (one prefix or prompt embedding), so the split would silently leave one side empty.
SCHEMES_BY_FAMILY = {"hybrid": ("full", "lora", "icl")}


def validate_optimizer_tuning(opt: Any, tuning: Any) -> None:
    allowed = SCHEMES_BY_FAMILY.get(opt.family)
    if allowed is not None and tuning.name not in allowed:
        raise ConfigError(
            f"optimizer={opt.name} with tuning={tuning.name} cannot work: the {opt.family} optimizer splits the "
            f"trainable parameters by layer, and {tuning.name} tuning trains no per-layer tensor. "
            f"With optimizer={opt.name} choose tuning from {', '.join(allowed)}.")


def validate_objective(trainer: Any, opt: Any) -> None:
    """accuracy / f1 (MeZO §3.3) have no gradient: only optimizers that use loss values alone may take them."""
    if trainer.loss not in NON_DIFFERENTIABLE:
        return
    target = str((opt.get("estimator") or {}).get("_target_", ""))
    if opt.family != "zo" or target.endswith("ForwardGrad"):
        raise ConfigError(
            f"trainer.loss={trainer.loss!r} is not differentiable: it needs a zeroth-order optimizer that uses loss "
            f"values only (family zo, not forward_grad); with optimizer={opt.name} choose trainer.loss from lm, classification.")
    if trainer.loss == "f1" and opt.get("accumulation_steps", 1) > 1:
        raise ConfigError("trainer.loss='f1' is not allowed with optimizer.accumulation_steps > 1: the F1 of a batch "
                          "is not a weighted mean of its micro-batches' F1 (use accuracy, or accumulation_steps=1).")


def validate_model_task(model: Any, task: Any) -> None:
    """A (model family, task) pair the scorer cannot score fails here, listing the pairs it can."""
    if model.kind != "masked" or task.name not in available_tasks() or task.name in MASKED_LM_TASKS:
        return  # an unknown task name is reported by validate_task
    from omegaconf import OmegaConf

    from zobench import CONF_DIR

    kinds: dict[str, set[str]] = {}
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        spec = OmegaConf.load(path)
        kinds.setdefault(spec.get("kind", "causal"), set()).add(str(spec.get("family")))
    causal = ", ".join(sorted(kinds.get("causal", set()) - kinds.get("masked", set())))
    masked = ", ".join(sorted(kinds.get("masked", set()) | {model.family}))
    raise ConfigError(
        f"model.family={model.family} (a masked LM) with task={task.name} is not supported: a masked LM scores "
        f"single-token verbalizers at the mask. Supported (model family, task) pairs: "
        f"({causal}) x ({', '.join(available_tasks())}); ({masked}) x ({', '.join(MASKED_LM_TASKS)})."
    )


def validate_optimizer(opt: Any, dtype: str | None = None) -> None:
    """The optimizer group: common keys, the estimator's and transforms' keys, and ``dtype`` (when
    given) against the optimizer's ``dtypes``. Each message names the key and what is allowed."""

    def number(key: str, value, ok, allowed: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise bad_value(key, value, allowed)

    def integer(key: str, value, low: int, allowed: str | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad_value(key, value, allowed or f"an integer >= {low}")

    def flag(key: str, value) -> None:
        if not isinstance(value, bool):
            raise bad_value(key, value, "true or false")

    def kind(node) -> str:  # the class name a component's _target_ names
        return str(node.get("_target_", "")).rsplit(".", 1)[-1] if node is not None else ""

    if opt.family not in FAMILIES:
        raise bad_choice("optimizer.family", opt.family, FAMILIES)
    _positive({"optimizer": opt}, "optimizer.lr")
    number("optimizer.weight_decay", opt.weight_decay, lambda v: v >= 0, "a number >= 0")
    if opt.schedule not in SCHEDULES:
        raise bad_choice("optimizer.schedule", opt.schedule, SCHEDULES)
    integer("optimizer.accumulation_steps", opt.get("accumulation_steps", 1), 1)
    dtypes = list(opt.get("dtypes") or DTYPES)
    for name in dtypes:
        if name not in DTYPES:
            raise bad_choice("optimizer.dtypes", name, DTYPES)
    if dtype is not None and dtype not in dtypes:
        raise ConfigError(f"dtype={dtype!r} is not allowed with optimizer={opt.name}: choose one of "
                          f"{', '.join(dtypes)} (conf/optimizer/{opt.name}.yaml says why).")
    if opt.family == "fo":
        if opt.get("eps") is not None:
            raise ConfigError(f"optimizer.eps={opt.eps!r} is a ZO perturbation scale; {opt.name} is first-order: leave it null.")
        from zobench.optim.fo import check_config as check_fo  # max_grad_norm, train_mode, variant

        check_fo(opt)
        return
    if opt.get("train_mode", False) is not False:
        raise bad_value("optimizer.train_mode", opt.train_mode, f"false with optimizer={opt.name} (family {opt.family}): "
                        "ZO needs the same deterministic loss at both probes, so dropout stays off; train mode is FO's")

    from zobench.optim.zo import check_config as check_zo  # variant, direction_stream (before `sign`, which follows variant)

    check_zo(opt)
    est, transforms = opt.estimator, list(opt.get("transforms") or [])
    if kind(est) == "ForwardGrad":  # exact directional derivatives: no perturbation
        if opt.get("eps") is not None:
            number("optimizer.eps", opt.eps, lambda v: v > 0, "null (Forward-Grad does not perturb) or a number > 0")
    else:
        _positive({"optimizer": opt}, "optimizer.eps")
    if opt.get("direction", "gaussian") not in DISTRIBUTIONS:
        raise bad_choice("optimizer.direction", opt.direction, DISTRIBUTIONS)
    if "sign" in opt:
        if opt.sign not in ("coordinate", "projected"):
            raise bad_choice("optimizer.sign", opt.sign, ("coordinate", "projected"))
    flag("optimizer.conservative", opt.get("conservative", False))
    if opt.get("conservative", False):
        for i, tr in enumerate(transforms):
            if kind(tr) in ("Momentum", "Adam", "LowRankMomentum"):
                raise ConfigError(
                    f"optimizer.transforms[{i}]={tr._target_} is not allowed with optimizer.conservative=true: "
                    "choose no transform or ScaleBySign (the two candidate updates would advance its state twice; "
                    "ZO-Bench's code did so with HF's AdamW: optimizer=zo_sgd_cons optimizer.variant=zobench_code)."
                )
        if est is not None and est.get("immediate", False):
            raise ConfigError("optimizer.conservative=true is not allowed with optimizer.estimator.immediate=true: "
                              "the blocks are updated as they are estimated, so there is no whole step to compare "
                              "(set optimizer.estimator.immediate=false).")
    if opt.family == "hybrid":  # zobench/optim/hybrid.py: zo_layers, zo_lr, torch_optimizer
        from zobench.optim.hybrid import check_config

        check_config(opt)
    if kind(est) in ("BlockSPSA", "SparseSPSA", "HiZOO", "LowRankSPSA", "FZOO", "SparseMeZO", "MeZOSVRG"):  # estimators that check their own keys (optim/blockwise.py, sparse.py, ...)
        from hydra.utils import get_class

        get_class(est._target_).check_config(est)
    key = "optimizer.estimator"
    if kind(est) in ("SPSA", "ForwardGrad"):
        integer(f"{key}.num_directions", est.get("num_directions", 1), 1)
    if kind(est) == "SPSA":
        flag(f"{key}.one_sided", est.get("one_sided", False))
        if est.get("sign") not in (None, "coordinate", "projected"):
            raise bad_choice(f"{key}.sign", est.sign, ("null", "coordinate", "projected"))
    if kind(est) == "BSZO":
        k = est.get("subspace_dim", 2)
        integer(f"{key}.subspace_dim", k, 1)
        integer(f"{key}.num_observations", est.get("num_observations", 3), k,
                f"an integer >= {key}.subspace_dim ({k}): the first k observations span the subspace")
        flag(f"{key}.one_sided", est.get("one_sided", True))
        flag(f"{key}.adaptive_noise", est.get("adaptive_noise", True))
        if est.get("extra_observations", "reuse") not in ("reuse", "probe"):
            raise bad_choice(f"{key}.extra_observations", est.extra_observations, ("reuse", "probe"))
        for name in ("sigma_prior", "sigma_noise"):
            if est.get(name, "auto") != "auto":
                number(f"{key}.{name}", est[name], lambda v: v > 0, "auto or a number > 0")
        number(f"{key}.noise_ema", est.get("noise_ema", 0.1), lambda v: 0 < v <= 1, "a number in (0, 1]")
        number(f"{key}.noise_floor", est.get("noise_floor", 0.1), lambda v: v >= 0, "a number >= 0")
    for i, tr in enumerate(transforms):
        key = f"optimizer.transforms[{i}]"
        if kind(tr) in ("Momentum", "LowRankMomentum"):
            number(f"{key}.beta", tr.get("beta", 0.9), lambda v: 0 <= v < 1, "a number in [0, 1)")
        if kind(tr) == "Adam":
            for name, default in (("b1", 0.9), ("b2", 0.999)):
                number(f"{key}.{name}", tr.get(name, default), lambda v: 0 <= v < 1, "a number in [0, 1)")
            number(f"{key}.eps", tr.get("eps", 1e-8), lambda v: v > 0, "a number > 0")
        if kind(tr) == "ScaleBySign" and tr.get("sign", "coordinate") not in ("coordinate", "projected"):
            raise bad_choice(f"{key}.sign", tr.sign, ("coordinate", "projected"))
