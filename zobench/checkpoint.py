"""Checkpoint and resume: a killed run picks up where its last checkpoint left it.

A cell is identified by ``cell_key``: a hash of the parts of its resolved config that decide what it
computes (CELL_GROUPS, without the VOLATILE keys: where files go, logging, checkpoint cadence), and of
RESULTS_VERSION. Keys an experiment adds at the top level for its own bookkeeping (a reproduction
block's ``search`` grid, its ``per_task`` sizes) are not part of a cell: widening a block's search
grid must not make its finished cells look like other cells. A run directory that
already holds a ``completed`` summary for the same key is skipped; one that holds a
checkpoint for the same key resumes from it.

Two kinds of checkpoint:
  replay  (ZO optimizers whose state follows from the losses they observe) — the checkpoint is
          the log of every loss value the estimator saw, step by step. Resuming re-runs the
          optimizer's steps with those values in place of forward passes: the same
          perturbations, coefficients and updates, the same float operations, so the resumed
          parameters equal the uninterrupted run's bit for bit on CPU. Base weights + seed +
          loss log reproduce the run (MeZO's "seed trick" applied to checkpoints).
  state   (FO optimizers, Forward-Grad) — the trainable tensors and the optimizer's state_dict.
Files are replaced atomically: ``checkpoint.json`` (progress, and the loss log) is written
last, after the tensor file it names, so a torn write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from zobench.record import write_atomic

# Bumped by every code change that alters what a cell computes from the same config (scoring, data
# rendering, an update rule), so that re-running a sweep computes those cells again instead of
# skipping them as completed. 2: masked-LM SST-2 suffix, lm micro-batches weighted by tokens,
# block-wise ZO's immediate updates by default.
RESULTS_VERSION = 3

# The config groups and keys that decide what a cell computes; everything else is bookkeeping.
CELL_GROUPS = ("model", "task", "tuning", "optimizer", "trainer", "data", "seed", "device", "dtype")
# Keys inside those groups that change where results go or how they are logged, not what they are
# (model.local_dir: where this checkout keeps converted weights; the model is model.name / hub_id).
VOLATILE = ("model.local_dir", "trainer.log_every", "trainer.checkpoint_every", "trainer.resume", "trainer.save_trainable")


def cell_key(cfg) -> str:
    resolved = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in CELL_GROUPS}
    for dotted in VOLATILE:
        node, leaf = dotted.split(".")
        if isinstance(resolved.get(node), dict):
            resolved[node].pop(leaf, None)
    resolved["_results_version"] = RESULTS_VERSION
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, run_dir: Path, key: str):
        self.run_dir, self.key = Path(run_dir), key
        self.json_path = self.run_dir / "checkpoint.json"

    def load(self) -> dict[str, Any] | None:
        """The checkpoint of this cell, or None (absent, unreadable, or another config's)."""
        try:
            state = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            return None
        if state.get("cell_key") != self.key:
            return None
        if state.get("tensors"):
            path = self.run_dir / state["tensors"]
            if not path.exists():
                return None
            state["tensor_state"] = torch.load(path, weights_only=False)
        return state

    def save(self, state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
        old = self.load_tensor_name()
        state = {**state, "cell_key": self.key, "tensors": None}
        if tensors is not None:
            name = f"checkpoint-{state['step']}.pt"
            tmp = self.run_dir / f".{name}.tmp"
            torch.save(tensors, tmp)
            os.replace(tmp, self.run_dir / name)
            state["tensors"] = name
        write_atomic(self.json_path, json.dumps(state) + "\n")
        if old and old != state["tensors"]:
            (self.run_dir / old).unlink(missing_ok=True)

    def load_tensor_name(self) -> str | None:
        try:
            return json.loads(self.json_path.read_text()).get("tensors")
        except (OSError, ValueError):
            return None

    def clear(self) -> None:
        name = self.load_tensor_name()
        if name:
            (self.run_dir / name).unlink(missing_ok=True)
        self.json_path.unlink(missing_ok=True)
