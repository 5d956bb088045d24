"""Secrets at rest (issue 18 rule 9): the database is the server's alone, whatever
the umask; secrets stay out of git; the docs' ``openssl s_client`` line checks
whom it talks to.

The store makes the folders it needs 0700 and the database 0600 before SQLite
opens it (SQLite then gives the ``-wal`` and ``-shm`` files the same mode), and
warns about a folder or file it finds open to others instead of changing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from chatd.store import Store
from chatd.testing import ServerProcess, write_config
from chatd.testing.probes import skip_unless_ci

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., ServerProcess]
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ["CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL);"]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process's umask set to ``mask`` for the block (a child started in it
    inherits it)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the database and its folders ----------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277], ids=["umask000", "umask022", "umask277"])
def test_the_store_makes_its_folders_0700_and_its_files_0600_whatever_the_umask(
        tmp_path: Path, mask: int) -> None:
    """0o000 would make everything world-readable, 0o277 would make the folders
    unusable and the file read-only: the modes are set, not left to the umask."""
    path = tmp_path / "new" / "data" / "chatd.sqlite3"
    before = mode(tmp_path)
    with umask(mask):
        store = Store(path)
        store.open()
        store.migrate("test", SCHEMA)
        store.write("INSERT INTO t (b) VALUES ('a secret')")
        assert store.flush(10)
        assert store.read("SELECT b FROM t") == [("a secret",)]
        files = {name: mode(path.with_name(name))
                 for name in ("chatd.sqlite3", "chatd.sqlite3-wal", "chatd.sqlite3-shm")}
        store.close()
    assert files == dict.fromkeys(files, 0o600)
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "data") == 0o700
    assert mode(tmp_path) == before  # not made by the store: never touched
    assert not store.problem


def test_a_folder_or_file_open_to_others_is_warned_about_and_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not changed silently (it may be an operator's choice, like a backup group),
    but warned about loudly, at every start, with the fix."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    path = folder / "chatd.sqlite3"
    path.touch()
    path.chmod(0o644)  # a database made by an older chatd under umask 022
    with caplog.at_level(logging.WARNING, logger="chatd.store"):
        store = Store(path)
        store.open()
        store.migrate("test", SCHEMA)
        store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"store: the database folder {folder} is open to other users (mode 0755): it " \
           f"holds every stored line; chmod 700 {folder}" in warnings, warnings
    assert any(f"database file {path} is open to other users (mode 0644)" in w
               and w.endswith(f"chmod 600 {path}") for w in warnings), warnings
    assert mode(folder) == 0o755 and mode(path) == 0o644


def test_a_private_folder_and_file_get_no_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chatd.store"):
        for _ in range(2):  # made, then found
            store = Store(tmp_path / "data" / "chatd.sqlite3")
            store.open()
            store.migrate("test", SCHEMA)
            store.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_server_started_under_umask_000_keeps_its_database_private(
        chatd_server: Start, tmp_path: Path) -> None:
    """A real chatd, as an operator would run it with a careless umask: the data
    folder, the database and its -wal and -shm files are the server's alone."""
    config = write_config(tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"})
    with umask(0o000):
        server = chatd_server(config)
    alice = server.client()
    bob = server.client()
    alice.send("something to keep")
    bob.expect(r"^<guest-\d+> something to keep$")
    data = tmp_path / "data"
    assert mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == {
        "chatd.sqlite3": 0o600, "chatd.sqlite3-wal": 0o600, "chatd.sqlite3-shm": 0o600}
    server.wait_for_log(r"connect id=2 ")  # logged after the store's startup checks
    assert "open to other users" not in server.log()


# -- secrets out of git ----------------------------------------------------------------


def test_tls_keys_and_the_database_are_ignored_by_git() -> None:
    """README and docs/tls.md put keys in ``tls/`` and the config puts the database
    in ``data/``: a checkout used as a server's home must not commit them."""
    patterns = (ROOT / ".gitignore").read_text().splitlines()
    assert "tls/" in patterns and "data/" in patterns, patterns
    if shutil.which("git") and (ROOT / ".git").exists():
        result = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "tls/privkey.pem", "data/chatd.sqlite3"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.stdout.split() == ["tls/privkey.pem", "data/chatd.sqlite3"], result


# -- the docs' openssl s_client line ---------------------------------------------------


def s_client_line() -> list[str]:
    """docs/tls.md's ``openssl s_client`` command, as words."""
    text = (ROOT / "docs" / "tls.md").read_text()
    match = re.search(r"^openssl s_client .*$", text, re.M)
    assert match, "docs/tls.md has no openssl s_client line"
    return shlex.split(match.group(0))


def s_client_to(port: int, ca_file: Path) -> list[str]:
    """The documented command pointed at ``127.0.0.1:port`` (the name it checks is
    still the documented one), with the CA file, as the docs say for a private CA."""
    words = s_client_line()
    at = words.index("-connect") + 1
    assert words[at] == "chat.example.org:7789", words
    words[at] = f"127.0.0.1:{port}"
    return [*words, "-CAfile", str(ca_file)]


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(chatd_server: Start, tmp_path: Path, ca: trustme.CA, name: str) -> ServerProcess:
    """A plain listener (0) and a TLS one (1) whose certificate (from ``ca``) is for
    ``name`` only."""
    cert = tmp_path / f"{name}.pem"
    ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(cert))
    config = write_config(tmp_path / f"{name}.yaml", listen=[
        {"port": 0}, {"port": 0, "tls": {"cert": str(cert), "key": str(cert)}}])
    return chatd_server(config)


@pytest.fixture
def openssl() -> None:
    if shutil.which("openssl") is None:
        skip_unless_ci("openssl is not installed")


@pytest.mark.usefixtures("openssl")
def test_the_documented_s_client_line_talks_to_the_named_server(
        chatd_server: Start, tmp_path: Path, ca: trustme.CA) -> None:
    server = tls_server(chatd_server, tmp_path, ca, "chat.example.org")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    plain = server.client()
    proc = subprocess.Popen(s_client_to(server.ports[1], ca_file), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"/nick viaopenssl\nhello over TLS\n")
        proc.stdin.flush()
        plain.expect(r"^<viaopenssl> hello over TLS$")
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.usefixtures("openssl")
def test_the_documented_s_client_line_refuses_a_server_with_another_name(
        chatd_server: Start, tmp_path: Path, ca: trustme.CA) -> None:
    """A certificate the CA vouches for, but for another name (what an attacker
    with any certificate from the same CA could show): the documented line stops
    at the handshake, and nothing typed reaches the chat."""
    server = tls_server(chatd_server, tmp_path, ca, "impostor.example.net")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    plain = server.client()
    result = subprocess.run(s_client_to(server.ports[1], ca_file), capture_output=True,
                            input=b"/nick viaopenssl\nhello over TLS\n", timeout=30)
    assert result.returncode != 0, result
    assert b"hostname mismatch" in result.stdout + result.stderr, result
    plain.send("/who")
    plain.expect(r"^\*\*\* #lobby has 1 member: guest-1$")  # nobody came in
