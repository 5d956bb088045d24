"""The documentation is tested: it cannot drift from the code."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from chatd import hookspecs
from chatd.config import config_reference

REPO = Path(__file__).resolve().parent.parent


def test_every_hook_is_documented_in_the_spec_and_the_manual():
    manual = (REPO / "docs" / "plugins.md").read_text()
    names = hookspecs._all_hook_names()
    assert names, "no hooks found"
    for name in names:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc.split()) >= 15, f"{name} needs a real docstring"
        assert f"`{name}(" in manual, f"{name} is missing from docs/plugins.md"


def test_config_reference_doc_is_current():
    assert (REPO / "docs" / "config.md").read_text() == config_reference(), (
        "docs/config.md is stale: regenerate it with\n"
        "python -c 'from chatd.config import config_reference as r; print(r(), end=\"\")'"
        " > docs/config.md"
    )


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.DOTALL)


def test_tutorial_first_plugin_works_as_written(chatd_server, tmp_path):
    """Step 1 of docs/plugins.md, copied verbatim into a plugin folder, works."""
    source = _code_blocks((REPO / "docs" / "plugins.md").read_text(), "python")[0]
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "hello.py").write_text(source)
    server = chatd_server(plugin_dirs=[str(plugin_dir)])
    alice = server.client()
    alice.send("/help")
    alice.expect(r"^\* \[hello\]$")
    alice.expect(r"^\*   /hello \[name\] +say hello$")
    alice.send("/hello world")
    alice.expect(r"^\* hello, world!$")


def test_tutorial_filter_example_works_as_written(chatd_server, tmp_path):
    blocks = _code_blocks((REPO / "docs" / "plugins.md").read_text(), "python")
    source = next(b for b in blocks if "chatd_filter_message" in b)
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "filter.py").write_text(source)
    server = chatd_server(plugin_dirs=[str(plugin_dir)])
    alice, bob = server.client(), server.client()
    alice.send("buy spam now")
    alice.expect(r"^! that word is not allowed here$")
    alice.send("hi :)")
    bob.expect(rf"^<{alice.nick}> hi 🙂$")
    bob.expect_nothing()


def test_code_is_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", "."],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
