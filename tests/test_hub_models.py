"""model=hf: any hub model by id, family and kind read from its config; tiny models of every supported
model_type, saved to folders (model.path) or served by a faked hub. Never contacts the network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import SMALL, compose_cfg
from zobench.errors import ConfigError
from zobench.models import MODEL_TYPES, build_tiny_tokenizer, infer_model, model_for_checks

ROOT = Path(__file__).resolve().parents[1]

# Tiny transformers configs of every model_type model=hf knows (vocab: the tiny byte-level tokenizer's).
TINY = {
    "opt": dict(hidden_size=16, word_embed_proj_dim=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=512),
    "llama": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=512),
    "mistral": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, max_position_embeddings=512, sliding_window=None),
    "qwen2": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=512),
    "gpt2": dict(n_embd=16, n_layer=2, n_head=2, n_positions=512),
    "gpt_neo": dict(hidden_size=16, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
                    max_position_embeddings=512, window_size=64),
    "gpt_neox": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     max_position_embeddings=512),
    "gptj": dict(n_embd=16, n_layer=2, n_head=2, n_positions=512, rotary_dim=4),
    "roberta": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=520),
    "bert": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=512),
}


def save_tiny(folder: Path, model_type: str, weights: bool = True) -> Path:
    """A save_pretrained folder of a random tiny ``model_type`` model and the tiny tokenizer (config only
    with ``weights`` False)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    tokenizer = build_tiny_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, **TINY[model_type])
    if not weights:
        config.save_pretrained(folder)
        return folder
    auto = AutoModelForMaskedLM if MODEL_TYPES[model_type][1] == "masked" else AutoModelForCausalLM
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def fake_hub_cache(cache: Path, repo: str, folder: Path) -> Path:
    """The Hugging Face cache layout of ``repo`` holding ``folder``'s files: what an offline hub serves."""
    import shutil

    commit = "0" * 40
    entry = cache / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(folder, entry / "snapshots" / commit)
    return cache


