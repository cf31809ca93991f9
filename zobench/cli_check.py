"""Check a single run's command line before Hydra starts the job (and before any model loads).

Hydra already rejects an unknown group choice with the list of available options. For a
misspelled key it only says the key is "not in struct"; here the message also lists the keys
that do exist at that level and the closest match. Values are then checked by
``zobench.validate``. Sweeps (``-m``) are checked per cell when each job starts.
"""
from __future__ import annotations

import difflib
import re
import sys

from omegaconf import OmegaConf

from zobench import CONF_DIR
from zobench.errors import ConfigError


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def explain_missing_key(message: str, overrides: list[str]) -> str | None:
    """'trainer.stepz' -> 'trainer.stepz is not a key of trainer: allowed keys are ...'."""
    match = re.search(r"full_key: ([\w.]+)", message) or re.search(r"Key '([\w.]+)' is not in struct", message)
    if not match:
        return None
    full_key = match.group(1)
    parent, _, leaf = full_key.rpartition(".")
    base = compose([o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key])
    node = OmegaConf.select(base, parent) if parent else base
    if node is None or not OmegaConf.is_dict(node):
        return None
    allowed = sorted(str(k) for k in node.keys())
    close = difflib.get_close_matches(leaf, allowed, n=1)
    hint = f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    where = parent or "the top level"
    return f"{full_key} is not a key of {where}: allowed keys are {', '.join(allowed)}.{hint}"


def precheck(argv: list[str]) -> None:
    if any(a.startswith("-") for a in argv):  # --help, --cfg, -m, ...: Hydra handles these itself
        return
    overrides = [a for a in argv if not a.split("=", 1)[0].lstrip("+~").startswith("hydra")]
    try:
        cfg = compose(overrides)
        from zobench.validate import validate_config

        validate_config(cfg)
    except ConfigError as exc:
        sys.exit(f"zobench: bad config: {exc}")
    except Exception as exc:  # Hydra/OmegaConf composition errors
        message = str(exc) + (f"\n{exc.__cause__}" if exc.__cause__ else "")
        better = explain_missing_key(message, overrides) if "not in struct" in message else None
        sys.exit(f"zobench: bad config: {better or message}")
