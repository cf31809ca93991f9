"""Every shipped config composes and validates offline; bad input fails early with a clear message."""
from __future__ import annotations

import pytest

from tests.conftest import compose_cfg
from zobench import CONF_DIR
from zobench.cli_check import precheck
from zobench.models import weights_source
from zobench.validate import validate_config

GROUPS = ["model", "task", "tuning", "optimizer", "logger", "trainer", "data", "paths"]
CHOICES = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,choice", CHOICES, ids=[f"{g}={c}" for g, c in CHOICES])
def test_every_config_file_composes_and_resolves(group, choice, native):
    extra = ["model.hub_id=facebook/opt-125m"] if (group, choice) == ("model", "hf") else []  # hf: any id, given
    cfg = compose_cfg(f"{group}={choice}", f"data.dir={native}", *extra)
    assert cfg[group] is not None
    from omegaconf import OmegaConf

    OmegaConf.resolve(cfg)  # every interpolation resolves without touching the network
    if group in ("model", "task", "optimizer", "tuning"):
        validate_config(cfg)


@pytest.mark.parametrize("name", ["opt-1.3b", "opt-13b", "roberta-large", "llama2-7b", "vicuna-7b", "mistral-7b"])
def test_anchor_models_resolve_to_hub_ids_without_downloading(name):
    cfg = compose_cfg(f"model={name}")
    assert weights_source(cfg.model) == f"hub:{cfg.model.hub_id}"


def test_smollm2_prefers_the_converted_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOBENCH_MODELS_DIR", str(tmp_path))
    cfg = compose_cfg("model=smollm2-135m")
    assert weights_source(cfg.model) == "hub:HuggingFaceTB/SmolLM2-135M-Instruct"
    (tmp_path / "smollm2-135m").mkdir()
    assert weights_source(compose_cfg("model=smollm2-135m").model) == f"path:{tmp_path}/smollm2-135m"
    explicit = compose_cfg("model=smollm2-135m", f"model.path={tmp_path}")
    assert weights_source(explicit.model) == f"path:{tmp_path}"


BAD = [
    (["model=nope"], ["model", "tiny-opt"]),                                      # unknown group choice
    (["optimizer=zo_sgdd"], ["optimizer", "zo_sgd"]),
    (["trainer.stepz=3"], ["trainer.stepz", "allowed keys are", "Did you mean trainer.steps?"]),
    (["seeed=1"], ["seeed", "allowed keys are", "seed"]),
    (["trainer.steps=-1"], ["trainer.steps=-1", "integer >= 0"]),
    (["trainer.steps=abc"], ["trainer.steps", "abc", "integer"]),
    (["optimizer.eps=0"], ["optimizer.eps=0", "> 0"]),
    (["optimizer.eps=-1e-3"], ["optimizer.eps", "> 0"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "> 0"]),
    (["optimizer.schedule=cosine"], ["optimizer.schedule", "constant, linear"]),
    (["dtype=fp64"], ["dtype='fp64'", "fp32, fp16, bf16"]),
    (["device=tpu"], ["device='tpu'", "auto, cpu, cuda"]),
    (["trainer.loss=hinge"], ["trainer.loss", "lm, classification"]),
    (["task.template=fancy"], ["task.template", "mezo", "none"]),
    (["data.dir=/nonexistent/data"], ["data.dir", "/nonexistent/data"]),
    (["optimizer=hybrid_zo_fo", "tuning=prefix"], ["tuning=prefix cannot work", "choose tuning from full, lora"]),
    (["model=tiny-roberta", "task=copa"], ["roberta", "copa", "Supported"]),  # a model x task pair
    (["trainer.loss=accuracy", "optimizer=fo_adam"], ["trainer.loss='accuracy'", "lm, classification"]),
]


@pytest.mark.parametrize("overrides,needles", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_fails_before_any_model_loads(overrides, needles, monkeypatch, native):
    import zobench.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded for a bad config")

    monkeypatch.setattr(zobench.models, "load_model", no_loading)
    argv = ([f"data.dir={native}"] if not any(o.startswith("data.dir") for o in overrides) else []) + overrides
    with pytest.raises(SystemExit) as exc:
        precheck(argv)
    message = str(exc.value.code)
    assert message.startswith("zobench: bad config:")
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_a_good_command_line_passes_the_precheck(native):
    precheck(["model=tiny-llama", "task=copa", f"data.dir={native}", "trainer.steps=3"])
