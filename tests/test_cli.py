"""The ``chatd`` command line: clear startup errors, check-config, signals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chatd import __version__
from chatd.testing import ServerProcess

REPO = Path(__file__).resolve().parent.parent


def run_chatd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "listen:\n  host: 127.0.0.1\nlimits:\n  max_line_byte: 100\n",
            r"broken\.yaml:4: limits\.max_line_byte: unknown key "
            r"\(did you mean 'max_line_bytes'\?\)",
        ),
        (
            "limits:\n  max_clients: lots\n",
            r"broken\.yaml:2: limits\.max_clients: expected an integer.*'lots'",
        ),
        (
            "listen:\n  port: 7788\n  host: [unclosed\n",
            r"broken\.yaml:\d+: .*",
        ),
        (
            "server: !!python/object/apply:os.system ['echo pwned']\n",
            r"broken\.yaml:1: .*tag",
        ),
    ],
    ids=["unknown-key", "wrong-type", "yaml-syntax", "python-tag"],
)
def test_check_config_rejects_broken_configs(tmp_path, text, expected):
    config = tmp_path / "broken.yaml"
    config.write_text(text)
    result = run_chatd("--config", str(config), "--check-config")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chatd: ")
    assert re.search(expected, lines[0]), lines[0]


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = run_chatd("--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "cannot read file" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_accepts_the_shipped_config():
    result = run_chatd("--config", str(REPO / "config.yaml"), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert "dice" in result.stdout  # the shipped plugins/ folder was loaded


def test_version():
    result = run_chatd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chatd {__version__}"


def test_port_in_use_is_a_clean_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_chatd("--port", str(port), "--host", "127.0.0.1")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_embedded_default_config_serves_with_port_override(tmp_path):
    """`chatd` with no --config runs the embedded defaults (here on a free port)."""
    port_file = tmp_path / "port"
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatd", "--port", "0", "--port-file", str(port_file)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        server = _attach(proc, port_file)
        alice = server.client()
        assert alice.nick == "guest-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        log.close()


def _attach(proc: subprocess.Popen[bytes], port_file: Path) -> ServerProcess:
    server = ServerProcess.__new__(ServerProcess)
    server.proc = proc
    server.port_file = port_file
    server.host = "127.0.0.1"
    server._clients = []
    server.log_path = port_file.parent / "log"
    server.ports = server._wait_for_ports(15)
    server.port = server.ports[0]
    return server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_tells_everyone_and_exits_zero(chatd_server, signum):
    server = chatd_server()
    alice = server.client()
    bob = server.client()
    server.signal(signum)
    for client in (alice, bob):
        lines = client.expect_eof(timeout=10)
        assert "*** server shutting down" in lines
    assert server.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).close()
    assert "Traceback" not in server.log()


def test_log_level_flag_overrides_config(chatd_server):
    server = chatd_server(extra_args=["--log-level", "debug"])
    server.client()
    server.wait_for_log(r"DEBUG")


def _check(config: Path, *, block: str | None = None) -> subprocess.CompletedProcess[str]:
    prelude = f"sys.modules[{block!r}] = None; " if block else ""
    code = (f"import sys; {prelude}from chatd.cli import main; "
            f"sys.exit(main(['--config', {str(config)!r}, '--check-config']))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_check_config_catches_metrics_without_prometheus_client(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 0}\nmetrics: {enabled: true, port: 0}\n")
    assert _check(config).returncode == 0  # installed here: fine
    missing = _check(config, block="prometheus_client")
    assert missing.returncode == 2
    assert "metrics.enabled needs the prometheus_client package" in missing.stderr
    assert "pip install 'chatd[metrics]'" in missing.stderr


def test_check_config_catches_a_metrics_port_that_clashes_with_a_listener(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "listen: [{port: 7801}, {port: 7802, protocol: jsonl}]\n"
        "metrics: {enabled: true, port: 7802}\n"
    )
    result = _check(config)
    assert result.returncode == 2
    assert "metrics.port 7802 is also listen[1]'s port on 127.0.0.1" in result.stderr