@pytest.fixture
def no_hub(monkeypatch):
    """Any download fails the test: checks and inference from local files must not reach for the hub."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"the hub was contacted: hf_hub_download{args}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_family_and_kind_are_read_from_a_local_config(model_type, tmp_path, no_hub):
    folder = save_tiny(tmp_path / f"tiny-{model_type}", model_type, weights=False)
    cfg = compose_cfg("model=hf", f"model.path={folder}")
    assert (cfg.model.family, cfg.model.kind, cfg.model.name) == ("auto", "auto", f"tiny-{model_type}")
    inferred = infer_model(cfg.model, hub=False)
    family, kind = MODEL_TYPES[model_type]
    assert inferred == {"model_type": model_type, "family": family, "kind": kind, "source": str(folder / "config.json")}
    assert (cfg.model.family, cfg.model.kind) == (family, kind)
    assert infer_model(cfg.model) is None  # nothing left to infer


def test_set_values_are_kept_and_unknown_model_types_are_refused_with_the_supported_ones(tmp_path, no_hub):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    cfg = compose_cfg("model=hf", f"model.path={folder}")
    with pytest.raises(ConfigError) as err:
        infer_model(cfg.model, hub=False)
    message = str(err.value)
    assert "model_type='t5'" in message and "llama (llama, causal)" in message and "bert (bert, masked)" in message
    assert "model.family=<name> and model.kind=causal|masked" in message
    explicit = compose_cfg("model=hf", f"model.path={folder}", "model.family=t5", "model.kind=causal")
    assert infer_model(explicit.model, hub=False) is None and explicit.model.family == "t5"
    partly = compose_cfg("model=hf", f"model.path={save_tiny(tmp_path / 'b', 'bert', weights=False)}", "model.family=mine")
    assert infer_model(partly.model, hub=False)["kind"] == "masked" and partly.model.family == "mine"
    with pytest.raises(ConfigError, match="model.hub_id=ORG/NAME"):
        infer_model(compose_cfg("model=hf").model)


def test_checks_before_the_run_never_contact_the_hub(tmp_path, no_hub, native):
    from zobench.cli_check import precheck
    from zobench.validate import validate_config

    base = [f"data.dir={native}", "device=cpu"]
    hub_only = compose_cfg("model=hf", "model.hub_id=some-org/some-model", *base)
    checked = model_for_checks(hub_only)  # not in any cache: the family-dependent checks wait for the run
    assert (checked.model.family, checked.model.kind) == ("opt", "causal") and hub_only.model.kind == "auto"
    validate_config(checked)
    precheck(["model=hf", "model.hub_id=some-org/some-model", *base])
    # a local folder is read at once: a masked LM with a task it cannot score fails before the run
    bert = save_tiny(tmp_path / "bert", "bert")
    local = model_for_checks(compose_cfg("model=hf", f"model.path={bert}", "task=copa", *base))
    assert (local.model.family, local.model.kind) == ("bert", "masked")
    with pytest.raises(SystemExit) as exit_:
        precheck(["model=hf", f"model.path={bert}", "task=copa", *base])
    assert "model.family=bert (a masked LM) with task=copa is not supported" in str(exit_.value)


def test_the_hub_config_is_read_when_the_run_starts(tmp_path, monkeypatch, native):
    """infer_model(hub=True) reads config.json from the hub (faked here); a hub that cannot be reached is
    said with the way out; the family-dependent checks then run on the real values."""
    import huggingface_hub

    from zobench.validate import validate_config

    folder = save_tiny(tmp_path / "roberta", "roberta", weights=False)
    asked = []

    def download(repo, filename, revision=None, **kwargs):
        asked.append((repo, filename, revision))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    cfg = compose_cfg("model=hf", "model.hub_id=FacebookAI/roberta-base", "task=copa", f"data.dir={native}",
                      "+model.load_kwargs.revision=v1")
    assert cfg.model.name == "FacebookAI--roberta-base"
    assert infer_model(cfg.model)["source"] == "hub:FacebookAI/roberta-base"
    assert asked == [("FacebookAI/roberta-base", "config.json", "v1")]
    assert (cfg.model.family, cfg.model.kind) == ("roberta", "masked")
    with pytest.raises(ConfigError, match="model.family=roberta .a masked LM. with task=copa"):
        validate_config(cfg)

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ConfigError) as err:
        infer_model(compose_cfg("model=hf", "model.hub_id=org/name").model)
    assert "model.hub_id=org/name" in str(err.value) and "ConnectionError" in str(err.value)
    assert "model.path=" in str(err.value) and "model.family and model.kind" in str(err.value)


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_a_tiny_model_of_each_type_runs_a_cell(model_type, tmp_path, native, no_hub):
    from zobench.run import run_cell

    folder = save_tiny(tmp_path / f"tiny-{model_type}", model_type)
    cfg = compose_cfg(*SMALL, f"data.dir={native}", "model=hf", f"model.path={folder}", "trainer.steps=2",
                      "trainer.eval_every=2", "data.num_dev=4", "data.num_eval=4", "task=sst2")
    infer_model(cfg.model)  # what zobench.run.main does before the cell starts
    summary = run_cell(cfg, tmp_path / "run")
    assert summary["status"] == "completed", summary["error"]
    recorded = OmegaConf.load(tmp_path / "run" / "config.yaml").model
    assert (recorded.family, recorded.kind) == MODEL_TYPES[model_type] and recorded.name == f"tiny-{model_type}"


@pytest.mark.slow
def test_the_cli_runs_a_hub_id_from_a_faked_hub(tmp_path, native):
    """``zobench model=hf model.hub_id=ORG/NAME`` end to end, the hub being an offline Hugging Face cache:
    the family and kind are inferred, recorded in config.yaml, and the run lands in runs/ORG--NAME/."""
    cache = fake_hub_cache(tmp_path / "hub", "zobench-test/tiny-llama", save_tiny(tmp_path / "m", "llama"))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "ZOBENCH_RUNS": str(tmp_path / "runs")}
    done = subprocess.run(
        [sys.executable, "-m", "zobench", "model=hf", "model.hub_id=zobench-test/tiny-llama", *SMALL,
         f"data.dir={native}", "trainer.steps=2", "trainer.eval_every=2"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [config] = [c for c in (tmp_path / "runs" / "zobench-test--tiny-llama").rglob("config.yaml")
                if c.parent.name != ".hydra"]
    model = OmegaConf.load(config).model
    assert (model.family, model.kind, model.hub_id) == ("llama", "causal", "zobench-test/tiny-llama")
    assert json.loads((config.parent / "summary.json").read_text())["status"] == "completed"
    # an unknown hub id, offline: refused when the run starts, no summary written
    done = subprocess.run([sys.executable, "-m", "zobench", "model=hf", "model.hub_id=zobench-test/absent",
                           f"data.dir={native}", "device=cpu"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 1 and "model.hub_id=zobench-test/absent" in done.stderr, done.stderr[-2000:]
    assert not list((tmp_path / "runs").glob("zobench-test--absent/**/summary.json"))
