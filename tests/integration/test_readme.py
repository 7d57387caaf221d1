"""The README stays true: CI runs the test command it gives."""

from __future__ import annotations

import os
import re

from conftest import ROOT


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    ci = [
        ln.strip() for ln in _read(".ci/run").splitlines() if ln.strip() and not ln.startswith("#")
    ]
    command = ci[-1]
    assert "pytest" in command
    readme_commands = re.findall(r"^(python[^\n#]*?)\s*(?:#.*)?$", _read("README.md"), flags=re.M)
    assert command in [c.strip() for c in readme_commands]


def test_ci_installs_the_cpu_torch_wheel_before_the_project():
    ci = _read(".ci/run")
    assert ci.index("torch==2.13.0") < ci.index('pip install -e ".[test,docs]"')


def test_ci_builds_the_docs_with_warnings_as_errors():
    ci = _read(".ci/run")
    assert "sphinx -W" in ci and ci.index(".[test,docs]") < ci.index("sphinx -W")
