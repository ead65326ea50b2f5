"""The package type-checks: mypy, configured by ``pyproject.toml`` (``[tool.mypy]``), finds no error.

Deselect with ``-m 'not typecheck'``. The first run fills ``.mypy_cache`` in the checkout (about 40 s on two busy
cores); later runs take a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.typecheck
def test_mypy_finds_no_error() -> None:
    """``python -m mypy`` from the checkout's root (the packages and options of ``[tool.mypy]``) exits 0."""
    completed = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
