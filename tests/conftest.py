"""Shared fixtures: composed configs shrunk for CPU, and native task files written per test."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.native_data import write_native
from zobench import CONF_DIR

SMALL = ["device=cpu", "trainer.steps=4", "trainer.eval_every=2", "trainer.batch_size=4",
         "trainer.eval_batch_size=16", "data.num_train=16", "data.num_dev=8", "data.num_eval=12"]


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def native(tmp_path) -> Path:
    return write_native(tmp_path / "data")


@pytest.fixture
def small_cfg(native):
    """compose_cfg with CPU-sized budgets and the test's native data."""
    return lambda *overrides: compose_cfg(*SMALL, f"data.dir={native}", *overrides)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models gain nothing from threads, and OpenMP spinning on shared cores costs 30x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
