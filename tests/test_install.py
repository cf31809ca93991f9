"""A non-editable install works from any directory: the wheel carries conf/ (as zobench/conf) and its commit;
runs land under the current directory (or $ZOBENCH_RUNS). Builds the wheel, installs it into a fresh venv
(torch and the rest from this environment), and runs a tiny cell elsewhere."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.native_data import write_native
from zobench import __version__, git_commit

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = {"runs", "models", ".git", "build", "dist", "notebooks", ".pytest_cache", "__pycache__", ".venv"}
CELL = ["model=tiny-opt", "device=cpu", "trainer.steps=2", "trainer.eval_every=2", "trainer.batch_size=4",
        "data.num_train=8", "data.num_dev=4", "data.num_eval=8"]


def _run(cmd, cwd, env, timeout=300):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, env, commit): the wheel of a copy of this checkout, installed with --no-deps."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=lambda folder, names: [n for n in names if n in NOT_SOURCE or n.endswith(
        ".egg-info") or (Path(folder) == ROOT and n.startswith("."))])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOBENCH_RUNS", "ZOBENCH_MODELS_DIR")}
    env["OMP_NUM_THREADS"] = "1"
    commit = git_commit() or "0123456789abcdef"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "wheels"],
         src, {**env, "ZOBENCH_GIT_COMMIT": commit})
    [wheel] = (tmp / "wheels").glob("zobench-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], tmp, env)
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
          wheel], tmp, env)
    return venv / "bin", env, commit


@pytest.mark.slow
def test_the_installed_package_runs_a_cell_from_any_directory(installed, tmp_path):
    bin_, env, commit = installed
    work = tmp_path / "work"
    work.mkdir()
    assert _run([bin_ / "zobench", "--version"], work, env).strip() == f"zobench {__version__} (git {commit})"
    where = json.loads(_run([bin_ / "python", "-c", "import json, zobench; print(json.dumps({'file': zobench.__file__, "
                             "'conf': str(zobench.CONF_DIR), 'checkout': zobench.IN_CHECKOUT}))"], work, env))
    assert where["file"].startswith(str(bin_.parent)) and not where["checkout"]
    assert (Path(where["conf"]) / "config.yaml").is_file() and (Path(where["conf"]) / "model" / "hf.yaml").is_file()
    assert "--dir" in _run([bin_ / "zobench-data", "--help"], work, env)

    data = write_native(tmp_path / "data")
    out = _run([bin_ / "zobench", *CELL, f"data.dir={data}"], work, env)
    [summary] = (work / "runs" / "tiny-opt" / "sst2" / "full" / "zo_sgd" / "seed0").glob("*/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed", out
    assert not (ROOT / "runs" / "tiny-opt" / "sst2" / "full" / "zo_sgd" / "seed0" / summary.parent.name).exists()

    # $ZOBENCH_RUNS and $ZOBENCH_MODELS_DIR move runs and models; by default both sit in the current directory
    show = ("from hydra import compose, initialize_config_dir; import zobench\n"
            "with initialize_config_dir(config_dir=str(zobench.CONF_DIR), version_base='1.3'):\n"
            "    c = compose(config_name='config')\n"
            "print(c.paths.runs_dir, c.paths.models_dir)")
    assert _run([bin_ / "python", "-c", show], work, env).split() == [str(work / "runs"), str(work / "models")]
    moved = {**env, "ZOBENCH_RUNS": str(tmp_path / "elsewhere"), "ZOBENCH_MODELS_DIR": str(tmp_path / "m")}
    assert _run([bin_ / "python", "-c", show], work, moved).split() == [str(tmp_path / "elsewhere"), str(tmp_path / "m")]


def test_a_checkout_reads_its_top_level_conf_and_keeps_runs_in_it():
    import zobench

    assert zobench.IN_CHECKOUT and zobench.CONF_DIR == ROOT / "conf" and zobench.ROOT == ROOT
    assert zobench.project_root() == ROOT
    assert zobench.version_line().startswith(f"zobench {__version__}")


def test_version_flag_prints_version_and_commit():
    done = subprocess.run([sys.executable, "-m", "zobench", "--version"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"zobench {__version__}")
    commit = git_commit()
    if commit:
        assert f"(git {commit})" in done.stdout
