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
Files are replaced atomically (temp file, fsync, rename; the temp file is removed on failure):
``checkpoint.json`` (progress, and the loss log) is written last, after the tensor file it names
has been written and read back, and the previous tensor file is removed only then, so a torn
write or a full disk leaves the previous checkpoint intact.

A checkpoint that cannot be used (checkpoint.json cut short, tensors truncated or missing, a loss
log that does not match its step) is never silently ignored, nor fatal: a warning names the file
and says the run starts over from step 0, and the checkpoint is removed (``Checkpointer.warnings``
keeps the messages for the run's summary).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from zobench.record import save_torch_atomic, write_atomic

log = logging.getLogger("zobench")

# Bumped by every code change that alters what a cell computes from the same config (scoring, data
# rendering, an update rule), so that re-running a sweep computes those cells again instead of
# skipping them as completed. 2: masked-LM SST-2 suffix, lm micro-batches weighted by tokens,
# block-wise ZO's immediate updates by default.
RESULTS_VERSION = 3

# The config groups and keys that decide what a cell computes; everything else is bookkeeping.
CELL_GROUPS = ("model", "task", "tuning", "optimizer", "trainer", "data", "seed", "device", "dtype")
# Keys inside those groups that change where results go or how they are logged, not what they are
# (model.local_dir: where this checkout keeps converted weights; the model is model.name / hub_id).
# Keys added after results existed, at the value that computes what the code computed before them: at that
# value they stay out of the hash, so adding a key never makes every finished folder another cell.
ADDED_AT_DEFAULT = {"trainer.shared_context": True}  # packed candidates: same predictions, scores within ~1e-6
VOLATILE = ("model.local_dir", "trainer.log_every", "trainer.checkpoint_every", "trainer.resume", "trainer.save_trainable",
            "model.device_map")  # where the layers sit, not what they compute (a run resumes on other GPUs)


def cell_key(cfg) -> str:
    resolved = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in CELL_GROUPS}
    for dotted in VOLATILE:
        node, leaf = dotted.split(".")
        if isinstance(resolved.get(node), dict):
            resolved[node].pop(leaf, None)
    for dotted, default in ADDED_AT_DEFAULT.items():
        node, leaf = dotted.split(".")
        if isinstance(resolved.get(node), dict) and resolved[node].get(leaf, default) == default:
            resolved[node].pop(leaf, None)
    resolved["_results_version"] = RESULTS_VERSION
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, run_dir: Path, key: str):
        self.run_dir, self.key = Path(run_dir), key
        self.json_path = self.run_dir / "checkpoint.json"
        self.warnings: list[str] = []  # what was wrong with a checkpoint that could not be used

    def _read(self) -> dict[str, Any]:
        """checkpoint.json as a dict; raises OSError (FileNotFoundError when absent) or ValueError."""
        state = json.loads(self.json_path.read_text())
        if not isinstance(state, dict):
            raise ValueError(f"not a JSON object but {type(state).__name__}")
        return state

    def resumable(self) -> bool:
        """Whether this folder holds a checkpoint of this cell that looks usable (its tensors are not read)."""
        try:
            state = self._read()
        except (OSError, ValueError):
            return False
        if state.get("cell_key") != self.key or _problem(state) is not None:
            return False
        return not state.get("tensors") or (self.run_dir / state["tensors"]).is_file()

    def load(self) -> dict[str, Any] | None:
        """The checkpoint of this cell, or None: absent, another config's, or unusable (warned, then removed)."""
        try:
            state = self._read()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self.unusable(f"{self.json_path} is unreadable ({type(exc).__name__}: {exc})")
        if state.get("cell_key") != self.key:
            return None  # another config's: run.py refuses such a folder before anything is written
        problem = _problem(state)
        if problem is not None:
            return self.unusable(f"{self.json_path} is inconsistent ({problem})")
        if state.get("tensors"):
            import torch  # here, not at the top: the aggregator reads CELL_GROUPS without importing torch

            path = self.run_dir / state["tensors"]
            try:
                state["tensor_state"] = torch.load(path, weights_only=False)
            except Exception as exc:  # noqa: BLE001 - truncated, missing, or not a checkpoint at all
                return self.unusable(f"the tensors of the step-{state['step']} checkpoint, {path}, are unreadable "
                                     f"({type(exc).__name__}: {exc})")
        return state

    def unusable(self, what: str) -> None:
        """Warn that the checkpoint cannot be used and remove it: the run starts over from step 0."""
        message = f"{what}: the run starts over from step 0 and the checkpoint is removed"
        log.warning(message)
        self.warnings.append(message)
        self.clear()
        return None

    def save(self, state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
        old = self.load_tensor_name()
        state = {**state, "cell_key": self.key, "tensors": None}
        if tensors is not None:
            name = f"checkpoint-{state['step']}.pt"
            save_torch_atomic(tensors, self.run_dir / name, verify=True)  # read back before anything refers to it
            state["tensors"] = name
        try:
            write_atomic(self.json_path, json.dumps(state) + "\n")
        except BaseException:
            if state["tensors"] and state["tensors"] != old:  # nothing refers to it: the old checkpoint stands
                (self.run_dir / state["tensors"]).unlink(missing_ok=True)
            raise
        if old and old != state["tensors"]:
            (self.run_dir / old).unlink(missing_ok=True)

    def load_tensor_name(self) -> str | None:
        try:
            return self._read().get("tensors")
        except (OSError, ValueError):
            return None

    def clear(self) -> None:
        """Remove the checkpoint: checkpoint.json, its tensors, and tensor or temp files a kill left behind."""
        name = self.load_tensor_name()
        if name:
            (self.run_dir / name).unlink(missing_ok=True)
        self.json_path.unlink(missing_ok=True)
        for pattern in ("checkpoint-*.pt", ".checkpoint-*.pt.*.tmp", ".checkpoint.json.*.tmp"):
            for leftover in self.run_dir.glob(pattern):
                leftover.unlink(missing_ok=True)


def _problem(state: dict[str, Any]) -> str | None:
    """What makes a parsed checkpoint unusable, or None."""
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"step is {step!r}"
    if not isinstance(state.get("out", {}), dict):
        return "its summary fields are not an object"
    log_ = state.get("loss_log")
    if log_ is not None and (not isinstance(log_, list) or len(log_) != step):
        return f"its loss log holds {len(log_) if isinstance(log_, list) else log_!r} steps, not {step}"
    return None
