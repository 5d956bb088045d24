"""Startup fails fast (issue 18, rule 4).

A problem ``--check-config`` finds stops ``chatd`` at once, with the same line
and exit status 2: before, an unwritable storage folder made chatd open the
database anyway and wait on it (two migrations of ten seconds each) before it
said anything, and then it served with a store that could never write.

"At once" is checked by what happened, never by a clock: the process exits
(within a generous pytest timeout), its stderr is exactly the line
``--check-config`` printed, and nothing was started on the way (no other line:
the plugins that read the database would have complained; no database file; no
port file).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from chatd.testing import skip_unless_ci, write_config


def _chatd(config: Path, *args: str, wrapper: list[str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(wrapper or []), sys.executable, "-m", "chatd", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def _fails_like_check_config(config: Path, *, wrapper: list[str] | None = None) -> str:
    """``chatd --config`` exits 2 with exactly the stderr of ``--check-config``."""
    checked = _chatd(config, "--check-config", wrapper=wrapper)
    assert checked.returncode == 2, checked
    port_file = config.parent / "port"
    served = _chatd(config, "--port-file", str(port_file), wrapper=wrapper)
    assert served.returncode == 2, served
    assert served.stderr == checked.stderr, (
        f"serving said more (or else) than --check-config:\n{served.stderr}")
    lines = served.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatd: "), served.stderr
    assert not port_file.exists(), "chatd got as far as listening"
    return lines[0]


def _read_only(folder: Path) -> list[str] | None:
    """A wrapper that runs chatd with ``folder`` read-only to it: a read-only bind
    mount in a private mount namespace for root (for whom permission bits mean
    nothing: the systemd ProtectSystem= case), the permission bits otherwise."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return None
    if shutil.which("unshare") is None:
        skip_unless_ci("needs unshare(1) to mount a folder read-only as root")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-ec", script, str(folder)]


def test_an_unwritable_storage_folder_stops_chatd_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "config.yaml",
                          storage={"path": str(data / "chatd.sqlite3")})
    line = _fails_like_check_config(config, wrapper=_read_only(data))
    assert line.startswith(f"chatd: storage.path: cannot write in {data} as this user"), line
    assert "Read-only file system" in line or "Permission denied" in line, line
    assert list(data.iterdir()) == []  # no database, no probe left behind


def test_a_storage_folder_that_cannot_be_created_stops_chatd_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml",
                          storage={"path": "/proc/chatd-nowhere/chatd.sqlite3"})
    line = _fails_like_check_config(config)
    assert line.startswith("chatd: storage.path: cannot create a folder in /proc"), line


def test_a_file_that_is_not_a_database_stops_chatd_at_once(tmp_path: Path) -> None:
    """--check-config used a database in memory and said OK; serving then retried
    "file is not a database" for ever."""
    database = tmp_path / "chatd.sqlite3"
    database.write_text("these are my notes, not a database\n")
    config = write_config(tmp_path / "config.yaml", storage={"path": str(database)})
    line = _fails_like_check_config(config)
    assert line == f"chatd: storage.path: {database} is not an SQLite database; move it " \
                   "away or choose another path"
    assert database.read_text() == "these are my notes, not a database\n"


def test_a_bad_certificate_stops_chatd_at_once(tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_text("not a certificate\n")
    config = write_config(tmp_path / "config.yaml", listen=[
        {"port": 0}, {"port": 0, "tls": {"cert": str(cert), "key": str(cert)}}])
    line = _fails_like_check_config(config)
    assert line.startswith("chatd: listen[1].tls: "), line
    assert "not a certificate and its key" in line


def test_an_expired_certificate_stops_chatd_at_once(tmp_path: Path) -> None:
    import datetime

    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    cert = tmp_path / "server.pem"
    trustme.CA().issue_cert(
        "localhost", not_before=past - datetime.timedelta(days=30), not_after=past,
    ).private_key_and_cert_chain_pem.write_to_path(str(cert))
    config = write_config(tmp_path / "config.yaml", listen=[
        {"port": 0}, {"port": 0, "tls": {"cert": str(cert), "key": str(cert)}}])
    assert "the certificate expired on Jan  1" in _fails_like_check_config(config)


def test_a_plugin_that_fails_to_load_stops_chatd_at_once(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("import does_not_exist_anywhere\n")
    config = write_config(tmp_path / "config.yaml", plugin_dirs=[str(plugins)])
    line = _fails_like_check_config(config)
    assert "broken.py failed to import: ModuleNotFoundError" in line, line


def test_a_port_in_use_stops_chatd_at_once_but_passes_check_config(tmp_path: Path) -> None:
    """--check-config cannot call a taken port a mistake: the chatd it is checking for
    usually holds it (``chatd --check-config && systemctl restart chatd``)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.yaml", listen={"port": port})
        assert _chatd(config, "--check-config").returncode == 0
        served = _chatd(config)
    assert served.returncode == 2
    assert served.stderr == f"chatd: cannot listen on 127.0.0.1:{port}: Address already in use\n"


@pytest.mark.parametrize("command", ["--check-config", "plugins"])
def test_checking_a_config_allocates_nothing_it_asks_for(tmp_path: Path, command: str) -> None:
    """The read buffer is limits.read_budget_bytes (up to 16 MiB), allocated when
    chatd starts serving; a dry run must not make it.  Python's own allocator
    tracing (tracemalloc) sees every bytearray the check makes."""
    big = write_config(tmp_path / "big.yaml", limits={"read_budget_bytes": 1 << 24})
    argv = (["--config", str(big), "--check-config"] if command == "--check-config"
            else ["plugins", "--config", str(big)])
    code = (
        "import sys, tracemalloc\n"
        "tracemalloc.start()\n"
        "from chatd.cli import main\n"
        f"status = main({argv!r})\n"
        "print('peak', tracemalloc.get_traced_memory()[1], file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    peak = int(result.stderr.rsplit("peak ", 1)[1])
    assert peak < 1 << 24, f"a dry run allocated {peak} bytes: the read buffer?"
