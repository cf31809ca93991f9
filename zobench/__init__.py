"""zobench: a reproducible benchmark suite for zeroth-order fine-tuning of language models.

Two layouts, told apart at import:

- a source checkout (``make install``: ``pip install -e .``): ``ROOT`` is the checkout, the configs are its
  top-level ``conf/``, runs land in ``ROOT/runs`` and converted models in ``ROOT/models``;
- an installed package (``pip install .`` or a wheel): the configs ship inside the package
  (``zobench/conf``, copied from ``conf/`` by ``setup.py``), and ``ROOT`` is the current directory, so runs
  land in ``./runs`` and models in ``./models`` wherever ``zobench`` is run.

``$ZOBENCH_RUNS`` and ``$ZOBENCH_MODELS_DIR`` move runs and models in either layout (conf/paths/default.yaml).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT = PACKAGE_DIR.parent
# A checkout holds the package beside conf/config.yaml and pyproject.toml; site-packages does not.
IN_CHECKOUT = (_CHECKOUT / "conf" / "config.yaml").is_file() and (_CHECKOUT / "pyproject.toml").is_file()
CONF_DIR = _CHECKOUT / "conf" if IN_CHECKOUT else PACKAGE_DIR / "conf"
BUILD_INFO = PACKAGE_DIR / "_build_info.json"  # written into a wheel by setup.py: the commit it was built from


def _cwd() -> Path:
    try:
        return Path.cwd()
    except OSError:  # the current directory was removed
        return Path.home()


ROOT = _CHECKOUT if IN_CHECKOUT else _cwd()


def project_root() -> Path:
    """Where runs/ and models/ go by default: the checkout, or (installed) the current directory."""
    return _CHECKOUT if IN_CHECKOUT else _cwd()


def git_commit() -> str | None:
    """The commit of this code: ``git rev-parse HEAD`` in a checkout, the build's commit in an installed
    wheel (``_build_info.json``), else None."""
    if IN_CHECKOUT:
        try:
            done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_CHECKOUT, capture_output=True, text=True,
                                  timeout=5)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return json.loads(BUILD_INFO.read_text()).get("git_commit") or None
    except (OSError, ValueError, AttributeError):
        return None


def version_line() -> str:
    """``zobench 0.1.0 (git <commit>)``, or without the commit where it is not known."""
    commit = git_commit()
    return f"zobench {__version__}" + (f" (git {commit})" if commit else "")


def _model_name(hub_id=None, path=None) -> str:
    """``model.name`` of ``model=hf``: the hub id with '/' written '--' (``ORG--NAME``, one folder of runs/),
    else the local folder's or .gguf file's name, else 'hf'."""
    if hub_id:
        return str(hub_id).strip("/").replace("/", "--")
    if path:
        return Path(str(path)).expanduser().name.removesuffix(".gguf") or "hf"
    return "hf"


# conf/paths/default.yaml resolves the project root through this, wherever the command runs.
OmegaConf.register_new_resolver("zobench_root", lambda: str(project_root()), replace=True)
OmegaConf.register_new_resolver("zobench_model_name", _model_name, replace=True)

__all__ = ["CONF_DIR", "IN_CHECKOUT", "PACKAGE_DIR", "ROOT", "__version__", "git_commit", "project_root",
           "version_line"]
