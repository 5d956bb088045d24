"""Real chatd processes and real socket clients (line and jsonl) for tests."""


from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .defaults import sections_for_test

DEFAULT_TIMEOUT = 5.0


T = TypeVar("T")


class ChatClient:
    """A line-oriented test client over a real TCP socket."""

    def __init__(self, address: tuple[str, int], *, timeout: float = DEFAULT_TIMEOUT,
                 source: str | None = None, tls: ssl.SSLContext | None = None,
                 server_hostname: str = "localhost") -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:  # the handshake runs here, within the timeout
            sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        self.sock = sock
        self._start_reading(timeout)

    def _start_reading(self, timeout: float) -> None:
        """The line reader's state (shared with :class:`~chatd.testing.terminal.TerminalClient`)."""
        self.timeout = timeout
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
        match = self.expect(r"^\*\*\* Welcome to chatd, (\S+)\.")
        self.nick = match.group(1)
        return self.nick

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JsonClient:
    """A jsonl test client: JSON objects out, JSON objects in, over a real socket."""

    def __init__(self, address: tuple[str, int], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.lines = ChatClient(address, timeout=timeout)
        self.timeout = timeout
        #: Every object received so far, in order.
        self.history: list[dict[str, Any]] = []
        self.nick: str | None = None

    def send(self, obj: dict[str, Any] | None = None, /, **fields: Any) -> None:
        """Send one request: ``send(cmd="say", text="hi")`` or ``send({...})``."""
        payload = {**(obj or {}), **fields}
        self.lines.send_raw(json.dumps(payload).encode("utf-8") + b"\n")

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next object; raises AssertionError on timeout, EOF or a line that is not JSON."""
        line = self.lines.recv_line(timeout)
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(obj, dict), f"not a JSON object: {line!r}"
        self.history.append(obj)
        return obj

    def expect(self, /, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Read objects until one has all of ``fields`` (skipping others); return it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skipped: list[dict[str, Any]] = []
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                obj = self.recv(timeout=remaining)
            except AssertionError as exc:
                raise AssertionError(
                    f"expected an object with {fields}; skipped {skipped[-10:]}: {exc}"
                ) from None
            if all(obj.get(k) == v for k, v in fields.items()):
                return obj
            skipped.append(obj)

    def expect_nothing(self, wait: float = 0.3) -> None:
        self.lines.expect_nothing(wait)

    def welcome(self) -> str:
        """Read up to this client's own join of its first room; remember its nick."""
        joined = self.expect(type="join", self=True)
        self.nick = joined["from"]
        return self.nick

    def close(self) -> None:
        self.lines.close()

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerProcess:
    """A ``chatd`` subprocess on a free loopback port."""

    def __init__(self, config_path: Path, workdir: Path, *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, startup_timeout: float = 15.0) -> None:
        #: The config file the process runs (``write_config``'s, or the test's own).
        self.config_path = config_path
        #: The folder of this server's files: its config, log and port file.
        self.workdir = workdir
        self.port_file = workdir / "port"
        self.log_path = workdir / "chatd.log"
        self._cmd = [sys.executable, "-m", "chatd", "--config", str(config_path),
                     "--port-file", str(self.port_file), *(extra_args or [])]
        self._env = {**os.environ, **(env or {})}
        self._startup_timeout = startup_timeout
        # A file, never an undrained pipe; closed in close().
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.host = "127.0.0.1"
        self._clients: list[ChatClient | JsonClient] = []
        self._start()

    def _start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            self._cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self._env,
        )
        #: The bound port of every listener, in config order (new ones after a restart).
        self.ports = self._wait_for_ports(self._startup_timeout)
        self.port = self.ports[0]

    def restart(self, *, kill: bool = False, timeout: float = 10.0) -> int:
        """Stop the process and start it again on the same config, folder and data.

        ``kill``: SIGKILL, as a crash would (else SIGTERM, a clean shutdown).  Every
        client of the old process is closed; connect new ones (the ports are new:
        ``port`` and ``ports`` are updated).  Data survives only if the config names
        a ``storage.path`` (the test kit's default database is in memory):
        ``chatd_server(storage={"path": "chatd.sqlite3"})`` puts one in the server's
        folder.  The log continues in the same file.  Returns the old process's exit
        status.
        """
        for client in self._clients:
            client.close()
        self._clients.clear()
        if kill:
            self.kill()
            status = self.proc.returncode
        else:
            status = self.stop(timeout)
        self._start()
        return status

    def _wait_for_port(self, timeout: float) -> int:
        return self._wait_for_ports(timeout)[0]

    def _wait_for_ports(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chatd exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                text = self.port_file.read_text()
                if text.endswith("\n"):
                    return [int(line) for line in text.splitlines()]
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
        """Connect a line client to the first listener; ``welcome``: read the welcome
        line first and remember the nick it names (``client.nick``).  ``source``: the
        local address to connect from (any of 127.0.0.0/8, for per-address tests)."""
        client = ChatClient(self.address, timeout=timeout, source=source)
        self._clients.append(client)
        if welcome:
            client.welcome()
        return client

    def tls_client(self, context: ssl.SSLContext, *, listener: int = 1, welcome: bool = True,
                   timeout: float = DEFAULT_TIMEOUT,
                   server_hostname: str = "localhost") -> ChatClient:
        """A line client over TLS to listener number ``listener`` (0-based), checking the
        server's certificate with ``context`` (e.g. ``trustme.CA().configure_trust``)."""
        client = ChatClient((self.host, self.ports[listener]), timeout=timeout, tls=context,
                            server_hostname=server_hostname)
        self._clients.append(client)
        if welcome:
            client.welcome()
        return client

    def terminal(self, program: str, *, welcome: bool = True,
                 timeout: float = DEFAULT_TIMEOUT) -> ChatClient:
        """Start a real terminal client (``"nc"``, ``"ncat"``, ``"socat"``, ``"telnet"``)
        on a pty, connected to the first listener; see :mod:`chatd.testing.terminal`."""
        from .terminal import TerminalClient  # needs pexpect, the test extra

        client = TerminalClient(program, self.address, timeout=timeout)
        self._clients.append(client)
        if welcome:
            client.welcome()
        return client

    def json_client(self, *, listener: int = 1, welcome: bool = True,
                    timeout: float = DEFAULT_TIMEOUT) -> JsonClient:
        """Connect a jsonl client to listener number ``listener`` (0-based, in config order;
        default 1, the second: start the server with
        ``listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}]``).  ``welcome``: read
        up to its own join of the default room and remember its nick."""
        client = JsonClient((self.host, self.ports[listener]), timeout=timeout)
        self._clients.append(client)
        if welcome:
            client.welcome()
        return client

    def log(self) -> str:
        """The log so far: complete only once the process has stopped.

        chatd writes its log from a thread of its own (``chatd.logsetup``: the loop
        never waits for a disk), so a line can land a moment after the event that
        logs it.  A test that looks for a line in a running server's log waits for
        it (:meth:`wait_for_log`, :meth:`wait_for_log_count`); one that looks for
        what is absent first waits for a line logged after it, or stops the server.
        Readable after :meth:`close` too (for a fixture's check after the shutdown).
        """
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = DEFAULT_TIMEOUT) -> re.Match[str]:
        """Poll the log until the regex ``pattern`` matches; its first match (see :meth:`log`)."""
        return self._poll_log(re.compile(pattern).search, repr(pattern), timeout)

    def wait_for_log_count(self, pattern: str, count: int,
                           timeout: float = DEFAULT_TIMEOUT) -> str:
        """Poll the log until the regex ``pattern`` matches at least ``count`` times;
        the log then.

        For a test that counts lines: counted at once, the last of them may not be
        written yet (see :meth:`log`).  At least, not exactly: the text returned may
        hold more matches, and an exact count is the test's to assert on it.
        """
        regex = re.compile(pattern)
        return self._poll_log(lambda log: log if len(regex.findall(log)) >= count else None,
                              f"{pattern!r} {count} times", timeout)

    def _poll_log(self, find: Callable[[str], T | None], what: str, timeout: float) -> T:
        """What ``find(log)`` finds, as soon as it finds something (not None); an
        AssertionError with the log's tail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            found = find(text)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"log never matched {what}:\n{text[-3000:]}")
            time.sleep(0.05)

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


#: ``limits`` for a server that ends with writes it cannot finish (a full disk, a refused
#: database): its shutdown waits 1 s for them, not the default 10, so the test's
#: teardown does not (``write_config(..., limits=QUICK_STOP)``).
QUICK_STOP: dict[str, Any] = {"shutdown_timeout_seconds": 1.0}


def write_config(path: Path, **sections: Any) -> Path:
    """Write a config for tests: loopback, port 0, plus the given sections.

    Relative ``plugin_dirs`` are taken relative to the current directory (where
    pytest runs), not to the temporary folder the config is written to.  The
    flood limit and the per-address limits are off, history is not replayed on
    joining (``plugins.history.replay_lines: 0``; a test that passes a
    ``history`` section gets its own), and installed entry-point plugins are not
    loaded, unless a test sets them.  ``listen`` may be a list of
    listeners (``[{"port": 0}, {"port": 0, "protocol": "jsonl"}]``).
    """
    if "plugin_dirs" in sections:
        sections["plugin_dirs"] = [str(Path(d).resolve()) for d in sections["plugin_dirs"]]
    listeners = None
    if isinstance(sections.get("listen"), list):
        listeners = [{"host": "127.0.0.1", "port": 0, **item} for item in sections.pop("listen")]
    data = sections_for_test(sections, listen={"host": "127.0.0.1", "port": 0})
    if listeners is not None:
        data["listen"] = listeners
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


