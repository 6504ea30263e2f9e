"""The linter and the type checker stay green (run through the README's test command, so CI runs them).

Both tools come with ``./setup.sh --dev``; without them the tests skip with the reason, except under
CI, where a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    path = str(exe) if exe.exists() else shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; ./setup.sh --dev installs it")
        pytest.skip(f"{name} is not installed (./setup.sh --dev installs it)")
    return path


def test_ruff_is_clean():
    proc = subprocess.run([_tool("ruff"), "check", "sae", "tests", "benchmarks", "conftest.py", "notebooks/make_notebooks.py"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_mypy_is_clean():
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
