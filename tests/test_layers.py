"""Imports flow one way: the layers of docs/architecture.md, checked by import-linter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    """`lint-imports` with the contracts in pyproject.toml ([tool.importlinter])."""
    beside = Path(sys.executable).parent / "lint-imports"  # the venv the tests run in
    command = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert command, "lint-imports is missing: pip install -e '.[test]' installs import-linter"
    result = subprocess.run(
        [command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_importing_chatd_does_not_import_the_server():
    """Plugins import chatd; that must not drag in the composition root or the sockets."""
    code = (
        "import sys, chatd\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('chatd'))\n"
        "assert 'chatd.server' not in sys.modules, loaded\n"
        "assert 'chatd.listeners' not in sys.modules, loaded\n"
        "assert 'chatd.transport' not in sys.modules, loaded\n"
        "print(' '.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
