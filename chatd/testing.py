"""A test kit for chatd and its plugins: real server processes, real sockets.

Use it from a ``conftest.py``::

    pytest_plugins = ["chatd.testing"]

    def test_roll(chatd_server):
        server = chatd_server(plugin_dirs=["plugins"])
        alice = server.client()
        alice.send("/roll 2d6")
        alice.expect(r"^\\* .* rolled 2d6")

Fixtures
--------
``chatd_server``
    A factory: ``chatd_server(config=None, **sections)`` writes a config file
    (port 0, loopback), starts ``python -m chatd`` as a subprocess, waits until
    it listens and returns a :class:`ServerProcess`.  Every server is stopped
    (SIGTERM, then SIGKILL) when the test ends.

Every read has a timeout: a missing line is a red test, never a hang.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEFAULT_TIMEOUT = 5.0


class ChatClient:
    """A line-oriented test client over a real TCP socket."""

    def __init__(self, address: tuple[str, int], *, timeout: float = DEFAULT_TIMEOUT,
                 source: str | None = None) -> None:
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._buffer = bytearray()
        self.eof = False
        #: Every line received so far, in order (for assertions after the fact).
        self.history: list[str] = []
        self.nick: str | None = None

    # -- sending -----------------------------------------------------------

    def send(self, line: str) -> None:
        """Send one line (``\\n`` is added)."""
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- receiving ---------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read once from the socket; False on timeout or EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            self.eof = True
            return False
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    def _pop_line(self) -> str | None:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            return None
        raw = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        line = raw.decode("utf-8")  # chatd never emits invalid UTF-8: let it fail loudly
        self.history.append(line)
        return line

    def recv_line(self, timeout: float | None = None) -> str:
        """The next line; raises AssertionError on timeout or EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if not self._fill(deadline):
                what = "connection closed" if self.eof else "timed out"
                raise AssertionError(f"no line received ({what}); got so far: {self.history[-5:]}")

    def expect(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """Read lines until one matches ``pattern`` (``re.search``); return the match.

        Lines read on the way are kept in :attr:`history` and skipped.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skipped: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.recv_line(timeout=max(0.0, remaining))
            except AssertionError as exc:
                raise AssertionError(
                    f"expected a line matching {pattern!r}; skipped {skipped[-10:]}: {exc}"
                ) from None
            match = regex.search(line)
            if match:
                return match
            skipped.append(line)

    def expect_line(self, exact: str, timeout: float | None = None) -> None:
        """The very next line must equal ``exact``."""
        line = self.recv_line(timeout)
        assert line == exact, f"expected {exact!r}, got {line!r}"

    def expect_nothing(self, wait: float = 0.3) -> None:
        """No line arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        line = self._pop_line()
        while line is None and self._fill(deadline):
            line = self._pop_line()
        assert line is None, f"expected no line, got {line!r}"

    def expect_eof(self, timeout: float | None = None) -> list[str]:
        """Read until the server closes; returns the lines read on the way."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        lines: list[str] = []
        while not self.eof:
            line = self._pop_line()
            if line is not None:
                lines.append(line)
                continue
            if not self._fill(deadline) and not self.eof:
                raise AssertionError(f"server did not close the connection; got {lines[-5:]}")
        while (line := self._pop_line()) is not None:
            lines.append(line)
        return lines

    def welcome(self) -> str:
        """Read the welcome line and remember this client's nick."""
        match = self.expect(r"^\* Welcome to chatd, (\S+)\.")
        self.nick = match.group(1)
        return self.nick

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerProcess:
    """A ``chatd`` subprocess on a free loopback port."""

    def __init__(self, config_path: Path, workdir: Path, *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, startup_timeout: float = 15.0) -> None:
        self.config_path = config_path
        self.port_file = workdir / "port"
        self.log_path = workdir / "chatd.log"
        self.port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "chatd", "--config", str(config_path),
               "--port-file", str(self.port_file), *(extra_args or [])]
        # A file, never an undrained pipe; closed in close().
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.host = "127.0.0.1"
        self.port = self._wait_for_port(startup_timeout)
        self._clients: list[ChatClient] = []

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chatd exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                text = self.port_file.read_text()
                if text.endswith("\n"):
                    return int(text)
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"chatd did not start within {timeout}s:\n{self.log()}")

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, *, welcome: bool = True, timeout: float = DEFAULT_TIMEOUT,
               source: str | None = None) -> ChatClient:
        """Connect a client; by default also read its welcome line."""
        client = ChatClient(self.address, timeout=timeout, source=source)
        self._clients.append(client)
        if welcome:
            client.welcome()
        return client

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = DEFAULT_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.log())
            if match:
                return match
            time.sleep(0.05)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.log()[-3000:]}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop()
        self._log.close()


