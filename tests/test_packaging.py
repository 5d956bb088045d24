"""What a contributor installs: the test extra holds what the tests need and not the
benchmark's plotting stack (the bench extra's), and the README's test command is the
one CI runs (.ci/run), verbatim."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+; chatd runs on 3.10


def names(extra: str) -> set[str]:
    """The distributions an extra of pyproject.toml lists (one per line, quoted)."""
    block = re.search(rf"^{extra} = \[\n(.*?)^\]", PYPROJECT, re.M | re.S)
    assert block, f"pyproject.toml has no [{extra}] extra"
    return {re.split(r"[<>=!~\[ ;]", quoted, maxsplit=1)[0].lower()
            for quoted in re.findall(r'^\s*"([^"]+)"', block.group(1), re.M)}


def test_the_test_extra_does_not_pull_in_the_plotting_stack():
    assert "matplotlib" not in names("test")
    assert {"matplotlib", "uvloop"} <= names("bench")


def test_the_bench_extra_runs_every_default_server():
    """ws-fanout-1000 runs chatd's websocket listener and the websockets baseline."""
    assert {"wsproto", "h11", "websockets"} <= names("bench")


def test_the_readmes_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    command = re.search(r"^# 2\. .*\n(.*)$", readme, re.M)
    assert command, "the README lost its test command"
    ci = (REPO / ".ci" / "run").read_text().rstrip().splitlines()
    assert ci[-1] == command.group(1)
    assert '".[test]"' in command.group(1)
