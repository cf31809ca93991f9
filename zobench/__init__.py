"""zobench: a reproducible benchmark suite for zeroth-order fine-tuning of language models."""
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"
ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# conf/paths/default.yaml resolves the project root through this, wherever the command runs.
OmegaConf.register_new_resolver("zobench_root", lambda: str(ROOT), replace=True)