def write_config(path: Path, **sections: Any) -> Path:
    """Write a config for tests: loopback, port 0, plus the given sections.

    Relative ``plugin_dirs`` are taken relative to the current directory (where
    pytest runs), not to the temporary folder the config is written to.  The
    flood limit and the per-address limits are off unless a test sets them.
    """
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        # Tests send bursts; the flood limit (fakelag) would only slow them down.  A
        # test about flood control passes its own ``flood=`` section.
        "flood": {"lines_per_second": 0},
        # Tests connect many clients from 127.0.0.1 in quick succession.
        "per_ip": {"max_connections": 0, "connect_rate": 0, "max_unregistered": 0},
    }
    if "plugin_dirs" in sections:
        sections["plugin_dirs"] = [str(Path(d).resolve()) for d in sections["plugin_dirs"]]
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def chatd_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory fixture: ``chatd_server(**config_sections)`` -> a running :class:`ServerProcess`."""
    servers: list[ServerProcess] = []
    counter = iter(range(1_000_000))

    def start(config: Path | None = None, *, extra_args: list[str] | None = None,
              env: dict[str, str] | None = None, **sections: Any) -> ServerProcess:
        workdir = tmp_path / f"server{next(counter)}"
        workdir.mkdir()
        if config is None:
            config = write_config(workdir / "config.yaml", **sections)
        server = ServerProcess(config, workdir, extra_args=extra_args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- probes for fault tests ------------------------------------------------------
# Small, Linux-specific helpers chatd's own reliability tests share; a plugin's
# hardening tests can use them too.

_LOG_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose system tool is missing, except in CI (``CI=true``), where a
    missing tool is a failure: CI must not pass by skipping what it cannot run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"missing in CI: {reason}")
    pytest.skip(reason)


def fd_count(pid: int) -> int:
    """Open descriptors of process ``pid`` (leak checks)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (busy-loop checks compare two readings)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER (1, 0): the peer gets an RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def unexpected_tracebacks(log: str) -> list[str]:
    """Log records with a traceback that is not a reported plugin failure."""
    records = [r for r in _LOG_RECORD_START.split(log) if "Traceback" in r]
    return [r for r in records if not re.match(r"ERROR chatd\.plugin_errors: plugin ", r)]


def parked_operator(
    server: ServerProcess, password: str, *, room: str = "#ops", client: ChatClient | None = None
) -> ChatClient:
    """A client made operator (``/oper``) and parked alone in ``room``.

    Out of ``#lobby``, chat traffic cannot bury the replies to its commands.
    """
    op = client if client is not None else server.client()
    op.send(f"/oper {password}")
    op.expect(r"^\* you are now an operator$")
    op.send(f"/join {room}")
    op.expect(rf"^\* you are the first in {room}$")
    op.send("/part #lobby")
    op.expect(rf"^\* you are now talking in {room}$")
    return op


def operator_stats(op: ChatClient) -> dict[str, Any]:
    """Run ``/stats`` as operator ``op`` and parse it.

    Keys: ``clients``, ``max_clients``, ``rooms``, ``connections_total``,
    ``output_queued``, and one ``{name: count}`` table per titled line
    (``refused``, ``limit disconnections``, ``plugin errors``, ``slow plugin calls``).
    """
    op.send("/stats")
    first = op.expect(r"^\* clients (\d+)/(\d+), rooms (\d+), connections since start (\d+)$")
    lines = [op.recv_line() for _ in range(6)]
    queued = re.search(r"output queued (\d+)$", lines[0])
    assert queued, lines
    result: dict[str, Any] = {
        "clients": int(first.group(1)),
        "max_clients": int(first.group(2)),
        "rooms": int(first.group(3)),
        "connections_total": int(first.group(4)),
        "output_queued": int(queued.group(1)),
    }
    for line in lines[2:]:
        title, _, counts = line[2:].partition(": ")
        table: dict[str, int] = {}
        if counts != "none":
            for item in counts.split(", "):
                name, _, count = item.rpartition(" ")
                table[name] = int(count)
        result[title] = table
    return result
