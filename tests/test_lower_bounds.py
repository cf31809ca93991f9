"""The pins `make test-lower-bounds` installs are pyproject.toml's lower bounds (ci/lower_bounds.py), so the two
cannot drift; and the target and CI run that generator, not a list of their own. Offline, well under a second."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("lower_bounds", ROOT / "ci" / "lower_bounds.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lower_bounds", module)
    spec.loader.exec_module(module)
    return module


lb = _generator()


def _dependencies() -> list[str]:
    """[project] dependencies read without the generator's parser: the strings of the list, comments dropped."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return re.findall(r'^\s*"([^"]+)",?', block, re.M)


def test_every_lower_bound_of_pyproject_is_pinned_and_nothing_else():
    deps = _dependencies()
    assert len(deps) == len(lb.load()[0]) > 10
    expected = {}
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0)
        bound = re.search(r">=\s*([^,;\s]+)", dep)
        if bound and name != "torch":
            expected[name] = bound.group(1)
    pins = [line for line in lb.render_pins(lb.load()[0], keep=["torch"]).splitlines() if not line.startswith("#")]
    assert dict(line.split("==") for line in pins) == expected
    # the ones the code is known to need (a comment beside each in pyproject.toml says why)
    for name, floor in (("transformers", "5.0"), ("wandb", "0.19.10"), ("peft", "0.18"), ("datasets", "4.2")):
        assert lb.Version(expected[name]) >= lb.Version(floor), name


def test_unbounded_and_kept_dependencies_are_named_not_pinned():
    text = lb.render_pins(lb.load()[0], keep=["torch"])
    assert "# kept at the installed version (constraints): torch" in text
    unbounded = [re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in _dependencies() if not re.search(r"[>=~]=", d)]
    assert f"# no lower bound, left to the resolver: {' '.join(sorted(unbounded))}" in text
    assert not re.search(r"^torch", text, re.M)


def test_constraints_hold_the_installed_torch_and_the_pyproject_constraints():
    reqs, constraints = lb.load()
    text = lb.render_constraints(reqs, constraints, keep=["torch"])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert f"torch=={importlib.metadata.version('torch')}" in lines  # never a lower-bound torch: a CUDA download
    assert [str(c) for c in constraints] == lines[:-1]


def test_lower_bound_of_a_requirement():
    req = lb.Requirement
    assert lb.lower_bound(req("hydra-core>=1.3,<1.4")) == "1.3"
    assert lb.lower_bound(req("numpy")) is None
    assert lb.pins([req("foo[bar]>=1.2; python_version >= '3.10'")]) == ['foo[bar]==1.2; python_version >= "3.10"']
    with pytest.raises(ValueError, match="more than one lower bound"):
        lb.lower_bound(req("foo>=1,>=2"))


def test_the_make_target_and_ci_install_the_generated_pins():
    makefile = (ROOT / "Makefile").read_text()
    assert "ci/lower_bounds.py --keep torch > $(LOWER_VENV)/pins.txt" in makefile
    assert "-c $(LOWER_VENV)/constraints.txt -r $(LOWER_VENV)/pins.txt" in makefile
    assert "ci/lower_bounds.py --keep torch --check" in makefile
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci.index("make test-lower-bounds") > ci.index("make test-slow")
