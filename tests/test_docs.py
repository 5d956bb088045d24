"""The documentation is tested: it cannot drift from the code."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from chatd import hookspecs
from chatd.protocols.registry import config_reference

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
        "python -c 'from chatd.protocols.registry import config_reference as r; "
        "print(r(), end=\"\")'"
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
    alice.expect(r"^\*\*\* \[hello\]$")
    alice.expect(r"^\*\*\*   /hello \[name\] +say hello$")
    alice.send("/hello world")
    alice.expect(r"^\*\*\* \[hello\] hello, world!$")


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


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end > 0 else None]


def test_tutorial_testing_and_packaging_steps_work_as_written(tmp_path):
    """Follow steps 1, 6 and 8 of docs/plugins.md literally, as a new plugin author would."""
    manual = (REPO / "docs" / "plugins.md").read_text()
    plugin_source = _code_blocks(manual, "python")[0]
    testing = _section(manual, "## 6. Testing it")
    conftest, test_source = _code_blocks(testing, "python")[:2]
    packaging = _section(manual, "## 8. Packaging a plugin for pip")
    pyproject = _code_blocks(packaging, "toml")[0]

    # Step 6: the plugin in plugins/, the kit in conftest.py, the test passes.
    project = tmp_path / "author"
    (project / "plugins").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "plugins" / "hello.py").write_text(plugin_source)
    (project / "conftest.py").write_text(conftest)
    (project / "tests" / "test_hello.py").write_text(test_source)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout

    # Step 8: package it with the entry point, install it, chatd finds it.
    dist = tmp_path / "chatd-hello"
    dist.mkdir()
    (dist / "chatd_hello.py").write_text(plugin_source)
    (dist / "pyproject.toml").write_text(pyproject)
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(dist)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    import os

    listing = subprocess.run(
        [sys.executable, "-m", "chatd", "plugins"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert listing.returncode == 0, listing.stderr
    assert "hello 1.0.0" in listing.stdout
    assert "from:     entry point chatd_hello in chatd-hello" in listing.stdout
    assert "commands: /hello" in listing.stdout
