"""Build hook (the project's metadata is pyproject.toml's): a wheel carries the configs and the commit.

``conf/`` stays at the repository's top level for developers (an editable install reads it there); a built
wheel (``pip install .``, ``pip wheel .``) gets a copy as package data, ``zobench/conf``, which
``zobench.CONF_DIR`` finds when the package is not a checkout, and ``zobench/_build_info.json`` with the git
commit it was built from (``zobench --version``; ``$ZOBENCH_GIT_COMMIT`` where the source has no .git).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _git_commit():
    if os.environ.get("ZOBENCH_GIT_COMMIT"):
        return os.environ["ZOBENCH_GIT_COMMIT"]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


class BuildPyWithConf(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads conf/ of the checkout
            return
        package = Path(self.build_lib) / "zobench"
        shutil.copytree(HERE / "conf", package / "conf", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        (package / "_build_info.json").write_text(json.dumps({"git_commit": _git_commit()}) + "\n")


setup(cmdclass={"build_py": BuildPyWithConf})
