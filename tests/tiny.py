"""Tiny offline models for tests: random weights from conf/model/tiny-*.yaml, local tokenizer."""
from __future__ import annotations

from omegaconf import OmegaConf

from zobench import CONF_DIR
from zobench.models import load_model


def tiny_model_cfg(name: str):
    return OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")


def load_tiny(name: str = "tiny-opt", seed: int = 0):
    return load_model(tiny_model_cfg(name), "fp32", "cpu", seed)
